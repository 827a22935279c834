import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { Client, Completion, PermanentFailure, Worker } from '../src/index.js';
import { eventually, useBatond } from './batond.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const fixture = useBatond();

const state = async (job) => (await fixture.client.get(job)).state;

test('results complete, rejections retry from the checkpoint, permanent failures fail', async () => {
  const ok = (await fixture.client.enqueue('work', { n: 2 })).job;
  const flaky = (await fixture.client.enqueue('work', { flaky: true }, { backoff: { initialMs: 0, maxMs: 0 } })).job;
  const hopeless = (await fixture.client.enqueue('work', { hopeless: true })).job;
  const seen = [];
  const worker = new Worker(fixture.client, ['work'], async (job) => {
    if (job.payload.flaky) {
      seen.push(job.checkpoint);
      if (job.attempt === 1) {
        await job.saveCheckpoint({ stage: 'extracted' }, { percent: 50 });
        throw new Error('embedding API timed out');
      }
      return 'second time lucky';
    }
    if (job.payload.hopeless) throw new PermanentFailure('unreadable file');
    return job.payload.n * 21;
  }, { concurrency: 2, pollMs: 200, handleSignals: false });
  const running = worker.run();
  assert.ok(await eventually(async () => {
    const states = await Promise.all([ok, flaky, hopeless].map(state));
    return states.every((s) => s === 'completed' || s === 'failed');
  }));
  worker.stop();
  await running;
  assert.equal((await fixture.client.get(ok)).result, 42);
  assert.equal((await fixture.client.get(flaky)).result, 'second time lucky');
  assert.deepEqual(seen, [null, { stage: 'extracted' }]);
  const failed = await fixture.client.get(hopeless);
  assert.equal(failed.state, 'failed');
  assert.equal(failed.last_error, 'unreadable file');
});

test("a handler's error is stored with its name and innermost stack frames", async () => {
  const small = (await fixture.client.enqueue('errors', 'small', { maxAttempts: 1 })).job;
  const huge = (await fixture.client.enqueue('errors', 'huge', { maxAttempts: 1 })).job;
  function parsePage(size) {
    throw new TypeError(size === 'small' ? 'bad page 7' : 'x'.repeat(100_000));
  }
  const worker = new Worker(fixture.client, ['errors'], async (job) => parsePage(job.payload), { pollMs: 200, handleSignals: false });
  const running = worker.run();
  assert.ok(await eventually(async () => (await state(small)) === 'failed' && (await state(huge)) === 'failed'));
  worker.stop();
  await running;
  const error = (await fixture.client.get(small)).last_error;
  assert.match(error, /^TypeError: bad page 7\n\s+at parsePage/);
  const bounded = (await fixture.client.get(huge)).last_error;
  assert.ok(Buffer.byteLength(bounded) <= 2000 && bounded.startsWith('TypeError: xxx') && bounded.includes('at '), bounded);
});

test('a handler resolving with a Completion commits its follow-ups with it', async () => {
  const { job: parse } = await fixture.client.enqueue('parse', 'report.pdf');
  const seen = [];
  const worker = new Worker(fixture.client, ['parse'], (job) => {
    seen.push([job.id, job.queue, job.attempt, job.checkpoint, job.progress]);
    return new Completion({ pages: 2 }, {
      enqueue: [1, 2].map((page) => ({ queue: 'embed', payload: { file: job.payload, page } })),
    });
  }, { pollMs: 200, handleSignals: false });
  const running = worker.run();
  assert.ok(await eventually(async () => (await fixture.client.get(parse)).state === 'completed'));
  worker.stop();
  await running;
  assert.deepEqual((await fixture.client.get(parse)).result, { pages: 2 });
  assert.deepEqual(seen, [[parse, 'parse', 1, null, null]], 'the context names are the same in every client');
  const { jobs } = await fixture.client.list({ queue: 'embed' });
  assert.deepEqual(jobs.map((job) => job.payload.page).sort(), [1, 2]);
});

