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
from prometheus_client.parser import text_string_to_metric_families

ROOT = pathlib.Path(__file__).resolve().parents[2]
BATON = os.environ.get("BATON", str(ROOT / ".build" / "debug" / "baton"))


def send(batond, request):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(batond.socket_path)
        connection.sendall(json.dumps(request).encode() + b"\n")
        return json.loads(connection.makefile().readline())


def metrics_port(batond):
    """The port the kernel chose for `--metrics-listen 127.0.0.1:0`, from batond's log."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = re.search(r"metrics served over HTTP .*127\.0\.0\.1:(\d+)", batond.log())
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise AssertionError("batond did not say where it serves metrics")


def test_the_http_endpoint_serves_the_exposition_format_prometheus_parses(batond):
    for index in range(3):
        send(batond, {"op": "enqueue", "queue": "scraped", "payload": index})
    claimed = send(batond, {"op": "claim", "queues": ["scraped"]})["job"]
    send(batond, {"op": "complete", "job": claimed["id"], "token": claimed["token"]})
    port = metrics_port(batond)
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
