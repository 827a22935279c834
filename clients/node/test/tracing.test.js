import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { test } from 'node:test';
import { Completion, Worker } from '../src/index.js';
import { eventually, useBatond } from './batond.js';

const fixture = useBatond();
const PARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
const [, TRACE_ID, PRODUCER_SPAN] = PARENT.split('-');

/** An OTLP/HTTP receiver for JSON: the spans posted to it, and the URL to give exporters. */
async function receiver() {
  const spans = [];
  const server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk) => { body += chunk; });
    request.on('end', () => {
      if (request.url === '/v1/traces') {
        for (const resource of JSON.parse(body).resourceSpans) {
          for (const scope of resource.scopeSpans) spans.push(...scope.spans);
        }
      }
      response.writeHead(200, { 'Content-Type': 'application/json' }).end('{}');
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { spans, url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

test('enqueue sends $TRACEPARENT, a given context, or none', async () => {
  const { client } = fixture;
  process.env.TRACEPARENT = PARENT;
  process.env.TRACESTATE = 'vendor=abc';
  try {
    const fromEnvironment = (await client.enqueue('docs', 1)).job;
    assert.deepEqual((await client.get(fromEnvironment)).trace, { traceparent: PARENT, tracestate: 'vendor=abc' });
    const none = (await client.enqueue('docs', 2, { trace: false })).job;
    assert.equal((await client.get(none)).trace, undefined);
    const given = '00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-01';
    const explicit = (await client.enqueue('docs', 3, { trace: given })).job;
    assert.deepEqual((await client.get(explicit)).trace, { traceparent: given });
    const [batched] = await client.enqueueBatch([{ queue: 'docs', payload: 4 }]);
    assert.equal((await client.get(batched.job)).trace.traceparent, PARENT);
  } finally {
    delete process.env.TRACEPARENT;
    delete process.env.TRACESTATE;
  }
  const untraced = (await client.enqueue('docs', 5)).job;
  assert.equal((await client.get(untraced)).trace, undefined);
});

test('a handler runs in a consumer span under the producer, exported over OTLP, and its follow-ups carry it', async () => {
  const { client } = fixture;
  const collector = await receiver();
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = collector.url;
  try {
    const document = (await client.enqueue('ocr', { file: 'a.pdf' }, { trace: PARENT })).job;
    const failing = (await client.enqueue('ocr', { fail: true }, { trace: PARENT, maxAttempts: 1 })).job;
    const seen = {};
    const worker = new Worker(client, ['ocr'], async (job) => {
      if (job.payload.fail) throw new Error('upstream 503');
      seen.trace = job.trace;
      // A job the handler enqueues itself carries its span too.
      seen.enqueued = (await client.enqueue('notify', { of: job.id })).job;
      return new Completion({ pages: 3 }, { enqueue: [{ queue: 'embed', payload: { of: job.id } }] });
    }, { pollMs: 200, handleSignals: false });
    const running = worker.run();
    assert.ok(await eventually(async () => (await client.get(document)).state === 'completed' && (await client.get(failing)).state === 'failed'));
    worker.stop();
    await running;

    const [, traceId, spanId] = seen.trace.traceparent.split('-');
    assert.equal(traceId, TRACE_ID);
    assert.notEqual(spanId, PRODUCER_SPAN);
    const [followUp] = (await client.list({ queue: 'embed' })).jobs;
    assert.deepEqual(followUp.trace, seen.trace);
    assert.deepEqual((await client.get(seen.enqueued)).trace, seen.trace);

    assert.ok(await eventually(() => collector.spans.length === 2), `spans: ${JSON.stringify(collector.spans)}`);
    const handled = collector.spans.find((span) => span.spanId === spanId);
    assert.equal(handled.traceId, TRACE_ID);
    assert.equal(handled.parentSpanId, PRODUCER_SPAN);
    assert.equal(handled.name, 'process ocr');
    assert.equal(handled.kind, 5);
    assert.ok(BigInt(handled.endTimeUnixNano) >= BigInt(handled.startTimeUnixNano));
    assert.ok(handled.attributes.some((a) => a.key === 'messaging.message.id' && a.value.stringValue === String(document)));
    const failed = collector.spans.find((span) => span.spanId !== spanId);
    assert.deepEqual(failed.status, { code: 2, message: 'upstream 503' });
  } finally {
    delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
    collector.close();
  }
});
