import BatonCore
import BatonProtocol

/// The console's pages, written on the server from the authority's replies: they need no
/// script to show, and `console.js` only swaps in a fresh `#live` every few seconds.
struct ConsolePages: Sendable {
    /// This batond's `--host-name`, in every page's header.
    let host: String
    /// `"SQLite"` or `"PostgreSQL"`.
    let store: String
    /// Whether pages offer the actions; without, no action form is written.
    let actionsEnabled: Bool
    /// The token each action's form carries (``ConsoleGuard``).
    let token: String

    enum Section: String {
        case queues = "Queues"
        case workers = "Workers"
        case jobs = "Jobs"
    }

    /// Most rows a table shows; the rest are counted under it.
    static let maximumRows = 500

    func page(_ title: String, _ section: Section?, notice: HTML = "", above: HTML = "", _ live: HTML) -> HTML {
        let links = [Section.queues, .workers, .jobs].map { link -> HTML in
            let current: HTML = link == section ? " aria-current=\"page\"" : ""
            return "<a href=\"/\(link.rawValue.lowercased())\"\(current)>\(link.rawValue)</a>"
        }
        let mode: HTML = self.actionsEnabled ? "<span class=\"mode act\">actions on</span>" : "<span class=\"mode\">read-only</span>"
        return """
            <!doctype html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(title) · batond \(self.host)</title>
            <link rel="stylesheet" href="/console/console.css">
            <script src="/console/console.js" defer></script>
            </head>
            <body>
            <header>
            <a class="brand" href="/queues">baton</a>
            <nav>\(links)</nav>
            <span class="where">\(self.host) · \(self.store)</span>
            \(mode)
            <span id="refreshed" class="refreshed"></span>
            </header>
            \(notice)\(above)<main id="live">
            \(live)
            </main>
            </body>
            </html>

            """
    }

    // MARK: Queues

    /// Per-minute rates of one queue, over the last minute the console watched.
    struct Rates: Sendable {
        var completed: Double
        var failed: Double
    }

    func queues(stats: JSONValue, health: JSONValue, waits: [String: Double], rates: [String: Rates]?, now: Int64) -> HTML {
        let queues = stats["queues"]?.members ?? [:]
        let paused = Set((stats["paused_queues"]?.array ?? []).compactMap(\.string))
        let limits = stats["queue_limits"]?.members ?? [:]
        let breakers = stats["breakers"]?.members ?? [:]
        let names = Set(queues.keys).union(paused).sorted()
        let rows = names.prefix(Self.maximumRows).map { name -> HTML in
            let counts = queues[name] ?? .object([:])
            func count(_ state: String) -> HTML {
                let value = counts[state]?.integer ?? 0
                return "<td class=\"n\" data-count=\"\(state)\">\(value)</td>"
            }
            var status: [HTML] = []
            if paused.contains(name) { status.append("<span class=\"badge paused\">paused</span>") }
            if let breaker = breakers[name]?["state"]?.string { status.append("<span class=\"badge bad\">breaker \(breaker.replacing("_", with: "-"))</span>") }
            let running: HTML = limits[name]?["max_running"]?.integer.map { " <small>of \($0)</small>" } ?? ""
            let oldest: HTML = counts["oldest_ready_age_ms"]?.integer.map { "\(ConsoleTime.span($0))" } ?? "–"
            let wait: HTML = waits[name].map { "\(Self.seconds($0))" } ?? "–"
            let rate = rates?[name]
            let queueLink = "/jobs?queue=\(Self.percentEscaped(name))"
            return """
                <tr data-queue="\(name)">
                <th scope="row"><a href="\(queueLink)">\(name)</a> \(status)</th>
                \(count("queued"))\(count("retrying"))<td class="n" data-count="running">\(counts["running"]?.integer ?? 0)\(running)</td>\(count("paused"))\(count("failed"))\(count("completed"))\(count("cancelled"))
                <td class="n" data-col="oldest-ready">\(oldest)</td>
                <td class="n" data-col="wait-p95">\(wait)</td>
                <td class="n" data-col="completed-rate">\(rate.map { Self.rate($0.completed) } ?? "–")</td>
                <td class="n" data-col="failed-rate">\(rate.map { Self.rate($0.failed) } ?? "–")</td>
                \(self.actionsEnabled ? "<td>\(self.queueAction(name, paused: paused.contains(name)))</td>" as HTML : "")
                </tr>
                """
        }
        let more: HTML = names.count > Self.maximumRows ? "<p class=\"more\">\(names.count - Self.maximumRows) more queues not shown.</p>" : ""
        let table: HTML =
            names.isEmpty
            ? "<p class=\"empty\">No queues yet: a queue appears with its first job.</p>"
            : """
            <table class="queues">
            <thead><tr><th>Queue</th><th class="n">Queued</th><th class="n">Retrying</th><th class="n">Running</th><th class="n">Paused</th><th class="n">Failed</th><th class="n">Completed</th><th class="n">Cancelled</th><th class="n" title="How long the oldest claimable job has waited">Oldest ready</th><th class="n" title="95th percentile of the wait from due to claim">Wait p95</th><th class="n" title="Completed per minute, over the last minute">Done/min</th><th class="n" title="Failed per minute, over the last minute">Failed/min</th>\(self.actionsEnabled ? "<th></th>" as HTML : "")</tr></thead>
            <tbody>
            \(rows)
            </tbody>
            </table>
            \(more)
            """
        return """
            \(self.health(health))
            <section>
            <h1>Queues</h1>
            \(table)
            <p class="totals"><span data-col="leases">\(stats["leases"]?.integer ?? 0) leases</span> · <span>\(stats["parked_claims"]?.integer ?? 0) claims waiting</span> · <span>rates and wait times count this batond's own work</span></p>
            </section>
            \(self.limits(stats["limits"]))
            """
    }

