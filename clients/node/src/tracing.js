// W3C trace context for jobs (PROTOCOL.md, "Trace context"), with no dependency.
//
// A producer's trace goes with the job it enqueues: by default the current handler span's
// context (inside a worker), else $TRACEPARENT and $TRACESTATE. The worker runs each
// handler in a consumer span whose parent is the producer's, current for the handler (so
// its enqueues carry it); when $OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) names
// a collector, the span is exported there over OTLP/HTTP as JSON. An application that uses
// OpenTelemetry JS passes `trace` explicitly (from `propagation.inject`).
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';

const current = new AsyncLocalStorage();
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/** The caller's trace context: the current handler span's, else the environment's, else undefined. */
export function currentTrace() {
  const inSpan = current.getStore();
  if (inSpan) return inSpan;
  const traceparent = process.env.TRACEPARENT;
  if (!traceparent) return undefined;
  const tracestate = process.env.TRACESTATE;
  return tracestate ? { traceparent, tracestate } : { traceparent };
}

/** What enqueue sends: the caller's context for undefined, none for false or null, a
 * traceparent string or a {traceparent, tracestate} object as given. */
export function resolveTrace(trace) {
  if (trace === undefined) return currentTrace();
  if (trace === false || trace === null) return undefined;
  if (typeof trace === 'string') return { traceparent: trace };
  return trace;
}

/** Runs `body(trace)` in a consumer span whose parent is the job's producer, with the span's
 * context current; records a rejection on the span, and exports it where a collector is named. */
export async function inConsumerSpan(lease, body) {
  const producer = TRACEPARENT.exec(lease.trace?.traceparent ?? '');
  const traceId = producer?.[2] ?? randomBytes(16).toString('hex');
  const flags = producer?.[4] ?? '01';
  const spanId = randomBytes(8).toString('hex');
  const trace = { traceparent: `00-${traceId}-${spanId}-${flags}` };
  if (lease.trace?.tracestate) trace.tracestate = lease.trace.tracestate;
  const span = {
    traceId, spanId, parentSpanId: producer?.[3], name: `process ${lease.queue}`, kind: 5,
    startTimeUnixNano: nowNanoseconds(),
    attributes: [
      attribute('messaging.system', 'baton'), attribute('messaging.operation.type', 'process'),
      attribute('messaging.destination.name', lease.queue), attribute('messaging.message.id', String(lease.id)),
      attribute('baton.job.attempt', lease.attempt), attribute('baton.lease.token', lease.token),
    ],
  };
  try {
    return await current.run(trace, () => body(trace));
  } catch (error) {
    span.status = { code: 2, message: error?.message ?? String(error) };
    throw error;
  } finally {
    span.endTimeUnixNano = nowNanoseconds();
    // The sampled flag: a producer that did not record its trace asks for no spans.
    if ((parseInt(flags, 16) & 1) === 1) exportSpan(span);
  }
}

const pending = new Set();

/** Waits for the spans on their way to the collector. */
export async function flushTraces() {
  await Promise.allSettled([...pending]);
}

function exportSpan(span) {
  const endpoint = tracesEndpoint();
  if (!endpoint) return;
  const body = {
    resourceSpans: [{
      resource: { attributes: [attribute('service.name', process.env.OTEL_SERVICE_NAME || 'baton-worker')] },
      scopeSpans: [{ scope: { name: 'baton.worker' }, spans: [span] }],
    }],
  };
  const sent = fetch(endpoint, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) })
    .then((response) => response.arrayBuffer())
    .catch(() => undefined) // a collector that is down loses spans, never jobs
    .finally(() => pending.delete(sent));
  pending.add(sent);
}

function tracesEndpoint() {
  const traces = process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  if (traces) return traces;
  const base = process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
  return base ? base.replace(/\/?$/, '/') + 'v1/traces' : undefined;
}

function attribute(key, value) {
  return { key, value: typeof value === 'number' ? { intValue: String(value) } : { stringValue: String(value) } };
}

// The wall clock, read once, moved on by the monotonic one: nanoseconds that never go back.
const origin = BigInt(Date.now()) * 1000000n - process.hrtime.bigint();

function nowNanoseconds() {
  return String(origin + process.hrtime.bigint());
}
