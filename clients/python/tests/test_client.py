import os
import socket
import tempfile
import threading
import time

import pytest

from baton import BatonError, Client, ConnectionLost, ProtocolError


def test_a_job_from_enqueue_to_completion(client):
    enqueued = client.enqueue("docs", {"file": "a.pdf"}, priority=3, unique_key="a.pdf")
    assert not enqueued.duplicate
    assert client.enqueue("docs", {"file": "a.pdf"}, unique_key="a.pdf").job == enqueued.job
    lease = client.claim(["docs"], worker="py-test")
    assert lease is not None and lease.id == enqueued.job and lease.payload == {"file": "a.pdf"}
    assert client.heartbeat(lease, progress={"percent": 10}) > time.time() * 1000
    client.checkpoint(lease, {"stage": "parsed"})
    follow_ups = client.complete(lease, {"pages": 3}, enqueue=[{"queue": "embed", "payload": enqueued.job}])
    job = client.get(enqueued.job)
    assert job["state"] == "completed" and job["result"] == {"pages": 3} and job["checkpoint"] == {"stage": "parsed"}
    assert client.get(follow_ups[0].job)["queue"] == "embed"
    assert [event["event"] for event in client.events(enqueued.job)] == ["enqueued", "claimed", "checkpointed", "completed"]


def test_completing_can_lease_the_next_job_in_the_same_request(client):
    first = client.enqueue("chain", 1).job
    second = client.enqueue("chain", 2).job
    lease = client.claim(["chain"])
    assert lease is not None and lease.id == first
    following = client.complete_and_claim(lease, ["chain"], {"pages": 3}, worker="py")
    assert following is not None and following.id == second and following.payload == 2
    done, running = client.get(first), client.get(second)
    assert done["state"] == "completed" and done["result"] == {"pages": 3}
    assert running["state"] == "running" and running["lease"]["worker"] == "py"
    assert running["started_at"] == done["finished_at"], "leased in the completion's own commit"
    assert client.complete_and_claim(following, ["chain"]) is None
    assert client.get(second)["state"] == "completed"


def test_refusals_carry_the_code_and_the_jobs_state(client):
    job = client.enqueue("q", None, lease_ms=100, backoff={"initial_ms": 0, "max_ms": 0}).job
    stale = client.claim(["q"])
    time.sleep(0.3)
    fresh = client.claim(["q"], wait_ms=2000)
    assert fresh is not None and fresh.token > stale.token
    with pytest.raises(BatonError) as refused:
        client.complete(stale)
    assert refused.value.code == "lease_lost" and refused.value.state == "running"
    with pytest.raises(BatonError) as missing:
        client.get(999_999)
    assert missing.value.code == "not_found"
    assert client.get(job)["payload"] is None


def test_set_priority_reorders_queued_jobs(client):
    older = client.enqueue("prio", 1).job
    newer = client.enqueue("prio", 2).job
    assert client.set_priority(newer, 7) == "queued"
    lease = client.claim(["prio"])
    assert lease.id == newer
    assert client.set_priority(lease.id, -1) == "running"
    assert client.get(older)["priority"] == 0


def test_a_schedule_enqueues_a_job_per_slot(client):
    assert client.schedule("tick", "ticks", {"n": 1}, every_ms=100, overlap="skip") is not None
    lease = client.claim(["ticks"], wait_ms=5000)
    assert lease is not None and lease.payload == {"n": 1}
    [listed] = client.schedules()
    assert listed["name"] == "tick" and listed["last_job"] == lease.id and listed["overlap"] == "skip"
    assert client.unschedule("tick") is True and client.schedules() == []


def test_a_breaker_holds_claims_after_failures(client):
    settings = client.set_queue("flaky", breaker={"failures": 1, "window_ms": 60000, "cooldown_ms": 60000})
    assert settings["breaker"] == {"failures": 1, "window_ms": 60000, "cooldown_ms": 60000}
    client.enqueue("flaky", 1, backoff={"initial_ms": 0})
    assert client.fail(client.claim(["flaky"]), "HTTP 503") == "retrying"
    assert client.claim(["flaky"]) is None
    assert client.stats()["breakers"]["flaky"]["state"] == "open"
    assert client.set_queue("flaky", breaker=None)["breaker"] is None
    assert client.claim(["flaky"]) is not None


def test_a_named_limit_holds_jobs_across_queues(client):
    assert client.set_limit("gpu", 1) == {"max_running": 1, "rate": None, "breaker": None}
    client.enqueue("lim-extract", 1, limits=["gpu"])
    client.enqueue("lim-embed", 2, limits=["gpu"])
    first = client.claim(["lim-extract", "lim-embed"])
    assert client.claim(["lim-extract", "lim-embed"]) is None
    [gpu] = client.limits()
    assert gpu["name"] == "gpu" and gpu["running"] == 1 and gpu["waiting"] == 1
    assert client.set_limit("gpu", rate={"count": 5, "per_ms": 1000})["rate"] == {"count": 5, "per_ms": 1000}
    client.complete(first)
    assert client.claim(["lim-extract", "lim-embed"]) is not None


def test_groups_take_turns(client):
    for group in ("big", "big", "big", "small"):
        client.enqueue("fair", group, group=group)
    assert [client.claim(["fair"]).payload for _ in range(2)] == ["big", "small"]


