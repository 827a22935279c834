import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { BatonError, Client, ConnectionLost, ProtocolError, RequestTimeout } from '../src/index.js';
import { Batond, ThrowawayPostgres, useBatond } from './batond.js';

const fixture = useBatond();

test('a job from enqueue to completion', async () => {
  const enqueued = await fixture.client.enqueue('docs', { file: 'a.pdf' }, { priority: 3, uniqueKey: 'a.pdf' });
  assert.equal(enqueued.duplicate, false);
  assert.equal((await fixture.client.enqueue('docs', { file: 'a.pdf' }, { uniqueKey: 'a.pdf' })).job, enqueued.job);
  const lease = await fixture.client.claim(['docs'], { worker: 'node-test' });
  assert.deepEqual(lease.payload, { file: 'a.pdf' });
  assert.ok((await fixture.client.heartbeat(lease, { progress: { percent: 10 } })) > Date.now());
  await fixture.client.checkpoint(lease, { stage: 'parsed' });
  const [followUp] = await fixture.client.complete(lease, { pages: 3 }, { enqueue: [{ queue: 'embed', payload: enqueued.job }] });
  const job = await fixture.client.get(enqueued.job);
  assert.equal(job.state, 'completed');
  assert.deepEqual(job.result, { pages: 3 });
  assert.equal((await fixture.client.get(followUp.job)).queue, 'embed');
  assert.deepEqual((await fixture.client.events(enqueued.job)).map((event) => event.event), ['enqueued', 'claimed', 'checkpointed', 'completed']);
});

test('completing can lease the next job in the same request', async () => {
  const { client } = fixture;
  const first = (await client.enqueue('chain', 1)).job;
  const second = (await client.enqueue('chain', 2)).job;
  const lease = await client.claim(['chain']);
  assert.equal(lease.id, first);
  const following = await client.completeAndClaim(lease, ['chain'], { pages: 3 }, { worker: 'node' });
  assert.equal(following.id, second);
  assert.equal(following.payload, 2);
  const done = await client.get(first);
  const running = await client.get(second);
  assert.equal(done.state, 'completed');
  assert.deepEqual(done.result, { pages: 3 });
  assert.equal(running.state, 'running');
  assert.equal(running.lease.worker, 'node');
  assert.equal(running.started_at, done.finished_at, "leased in the completion's own commit");
  assert.equal(await client.completeAndClaim(following, ['chain']), null);
  assert.equal((await client.get(second)).state, 'completed');
});

test('refusals carry the code and the job state', async () => {
  await fixture.client.enqueue('expiring', null, { leaseMs: 100, backoff: { initialMs: 0, maxMs: 0 } });
  const stale = await fixture.client.claim(['expiring']);
  await new Promise((resolve) => setTimeout(resolve, 300));
  const fresh = await fixture.client.claim(['expiring'], { waitMs: 2000 });
  assert.ok(fresh.token > stale.token);
  await assert.rejects(fixture.client.complete(stale), (error) => error instanceof BatonError && error.code === 'lease_lost' && error.state === 'running');
  await assert.rejects(fixture.client.get(999999), (error) => error instanceof BatonError && error.code === 'not_found');
});

test('setPriority reorders queued jobs', async () => {
  const older = (await fixture.client.enqueue('prio', 1)).job;
  const newer = (await fixture.client.enqueue('prio', 2)).job;
  assert.equal(await fixture.client.setPriority(newer, 7), 'queued');
  const lease = await fixture.client.claim(['prio']);
  assert.equal(lease.id, newer);
  assert.equal(await fixture.client.setPriority(lease.id, -1), 'running');
  assert.equal((await fixture.client.get(older)).priority, 0);
});

test('a schedule enqueues a job per slot', async () => {
  assert.ok(await fixture.client.schedule('tick', 'ticks', { n: 1 }, { everyMs: 100, overlap: 'skip' }));
  const lease = await fixture.client.claim(['ticks'], { waitMs: 5000 });
  assert.deepEqual(lease.payload, { n: 1 });
  const [listed] = await fixture.client.schedules();
  assert.equal(listed.name, 'tick');
  assert.equal(listed.last_job, lease.id);
  assert.equal(await fixture.client.unschedule('tick'), true);
  assert.deepEqual(await fixture.client.schedules(), []);
});

