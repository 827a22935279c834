"""One document's trace, across processes: a producer span in this test enqueues a job for
each language's worker; batond (built with the OTel trait) exports a span per attempt, and
the Python, Node and Swift workers each export their handler's span; a small OTLP/HTTP
receiver here collects them all, and every one must be in the producer's trace.

BATOND_OTEL and TRACED_WORKER name the binaries of the OTel build (scripts/test builds them
into .build-otel)."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "protocol"))
sys.path.insert(0, str(ROOT / "clients" / "python" / "src"))

import conformance  # noqa: E402
from conformance import Batond, eventually  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402

from baton import Client, Worker  # noqa: E402

OTEL_BUILD = ROOT / ".build-otel" / "debug"
BATOND_OTEL = os.environ.get("BATOND_OTEL", str(OTEL_BUILD / "batond"))
TRACED_WORKER = os.environ.get("TRACED_WORKER", str(OTEL_BUILD / "traced-worker"))


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP collector that keeps every span posted to /v1/traces, protobuf or JSON,
    as {service, trace, span, parent, name}, ids in hex."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.spans = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def named(self, name):
        with self.lock:
            return [span for span in self.spans if span["name"] == name]


class ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        spans = []
        if self.headers["Content-Type"].startswith("application/json"):
            for resource in json.loads(body)["resourceSpans"]:
                service = next(a["value"]["stringValue"] for a in resource["resource"]["attributes"] if a["key"] == "service.name")
                for scope in resource["scopeSpans"]:
                    spans += [{"service": service, "trace": s["traceId"], "span": s["spanId"], "parent": s.get("parentSpanId", ""),
                               "name": s["name"]} for s in scope["spans"]]
        else:
            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                service = next(a.value.string_value for a in resource.resource.attributes if a.key == "service.name")
                for scope in resource.scope_spans:
                    spans += [{"service": service, "trace": s.trace_id.hex(), "span": s.span_id.hex(), "parent": s.parent_span_id.hex(),
                               "name": s.name, "start": s.start_time_unix_nano, "end": s.end_time_unix_nano,
                               "events": [(e.name, e.time_unix_nano) for e in s.events],
                               "attributes": {a.key: a.value for a in s.attributes}} for s in scope.spans]
        with self.server.lock:
            self.server.spans += spans
        self.send_response(200)
        self.send_header("Content-Type", self.headers["Content-Type"])
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.shutdown()


NODE_WORKER = """
import { Client, Worker } from '%s';
const client = new Client({ socketPath: process.argv[1] });
const worker = new Worker(client, ['node'], async (job) => job.trace.traceparent, { pollMs: 200 });
await worker.run();
client.close();
"""


def test_one_documents_trace_runs_from_the_producer_through_batond_into_each_languages_handler(receiver, monkeypatch):
    for binary in (BATOND_OTEL, TRACED_WORKER):
        assert os.path.exists(binary), f"{binary} is missing: build it with --traits OTel --scratch-path .build-otel"
    provider = TracerProvider(resource=Resource.create({"service.name": "producer"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces")))
    trace.set_tracer_provider(provider)

    monkeypatch.setattr(conformance, "BATOND", BATOND_OTEL)
    server = Batond(["--otel-endpoint", receiver.url])
    environment = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
    node = subprocess.Popen(["node", "--input-type=module", "-e", NODE_WORKER % (ROOT / "clients/node/src/index.js").as_uri(),
                             server.socket_path], env={**environment, "OTEL_SERVICE_NAME": "node-worker"})
    swift = subprocess.Popen([TRACED_WORKER, server.socket_path, "swift"], env=environment)
    client = Client(server.socket_path, timeout=10)
    try:
        with trace.get_tracer("test").start_as_current_span("upload document") as producer:
            jobs = {queue: client.enqueue(queue, {"document": "report.pdf"}).job for queue in ("python", "node", "swift")}
        python = Worker(client, ["python"], lambda job: job.trace["traceparent"], poll_ms=200)
        thread = threading.Thread(target=python.run, kwargs={"install_signal_handlers": False}, daemon=True)
        thread.start()
        assert eventually(lambda: all(client.get(job)["state"] == "completed" for job in jobs.values()), 60)
        python.stop()
        thread.join(10)
        # The workers flush their spans as they stop; batond exports its own as it goes.
        for process in (node, swift):
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0

        trace_id = format(producer.get_span_context().trace_id, "032x")
        producer_span = format(producer.get_span_context().span_id, "016x")
        expected = [f"{prefix} {queue}" for queue in jobs for prefix in ("baton.attempt", "process")]
        assert eventually(lambda: all(receiver.named(name) for name in expected), 30), receiver.spans
        for queue in jobs:
            (attempt,) = receiver.named(f"baton.attempt {queue}")
            (handler,) = receiver.named(f"process {queue}")
            assert attempt["service"] == "batond"
            # Queued, then claimed, then completed: the span starts when the job became due.
            (claimed, claimed_at), (completed, completed_at) = attempt["events"]
            assert (claimed, completed) == ("claimed", "completed")
            assert attempt["start"] <= claimed_at <= completed_at == attempt["end"]
            assert attempt["attributes"]["baton.job.attempt"].int_value == 1
            assert attempt["attributes"]["baton.job.wait_ms"].int_value >= 0
            assert attempt["attributes"]["messaging.message.id"].string_value == str(jobs[queue])
            for span in (attempt, handler):
                assert (span["trace"], span["parent"]) == (trace_id, producer_span), span
            # The handler saw its own span's context, and completed the job with it.
            result = client.get(jobs[queue])["result"]
            assert result.split("-")[1:3] == [trace_id, handler["span"]], (queue, result)
        assert {receiver.named(f"process {queue}")[0]["service"] for queue in jobs} == {"producer", "node-worker", "traced-worker"}
        (upload,) = receiver.named("upload document")
        assert upload["trace"] == trace_id
    finally:
        for process in (node, swift):
            if process.poll() is None:
                process.kill()
        client.close()
        server.stop()
        provider.shutdown()
