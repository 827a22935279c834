"""W3C trace context for jobs (PROTOCOL.md, "Trace context").

A producer's trace goes with the job it enqueues; a worker runs each handler in a consumer
span whose parent is that trace, so one trace runs from the producer through every attempt.
OpenTelemetry is used where it is installed (``opentelemetry-api``, with whatever SDK the
application set up); without it, ``TRACEPARENT`` and ``TRACESTATE`` in the environment are
the caller's context, as a process started inside a traced one receives them.
"""
import contextlib
import os
from typing import Any, Dict, Iterator, Optional

try:  # The API alone is enough; without an SDK it records nothing.
    from opentelemetry import trace as _otel_trace
    from opentelemetry.trace import SpanKind as _SpanKind
    from opentelemetry.trace import Status as _Status
    from opentelemetry.trace import StatusCode as _StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _propagator: Any = TraceContextTextMapPropagator()
except ImportError:  # pragma: no cover - exercised where opentelemetry is absent
    _otel_trace = None
    _propagator = None

Trace = Dict[str, str]


def current() -> Optional[Trace]:
    """The caller's trace context: OpenTelemetry's current span where there is one, else
    ``TRACEPARENT`` (and ``TRACESTATE``) from the environment, else None."""
    if _propagator is not None:
        carrier: Dict[str, str] = {}
        _propagator.inject(carrier)
        if "traceparent" in carrier:
            return carrier
    parent = os.environ.get("TRACEPARENT")
    if not parent:
        return None
    state = os.environ.get("TRACESTATE")
    return {"traceparent": parent, **({"tracestate": state} if state else {})}


def resolve(trace: Any) -> Optional[Trace]:
    """What ``enqueue`` sends: the caller's current context for None, nothing for False, a
    ``traceparent`` string or a ``{traceparent, tracestate}`` dict as given."""
    if trace is None:
        return current()
    if trace is False:
        return None
    if isinstance(trace, str):
        return {"traceparent": trace}
    return dict(trace)


@contextlib.contextmanager
def consumer_span(queue: str, job: int, attempt: int, token: int, producer: Optional[Trace]) -> Iterator["HandlerSpan"]:
    """Runs the block in a consumer span whose parent is the producer's trace, current for
    the block (so a handler's own spans and enqueues join it); yields the span's context."""
    if _otel_trace is None:
        yield HandlerSpan(producer, None)
        return
    parent = _propagator.extract(producer) if producer else None
    tracer = _otel_trace.get_tracer("baton.worker")
    attributes = {
        "messaging.system": "baton", "messaging.operation.type": "process", "messaging.destination.name": queue,
        "messaging.message.id": str(job), "baton.job.attempt": attempt, "baton.lease.token": token,
    }
    with tracer.start_as_current_span(
        f"process {queue}", context=parent, kind=_SpanKind.CONSUMER, attributes=attributes,
        record_exception=False, set_status_on_exception=False,
    ) as span:
        carrier: Dict[str, str] = {}
        _propagator.inject(carrier)
        yield HandlerSpan(carrier if "traceparent" in carrier else producer, span)


class HandlerSpan:
    """The span a handler runs in: its context, and how its outcome is recorded."""

    def __init__(self, trace: Optional[Trace], span: Any) -> None:
        self.trace = trace
        self._span = span

    def failed(self, error: BaseException) -> None:
        if self._span is not None:
            self._span.record_exception(error)
            self._span.set_status(_Status(_StatusCode.ERROR, str(error) or type(error).__name__))
