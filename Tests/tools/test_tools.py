import json
import os
import pathlib
import pty
import re
import select
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import http_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
BATON = os.environ.get("BATON", str(ROOT / ".build" / "debug" / "baton"))


def send(batond, request):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(batond.socket_path)
        connection.sendall(json.dumps(request).encode() + b"\n")
        return json.loads(connection.makefile().readline())


def test_the_http_endpoint_serves_the_exposition_format_prometheus_parses(batond):
    for index in range(3):
        send(batond, {"op": "enqueue", "queue": "scraped", "payload": index})
    claimed = send(batond, {"op": "claim", "queues": ["scraped"]})["job"]
    send(batond, {"op": "complete", "job": claimed["id"], "token": claimed["token"]})
    port = http_port(batond)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value for family in families.values() for sample in family.samples}
    assert samples[("baton_jobs_enqueued_total", (("queue", "scraped"),))] == 3
    assert samples[("baton_jobs_completed_total", (("queue", "scraped"),))] == 1
    assert samples[("baton_jobs", (("queue", "scraped"), ("state", "queued")))] == 2
    assert families["baton_job_wait_seconds"].type == "histogram"
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/elsewhere", timeout=10)
    assert missing.value.code == 404


def scrape(batond):
    """The families of a scrape of batond's HTTP endpoint, as Prometheus's own parser reads them."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port(batond)}/metrics", timeout=10) as response:
        return list(text_string_to_metric_families(response.read().decode()))


def test_the_grafana_dashboard_and_alert_rules_use_only_metrics_a_real_scrape_has(batond):
    # Every family shows in the scrape: a queue whose jobs completed, failed, were retried
    # and cancelled, and a named limit in use.
    assert send(batond, {"op": "set_limit", "name": "gpu", "max_running": 5})["ok"]
    for index in range(4):
        send(batond, {"op": "enqueue", "queue": "graded", "payload": index, "limits": ["gpu"], "max_attempts": 2,
                      "backoff": {"initial_ms": 0}})
    done = send(batond, {"op": "claim", "queues": ["graded"]})["job"]
    send(batond, {"op": "complete", "job": done["id"], "token": done["token"]})
    for _ in range(2):
        failed = send(batond, {"op": "claim", "queues": ["graded"]})["job"]
        send(batond, {"op": "fail", "job": failed["id"], "token": failed["token"], "error": "HTTP 503"})
    cancelled = send(batond, {"op": "enqueue", "queue": "graded", "payload": "x"})["job"]
    send(batond, {"op": "cancel", "job": cancelled})
    families = scrape(batond)
    scraped = {sample.name for family in families for sample in family.samples}
    health = next(family for family in families if family.name == "baton_health")
    assert health.type == "gauge" and health.samples[0].value in (0, 1, 2)
    assert {sample.labels["queue"] for sample in next(f for f in families if f.name == "baton_oldest_ready_seconds").samples} >= {"graded"}

    dashboard = json.loads((ROOT / "contrib" / "grafana" / "baton.json").read_text())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert all(panel["targets"] for panel in panels), "every panel queries something"
    assert [entry["name"] for entry in dashboard["__inputs"]] == ["DS_PROMETHEUS"], "the data source is chosen at import"
    queries = [target["expr"] for panel in panels for target in panel["targets"]]
    queries += [variable["query"] for variable in dashboard["templating"]["list"]]
    rules = yaml.safe_load((ROOT / "contrib" / "prometheus" / "baton-alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert all(rule["alert"] and rule["labels"]["severity"] and rule["annotations"]["summary"] for rule in alerts)

    def used(expressions):
        return set(re.findall(r"\bbaton_[a-z_]+\b", "\n".join(expressions)))

    in_dashboard, in_rules = used(queries), used(rule["expr"] for rule in alerts)
    assert in_dashboard - scraped == set(), "the dashboard names metrics batond does not serve"
    assert in_rules - scraped == set(), "the alerting rules name metrics batond does not serve"
    # What each is there for: the dashboard's throughput, wait and run times, failures and
    # retries, group commit, leases and parked claims; the alerts' health, oldest ready
    # job, failure rate and commits.
    assert in_dashboard >= {"baton_jobs_completed_total", "baton_job_wait_seconds_bucket", "baton_job_run_seconds_bucket",
                            "baton_jobs_failed_total", "baton_jobs_retried_total", "baton_commit_batch_size_sum",
                            "baton_commit_seconds_bucket", "baton_leases", "baton_parked_claims"}
    assert in_rules >= {"baton_health", "baton_oldest_ready_seconds", "baton_jobs_failed_total", "baton_commit_seconds_count"}


def run_top(batond, *arguments):
    """`baton top` on a pseudo-terminal; returns the process and the terminal's master end."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [BATON, "top", "--socket", batond.socket_path, "--interval", "0.2", *arguments],
        stdin=slave, stdout=slave, stderr=slave, close_fds=True,
    )
    os.close(slave)
    return process, master


def read_until(master, condition, seconds=15.0):
    output = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition(output):
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                output += os.read(master, 65536)
            except OSError:
                break
    return output


@pytest.mark.parametrize("key", [b"q", b"\x03"], ids=["q", "ctrl-c"])
def test_top_draws_refreshes_in_place_and_exits_cleanly(batond, key):
    send(batond, {"op": "enqueue", "queue": "watched", "payload": 1})
    process, master = run_top(batond)
    try:
        output = read_until(master, lambda seen: seen.count(b"\x1b[H\x1b[2J") >= 3)
        assert b"\x1b[?1049h" in output, "it takes the alternate screen"
        assert output.count(b"\x1b[H\x1b[2J") >= 3, "it redraws in place"
        assert b"QUEUE" in output and b"watched" in output
        os.write(master, key)
        assert process.wait(timeout=10) == 0
        rest = read_until(master, lambda seen: b"\x1b[?1049l" in seen, seconds=5)
        assert b"\x1b[?25h" in output + rest and b"\x1b[?1049l" in output + rest, "the terminal is put back"
    finally:
        process.kill()
        os.close(master)


def test_top_prints_plain_frames_when_not_on_a_terminal(batond):
    send(batond, {"op": "enqueue", "queue": "piped", "payload": 1})
    done = subprocess.run(
        [BATON, "top", "--socket", batond.socket_path, "--interval", "0.1", "--iterations", "2"],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    assert done.stdout.count("baton top") == 2 and "piped" in done.stdout
