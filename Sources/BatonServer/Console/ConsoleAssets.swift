/// The console's stylesheet and script, served by batond itself: no framework, nothing
/// from a CDN, a few kilobytes in the binary.
enum ConsoleAssets {
    /// Swaps in a fresh `#live` every two seconds while the tab is visible, says when it
    /// last did, and asks before a form with `data-confirm` is sent.
    static let script = #"""
        "use strict";
        (function () {
          const every = 2000;
          const stamp = document.getElementById("refreshed");
          document.addEventListener("submit", function (event) {
            const prompt = event.target.getAttribute("data-confirm");
            if (prompt && !window.confirm(prompt)) event.preventDefault();
          });
          const live = document.getElementById("live");
          if (!live) return;
          let timer = null;
          function schedule() {
            clearTimeout(timer);
            timer = setTimeout(refresh, every);
          }
          async function refresh() {
            if (document.hidden) return schedule();
            try {
              const response = await fetch(window.location.href, { cache: "no-store", headers: { "Accept": "text/html" } });
              if (!response.ok) throw new Error("HTTP " + response.status);
              const page = new DOMParser().parseFromString(await response.text(), "text/html");
              const fresh = page.getElementById("live");
              if (fresh && fresh.innerHTML !== live.innerHTML) live.innerHTML = fresh.innerHTML;
              stamp.textContent = "live · " + new Date().toLocaleTimeString();
              stamp.classList.remove("stale");
            } catch (error) {
              stamp.textContent = "not updating: " + error.message;
              stamp.classList.add("stale");
            }
            schedule();
          }
          document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
          stamp.textContent = "live";
          schedule();
        })();

        """#

    static let css = #"""
        :root { --ink: #1d232b; --muted: #5d6978; --line: #dde2e8; --paper: #fff; --band: #f4f6f8; --accent: #2857a4;
                --good: #1f7a3d; --warn: #9a6700; --bad: #b42318; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
        * { box-sizing: border-box; }
        body { margin: 0; color: var(--ink); background: var(--paper); font-size: 14px; line-height: 1.45; }
        header { display: flex; gap: 1.2rem; align-items: baseline; padding: .7rem 1.5rem; background: var(--ink); color: #fff; flex-wrap: wrap; }
        header a { color: #fff; text-decoration: none; }
        .brand { font-weight: 700; letter-spacing: .04em; font-size: 1.1rem; }
        nav a { margin-right: 1rem; opacity: .8; }
        nav a[aria-current="page"] { opacity: 1; border-bottom: 2px solid #fff; }
        .where, .refreshed { color: #c9d1db; font-size: .85rem; }
        .refreshed { margin-left: auto; }
        .refreshed.stale { color: #ffb4a8; }
        .mode { font-size: .75rem; padding: .1rem .45rem; border: 1px solid #8894a3; border-radius: 3px; color: #c9d1db; }
        .mode.act { border-color: #ffb86b; color: #ffb86b; }
        main, .filter, .notice { padding: 0 1.5rem; }
        main { padding-bottom: 2rem; }
        h1 { font-size: 1.3rem; margin: 1.2rem 0 .6rem; }
        h2 { font-size: 1.05rem; margin: 1.4rem 0 .5rem; }
        table { border-collapse: collapse; width: 100%; }
        th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
        thead th { background: var(--band); font-weight: 600; font-size: .8rem; color: var(--muted); white-space: nowrap; }
        td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
        td.error, .error { color: var(--bad); }
        a { color: var(--accent); }
        .badge { font-size: .72rem; padding: .05rem .4rem; border-radius: 3px; background: var(--band); color: var(--muted); margin-left: .3rem; }
        .badge.paused { background: #fff4d6; color: var(--warn); }
        .badge.bad { background: #fde7e4; color: var(--bad); }
        .state { font-size: .78rem; padding: .05rem .45rem; border-radius: 3px; background: var(--band); }
        .state.running { background: #e3edff; color: var(--accent); }
        .state.completed { background: #e3f4e8; color: var(--good); }
        .state.failed, .state.cancelled { background: #fde7e4; color: var(--bad); }
        .state.paused, .state.retrying { background: #fff4d6; color: var(--warn); }
        .health { margin: 1rem 0 0; padding: .5rem .8rem; border-radius: 4px; background: #e3f4e8; color: var(--good); }
        .health.degraded { background: #fff4d6; color: var(--warn); }
        .health.failing { background: #fde7e4; color: var(--bad); }
        .health ul { margin: .3rem 0 0; }
        .totals, .more, .empty { color: var(--muted); }
        .filter { display: flex; gap: 1rem; align-items: end; flex-wrap: wrap; margin-top: 1rem; }
        .filter label { display: flex; flex-direction: column; font-size: .8rem; color: var(--muted); }
        input, select, button { font: inherit; padding: .25rem .45rem; }
        button { border: 1px solid var(--line); background: var(--band); border-radius: 3px; cursor: pointer; }
        button:hover { border-color: var(--accent); }
        .actions { display: flex; gap: .5rem; margin: .4rem 0 .8rem; }
        form { display: inline; margin: 0; }
        .actions button[value="cancel"] { color: var(--bad); }
        dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1.2rem; margin: 0; }
        dt { color: var(--muted); }
        dd { margin: 0; }
        pre { background: var(--band); padding: .6rem .8rem; border-radius: 4px; white-space: pre-wrap; word-break: break-all; max-height: 24rem; overflow: auto; margin: 0; }
        ol.timeline { list-style: none; padding: 0; margin: 0; border-left: 2px solid var(--line); }
        ol.timeline li { padding: .25rem 0 .25rem .9rem; position: relative; }
        ol.timeline li::before { content: ""; position: absolute; left: -5px; top: .7rem; width: 8px; height: 8px; border-radius: 50%; background: var(--accent); }
        ol.timeline time { color: var(--muted); font-variant-numeric: tabular-nums; }
        .detail { color: var(--muted); margin-left: .3rem; }
        .notice { margin: 1rem 0 0; color: var(--good); }
        .pager a { margin-right: 1rem; }
        .problem { padding: 0 1.5rem; }

        """#
}
