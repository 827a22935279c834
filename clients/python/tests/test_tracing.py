"""Trace context: what enqueue sends, and the consumer span a worker runs each handler in.

OpenTelemetry's SDK records spans in memory here (one provider for the whole process, as
OpenTelemetry allows); each test reads the spans it made."""
import threading

import pytest
from conformance import eventually
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from baton import Completion, Worker

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

spans = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(_provider)
tracer = trace.get_tracer("baton-tests")


@pytest.fixture(autouse=True)
def fresh_spans(monkeypatch):
    monkeypatch.delenv("TRACEPARENT", raising=False)
    monkeypatch.delenv("TRACESTATE", raising=False)
    spans.clear()


def ids(traceparent):
    """The trace id and the parent span id of a traceparent (its flags vary with the SDK)."""
    return traceparent.split("-")[1:3]


def span_ids(context):
    return [f"{context.trace_id:032x}", f"{context.span_id:016x}"]


def run(worker):
    thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False}, daemon=True)
    thread.start()
    return thread


def test_enqueue_sends_the_current_span_else_the_environments_else_what_it_is_given(client, monkeypatch):
    with tracer.start_as_current_span("web request") as span:
        inside = client.enqueue("docs", 1).job
        context = span.get_span_context()
    assert ids(client.get(inside)["trace"]["traceparent"]) == span_ids(context)

    assert "trace" not in client.get(client.enqueue("docs", 2).job)

    monkeypatch.setenv("TRACEPARENT", PARENT)
    monkeypatch.setenv("TRACESTATE", "vendor=abc")
    from_env = client.enqueue("docs", 3).job
    assert client.get(from_env)["trace"] == {"traceparent": PARENT, "tracestate": "vendor=abc"}
    assert "trace" not in client.get(client.enqueue("docs", 4, trace=False).job)
    given = "00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-00"
    assert client.get(client.enqueue("docs", 5, trace=given).job)["trace"] == {"traceparent": given}
    batch = client.enqueue_batch([{"queue": "docs", "payload": 6}, {"queue": "docs", "payload": 7, "trace": {"traceparent": given}}])
    assert [client.get(item.job)["trace"]["traceparent"] for item in batch] == [PARENT, given]


def test_a_handler_runs_in_a_consumer_span_under_the_producers_and_its_follow_ups_carry_it(client):
    with tracer.start_as_current_span("upload") as producer:
        document = client.enqueue("ocr", {"file": "a.pdf"}).job
    seen = {}

    def handler(job):
        seen["trace"] = job.trace
        seen["current"] = trace.get_current_span().get_span_context()
        return Completion({"pages": 3}, enqueue=[{"queue": "embed", "payload": {"of": document}}])

    worker = Worker(client, ["ocr"], handler, poll_ms=200)
    thread = run(worker)
    assert eventually(lambda: client.get(document)["state"] == "completed")
    worker.stop()
    thread.join(10)

    handled = next(span for span in spans.get_finished_spans() if span.name == "process ocr")
    assert handled.kind == SpanKind.CONSUMER
    assert handled.context.trace_id == producer.get_span_context().trace_id
    assert handled.parent.span_id == producer.get_span_context().span_id
    assert handled.attributes["messaging.message.id"] == str(document)
    assert handled.attributes["baton.job.attempt"] == 1
    # The handler sees its own span's context, current and as ``job.trace``.
    assert seen["current"].span_id == handled.context.span_id
    assert ids(seen["trace"]["traceparent"]) == span_ids(handled.context)
    # Its follow-up carries the handler's span, so the trace shows which attempt enqueued it.
    follow_up = client.list(queue="embed")["jobs"][0]
    assert follow_up["trace"] == seen["trace"]


def test_a_failing_handlers_span_records_the_error(client):
    job = client.enqueue("flaky", 1, max_attempts=1, trace=PARENT).job

    def handler(_):
        raise RuntimeError("upstream 503")

    worker = Worker(client, ["flaky"], handler, poll_ms=200)
    thread = run(worker)
    assert eventually(lambda: client.get(job)["state"] == "failed")
    worker.stop()
    thread.join(10)
    handled = next(span for span in spans.get_finished_spans() if span.name == "process flaky")
    assert format(handled.context.trace_id, "032x") == PARENT.split("-")[1]
    assert not handled.status.is_ok and "upstream 503" in handled.status.description
    assert [event.name for event in handled.events] == ["exception"]
