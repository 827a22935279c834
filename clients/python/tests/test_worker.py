import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

from conformance import eventually

from baton import Client, Completion, PermanentFailure, Worker


def run_in_background(worker):
    thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False}, daemon=True)
    thread.start()
    return thread


def test_results_complete_exceptions_retry_from_the_checkpoint_and_permanent_failures_fail(client):
    ok = client.enqueue("work", {"n": 2}).job
    flaky = client.enqueue("work", {"flaky": True}, backoff={"initial_ms": 0, "max_ms": 0}).job
    hopeless = client.enqueue("work", {"hopeless": True}).job
    seen_checkpoints = []

    def handler(job):
        if job.payload.get("flaky"):
            seen_checkpoints.append(job.checkpoint)
            if job.attempt == 1:
                job.save_checkpoint({"stage": "extracted"}, percent=50)
                raise RuntimeError("embedding API timed out")
            return "second time lucky"
        if job.payload.get("hopeless"):
            raise PermanentFailure("unreadable file")
        return job.payload["n"] * 21

    worker = Worker(client, ["work"], handler, concurrency=2, poll_ms=200)
    thread = run_in_background(worker)
    assert eventually(lambda: all(client.get(job)["state"] in ("completed", "failed") for job in (ok, flaky, hopeless)))
    worker.stop()
    thread.join(10)
    assert client.get(ok)["result"] == 42
    assert client.get(flaky)["result"] == "second time lucky"
    assert seen_checkpoints == [None, {"stage": "extracted"}], "the retry resumed from the checkpoint"
    failed = client.get(hopeless)
    assert failed["state"] == "failed" and failed["last_error"] == "unreadable file" and failed["attempts"] == 1


def test_a_handlers_exception_is_stored_with_its_type_and_innermost_frames(client):
    small = client.enqueue("errors", "small", max_attempts=1).job
    huge = client.enqueue("errors", "huge", max_attempts=1).job

    def parse_page(size):
        raise ValueError("bad page 7" if size == "small" else "x" * 100_000)

    worker = Worker(client, ["errors"], lambda job: parse_page(job.payload), poll_ms=200)
    thread = run_in_background(worker)
    assert eventually(lambda: all(client.get(job)["state"] == "failed" for job in (small, huge)))
    worker.stop()
    thread.join(10)
    error = client.get(small)["last_error"]
    assert error.startswith("ValueError: bad page 7\nTraceback"), error
    assert "in parse_page" in error and 'raise ValueError' in error
    bounded = client.get(huge)["last_error"]
    assert len(bounded.encode()) <= 2000 and bounded.startswith("ValueError: xxx") and "in parse_page" in bounded


def test_a_handler_returning_a_completion_commits_its_follow_ups_with_it(client):
    parse = client.enqueue("parse", "report.pdf").job

    def handler(job):
        assert (job.id, job.queue, job.attempt, job.checkpoint, job.progress) == (parse, "parse", 1, None, None)
        pages = [{"queue": "embed", "payload": {"file": job.payload, "page": n}} for n in (1, 2)]
        return Completion({"pages": 2}, enqueue=pages)

    worker = Worker(client, ["parse"], handler, poll_ms=200)
    thread = run_in_background(worker)
    assert eventually(lambda: client.get(parse)["state"] == "completed")
    worker.stop()
    thread.join(10)
    assert client.get(parse)["result"] == {"pages": 2}
    embeds = client.list(queue="embed")["jobs"]
    assert sorted(job["payload"]["page"] for job in embeds) == [1, 2]


def test_a_busy_worker_leases_each_next_job_with_the_completion_of_the_last(client):
    jobs = [client.enqueue("chain", n).job for n in range(5)]
    worker = Worker(client, ["chain"], lambda job: job.payload, poll_ms=200)
    thread = run_in_background(worker)
    assert eventually(lambda: all(client.get(job)["state"] == "completed" for job in jobs))
    worker.stop()
    thread.join(10)
    done = [client.get(job) for job in jobs]
    # Leased by the completion before it, each job started in that completion's own commit.
    assert [job["started_at"] for job in done[1:]] == [job["finished_at"] for job in done[:-1]]


def test_a_cancelled_job_tells_its_handler_to_stop_and_its_result_is_not_reported(client):
    job = client.enqueue("long", None, lease_ms=600).job
    stopped = threading.Event()

    def handler(context):
        context.stopping.wait(20)
        stopped.set()
        return "too late"

    worker = Worker(client, ["long"], handler, poll_ms=200)
    thread = run_in_background(worker)
    assert eventually(lambda: client.get(job)["state"] == "running")
    client.cancel(job, reason="wrong file")
    assert stopped.wait(10), "the handler was told within a heartbeat"
    worker.stop()
    thread.join(10)
    cancelled = client.get(job)
    assert cancelled["state"] == "cancelled" and cancelled["result"] is None
    assert late_outcomes(client) == 0, "the worker reported nothing for the cancelled attempt"


