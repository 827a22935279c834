"""The client: every op of the Baton protocol (protocol/PROTOCOL.md) as a method."""
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional

from . import tracing
from .connection import Connection
from .errors import RETRY_LATER_CODES, BatonError, ConnectionLost

DEFAULT_SOCKET = os.path.join("baton-data", "baton.sock")


class _Null:
    """An explicit JSON null among ``Client.request``'s fields, which otherwise leave out None."""

    def __repr__(self) -> str:
        return "NULL"


NULL: Any = _Null()


class _Keep:
    """A setting ``set_queue`` leaves as it is."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()

# Ops that may be sent again when the connection drops before their reply, as PROTOCOL.md
# lists them ("Ops safe to resend"; tests/test_contract.py keeps the two the same).
REPEATABLE = frozenset(
    {
        "hello", "get", "list", "stats", "events", "health", "metrics", "workers",
        "heartbeat", "checkpoint", "complete", "pause_queue", "resume_queue", "set_queue",
        "set_priority", "schedules", "unschedule", "set_limit", "limits",
    }
)


@dataclass
class Enqueued:
    job: int
    duplicate: bool


@dataclass
class Lease:
    """A claimed job and the lease it is held under; pass it back to heartbeat and finish it."""

    id: int
    queue: str
    payload: Any
    attempt: int
    max_attempts: int
    token: int
    lease_ms: int
    lease_expires_at: int
    checkpoint: Any
    progress: Any
    #: The producer's trace context (``{traceparent, tracestate?}``), if the job has one.
    trace: Optional[Dict[str, str]] = None

    @classmethod
    def from_reply(cls, job: Dict[str, Any]) -> "Lease":
        return cls(**{name: job.get(name) for name in cls.__dataclass_fields__})


class Client:
    """A connection to batond, shared safely between threads.

    ``socket_path`` defaults to ``$BATON_SOCKET``, else ``baton-data/baton.sock``. When
    batond restarts, the next request reconnects (trying for up to ``reconnect_timeout``
    seconds); a request whose reply was lost is sent again only if repeating it is
    harmless, otherwise it raises ``ConnectionLost``.
    """

    def __init__(
        self, socket_path: Optional[str] = None, *, timeout: float = 30.0, reconnect_timeout: float = 30.0
    ) -> None:
        self.socket_path = socket_path or os.environ.get("BATON_SOCKET") or DEFAULT_SOCKET
        self.timeout = timeout
        self.reconnect_timeout = reconnect_timeout
        self._connection: Optional[Connection] = None
        self._lock = threading.Lock()
        self._closed = False
        self._ever_connected = False

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()

    # The transport

    def request(self, op: str, **fields: Any) -> Dict[str, Any]:
        """Sends one request and returns its successful reply; raises ``BatonError`` when
        batond refuses it. Fields given as ``None`` are left out; ``NULL`` sends a JSON null."""
        message = {"op": op}
        for name, value in fields.items():
            if value is not None:
                message[name] = None if value is NULL else value
        wait = (message.get("wait_ms") or 0) / 1000
        deadline = time.monotonic() + self.reconnect_timeout
        pause = 0.05
        while True:
            connection = self._connect(deadline)
            try:
                reply = connection.request(message, self.timeout + wait)
            except ConnectionLost:
                if op not in REPEATABLE or time.monotonic() > deadline or self._closed:
                    raise
                continue
            code = (reply.get("error") or {}).get("code")
            # "Not now": sent again after a pause, like a lost reply (PROTOCOL.md).
            if code in RETRY_LATER_CODES and op in REPEATABLE and time.monotonic() + pause < deadline and not self._closed:
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            break
        if not reply["ok"]:
            error = reply.get("error") or {}
            raise BatonError(str(error.get("code", "internal")), str(error.get("message", "")), error.get("state"))
        return reply

    def _connect(self, deadline: float) -> Connection:
        with self._lock:
            if self._closed:
                raise ConnectionLost("the client is closed")
            if self._connection is not None and self._connection.is_open:
                return self._connection
            # A path with no socket, before any connection, is a mistake to report at once;
            # later, it is batond restarting, which removes and re-creates its socket.
            if not self._ever_connected and not os.path.exists(self.socket_path):
                raise ConnectionLost(
                    f"no batond socket at {self.socket_path}: is batond running? Pass the path, or set BATON_SOCKET"
                )
            delay = 0.05
            while True:
                try:
                    self._connection = Connection(self.socket_path)
                    self._ever_connected = True
                    return self._connection
                except ConnectionLost:
                    if time.monotonic() + delay > deadline:
                        raise
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)

    # Producing

    def hello(self, client: Optional[str] = None) -> Dict[str, Any]:
        return self.request("hello", client=client)

    def enqueue(
        self,
        queue: str,
        payload: Any = None,
        *,
        priority: Optional[int] = None,
        delay_ms: Optional[int] = None,
        run_at: Optional[int] = None,
        max_attempts: Optional[int] = None,
        backoff: Optional[Dict[str, Any]] = None,
        lease_ms: Optional[int] = None,
        unique_key: Optional[str] = None,
        concurrency_key: Optional[str] = None,
        after: Optional[Iterable[int]] = None,
        timeout_ms: Optional[int] = None,
        limits: Optional[Iterable[str]] = None,
        group: Optional[str] = None,
        trace: Any = None,
    ) -> Enqueued:
        """Adds a job. ``timeout_ms`` limits each attempt: one that runs longer is stopped,
        even while it heartbeats, and retried (without it, the queue's limit applies).
        ``limits`` names the limits (``set_limit``) the job counts against, at most four;
        ``group`` is its fair-share group: claims rotate across a queue's groups.
        ``trace`` is the W3C trace context the job carries to its workers: by default the
        caller's (OpenTelemetry's current span, else ``$TRACEPARENT``); a ``traceparent``
        string or a ``{traceparent, tracestate}`` dict to give one; False for none."""
        reply = self.request(
            "enqueue", queue=queue, payload=NULL if payload is None else payload, priority=priority, delay_ms=delay_ms, run_at=run_at,
            max_attempts=max_attempts, backoff=backoff, lease_ms=lease_ms, unique_key=unique_key,
            concurrency_key=concurrency_key, after=list(after) if after else None, timeout_ms=timeout_ms,
            limits=list(limits) if limits else None, group=group, trace=tracing.resolve(trace),
        )
        return Enqueued(reply["job"], reply["duplicate"])

    def enqueue_batch(self, jobs: List[Dict[str, Any]]) -> List[Enqueued]:
        """Enqueues jobs (each a dict of ``enqueue``'s arguments, with ``queue`` and
        ``payload``) in one commit, all or nothing. A job without a ``trace`` carries the
        caller's, as with ``enqueue``."""
        caller = tracing.current()
        if caller is not None:
            jobs = [job if "trace" in job else {**job, "trace": caller} for job in jobs]
        reply = self.request("enqueue_batch", jobs=jobs)
        return [Enqueued(item["job"], item["duplicate"]) for item in reply["jobs"]]

    # Working

    def claim(
        self,
        queues: Iterable[str],
        *,
        worker: Optional[str] = None,
        lease_ms: Optional[int] = None,
        wait_ms: int = 0,
        detached: bool = False,
    ) -> Optional[Lease]:
        """Leases the best ready job of ``queues``, waiting up to ``wait_ms`` for one.

        ``detached=True`` when the lease outlives this process (another one reports the
        outcome); otherwise the server ends it at once should this process exit."""
        reply = self.request(
            "claim", queues=list(queues), worker=worker, lease_ms=lease_ms, wait_ms=wait_ms or None, detached=detached or None
        )
        return Lease.from_reply(reply["job"]) if reply["job"] is not None else None

    def heartbeat(self, lease: Lease, *, lease_ms: Optional[int] = None, progress: Optional[Dict[str, Any]] = None) -> int:
        """Renews the lease; returns its new expiry (wall-clock ms)."""
        return self.request("heartbeat", job=lease.id, token=lease.token, lease_ms=lease_ms, progress=progress)["lease_expires_at"]

    def checkpoint(self, lease: Lease, state: Any, *, progress: Optional[Dict[str, Any]] = None) -> int:
        """Stores ``state`` durably; the next attempt after a failure resumes from it."""
        return self.request("checkpoint", job=lease.id, token=lease.token, state=state, progress=progress)["lease_expires_at"]

    def complete(self, lease: Lease, result: Any = None, *, enqueue: Optional[List[Dict[str, Any]]] = None) -> List[Enqueued]:
        """Finishes the job; ``enqueue`` follow-ups commit with it, all or nothing."""
        reply = self.request("complete", job=lease.id, token=lease.token, result=result, enqueue=enqueue)
        return [Enqueued(item["job"], item["duplicate"]) for item in reply.get("jobs", [])]

    def complete_and_claim(
        self, lease: Lease, queues: Iterable[str], result: Any = None, *, enqueue: Optional[List[Dict[str, Any]]] = None,
        worker: Optional[str] = None, lease_ms: Optional[int] = None,
    ) -> Optional[Lease]:
        """Finishes the job and, in the same request, leases the next ready job of ``queues``:
        one round trip per job instead of two. Returns ``None`` when none was ready (then
        ``claim`` with a wait). A repeat after a lost reply claims again; the job the lost
        reply leased expires like any other."""
        claim = {"queues": list(queues), **({"worker": worker} if worker else {}), **({"lease_ms": lease_ms} if lease_ms else {})}
        reply = self.request("complete", job=lease.id, token=lease.token, result=result, enqueue=enqueue, claim=claim)
        return Lease.from_reply(reply["job"]) if reply["job"] is not None else None

    def fail(self, lease: Lease, error: str, *, retry: bool = True, retry_in_ms: Optional[int] = None) -> str:
        """Ends the attempt unsuccessfully; returns the job's state (retrying or failed)."""
        return self.request(
            "fail", job=lease.id, token=lease.token, error=error, retry=None if retry else False, retry_in_ms=retry_in_ms
        )["state"]

    def release(self, lease: Lease, *, delay_ms: Optional[int] = None) -> None:
        """Gives the job back without spending its attempt."""
        self.request("release", job=lease.id, token=lease.token, delay_ms=delay_ms)

    # Watching and controlling

    def get(self, job: int) -> Dict[str, Any]:
        return self.request("get", job=job)["job"]

    def list(
        self, *, queue: Optional[str] = None, state: Optional[str] = None, limit: Optional[int] = None,
        after: Optional[int] = None, oldest_first: bool = False,
    ) -> Dict[str, Any]:
        """A page of jobs: ``{"jobs": [...], "next": cursor or None}``."""
        reply = self.request(
            "list", queue=queue, state=state, limit=limit, after=after, order="oldest" if oldest_first else None
        )
        return {"jobs": reply["jobs"], "next": reply["next"]}

    def stats(self) -> Dict[str, Any]:
        reply = self.request("stats")
        return {key: value for key, value in reply.items() if key not in ("id", "ok")}

    def events(self, job: int) -> List[Dict[str, Any]]:
        return self.request("events", job=job)["events"]

    def cancel(self, job: int, reason: Optional[str] = None) -> None:
        self.request("cancel", job=job, reason=reason)

    def pause(self, job: int) -> None:
        self.request("pause", job=job)

    def resume(self, job: int) -> None:
        self.request("resume", job=job)

    def retry(self, job: int) -> None:
        self.request("retry", job=job)

    def schedule(
        self,
        name: str,
        queue: str,
        payload: Any = None,
        *,
        cron: Optional[str] = None,
        timezone: Optional[str] = None,
        every_ms: Optional[int] = None,
        overlap: Optional[str] = None,
        catch_up: Optional[str] = None,
        priority: Optional[int] = None,
        trace: Any = False,
    ) -> Optional[int]:
        """Creates or replaces the recurring job ``name``: a job of ``queue`` with ``payload`` at
        each slot of ``cron`` (in ``timezone``) or every ``every_ms``. ``overlap="skip"`` enqueues
        nothing while the last job is unfinished; ``catch_up="latest"`` fires the latest slot
        missed while batond was down. Each slot fires at most once. Returns the next slot.
        ``trace`` (none unless given; None for the caller's) is carried by every job it enqueues."""
        reply = self.request(
            "schedule", name=name, queue=queue, payload=NULL if payload is None else payload, cron=cron, timezone=timezone,
            every_ms=every_ms, overlap=overlap, catch_up=catch_up, priority=priority, trace=tracing.resolve(trace),
        )
        return reply["next_at"]

    def unschedule(self, name: str) -> bool:
        """Deletes a recurring job; whether there was one."""
        return self.request("unschedule", name=name)["removed"]

    def schedules(self) -> List[Dict[str, Any]]:
        """Every recurring job, by name, with its next slot and last job."""
        return self.request("schedules")["schedules"]

    def retry_where(self, queue: str, state: str, *, error_contains: Optional[str] = None, limit: Optional[int] = None) -> Dict[str, Any]:
        """Retries every ``failed`` or ``cancelled`` job of ``queue`` in ``state`` (whose
        last error contains ``error_contains``, up to ``limit``), in steps batond interleaves
        with other requests. Returns ``{"changed": n, "done": bool}``."""
        return self._change("retry", queue, state, error_contains=error_contains, limit=limit)

    def cancel_where(
        self, queue: str, state: str, *, error_contains: Optional[str] = None, limit: Optional[int] = None, reason: Optional[str] = None
    ) -> Dict[str, Any]:
        """Cancels every ``queued``, ``retrying`` or ``paused`` job of ``queue`` in ``state``
        that matches; see ``retry_where``."""
        return self._change("cancel", queue, state, error_contains=error_contains, limit=limit, reason=reason)

    def purge(self, queue: str, state: str, *, error_contains: Optional[str] = None, limit: Optional[int] = None) -> Dict[str, Any]:
        """Deletes every finished job of ``queue`` in ``state`` that matches, with its audit
        trail; see ``retry_where``."""
        return self._change("purge", queue, state, error_contains=error_contains, limit=limit)

    def _change(self, op: str, queue: str, state: str, **fields: Any) -> Dict[str, Any]:
        reply = self.request(op, queue=queue, state=state, **fields)
        return {"changed": reply["changed"], "done": reply["done"]}

    def set_priority(self, job: int, priority: int) -> str:
        """Gives an unfinished job a new priority; returns its state, unchanged. A queued job
        moves in the claim order at once, a running one keeps it for its next attempt."""
        return self.request("set_priority", job=job, priority=priority)["state"]

    def set_limit(self, name: str, max_running: Any = KEEP, *, rate: Any = KEEP, breaker: Any = KEEP) -> Dict[str, Any]:
        """Creates or changes a named limit (``tenant:*`` is a template for every
        ``tenant:...``); settings not given stay, ``None`` removes one. ``max_running`` caps
        the running jobs that name it, in any queue; ``rate`` is ``{"count": n, "per_ms": ms}``,
        at most ``n`` starts in any ``ms``; ``breaker`` is ``{"failures", "window_ms",
        "cooldown_ms"}``, a circuit breaker over its jobs' outcomes (setting the limit closes
        it by hand). Returns ``{"max_running", "rate", "breaker"}`` as set now."""
        return self._change_settings("set_limit", {"name": name}, (("max_running", max_running), ("rate", rate), ("breaker", breaker)))

    def limits(self) -> List[Dict[str, Any]]:
        """Every limit set and every name in use, each with ``rule``, its settings,
        ``running``, ``started_in_window`` and ``holding``."""
        return self.request("limits")["limits"]

    def pause_queue(self, queue: str) -> None:
        self.request("pause_queue", queue=queue)

    def resume_queue(self, queue: str) -> None:
        self.request("resume_queue", queue=queue)

    def set_queue(self, queue: str, max_running: Any = KEEP, *, timeout_ms: Any = KEEP, breaker: Any = KEEP) -> Dict[str, Any]:
        """Changes the settings given and keeps the others; ``None`` removes one.
        ``max_running`` caps the queue's running jobs; ``timeout_ms`` limits each attempt of
        its jobs that set no limit of their own; ``breaker`` is its circuit breaker,
        ``{"failures": n, "window_ms": ms, "cooldown_ms": ms}``. Returns the queue's settings now."""
        return self._change_settings("set_queue", {"queue": queue}, (("max_running", max_running), ("timeout_ms", timeout_ms), ("breaker", breaker)))

    def _change_settings(self, op: str, subject: Dict[str, str], settings: Iterable[Any]) -> Dict[str, Any]:
        """Sends the settings given (``KEEP`` leaves one out, ``None`` removes it) and
        returns all of them as they are now."""
        settings = tuple(settings)
        if all(value is KEEP for _, value in settings):
            raise ValueError(f"{op} needs a setting to change: " + ", ".join(name for name, _ in settings))
        fields = {name: NULL if value is None else value for name, value in settings if value is not KEEP}
        reply = self.request(op, **subject, **fields)
        return {name: reply[name] for name, _ in settings}