    private func health(_ health: JSONValue) -> HTML {
        let verdict = health["health"]?.string ?? "unknown"
        let reasons = (health["reasons"]?.array ?? []).compactMap(\.string).map { reason -> HTML in "<li>\(reason)</li>" }
        return """
            <section class="health \(verdict)" data-health="\(verdict)">
            <strong>Health: \(verdict)</strong>
            \(reasons.isEmpty ? "" : "<ul>\(reasons)</ul>" as HTML)
            </section>
            """
    }

    private func limits(_ value: JSONValue?) -> HTML {
        var entries: [(String, JSONValue)] = []
        switch value {
        case .object(let members)?: entries = members.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        case .array(let values)?: entries = values.map { ($0["name"]?.string ?? "", $0) }
        default: break
        }
        guard !entries.isEmpty else { return "" }
        let rows = entries.prefix(Self.maximumRows).map { name, limit -> HTML in
            let max: HTML = limit["max_running"]?.integer.map { " <small>of \($0)</small>" } ?? ""
            let rate: HTML = limit["rate"].flatMap { rate in
                rate["count"]?.integer.map { count -> HTML in "\(count) per \(ConsoleTime.span(rate["per_ms"]?.integer ?? 0))" }
            } ?? "–"
            let breaker = limit["breaker_state"]?.string ?? "–"
            return """
                <tr data-limit="\(name)"><th scope="row">\(name)</th><td class="n">\(limit["running"]?.integer ?? 0)\(max)</td><td>\(rate)</td><td class="n">\(limit["started_in_window"]?.integer ?? 0)</td><td class="n" data-count="waiting">\(limit["waiting"]?.integer ?? 0)</td><td>\(limit["holding"] == .bool(true) ? "yes" : "no")</td><td>\(breaker)</td></tr>
                """
        }
        return """
            <section>
            <h2>Named limits</h2>
            <table class="limits">
            <thead><tr><th>Limit</th><th class="n">Running</th><th>Rate</th><th class="n">Started in window</th><th class="n" title="Jobs naming the limit that wait to run">Waiting</th><th title="Whether it has held a claim back">Holding</th><th>Breaker</th></tr></thead>
            <tbody>\(rows)</tbody>
            </table>
            </section>
            """
    }

    private func queueAction(_ name: String, paused: Bool) -> HTML {
        let action = paused ? "resume" : "pause"
        return self.form("/queues/\(Self.percentEscaped(name))/\(action)", label: paused ? "Resume" : "Pause", confirm: nil)
    }

    // MARK: Workers