test('a breaker holds claims after failures', async () => {
  const breaker = { failures: 1, windowMs: 60000, cooldownMs: 60000 };
  assert.deepEqual((await fixture.client.setQueue('flaky', { breaker })).breaker, breaker);
  await fixture.client.enqueue('flaky', 1, { backoff: { initialMs: 0 } });
  assert.equal(await fixture.client.fail(await fixture.client.claim(['flaky']), 'HTTP 503'), 'retrying');
  assert.equal(await fixture.client.claim(['flaky']), null);
  assert.equal((await fixture.client.stats()).breakers.flaky.state, 'open');
  assert.equal((await fixture.client.setQueue('flaky', { breaker: null })).breaker, null);
  assert.ok(await fixture.client.claim(['flaky']));
});

test('a named limit holds jobs across queues', async () => {
  const client = fixture.client;
  assert.deepEqual(await client.setLimit('gpu', { maxRunning: 1 }), { maxRunning: 1, rate: null, breaker: null });
  await client.enqueue('lim-extract', 1, { limits: ['gpu'] });
  await client.enqueue('lim-embed', 2, { limits: ['gpu'] });
  const first = await client.claim(['lim-extract', 'lim-embed']);
  assert.equal(await client.claim(['lim-extract', 'lim-embed']), null);
  const [gpu] = await client.limits();
  assert.equal(gpu.name, 'gpu');
  assert.equal(gpu.running, 1);
  assert.equal(gpu.waiting, 1);
  const rate = { count: 5, perMs: 1000 };
  assert.deepEqual(await client.setLimit('gpu', { rate }), { maxRunning: 1, rate, breaker: null });
  await client.complete(first);
  assert.ok(await client.claim(['lim-extract', 'lim-embed']));
});

test('groups take turns', async () => {
  const client = fixture.client;
  for (const group of ['big', 'big', 'big', 'small']) await client.enqueue('fair', group, { group });
  assert.deepEqual([(await client.claim(['fair'])).payload, (await client.claim(['fair'])).payload], ['big', 'small']);
});

test('retry, cancel and purge by filter', async () => {
  for (const error of ['HTTP 429', 'bad input']) {
    await fixture.client.enqueue('dlq', error, { maxAttempts: 1 });
    const lease = await fixture.client.claim(['dlq']);
    assert.equal(await fixture.client.fail(lease, error), 'failed');
  }
  assert.deepEqual(await fixture.client.retryWhere('dlq', 'failed', { errorContains: '429' }), { changed: 1, done: true });
  assert.deepEqual(await fixture.client.cancelWhere('dlq', 'queued', { reason: 'superseded' }), { changed: 1, done: true });
  assert.deepEqual(await fixture.client.purge('dlq', 'failed'), { changed: 1, done: true });
  const stats = await fixture.client.stats();
  assert.equal(stats.queues.dlq.failed, 0);
  assert.equal(stats.queues.dlq.cancelled, 1);
});

test('job and queue control', async () => {
  const first = (await fixture.client.enqueue('ctl', 1, { maxAttempts: 1 })).job;
  const second = (await fixture.client.enqueue('ctl', 2)).job;
  assert.equal((await fixture.client.enqueueBatch([{ queue: 'other', payload: 3 }, { queue: 'other', payload: 4 }])).length, 2);
  await fixture.client.pause(second);
  await fixture.client.setQueue('ctl', 1);
  const lease = await fixture.client.claim(['ctl']);
  assert.equal(lease.id, first);
  assert.equal(await fixture.client.claim(['ctl']), null);
  assert.equal(await fixture.client.fail(lease, 'bad input'), 'failed');
  await fixture.client.retry(first);
  await fixture.client.cancel(first, 'not needed');
  await fixture.client.resume(second);
  await fixture.client.pauseQueue('ctl');
  assert.equal(await fixture.client.claim(['ctl']), null);
  await fixture.client.resumeQueue('ctl');
  await fixture.client.setQueue('ctl', null);
  const again = await fixture.client.claim(['ctl']);
  assert.equal(again.id, second);
  await fixture.client.release(again);
  const stats = await fixture.client.stats();
  assert.equal(stats.queues.ctl.queued, 1);
  assert.equal(stats.queues.ctl.cancelled, 1);
  const page = await fixture.client.list({ queue: 'other', limit: 1, oldestFirst: true });
  assert.deepEqual(page.jobs.map((job) => job.payload), [3]);
  assert.notEqual(page.next, null);
  assert.equal((await fixture.client.hello('node')).protocol, 1);
});