test('a busy worker leases each next job with the completion of the last', async () => {
  const jobs = [];
  for (let n = 0; n < 5; n++) jobs.push((await fixture.client.enqueue('chain', n)).job);
  const worker = new Worker(fixture.client, ['chain'], async (job) => job.payload, { pollMs: 200, handleSignals: false });
  const running = worker.run();
  assert.ok(await eventually(async () => (await Promise.all(jobs.map(state))).every((s) => s === 'completed')));
  worker.stop();
  await running;
  const done = await Promise.all(jobs.map((job) => fixture.client.get(job)));
  // Leased by the completion before it, each job started in that completion's own commit.
  assert.deepEqual(done.slice(1).map((job) => job.started_at), done.slice(0, -1).map((job) => job.finished_at));
});

test('a cancelled job aborts its handler and its result is not reported', async () => {
  const { job } = await fixture.client.enqueue('long', null, { leaseMs: 600 });
  let aborted = false;
  const worker = new Worker(fixture.client, ['long'], (context) => new Promise((resolve) => {
    context.signal.addEventListener('abort', () => { aborted = context.stopReason === 'cancelled'; resolve('too late'); });
  }), { pollMs: 200, handleSignals: false });
  const running = worker.run();
  assert.ok(await eventually(async () => (await state(job)) === 'running'));
  await fixture.client.cancel(job, 'wrong file');
  assert.ok(await eventually(() => aborted), 'the handler was told within a heartbeat');
  worker.stop();
  await running;
  const cancelled = await fixture.client.get(job);
  assert.equal(cancelled.state, 'cancelled');
  assert.equal(cancelled.result, null);
  assert.equal(await lateOutcomes(), 0, 'the worker reported nothing for the cancelled attempt');
});

test('an attempt past its time limit is aborted though it heartbeats, and retried', async () => {
  const { job } = await fixture.client.enqueue('hung', null, { leaseMs: 300, timeoutMs: 800, backoff: { initialMs: 0 } });
  const reasons = [];
  const worker = new Worker(fixture.client, ['hung'], (context) => {
    if (context.attempt > 1) return 'second try';
    return new Promise((resolve) => {
      context.signal.addEventListener('abort', () => { reasons.push(context.stopReason); resolve('too late'); });
    });
  }, { pollMs: 200, handleSignals: false });
  const running = worker.run();
  assert.ok(await eventually(async () => (await state(job)) === 'completed'));
  worker.stop();
  await running;
  const done = await fixture.client.get(job);
  assert.deepEqual(reasons, ['timed_out'], "the first attempt's handler was told why it must stop");
  assert.equal(done.result, 'second try');
  assert.equal(done.attempts, 2);
  assert.equal(done.earlier_error, 'timed out after 800 ms');
});

/** How many complete, fail or release requests came for jobs cancelled or paused under them. */
async function lateOutcomes() {
  const { samples } = await fixture.client.request('metrics', { format: 'json' });
  return samples.find((sample) => sample.name === 'baton_late_outcomes_total').value;
}

test('heartbeats keep a long job alive past its lease', async () => {
  const { job } = await fixture.client.enqueue('slow', null, { leaseMs: 300 });
  const worker = new Worker(fixture.client, ['slow'], async () => {
    await new Promise((resolve) => setTimeout(resolve, 1200));
    return 'finished';
  }, { pollMs: 200, handleSignals: false });
  const running = worker.run();
  assert.ok(await eventually(async () => (await state(job)) === 'completed'));
  worker.stop();
  await running;
  assert.equal((await fixture.client.get(job)).attempts, 1);
});

/** Runs a worker process until its handler has started on a job, then sends it SIGTERM.
 * The handler waits for the shutdown, saves a checkpoint, then completes the job if its
 * payload is "finish", or stops. */