    func workers(_ reply: JSONValue, now: Int64) -> HTML {
        let workers = reply["workers"]?.array ?? []
        let rows = workers.prefix(Self.maximumRows).map { worker -> HTML in
            let jobs = (worker["jobs"]?.array ?? []).compactMap(\.integer).map { id -> HTML in "<a href=\"/jobs/\(id)\">\(id)</a>" }
            let heartbeat: HTML = worker["last_heartbeat_at"]?.integer.map { "\(ConsoleTime.span(now - $0)) ago" } ?? "–"
            let since: HTML = worker["since"]?.integer.map { "<span title=\"\(ConsoleTime.utc($0))\">\(ConsoleTime.span(now - $0))</span>" } ?? "–"
            return """
                <tr data-connection="\(worker["connection"]?.integer ?? 0)"><td>\(worker["worker"]?.string ?? "–")</td><td class="n" data-col="pid">\(worker["pid"]?.integer.map { "\($0)" } ?? "–")</td><td class="n">\(worker["uid"]?.integer.map { "\($0)" } ?? "–")</td><td class="n" data-col="jobs-held">\(jobs.count)</td><td>\(HTML(joining: jobs.map { "\($0) " as HTML }))</td><td>\(heartbeat)</td><td>\(since)</td></tr>
                """
        }
        let table: HTML =
            workers.isEmpty
            ? "<p class=\"empty\">No workers connected.</p>"
            : """
            <table class="workers">
            <thead><tr><th>Worker</th><th class="n">PID</th><th class="n">UID</th><th class="n">Jobs held</th><th>Jobs</th><th>Last heartbeat</th><th>Connected for</th></tr></thead>
            <tbody>\(rows)</tbody>
            </table>
            """
        let hosts = (reply["hosts"]?.array ?? []).map { host -> HTML in
            let seen: HTML = host["seen_at"]?.integer.map { "seen \(ConsoleTime.span(now - $0)) ago" } ?? ""
            return "<li>\(host["host"]?.string ?? "?") <small>\(seen)</small></li>"
        }
        return """
            <section>
            <h1>Workers</h1>
            \(table)
            </section>
            <section>
            <h2>Hosts</h2>
            <ul class="hosts">\(hosts)</ul>
            </section>
            """
    }

    // MARK: Jobs

    /// The filter, above the live part, so that refreshing never undoes what is being typed.
    func jobFilter(_ listing: JobListing, queues: [String]) -> HTML {
        let states = [""] + JobState.allCases.map(\.rawValue)
        let options = states.map { state -> HTML in
            let selected: HTML = state == (listing.state?.rawValue ?? "") ? " selected" : ""
            return "<option value=\"\(state)\"\(selected)>\(state.isEmpty ? "any state" : state)</option>"
        }
        let names = queues.prefix(Self.maximumRows).map { name -> HTML in "<option value=\"\(name)\">" }
        return """
            <form class="filter" method="get" action="/jobs">
            <label>Queue <input name="queue" list="queue-names" value="\(listing.queue ?? "")" placeholder="any queue"></label>
            <datalist id="queue-names">\(names)</datalist>
            <label>State <select name="state">\(options)</select></label>
            <label>Last error contains <input name="error" value="\(listing.errorContains ?? "")" placeholder="text"></label>
            <button type="submit">Filter</button>
            </form>

            """
    }

    func jobs(_ reply: JSONValue, listing: JobListing, now: Int64) -> HTML {
        let jobs = reply["jobs"]?.array ?? []
        let rows = jobs.map { job -> HTML in
            let id = job["id"]?.integer ?? 0
            let state = job["state"]?.string ?? "?"
            let error = job["last_error"]?.string.map { Self.shortened($0, to: 160) } ?? ""
            let created: HTML = job["created_at"]?.integer.map { "<span title=\"\(ConsoleTime.utc($0))\">\(ConsoleTime.span(now - $0)) ago</span>" } ?? ""
            return """
                <tr data-job="\(id)"><td><a href="/jobs/\(id)">\(id)</a></td><td>\(job["queue"]?.string ?? "")</td><td><span class="state \(state)">\(state)</span></td><td class="n">\(job["attempts"]?.integer ?? 0)/\(job["max_attempts"]?.integer ?? 0)</td><td class="n">\(job["priority"]?.integer ?? 0)</td><td>\(created)</td><td class="error">\(error)</td></tr>
                """
        }
        var pager: [HTML] = []
        if listing.after != nil { pager.append("<a href=\"\(Self.jobsLink(listing, after: nil))\">First page</a>") }
        if let next = reply["next"]?.integer { pager.append("<a rel=\"next\" href=\"\(Self.jobsLink(listing, after: next))\">Next page</a>") }
        let table: HTML =
            jobs.isEmpty
            ? "<p class=\"empty\">No jobs on this page match.</p>"
            : """
            <table class="jobs">
            <thead><tr><th>Job</th><th>Queue</th><th>State</th><th class="n">Attempts</th><th class="n">Priority</th><th>Created</th><th>Last error</th></tr></thead>
            <tbody>\(rows)</tbody>
            </table>
            """
        return """
            <section>
            <h1>Jobs</h1>
            \(table)
            <nav class="pager">\(HTML(joining: pager.map { "\($0) " as HTML }))</nav>
            </section>
            """
    }

