import json
import os
import pathlib
import re
import signal
import subprocess
import threading
import time

import conformance
import pytest
from conformance import Batond, eventually

HERE = pathlib.Path(__file__).resolve().parent
BATON_RUN = str(HERE.parent / "baton-run")
README = (HERE.parent / "README.md").read_text()


def send(batond, request):
    """One request through socat, as the README's one-liners send it."""
    output = subprocess.run(
        ["socat", "-", f"UNIX-CONNECT:{batond.socket_path}"], input=json.dumps(request) + "\n",
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    return json.loads(output)


def run(batond, *arguments, timeout=60):
    return subprocess.run(
        [BATON_RUN, "-s", batond.socket_path, *arguments], capture_output=True, text=True, timeout=timeout
    )


def test_the_readme_one_liners_work_as_written(batond):
    block = re.search(r"## One-liners\n.*?```sh\n(.*?)```", README, re.S).group(1)
    environment = {**os.environ, "BATON_SOCKET": batond.socket_path}
    output = subprocess.run(["sh", "-c", block], capture_output=True, text=True, env=environment, timeout=60)
    replies = [json.loads(line) for line in output.stdout.splitlines()]
    assert len(replies) == block.count("socat") and all(reply["ok"] for reply in replies), output.stdout + output.stderr
    assert replies[0]["job"] == 1
    assert [event["event"] for event in replies[4]["events"]] == ["enqueued"]
    pipelined = re.search(r"one per line.*?```sh\n(.*?)```", README, re.S).group(1)
    send(batond, {"op": "resume_queue", "queue": "reports"})
    send(batond, {"op": "enqueue", "queue": "reports", "payload": 2})
    lines = subprocess.run(["sh", "-c", "B=$BATON_SOCKET\n" + pipelined], capture_output=True, text=True, env=environment, timeout=60)
    assert [json.loads(line)["id"] for line in lines.stdout.splitlines()] == [1, 2]
    assert json.loads(lines.stdout.splitlines()[1])["job"]["payload"] == 2


def test_the_readme_worker_runs_as_written(batond, tmp_path):
    script = re.search(r"## A cron worker.*?```sh\n(.*?)```", README, re.S).group(1)
    assert len(script.splitlines()) < 30
    command = tmp_path / "build-report"
    command.write_text(script)
    command.chmod(0o755)
    (tmp_path / "orders.log").write_text("2026-11-27 order 1\n2026-11-26 order 2\n2026-11-27 order 3\n")
    job = send(batond, {"op": "enqueue", "queue": "reports", "payload": {"day": "2026-11-27"}})["job"]
    done = subprocess.run(
        [BATON_RUN, "-s", batond.socket_path, "reports", str(command)],
        env={**os.environ, "ORDERS": str(tmp_path / "orders.log")}, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert send(batond, {"op": "get", "job": job})["job"]["result"] == {"day": "2026-11-27", "orders": 2}


def test_baton_run_completes_with_the_commands_output(batond):
    job = send(batond, {"op": "enqueue", "queue": "cron", "payload": {"n": 21}})["job"]
    done = run(batond, "cron", "sh", "-c", 'echo "{\\"doubled\\": $(jq .n) , \\"job\\": $BATON_JOB_ID}" | jq -c "{doubled: (.doubled * 2), job}"')
    assert done.returncode == 0, done.stderr
    finished = send(batond, {"op": "get", "job": job})["job"]
    assert finished["state"] == "completed" and finished["result"] == {"doubled": 42, "job": job}
    send(batond, {"op": "enqueue", "queue": "cron", "payload": "ignored"})
    text = run(batond, "cron", "echo", "plain words")
    assert text.returncode == 0 and text.stdout == "plain words\n"
    assert send(batond, {"op": "list", "limit": 1})["jobs"][0]["result"] == "plain words", "output that is not JSON is a string"


def test_follow_ups_are_enqueued_with_the_completion_and_only_with_it(batond):
    parse = send(batond, {"op": "enqueue", "queue": "parse", "payload": "report.pdf"})["job"]
    script = 'for page in 1 2; do jq -nc --argjson p $page \'{queue: "embed", payload: {page: $p}}\' >>"$BATON_FOLLOW_UPS"; done; echo parsed'
    assert run(batond, "parse", "sh", "-c", script).returncode == 0
    follow_ups = send(batond, {"op": "list", "queue": "embed", "order": "oldest"})["jobs"]
    assert [(job["payload"], job["parent"]) for job in follow_ups] == [({"page": 1}, parse), ({"page": 2}, parse)]
    assert send(batond, {"op": "get", "job": parse})["job"]["result"] == "parsed"
    # A command that fails enqueues nothing; one that writes something else fails its attempt.
    send(batond, {"op": "enqueue", "queue": "parse", "payload": "broken.pdf", "max_attempts": 1})
    assert run(batond, "parse", "sh", "-c", 'echo \'{"queue":"embed","payload":3}\' >>"$BATON_FOLLOW_UPS"; exit 1').returncode == 1
    bad = send(batond, {"op": "enqueue", "queue": "parse", "payload": "odd.pdf", "max_attempts": 1})["job"]
    assert run(batond, "parse", "sh", "-c", 'echo not-json >>"$BATON_FOLLOW_UPS"').returncode == 65
    assert "BATON_FOLLOW_UPS" in send(batond, {"op": "get", "job": bad})["job"]["last_error"]
    assert len(send(batond, {"op": "list", "queue": "embed"})["jobs"]) == 2


def test_the_command_gets_the_jobs_trace_context_and_its_follow_ups_and_enqueues_carry_it(batond):
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    send(batond, {"op": "enqueue", "queue": "traced", "payload": 1, "trace": {"traceparent": parent, "tracestate": "vendor=abc"}})
    baton = str(pathlib.Path(conformance.BATOND).with_name("baton"))
    script = (
        'echo \'{"queue":"embed","payload":1}\' >>"$BATON_FOLLOW_UPS"; '
        f'{baton} enqueue notify 2 >/dev/null; '
        'echo "$TRACEPARENT $TRACESTATE"'
    )
    # baton-run's own environment may hold another trace: the job's wins.
    other = "00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-01"
    done = subprocess.run([BATON_RUN, "-s", batond.socket_path, "traced", "sh", "-c", script],
                          env={**os.environ, "TRACEPARENT": other}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{parent} vendor=abc\n"
    for queue in ("embed", "notify"):
        assert send(batond, {"op": "list", "queue": queue})["jobs"][0]["trace"] == {"traceparent": parent, "tracestate": "vendor=abc"}
    # A job without a trace gives the command none.
    send(batond, {"op": "enqueue", "queue": "traced", "payload": 2})
    plain = subprocess.run([BATON_RUN, "-s", batond.socket_path, "traced", "sh", "-c", 'echo "[${TRACEPARENT:-none}]"'],
                           env={**os.environ, "TRACEPARENT": other}, capture_output=True, text=True, timeout=60)
    assert plain.stdout == "[none]\n"


def test_a_failing_command_fails_the_attempt_with_its_status(batond):
    job = send(batond, {"op": "enqueue", "queue": "cron", "payload": None, "max_attempts": 1})["job"]
    failed = run(batond, "cron", "sh", "-c", "exit 3")
    assert failed.returncode == 3
    record = send(batond, {"op": "get", "job": job})["job"]
    assert record["state"] == "failed" and record["last_error"] == "command exited with status 3"


def test_a_failure_keeps_the_last_lines_of_the_commands_stderr(batond):
    job = send(batond, {"op": "enqueue", "queue": "cron", "payload": None, "max_attempts": 1})["job"]
    script = 'i=0; while [ $i -lt 500 ]; do echo "progress line $i" >&2; i=$((i+1)); done; echo "fatal: quota exceeded" >&2; exit 4'
    failed = run(batond, "cron", "sh", "-c", script)
    assert failed.returncode == 4
    assert "fatal: quota exceeded" in failed.stderr, "the command's stderr still reaches baton-run's"
    error = send(batond, {"op": "get", "job": job})["job"]["last_error"]
    assert error.startswith("command exited with status 4: ") and error.endswith("fatal: quota exceeded"), error
    assert "progress line 499" in error and "progress line 0\n" not in error
    assert len(error.encode()) <= 2100, "bounded"


def test_no_job_exits_2_and_an_unreachable_batond_3(batond):
    assert run(batond, "-w", "200", "empty", "true").returncode == 2
    nowhere = subprocess.run([BATON_RUN, "-s", "/nonexistent/b.sock", "q", "true"], capture_output=True, text=True, timeout=5)
    assert nowhere.returncode == 3 and "no batond socket at /nonexistent/b.sock" in nowhere.stderr
    assert subprocess.run([BATON_RUN, "only-a-queue"], capture_output=True).returncode == 64


def test_heartbeats_keep_a_long_command_alive_past_its_lease(batond):
    job = send(batond, {"op": "enqueue", "queue": "cron", "payload": 1, "lease_ms": 1200})["job"]
    slow = run(batond, "cron", "sh", "-c", "sleep 3; echo done")
    assert slow.returncode == 0, slow.stderr
    record = send(batond, {"op": "get", "job": job})["job"]
    assert record["state"] == "completed" and record["attempts"] == 1


def test_a_cancelled_job_stops_the_command_and_reports_nothing(batond):
    job = send(batond, {"op": "enqueue", "queue": "cron", "payload": 1, "lease_ms": 900})["job"]
    process = subprocess.Popen([BATON_RUN, "-s", batond.socket_path, "cron", "sleep", "30"], stderr=subprocess.PIPE, text=True)
    assert eventually(lambda: send(batond, {"op": "get", "job": job})["job"]["state"] == "running")
    send(batond, {"op": "cancel", "job": job, "reason": "not needed"})
    assert process.wait(timeout=15) == 1
    assert "cancelled" in process.stderr.read()
    assert send(batond, {"op": "get", "job": job})["job"]["state"] == "cancelled"
    samples = send(batond, {"op": "metrics", "format": "json"})["samples"]
    late = next(sample["value"] for sample in samples if sample["name"] == "baton_late_outcomes_total")
    assert late == 0, "baton-run reported nothing for the cancelled attempt"


def test_the_socket_is_the_option_then_baton_socket_then_the_default(batond, tmp_path):
    # The default, baton-data/baton.sock under the working directory, reaches batond here.
    (tmp_path / "baton-data").mkdir()
    (tmp_path / "baton-data" / "baton.sock").symlink_to(batond.socket_path)
    bare = {name: value for name, value in os.environ.items() if name != "BATON_SOCKET"}

    def baton_run(*arguments, environment=bare, directory=tmp_path):
        send(batond, {"op": "enqueue", "queue": "found", "payload": 1})
        return subprocess.run([BATON_RUN, *arguments, "found", "true"], env=environment, cwd=directory, capture_output=True, text=True, timeout=30)

    assert baton_run().returncode == 0, "the default"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert baton_run(environment={**bare, "BATON_SOCKET": batond.socket_path}, directory=elsewhere).returncode == 0, "BATON_SOCKET"
    assert baton_run("-s", batond.socket_path, environment={**bare, "BATON_SOCKET": "/nonexistent.sock"}).returncode == 0, "the option wins"
    wrong = baton_run("-s", "/nonexistent.sock", environment={**bare, "BATON_SOCKET": batond.socket_path})
    assert wrong.returncode == 3 and "no batond socket at /nonexistent.sock" in wrong.stderr


def test_sigterm_stops_the_command_and_releases_the_job(batond):
    job = send(batond, {"op": "enqueue", "queue": "cron", "payload": 1})["job"]
    process = subprocess.Popen([BATON_RUN, "-s", batond.socket_path, "cron", "sleep", "30"])
    assert eventually(lambda: send(batond, {"op": "get", "job": job})["job"]["state"] == "running")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 143
    record = send(batond, {"op": "get", "job": job})["job"]
    assert record["state"] == "queued" and record["attempts"] == 0


def sleeps(length):
    """Live `sleep LENGTH` processes. Only the sleeps count: baton-run's own command line
    holds the command's text too, and its short-lived forks would make a count unsteady."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        try:
            if (entry / "cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", length.encode()] \
                    and b") Z " not in (entry / "stat").read_bytes():
                found.append(entry.name)
        except OSError:
            continue
    return found


# A command that starts a child of its own and waits; the marker is a sleep length no one else uses.
def family(marker):
    return ["sh", "-c", f"sleep {marker} & sleep {marker}; wait"]


@pytest.mark.parametrize("stop", ["cancel", "sigterm"])
def test_baton_run_leaves_no_process_behind(batond, stop):
    marker = "917.25" if stop == "cancel" else "917.5"
    job = send(batond, {"op": "enqueue", "queue": "cron", "payload": 1, "lease_ms": 3000})["job"]
    process = subprocess.Popen([BATON_RUN, "-s", batond.socket_path, "cron", *family(marker)], stderr=subprocess.PIPE, text=True)
    assert eventually(lambda: len(sleeps(marker)) == 2)
    if stop == "cancel":
        send(batond, {"op": "cancel", "job": job})
        assert process.wait(timeout=15) == 1
    else:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 143
    assert sleeps(marker) == [], "the command's whole process group is stopped"
    assert send(batond, {"op": "get", "job": job})["job"]["state"] == ("cancelled" if stop == "cancel" else "queued")


def test_a_chosen_exit_status_fails_the_job_for_good(batond):
    job = send(batond, {"op": "enqueue", "queue": "cron", "payload": 1})["job"]
    done = run(batond, "-p", "65", "cron", "sh", "-c", "echo 'page 3 is not a PDF' >&2; exit 65")
    assert done.returncode == 65
    record = send(batond, {"op": "get", "job": job})["job"]
    assert record["state"] == "failed" and record["attempts"] == 1 and record["max_attempts"] > 1
    assert "page 3 is not a PDF" in record["last_error"]
    # Any other status is still retried.
    other = send(batond, {"op": "enqueue", "queue": "cron", "payload": 2})["job"]
    assert run(batond, "-p", "65", "cron", "sh", "-c", "exit 3").returncode == 3
    assert send(batond, {"op": "get", "job": other})["job"]["state"] == "retrying"
    assert subprocess.run([BATON_RUN, "-p", "0", "cron", "true"], capture_output=True).returncode == 64
    assert subprocess.run([BATON_RUN, "-p", "x", "cron", "true"], capture_output=True).returncode == 64


def test_a_command_does_not_outlive_a_killed_baton_run(batond):
    # SIGKILL gives baton-run no say; its lease lapses and the job goes to another worker,
    # so the command it started must stop too.
    job = send(batond, {"op": "enqueue", "queue": "cron", "payload": 1, "lease_ms": 1500})["job"]
    process = subprocess.Popen([BATON_RUN, "-s", batond.socket_path, "cron", *family("917.625")])
    assert eventually(lambda: len(sleeps("917.625")) == 2)
    process.kill()
    process.wait(timeout=5)
    assert eventually(lambda: sleeps("917.625") == [])
    assert eventually(lambda: send(batond, {"op": "get", "job": job})["job"]["last_error"] == "lease expired")


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace_period(batond):
    job = send(batond, {"op": "enqueue", "queue": "cron", "payload": 1})["job"]
    stubborn = ["sh", "-c", "trap '' TERM; sleep 917.75 & sleep 917.75; wait"]
    process = subprocess.Popen([BATON_RUN, "-s", batond.socket_path, "-g", "1", "cron", *stubborn])
    assert eventually(lambda: len(sleeps("917.75")) == 2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 143
    assert sleeps("917.75") == []
    assert send(batond, {"op": "get", "job": job})["job"]["state"] == "queued"


def test_a_checkpoint_saved_during_the_grace_period_reaches_the_next_attempt(batond, tmp_path):
    job = send(batond, {"op": "enqueue", "queue": "stages", "payload": 1})["job"]
    # Stage 1 is paid for when SIGTERM comes: the command saves it before it exits.
    script = tmp_path / "stage"
    script.write_text(f"""#!/bin/sh
trap '{BATON_RUN} --checkpoint "{{\\"stage\\": 1}}" 50 "stage 1 of 2" && exit 143' TERM
{BATON_RUN} --progress 10 "starting" || exit 9
echo started >{tmp_path}/started
sleep 30 & wait
""")
    script.chmod(0o755)
    process = subprocess.Popen([BATON_RUN, "-s", batond.socket_path, "stages", str(script)])
    assert eventually(lambda: (tmp_path / "started").exists())
    assert send(batond, {"op": "get", "job": job})["job"]["progress"] == {"percent": 10, "message": "starting"}
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 143
    record = send(batond, {"op": "get", "job": job})["job"]
    assert record["state"] == "queued" and record["attempts"] == 0
    assert record["checkpoint"] == {"stage": 1} and record["progress"] == {"percent": 50, "message": "stage 1 of 2"}
    resumed = run(batond, "stages", "sh", "-c", 'echo "$BATON_JOB_CHECKPOINT"')
    assert resumed.returncode == 0 and json.loads(resumed.stdout) == {"stage": 1}


def test_the_helpers_refuse_outside_a_job_and_after_the_job_is_gone(batond):
    outside = subprocess.run([BATON_RUN, "--checkpoint", "{}"], capture_output=True, text=True, timeout=10)
    assert outside.returncode == 64 and "inside a command" in outside.stderr
    job = send(batond, {"op": "enqueue", "queue": "cron", "payload": 1})["job"]
    # The command cancels its own job, then finds its checkpoint refused.
    script = f'printf \'{{"op":"cancel","job":%s}}\\n\' "$BATON_JOB_ID" | socat - UNIX-CONNECT:"$BATON_SOCKET" >/dev/null; {BATON_RUN} --checkpoint 1; echo "status $?" >&2'
    done = run(batond, "cron", "sh", "-c", script)
    assert "status 1" in done.stderr and "cancelled" in done.stderr, done.stderr
    assert send(batond, {"op": "get", "job": job})["job"]["state"] == "cancelled"


def test_a_command_outlives_a_batond_restart_and_still_completes(batond):
    job = send(batond, {"op": "enqueue", "queue": "cron", "payload": 1, "lease_ms": 1500})["job"]
    process = subprocess.Popen([BATON_RUN, "-s", batond.socket_path, "cron", "sh", "-c", "sleep 3; echo '{\"ok\": true}'"])
    assert eventually(lambda: send(batond, {"op": "get", "job": job})["job"]["state"] == "running")
    batond.stop()
    batond.start()
    assert process.wait(timeout=30) == 0
    record = send(batond, {"op": "get", "job": job})["job"]
    assert record["state"] == "completed" and record["result"] == {"ok": True} and record["attempts"] == 1


def test_a_reply_that_is_not_json_is_a_clear_error_not_a_hang(tmp_path):
    import socket as sockets

    path = str(tmp_path / "fake.sock")
    listener = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve():
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.sendall(b"<html>surprise</html>\n")
        connection.close()

    threading.Thread(target=serve, daemon=True).start()
    confused = subprocess.run([BATON_RUN, "-s", path, "q", "true"], capture_output=True, text=True, timeout=30)
    assert confused.returncode == 1 and "not a reply" in confused.stderr


class SocatConnection:
    """A connection made by socat, the shell's way onto the socket.

    Our end never closes first, so `-t 1` only bounds how long socat lingers after batond
    hangs up, which is when the vectors expect end of file.
    """

    def __init__(self, path):
        self.process = subprocess.Popen(
            ["socat", "-t", "1", "-", f"UNIX-CONNECT:{path}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.lines = []
        self.arrived = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            with self.arrived:
                self.lines.append(line)
                self.arrived.notify_all()
        with self.arrived:
            self.lines.append(None)
            self.arrived.notify_all()

    def send_line(self, line):
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def read_reply(self, timeout):
        with self.arrived:
            if not self.arrived.wait_for(lambda: self.lines, timeout):
                raise TimeoutError("no reply through socat")
            line = self.lines[0] if self.lines[0] is None else self.lines.pop(0)
        return None if line is None else json.loads(line)

    def close(self):
        self.process.kill()
        self.process.wait()


@pytest.mark.parametrize("vector", conformance.all_vectors(), ids=lambda vector: vector.name)
def test_vector_through_socat(vector):
    server = Batond(vector.flags)
    try:
        conformance.replay(vector, lambda: SocatConnection(server.socket_path))
    finally:
        server.stop()
