"""A worker: claims jobs, runs a handler on each, heartbeats while it runs, and finishes
the job by what the handler did."""
import logging
import signal
import threading
import time
import traceback
from typing import Any, Callable, Dict, Iterable, List, Optional

from . import tracing
from .client import Client, Lease
from .errors import LEASE_ENDING_CODES, BatonError, ConnectionLost

log = logging.getLogger("baton.worker")


class Stopped(Exception):
    """Raised in a handler (by ``JobContext.raise_if_stopping``) when it must stop: its
    lease was lost, the job was cancelled or paused, or the worker is shutting down."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"stop working on this job: {reason}")
        self.reason = reason


class PermanentFailure(Exception):
    """Raise it from a handler to fail the job for good, without retries."""


class Completion:
    """Return it from a handler to complete the job with ``result`` and follow-up jobs
    (``enqueue``: dicts with ``enqueue``'s arguments, such as ``{"queue": "embed",
    "payload": ...}``), enqueued in the same commit as the completion, all or nothing."""

    def __init__(self, result: Any = None, *, enqueue: Optional[List[Dict[str, Any]]] = None) -> None:
        self.result = result
        self.enqueue = list(enqueue or [])


class JobContext:
    """What a handler gets: the job, its last checkpoint, and ways to report on it."""

    def __init__(self, client: Client, lease: Lease) -> None:
        self.lease = lease
        self.id = lease.id
        self.queue = lease.queue
        self.payload = lease.payload
        self.checkpoint = lease.checkpoint
        #: The progress the last attempt reported, as claimed.
        self.progress = lease.progress
        self.attempt = lease.attempt
        #: The trace context of the span the handler runs in (``{traceparent, tracestate?}``):
        #: the worker's consumer span where OpenTelemetry is installed, else the producer's.
        #: Follow-ups returned in a ``Completion`` carry it unless they name their own.
        self.trace: Optional[Dict[str, str]] = lease.trace
        #: Set when the handler should stop; ``stop_reason`` says why.
        self.stopping = threading.Event()
        self.stop_reason: Optional[str] = None
        self._client = client
        self._progress: Optional[Dict[str, Any]] = None
        self._lock = threading.Lock()

    def save_checkpoint(self, state: Any, percent: Optional[float] = None, message: Optional[str] = None) -> None:
        """Stores ``state`` durably: a retry of this job starts from it.

        Allowed during a shutdown's grace period, so that a stage finished then is kept;
        refused (``Stopped``) once the lease is gone."""
        if self.stop_reason not in (None, "shutdown"):
            raise Stopped(self.stop_reason)
        progress = _progress(percent, message)
        try:
            self._client.checkpoint(self.lease, state, progress=progress)
        except BatonError as error:
            if error.code in LEASE_ENDING_CODES:
                self.stop(error.code)
                raise Stopped(error.code) from error
            raise
        self.checkpoint = state

    def report_progress(self, percent: float, message: Optional[str] = None) -> None:
        """Progress to send with the next heartbeat (shown by ``get`` and ``list``)."""
        with self._lock:
            self._progress = _progress(percent, message)

    def raise_if_stopping(self) -> None:
        if self.stopping.is_set():
            raise Stopped(self.stop_reason or "stopping")

    def stop(self, reason: str) -> None:
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
        self.stopping.set()

    def _take_progress(self) -> Optional[Dict[str, Any]]:
        with self._lock:
            progress, self._progress = self._progress, None
            return progress


def _progress(percent: Optional[float], message: Optional[str]) -> Optional[Dict[str, Any]]:
    if percent is None:
        return None
    return {"percent": percent, **({"message": message} if message is not None else {})}


Handler = Callable[[JobContext], Any]


class Worker:
    """Runs ``handler`` on jobs of ``queues``, up to ``concurrency`` at a time.

    The handler's return value completes the job; an exception fails the attempt (it is
    retried by the job's rules), ``PermanentFailure`` fails it for good. While it runs,
    the worker heartbeats at a third of the lease. When the lease is lost, or the job is
    cancelled or paused, ``context.stopping`` is set and its result is not reported.

    ``run()`` blocks until ``stop()`` or SIGTERM/SIGINT: then no more jobs are claimed,
    running handlers are asked to stop (``context.stopping``, reason ``"shutdown"``) and
    given ``shutdown_grace`` seconds (30 by default), during which they may still save
    checkpoints and complete; a job still unfinished then is released (its attempt is not
    spent).
    """

    def __init__(
        self,
        client: Client,
        queues: Iterable[str],
        handler: Handler,
        *,
        concurrency: int = 1,
        name: Optional[str] = None,
        lease_ms: Optional[int] = None,
        shutdown_grace: float = 30.0,
        poll_ms: int = 1000,
    ) -> None:
        self.client = client
        self.queues = list(queues)
        self.handler = handler
        self.concurrency = concurrency
        self.name = name
        self.lease_ms = lease_ms
        self.shutdown_grace = shutdown_grace
        self.poll_ms = poll_ms
        self._stopping = threading.Event()
        self._active: Dict[int, JobContext] = {}
        self._renewed: Dict[int, float] = {}
        self._lock = threading.Lock()

    def stop(self) -> None:
        self._stopping.set()

    def run(self, install_signal_handlers: bool = True) -> None:
        if install_signal_handlers:
            self._install_signal_handlers()
        slots = [threading.Thread(target=self._slot, name=f"baton-slot-{n}", daemon=True) for n in range(self.concurrency)]
        beats = threading.Thread(target=self._heartbeats, name="baton-heartbeats", daemon=True)
        for thread in slots + [beats]:
            thread.start()
        self._stopping.wait()
        with self._lock:
            running = list(self._active.values())
        for context in running:
            context.stop("shutdown")
        deadline = time.monotonic() + self.shutdown_grace
        for thread in slots:
            thread.join(max(deadline - time.monotonic(), 0))
        with self._lock:
            abandoned = list(self._active.values())
            self._active.clear()
        for context in abandoned:
            # The handler did not stop in time: give the job back for another worker.
            self._finish(lambda lease=context.lease: self.client.release(lease))
        beats.join(1)

    def _install_signal_handlers(self) -> None:
        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: self.stop())
        except ValueError:
            pass  # not the main thread: the caller stops the worker itself

    def _slot(self) -> None:
        lease: Optional[Lease] = None
        while not self._stopping.is_set():
            if lease is None:
                try:
                    lease = self.client.claim(self.queues, worker=self.name, lease_ms=self.lease_ms, wait_ms=self.poll_ms)
                except (ConnectionLost, TimeoutError, BatonError) as error:
                    # batond restarting (unreachable, or `shutting_down` on its way out), or a
                    # refusal an operator must fix: keep the slot alive and try again.
                    log.warning("claim failed, retrying: %s", error)
                    self._stopping.wait(0.5)
                    continue
                if lease is None:
                    continue
            if self._stopping.is_set():
                break
            # A completion leases the slot's next job in the same request, when one is ready.
            lease = self._work(JobContext(self.client, lease))
        if lease is not None:
            # Leased as the worker began to stop: give it back for another worker.
            self._finish(lambda leased=lease: self.client.release(leased))

    def _work(self, context: JobContext) -> Optional[Lease]:
        lease = context.lease
        with self._lock:
            self._active[lease.id] = context
            self._renewed[lease.id] = time.monotonic()
        with tracing.consumer_span(lease.queue, lease.id, lease.attempt, lease.token, lease.trace) as span:
            context.trace = span.trace
            try:
                result = self.handler(context)
                outcome: Callable[[], Any] = lambda: self._complete(lease, result, span.trace)
            except Exception as error:
                span.failed(error)
                outcome = self._after_failure(context, error)
        with self._lock:
            owned = self._active.pop(lease.id, None) is context
            self._renewed.pop(lease.id, None)
        if owned and context.stop_reason in (None, "shutdown"):
            next_lease = self._finish(outcome)
            return next_lease if isinstance(next_lease, Lease) else None
        return None

    def _complete(self, lease: Lease, returned: Any, trace: Optional[Dict[str, str]]) -> Optional[Lease]:
        """Completes the job, and leases the slot's next one with it unless stopping."""
        completion = returned if isinstance(returned, Completion) else Completion(returned)
        follow_ups = [job if "trace" in job or trace is None else {**job, "trace": trace} for job in completion.enqueue]
        enqueue = follow_ups or None
        if self._stopping.is_set():
            self.client.complete(lease, completion.result, enqueue=enqueue)
            return None
        return self.client.complete_and_claim(
            lease, self.queues, completion.result, enqueue=enqueue, worker=self.name, lease_ms=self.lease_ms
        )

    def _after_failure(self, context: JobContext, error: Exception) -> Callable[[], Any]:
        lease = context.lease
        stop = context.stop_reason or (error.reason if isinstance(error, Stopped) else None)
        if stop is not None:
            # Told to stop, it stopped: give the job back at shutdown; otherwise it is not ours.
            return (lambda: self.client.release(lease)) if stop == "shutdown" else (lambda: None)
        if isinstance(error, PermanentFailure):
            reason = str(error) or type(error).__name__
            return lambda: self.client.fail(lease, reason, retry=False)
        reason = describe_failure(error)
        log.info("job %s failed: %s", lease.id, reason.partition("\n")[0])
        return lambda: self.client.fail(lease, reason)

    def _finish(self, outcome: Callable[[], Any]) -> Any:
        try:
            return outcome()
        except BatonError as error:
            log.warning("batond refused the outcome: %s", error)
        except (ConnectionLost, TimeoutError) as error:
            log.warning("could not report the outcome: %s", error)
        return None

    def _heartbeats(self) -> None:
        while not (self._stopping.is_set() and not self._active):
            now = time.monotonic()
            with self._lock:
                due: List[JobContext] = [
                    context for job, context in self._active.items()
                    if now - self._renewed.get(job, now) >= context.lease.lease_ms / 3000
                ]
            for context in due:
                try:
                    self.client.heartbeat(context.lease, progress=context._take_progress())
                    with self._lock:
                        if context.lease.id in self._renewed:
                            self._renewed[context.lease.id] = time.monotonic()
                except BatonError as error:
                    if error.code in LEASE_ENDING_CODES:
                        log.info("job %s: %s; its handler is told to stop", context.lease.id, error)
                        context.stop(error.code)
                except (ConnectionLost, TimeoutError) as error:
                    log.warning("heartbeat for job %s failed, retrying: %s", context.lease.id, error)
            time.sleep(0.05)


#: The most of a handler's error kept in ``last_error``, in bytes (PROTOCOL.md).
FAILURE_LIMIT = 2000


def describe_failure(error: BaseException) -> str:
    """``Type: message``, then the innermost frames of the traceback, within FAILURE_LIMIT bytes."""
    head = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    frames = "".join(traceback.format_tb(error.__traceback__, limit=-5)).rstrip()
    text = f"{head}\nTraceback (innermost last 5 frames):\n{frames}" if frames else head
    data = text.encode()
    if len(data) <= FAILURE_LIMIT:
        return text
    # Keep the head's start and the innermost frames: the frame that raised is at the end.
    tail = data[-(FAILURE_LIMIT // 2):].decode(errors="ignore")
    return data[: FAILURE_LIMIT // 2 - 5].decode(errors="ignore") + "\n...\n" + tail