    static func jobsLink(_ listing: JobListing, after: Int64?) -> String {
        var query: [String] = []
        if let queue = listing.queue { query.append("queue=\(Self.percentEscaped(queue))") }
        if let state = listing.state { query.append("state=\(state.rawValue)") }
        if let text = listing.errorContains { query.append("error=\(Self.percentEscaped(text))") }
        if let after { query.append("after=\(after)") }
        return "/jobs" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
    }

    // MARK: One job

    func job(_ reply: JSONValue, events: JSONValue, now: Int64) -> HTML {
        let job = reply["job"] ?? .object([:])
        let id = job["id"]?.integer ?? 0
        let state = job["state"]?.string ?? "?"
        func time(_ key: String) -> HTML {
            job[key]?.integer.map { "\(ConsoleTime.utc($0)) <small>(\(ConsoleTime.span(now - $0)) ago)</small>" } ?? "–"
        }
        let trail = events["events"]?.array ?? []
        let followUps = trail.flatMap { ($0["follow_ups"]?.array ?? []).compactMap(\.integer) }
        let lease: HTML = job["lease"].flatMap { lease -> HTML? in
            guard !lease.isNull else { return nil }
            let expires: HTML = lease["expires_at"]?.integer.map { "expires in \(ConsoleTime.span($0 - now))" } ?? ""
            return "<dt>Lease</dt><dd>\(lease["worker"]?.string ?? "unnamed worker"), pid \(lease["peer_pid"]?.integer.map { "\($0)" } ?? "?"), \(expires)</dd>"
        } ?? ""
        let parent: HTML = job["parent"]?.integer.map { "<a href=\"/jobs/\($0)\">\($0)</a>" } ?? "–"
        let children: HTML = followUps.isEmpty ? "–" : HTML(joining: followUps.map { "<a href=\"/jobs/\($0)\">\($0)</a> " as HTML })
        let timeline = trail.suffix(Self.maximumRows).map { self.event($0) }
        let earlier: HTML = trail.count > Self.maximumRows ? "<p class=\"more\">\(trail.count - Self.maximumRows) earlier events not shown.</p>" : ""
        return """
            <section>
            <h1>Job \(id) <span class="state \(state)" data-job-state="\(state)">\(state)</span></h1>
            \(self.jobActions(id: id, state: state))
            <dl class="facts">
            <dt>Queue</dt><dd><a href="/jobs?queue=\(Self.percentEscaped(job["queue"]?.string ?? ""))">\(job["queue"]?.string ?? "")</a></dd>
            <dt>Attempts</dt><dd>\(job["attempts"]?.integer ?? 0) of \(job["max_attempts"]?.integer ?? 0)</dd>
            <dt>Priority</dt><dd>\(job["priority"]?.integer ?? 0)</dd>
            <dt>Created</dt><dd>\(time("created_at"))</dd>
            <dt>Runs at</dt><dd>\(time("run_at"))</dd>
            <dt>Started</dt><dd>\(time("started_at"))</dd>
            <dt>Finished</dt><dd>\(time("finished_at"))</dd>
            \(lease)
            <dt>Parent</dt><dd id="parent">\(parent)</dd>
            <dt>Follow-ups</dt><dd id="follow-ups">\(children)</dd>
            \(Self.trace(job["trace"]))
            </dl>
            </section>
            \(Self.block("Last error", id: "last-error", job["last_error"]?.string))
            \(Self.progress(job["progress"]))
            <section>
            <h2>Events</h2>
            \(earlier)
            <ol class="timeline" id="events">\(timeline)</ol>
            </section>
            \(Self.block("Checkpoint", id: "checkpoint", job["checkpoint"].flatMap { $0.isNull ? nil : $0.prettyText }))
            \(Self.block("Result", id: "result", job["result"].flatMap { $0.isNull ? nil : $0.prettyText }))
            \(Self.block("Payload", id: "payload", job["payload"]?.prettyText))
            """
    }