def test_retry_cancel_and_purge_by_filter(client):
    for error in ("HTTP 429", "bad input"):
        client.enqueue("dlq", error, max_attempts=1)
        lease = client.claim(["dlq"])
        assert client.fail(lease, error) == "failed"
    assert client.retry_where("dlq", "failed", error_contains="429") == {"changed": 1, "done": True}
    assert client.cancel_where("dlq", "queued", reason="superseded") == {"changed": 1, "done": True}
    assert client.purge("dlq", "failed") == {"changed": 1, "done": True}
    counts = client.stats()["queues"]["dlq"]
    assert counts["failed"] == 0 and counts["cancelled"] == 1


def test_job_and_queue_control(client):
    first = client.enqueue("ctl", 1, max_attempts=1).job
    second = client.enqueue("ctl", 2).job
    batch = client.enqueue_batch([{"queue": "other", "payload": 3}, {"queue": "other", "payload": 4}])
    assert len(batch) == 2
    client.pause(second)
    client.set_queue("ctl", 1)
    lease = client.claim(["ctl"])
    assert lease.id == first
    assert client.claim(["ctl"]) is None
    assert client.fail(lease, "bad input") == "failed"
    client.retry(first)
    client.cancel(first, reason="not needed")
    client.resume(second)
    client.pause_queue("ctl")
    assert client.claim(["ctl"]) is None
    client.resume_queue("ctl")
    client.set_queue("ctl", None)
    again = client.claim(["ctl"])
    assert again.id == second
    client.release(again)
    stats = client.stats()
    assert stats["queues"]["ctl"]["queued"] == 1 and stats["queues"]["ctl"]["cancelled"] == 1
    page = client.list(queue="other", limit=1, oldest_first=True)
    assert [job["payload"] for job in page["jobs"]] == [3] and page["next"] is not None
    assert client.hello("pytest")["protocol"] == 1


def test_a_waiting_claim_does_not_hold_up_other_threads(client):
    result = {}
    waiting = threading.Thread(target=lambda: result.setdefault("lease", client.claim(["later"], wait_ms=10_000)))
    waiting.start()
    time.sleep(0.2)
    started = time.monotonic()
    job = client.enqueue("later", "now").job
    assert time.monotonic() - started < 5, "the enqueue went out while the claim waited"
    waiting.join(10)
    assert result["lease"].id == job


def test_the_client_reconnects_when_batond_restarts(batond, client):
    job = client.enqueue("restart", 1).job
    batond.stop()
    batond.start()
    assert client.get(job)["state"] == "queued"
    assert client.claim(["restart"]).id == job


def test_with_batond_down_a_request_fails_once_the_reconnect_time_is_up(batond, client):
    client.stats()
    batond.stop()
    client.reconnect_timeout = 0.2
    with pytest.raises(ConnectionLost, match="connect"):
        client.enqueue("q", 1)


@pytest.mark.skipif(not os.environ.get("BATON_TEST_POSTGRES"), reason="needs PostgreSQL (scripts/test installs it)")
def test_while_the_store_is_unreachable_reads_wait_and_other_ops_say_unavailable():
    from conformance import Batond, ThrowawayPostgres

    postgres = ThrowawayPostgres()
    server = Batond(store=postgres.url)
    try:
        # The first request after the loss may wait out batond's 15 s before it gives up.
        with Client(server.socket_path, timeout=30, reconnect_timeout=30) as client:
            assert "queues" in client.stats()
            postgres.down()
            # An enqueue may not be sent twice: the caller is told, and decides.
            with pytest.raises(BatonError) as refused:
                client.enqueue("q", 1)
            assert refused.value.code == "unavailable"
            answered = []
            reader = threading.Thread(target=lambda: answered.append(client.stats()))
            reader.start()
            time.sleep(0.5)
            assert not answered, "a read waits while the store is away"
            postgres.up()
            reader.join(30)
            assert answered and "queues" in answered[0], "and is answered once it is back"
    finally:
        server.stop()
        postgres.remove()


def test_a_path_with_no_socket_fails_at_once_naming_it(tmp_path):
    missing = str(tmp_path / "nothing.sock")
    # With the default 30 s of reconnecting, only an immediate refusal names the path so.
    with pytest.raises(ConnectionLost, match="no batond socket at " + missing):
        Client(missing).stats()


def test_the_socket_is_the_argument_then_baton_socket_then_the_default(monkeypatch):
    monkeypatch.setenv("BATON_SOCKET", "/from/env.sock")
    assert Client("/given.sock").socket_path == "/given.sock"
    assert Client().socket_path == "/from/env.sock"
    monkeypatch.delenv("BATON_SOCKET")
    assert Client().socket_path == "baton-data/baton.sock"


def fake_server(behaviour):
    directory = tempfile.mkdtemp(prefix="baton-fake-")
    path = os.path.join(directory, "fake.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve():
        connection, _ = listener.accept()
        connection.recv(65536)
        behaviour(connection)

    threading.Thread(target=serve, daemon=True).start()
    return path


def test_a_reply_that_is_not_json_is_a_clear_error_not_a_hang():
    path = fake_server(lambda connection: connection.sendall(b"<html>surprise</html>\n"))
    with pytest.raises(ProtocolError, match="not JSON"):
        Client(path, timeout=5).stats()


def test_a_reply_to_no_request_is_a_clear_error():
    path = fake_server(lambda connection: connection.sendall(b'{"id":424242,"ok":true}\n'))
    with pytest.raises(ProtocolError, match="no request"):
        Client(path, timeout=5).stats()


def test_a_server_that_never_answers_times_out():
    path = fake_server(lambda connection: time.sleep(5))
    with pytest.raises(TimeoutError):
        Client(path, timeout=0.5).stats()