test('a waiting claim does not hold up other requests', async () => {
  const waiting = fixture.client.claim(['later'], { waitMs: 10000 });
  await new Promise((resolve) => setTimeout(resolve, 200));
  const { job } = await fixture.client.enqueue('later', 'now');
  assert.equal((await waiting).id, job);
});

test('the client reconnects when batond restarts', async () => {
  const { job } = await fixture.client.enqueue('restart', 1);
  await fixture.server.stop();
  await fixture.server.start();
  assert.equal((await fixture.client.get(job)).state, 'queued');
  assert.equal((await fixture.client.claim(['restart'])).id, job);
});

function fakeServer(behaviour) {
  const socketPath = path.join(mkdtempSync(path.join(tmpdir(), 'baton-fake-')), 'fake.sock');
  const fake = createServer((connection) => connection.once('data', () => behaviour(connection)));
  fake.listen(socketPath);
  return { socketPath, close: () => fake.close() };
}

test('a reply that is not JSON is a clear error, not a hang', async () => {
  const fake = fakeServer((connection) => connection.write('<html>surprise</html>\n'));
  const confused = new Client({ socketPath: fake.socketPath, timeoutMs: 5000 });
  await assert.rejects(confused.stats(), (error) => error instanceof ProtocolError && /not JSON/.test(error.message));
  confused.close();
  fake.close();
});

test('a server that never answers times out; one that is not there is ConnectionLost', async () => {
  const fake = fakeServer(() => {});
  const silent = new Client({ socketPath: fake.socketPath, timeoutMs: 300 });
  await assert.rejects(silent.stats(), RequestTimeout);
  silent.close();
  fake.close();
  const nobody = new Client({ socketPath: path.join(tmpdir(), 'no-such-baton.sock'), reconnectTimeoutMs: 200 });
  await assert.rejects(nobody.stats(), ConnectionLost);
});

test('a path with no socket fails at once, naming it; a path given as a string is used', async () => {
  const missing = path.join(mkdtempSync(path.join(tmpdir(), 'baton-none-')), 'nothing.sock');
  // With the default 30 s of reconnecting, only an immediate refusal names the path so.
  const nobody = new Client(missing);
  assert.equal(nobody.socketPath, missing);
  await assert.rejects(nobody.stats(), (error) => error instanceof ConnectionLost && error.message.includes(`no batond socket at ${missing}`));
});

test('the socket is the argument, then BATON_SOCKET, then the default', () => {
  const saved = process.env.BATON_SOCKET;
  try {
    process.env.BATON_SOCKET = '/from/env.sock';
    assert.equal(new Client('/given.sock').socketPath, '/given.sock');
    assert.equal(new Client({ socketPath: '/given.sock' }).socketPath, '/given.sock');
    assert.equal(new Client().socketPath, '/from/env.sock');
    delete process.env.BATON_SOCKET;
    assert.equal(new Client().socketPath, path.join('baton-data', 'baton.sock'));
  } finally {
    if (saved === undefined) delete process.env.BATON_SOCKET;
    else process.env.BATON_SOCKET = saved;
  }
});

test('a client that was connected waits for batond to come back, its socket gone meanwhile', async () => {
  const client = new Client({ socketPath: fixture.server.socketPath });
  await client.stats();
  await fixture.server.stop();
  assert.equal(existsSync(fixture.server.socketPath), false);
  const stats = client.stats();
  await fixture.server.start();
  assert.ok((await stats).queues !== undefined);
  client.close();
});

test('while the store is unreachable reads wait and other ops say unavailable', { skip: !process.env.BATON_TEST_POSTGRES && 'needs PostgreSQL (scripts/test installs it)' }, async () => {
  const postgres = new ThrowawayPostgres();
  const server = await Batond.start([], postgres.url);
  // The first request after the loss may wait out batond's 15 s before it gives up.
  const client = new Client({ socketPath: server.socketPath, timeoutMs: 30000, reconnectTimeoutMs: 30000 });
  try {
    assert.ok('queues' in (await client.stats()));
    postgres.down();
    // An enqueue may not be sent twice: the caller is told, and decides.
    await assert.rejects(client.enqueue('q', 1), (error) => error instanceof BatonError && error.code === 'unavailable');
    let answered = null;
    const reading = client.stats().then((stats) => { answered = stats; });
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(answered, null, 'a read waits while the store is away');
    postgres.up();
    await reading;
    assert.ok('queues' in answered, 'and is answered once it is back');
  } finally {
    client.close();
    await server.stop();
    postgres.remove();
  }
});