async function runUntilSigterm() {
  const script = `
    import { Client, Worker } from ${JSON.stringify(path.join(HERE, '..', 'src', 'index.js'))};
    await new Worker(new Client({ socketPath: process.argv[1] }), ['shutdown'], (job) => new Promise((resolve, reject) => {
      console.log('started');
      job.signal.addEventListener('abort', async () => {
        // The stage that ends in the grace period is kept.
        await job.saveCheckpoint({ stage: 'finished after SIGTERM' });
        if (job.payload === 'finish') resolve('done in the grace period');
        else reject(new Error('stopped'));
      });
    }), { pollMs: 200 }).run();
    process.exit(0);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, fixture.server.socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((resolve) => child.stdout.once('data', resolve));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  assert.equal(await exited, 0);
}

test('SIGTERM keeps a checkpoint saved in the grace period and releases the job unspent', async () => {
  const { job } = await fixture.client.enqueue('shutdown', 'stop');
  await runUntilSigterm();
  const released = await fixture.client.get(job);
  assert.equal(released.state, 'queued');
  assert.equal(released.attempts, 0);
  assert.deepEqual(released.checkpoint, { stage: 'finished after SIGTERM' });
  const next = await fixture.client.claim(['shutdown']);
  assert.deepEqual(next.checkpoint, { stage: 'finished after SIGTERM' });
  await fixture.client.release(next);
});

test('a handler that finishes in the grace period completes its job', async () => {
  const { job } = await fixture.client.enqueue('shutdown', 'finish');
  // The job left by the test before is released: cancel it, so this worker takes this one.
  for (const stale of (await fixture.client.list({ queue: 'shutdown', state: 'queued' })).jobs ?? []) {
    if (stale.id !== job) await fixture.client.cancel(stale.id);
  }
  await runUntilSigterm();
  const finished = await fixture.client.get(job);
  assert.equal(finished.state, 'completed');
  assert.equal(finished.result, 'done in the grace period');
});

test('a worker process exits within a second of run() resolving and close()', async () => {
  await fixture.client.enqueue('exit', 1);
  // No process.exit: the process ends when nothing is left to wait for.
  const script = `
    import { Client, Worker } from ${JSON.stringify(path.join(HERE, '..', 'src', 'index.js'))};
    const client = new Client(process.argv[1]);
    const worker = new Worker(client, ['exit'], async () => { setTimeout(() => worker.stop(), 50); return 'done'; },
      { pollMs: 5000, handleSignals: false });
    await worker.run();
    client.close();
    console.log(Date.now());`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, fixture.server.socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  let closedAt = null;
  child.stdout.on('data', (data) => { closedAt = Number(String(data).trim()); });
  const exitedAt = await new Promise((resolve) => child.once('exit', () => resolve(Date.now())));
  assert.ok(closedAt !== null, 'run() resolved');
  assert.ok(exitedAt - closedAt < 1000, `exited ${exitedAt - closedAt} ms after close()`);
});

test('the README worker runs as written', async () => {
  const readme = readFileSync(path.join(HERE, '..', 'README.md'), 'utf8');
  const code = /## A worker\n\n```js\n([\s\S]*?)```/.exec(readme)[1];
  assert.ok(code.split('\n').length < 30);
  const source = code.replace("from 'baton-fixture.client'", `from ${JSON.stringify(path.join(HERE, '..', 'src', 'index.js'))}`);
  const child = spawn(process.execPath, ['--input-type=module', '-e', source], {
    env: { ...process.env, BATON_SOCKET: fixture.server.socketPath }, stdio: ['ignore', 'inherit', 'inherit'],
  });
  assert.ok(await eventually(async () => (await fixture.client.stats()).queues.embed?.completed === 1));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  assert.equal(await exited, 0);
  const [job] = (await fixture.client.list({ queue: 'embed' })).jobs;
  assert.deepEqual(job.result, { vectors: 12 });
  assert.deepEqual(job.checkpoint, { stage: 'chunked' });
});

test('the worker carries on when batond restarts', async () => {
  const first = (await fixture.client.enqueue('steady', 1)).job;
  const done = [];
  const worker = new Worker(fixture.client, ['steady'], async (job) => { done.push(job.payload); return job.payload; }, { pollMs: 200, handleSignals: false });
  const running = worker.run();
  assert.ok(await eventually(async () => (await state(first)) === 'completed'));
  await fixture.server.stop();
  await fixture.server.start();
  const second = (await fixture.client.enqueue('steady', 2)).job;
  assert.ok(await eventually(async () => (await state(second)) === 'completed'));
  worker.stop();
  await running;
  assert.deepEqual(done, [1, 2]);
});