def test_an_attempt_past_its_time_limit_is_stopped_though_it_heartbeats_and_retried(client):
    job = client.enqueue("hung", None, lease_ms=300, timeout_ms=800, backoff={"initial_ms": 0}).job
    reasons = []

    def handler(context):
        if context.attempt == 1:
            context.stopping.wait(20)
            reasons.append(context.stop_reason)
            return "too late"
        return "second try"

    worker = Worker(client, ["hung"], handler, poll_ms=200)
    thread = run_in_background(worker)
    assert eventually(lambda: client.get(job)["state"] == "completed")
    worker.stop()
    thread.join(10)
    done = client.get(job)
    assert reasons == ["timed_out"], "the first attempt's handler was told why it must stop"
    assert done["result"] == "second try" and done["attempts"] == 2
    assert done["earlier_error"] == "timed out after 800 ms"


def late_outcomes(client):
    """How many complete, fail or release requests came for jobs cancelled or paused under them."""
    samples = client.request("metrics", format="json")["samples"]
    return next(sample["value"] for sample in samples if sample["name"] == "baton_late_outcomes_total")


def test_heartbeats_keep_a_long_job_alive_past_its_lease(client):
    job = client.enqueue("slow", None, lease_ms=300).job

    def handler(context):
        time.sleep(1.2)
        context.report_progress(100, "done")
        return "finished"

    worker = Worker(client, ["slow"], handler, poll_ms=200)
    thread = run_in_background(worker)
    assert eventually(lambda: client.get(job)["state"] == "completed")
    worker.stop()
    thread.join(10)
    assert client.get(job)["attempts"] == 1, "the lease never expired"


def test_the_worker_carries_on_when_batond_restarts(batond, client):
    first = client.enqueue("steady", 1).job
    done = []

    def handler(context):
        done.append(context.payload)
        return context.payload

    worker = Worker(client, ["steady"], handler, poll_ms=200)
    thread = run_in_background(worker)
    assert eventually(lambda: client.get(first)["state"] == "completed")
    batond.stop()
    batond.start()
    second = client.enqueue("steady", 2).job
    assert eventually(lambda: client.get(second)["state"] == "completed")
    worker.stop()
    thread.join(10)
    assert done == [1, 2]


WORKER_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from baton import Client, Worker

    def handler(job):
        print("started", flush=True)
        job.stopping.wait(60)
        # The stage that ends in the grace period is kept.
        job.save_checkpoint({"stage": "finished after SIGTERM"})
        if job.payload == "finish":
            return "done in the grace period"
        job.raise_if_stopping()

    Worker(Client(sys.argv[1]), ["shutdown"], handler, poll_ms=200).run()
    """
)


def run_until_sigterm(batond):
    """Runs WORKER_SCRIPT until its handler has started on the job, then sends SIGTERM."""
    source = os.path.join(os.path.dirname(__file__), "..", "src")
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, batond.socket_path, source], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "started"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        process.kill()


def test_sigterm_keeps_a_checkpoint_saved_in_the_grace_period_and_releases_the_job_unspent(batond, client):
    job = client.enqueue("shutdown", "stop").job
    run_until_sigterm(batond)
    released = client.get(job)
    assert released["state"] == "queued" and released["attempts"] == 0
    assert released["checkpoint"] == {"stage": "finished after SIGTERM"}
    # The next attempt starts from it.
    assert client.claim(["shutdown"]).checkpoint == {"stage": "finished after SIGTERM"}


def test_a_handler_that_finishes_in_the_grace_period_completes_its_job(batond, client):
    job = client.enqueue("shutdown", "finish").job
    run_until_sigterm(batond)
    finished = client.get(job)
    assert finished["state"] == "completed" and finished["result"] == "done in the grace period"


def test_the_readme_worker_runs_as_written(batond, client):
    import re

    readme = (os.path.dirname(__file__) + "/../README.md")
    code = re.search(r"## A worker\n\n```python\n(.*?)```", open(readme).read(), re.S).group(1)
    assert len(code.splitlines()) < 30
    source = os.path.join(os.path.dirname(__file__), "..", "src")
    environment = {**os.environ, "BATON_SOCKET": batond.socket_path, "PYTHONPATH": source}
    process = subprocess.Popen([sys.executable, "-c", code], env=environment, stderr=subprocess.PIPE, text=True)
    try:
        assert eventually(lambda: client.stats()["queues"].get("embed", {}).get("completed") == 1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, process.stderr.read()
    finally:
        process.kill()
    job = client.list(queue="embed")["jobs"][0]
    assert job["result"] == {"vectors": 12} and job["checkpoint"] == {"stage": "chunked"}