    private func event(_ event: JSONValue) -> HTML {
        let kind = event["event"]?.string ?? "?"
        var details: [HTML] = []
        if let worker = event["worker"]?.string { details.append("by \(worker)") }
        if let pid = event["peer_pid"]?.integer { details.append("pid \(pid)") }
        if let token = event["token"]?.integer { details.append("token \(token)") }
        if let error = event["error"]?.string { details.append("<span class=\"error\">\(Self.shortened(error, to: 500))</span>") }
        if let reason = event["reason"]?.string { details.append("\(reason)") }
        if let parent = event["parent"]?.integer { details.append("follow-up of <a href=\"/jobs/\(parent)\">\(parent)</a>") }
        let at: HTML = event["at"]?.integer.map { "\(ConsoleTime.utc($0))" } ?? ""
        let state = event["state"]?.string ?? ""
        return """
            <li data-event="\(kind)"><time>\(at)</time> <strong>\(kind)</strong> → <span class="state \(state)">\(state)</span> \(HTML(joining: details.map { "<span class=\"detail\">\($0)</span> " as HTML }))</li>
            """
    }

    private func jobActions(id: Int64, state: String) -> HTML {
        guard self.actionsEnabled else { return "" }
        var forms: [HTML] = []
        if ["queued", "retrying", "running"].contains(state) { forms.append(self.form("/jobs/\(id)/pause", label: "Pause", confirm: nil)) }
        if state == "paused" { forms.append(self.form("/jobs/\(id)/resume", label: "Resume", confirm: nil)) }
        if ["failed", "cancelled"].contains(state) { forms.append(self.form("/jobs/\(id)/retry", label: "Retry", confirm: nil)) }
        if ["queued", "retrying", "running", "paused"].contains(state) {
            forms.append(self.form("/jobs/\(id)/cancel", label: "Cancel", confirm: "Cancel job \(id)? Its worker is told to stop."))
        }
        return "<div class=\"actions\" id=\"actions\">\(forms)</div>"
    }

    private func form(_ action: String, label: String, confirm: String?) -> HTML {
        let prompt: HTML = confirm.map { " data-confirm=\"\($0)\"" } ?? ""
        let name = label.lowercased()
        return """
            <form method="post" action="\(action)"\(prompt)><input type="hidden" name="csrf" value="\(self.token)"><button type="submit" name="do" value="\(name)">\(label)</button></form>
            """
    }

    /// A page for a request the console could not serve.
    func problem(_ title: String, _ message: String, back: String) -> HTML {
        self.page(title, nil, "<section class=\"problem\"><h1>\(title)</h1><p>\(message)</p><p><a href=\"\(back)\">Back</a></p></section>")
    }

    // MARK: Text

    private static func block(_ title: String, id: String, _ text: String?) -> HTML {
        guard let text else { return "" }
        let shown = Self.shortened(text, to: 65_536)
        return "<section><h2>\(title)</h2><pre id=\"\(id)\">\(shown)</pre></section>"
    }

    /// The trace the job carries: its id, for a person to look up in the tracing backend.
    private static func trace(_ value: JSONValue?) -> HTML {
        guard let parent = value?["traceparent"]?.string else { return "" }
        let parts = parent.split(separator: "-")
        let id = parts.count > 1 ? String(parts[1]) : parent
        return "<dt>Trace</dt><dd id=\"trace\" title=\"traceparent \(parent)\"><code>\(id)</code></dd>"
    }

    /// `{percent, message?}` as a bar and its words.
    private static func progress(_ value: JSONValue?) -> HTML {
        guard let percent = value?["percent"]?.number else { return "" }
        let whole = Int(percent.rounded())
        let message: HTML = value?["message"]?.string.map { " · \(Self.shortened($0, to: 1_000))" } ?? ""
        return "<section><h2>Progress</h2><p id=\"progress\"><progress max=\"100\" value=\"\(whole)\"></progress> \(whole)%\(message)</p></section>"
    }

    static func shortened(_ text: String, to limit: Int) -> String {
        guard text.utf8.count > limit else { return text }
        return String(decoding: text.utf8.prefix(limit), as: UTF8.self) + " … (\(text.utf8.count) bytes in all)"
    }

    static func seconds(_ value: Double) -> String {
        switch value {
        case ..<0.001: "< 1 ms"
        case ..<1: "\(Int((value * 1_000).rounded())) ms"
        case ..<120: "\(Double(Int(value * 10)) / 10) s"
        default: ConsoleTime.span(Int64(value * 1_000))
        }
    }

    static func rate(_ perMinute: Double) -> HTML {
        perMinute >= 10 ? "\(Int(perMinute.rounded()))" : "\(String(Double(Int(perMinute * 10)) / 10))"
    }

    /// Percent-encodes all but unreserved characters, for a path segment or a query value.
    static func percentEscaped(_ text: String) -> String {
        var escaped = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                escaped.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = String(byte, radix: 16, uppercase: true)
                escaped += "%" + (hex.count == 1 ? "0" : "") + hex
            }
        }
        return escaped
    }

}
