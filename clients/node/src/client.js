import { existsSync } from 'node:fs';
import path from 'node:path';
import { Connection } from './connection.js';
import { BatonError, ConnectionLost, RETRY_LATER_CODES } from './errors.js';
import { currentTrace, resolveTrace } from './tracing.js';

export const DEFAULT_SOCKET = path.join('baton-data', 'baton.sock');

// Ops that may be sent again when the connection drops before their reply, as PROTOCOL.md
// lists them ("Ops safe to resend"; test/contract.test.js keeps the two the same).
export const REPEATABLE = new Set([
  'hello', 'get', 'list', 'stats', 'events', 'health', 'metrics', 'workers',
  'heartbeat', 'checkpoint', 'complete', 'pause_queue', 'resume_queue', 'set_queue',
  'set_priority', 'schedules', 'unschedule', 'set_limit', 'limits',
]);

/** `delayMs` → `delay_ms`: options are written in JavaScript's style and sent in the protocol's. */
function wire(options = {}) {
  const fields = {};
  for (const [name, value] of Object.entries(options)) {
    if (value === undefined) continue;
    const key = name.replace(/[A-Z]/g, (letter) => '_' + letter.toLowerCase());
    fields[key] = (key === 'backoff' || key === 'breaker' || key === 'rate') && value !== null ? wire(value) : value;
  }
  return fields;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A connection to batond. `socketPath` defaults to `$BATON_SOCKET`, else
 * `baton-data/baton.sock`. When batond restarts, the next request reconnects (trying for up
 * to `reconnectTimeoutMs`); a request whose reply was lost is sent again only if repeating
 * it is harmless, otherwise it rejects with ConnectionLost.
 */
export class Client {
  /** `new Client('/run/baton/baton.sock')`, or `new Client({socketPath, timeoutMs, reconnectTimeoutMs})`. */
  constructor(options = {}) {
    if (typeof options === 'string') options = { socketPath: options };
    if (options === null || typeof options !== 'object') throw new TypeError('Client takes a socket path or an options object');
    const { socketPath, timeoutMs = 30000, reconnectTimeoutMs = 30000 } = options;
    this.socketPath = socketPath || process.env.BATON_SOCKET || DEFAULT_SOCKET;
    this.everConnected = false;
    this.timeoutMs = timeoutMs;
    this.reconnectTimeoutMs = reconnectTimeoutMs;
    this.connection = null;
    this.connecting = null;
    this.closed = false;
  }

  close() {
    this.closed = true;
    this.connection?.close();
  }

  /** Sends one request; resolves with its successful reply, rejects with BatonError when
   * batond refuses it. Fields that are `undefined` are left out. */
  async request(op, fields = {}) {
    const message = { op };
    for (const [name, value] of Object.entries(fields)) if (value !== undefined) message[name] = value;
    const deadline = Date.now() + this.reconnectTimeoutMs;
    let reply;
    let pauseMs = 50;
    for (;;) {
      const connection = await this.#connect(deadline);
      try {
        reply = await connection.request(message, this.timeoutMs + (message.wait_ms ?? 0));
      } catch (error) {
        if (!(error instanceof ConnectionLost) || !REPEATABLE.has(op) || Date.now() > deadline || this.closed) throw error;
        continue;
      }
      // "Not now": sent again after a pause, like a lost reply (PROTOCOL.md).
      const code = reply.error?.code;
      if (RETRY_LATER_CODES.has(code) && REPEATABLE.has(op) && Date.now() + pauseMs < deadline && !this.closed) {
        await new Promise((resolve) => setTimeout(resolve, pauseMs));
        pauseMs = Math.min(pauseMs * 2, 1000);
        continue;
      }
      break;
    }
    if (!reply.ok) {
      const error = reply.error ?? {};
      throw new BatonError(String(error.code ?? 'internal'), String(error.message ?? ''), error.state ?? null);
    }
    return reply;
  }

  async #connect(deadline) {
    if (this.closed) throw new ConnectionLost('the client is closed');
    if (this.connection?.isOpen) return this.connection;
    this.connecting ??= (async () => {
      // A path with no socket, before any connection, is a mistake to report at once; later,
      // it is batond restarting, which removes and re-creates its socket.
      if (!this.everConnected && !existsSync(this.socketPath)) {
        throw new ConnectionLost(`no batond socket at ${this.socketPath}: is batond running? Pass the path, or set BATON_SOCKET`);
      }
      let delay = 50;
      for (;;) {
        try {
          this.connection = await Connection.connect(this.socketPath);
          this.everConnected = true;
          return this.connection;
        } catch (error) {
          if (Date.now() + delay > deadline || this.closed) throw error;
          await sleep(delay);
          delay = Math.min(delay * 2, 1000);
        }
      }
    })().finally(() => { this.connecting = null; });
    return this.connecting;
  }

  // Producing

  hello(client) {
    return this.request('hello', { client });
  }

  /** Options: priority, delayMs, runAt, maxAttempts, backoff {initialMs, factor, maxMs},
   * leaseMs, timeoutMs, uniqueKey, concurrencyKey, limits (named limits, at most four), group
   * (its fair-share group), after (job ids), trace (the W3C trace context the job carries to
   * its workers: by default the caller's, see tracing.js; a traceparent or {traceparent,
   * tracestate} to give one, false for none). Resolves with {job, duplicate}. */
  async enqueue(queue, payload = null, options = {}) {
    const { job, duplicate } = await this.request('enqueue', { queue, payload, ...wire({ ...options, trace: resolveTrace(options.trace) }) });
    return { job, duplicate };
  }

  /** Enqueues jobs (each {queue, payload, ...options}) in one commit, all or nothing; a job
   * without a trace carries the caller's. */
  async enqueueBatch(jobs) {
    const caller = currentTrace();
    const reply = await this.request('enqueue_batch', {
      jobs: jobs.map((job) => wire(job.trace === undefined && caller ? { ...job, trace: caller } : job)),
    });
    return reply.jobs;
  }

  // Working

  /** Leases the best ready job of `queues`, waiting up to `waitMs`; resolves with the job
   * (its `id` and `token` are the lease) or null. `detached: true` when the lease outlives
   * this process (another one reports the outcome); otherwise the server ends it at once
   * should this process exit. */
  async claim(queues, { worker, leaseMs, waitMs, detached } = {}) {
    const reply = await this.request('claim', {
      queues, worker, lease_ms: leaseMs, wait_ms: waitMs || undefined, detached: detached || undefined,
    });
    return reply.job;
  }

  async heartbeat(lease, { leaseMs, progress } = {}) {
    return (await this.request('heartbeat', { job: lease.id, token: lease.token, lease_ms: leaseMs, progress })).lease_expires_at;
  }

  async checkpoint(lease, state, { progress } = {}) {
    return (await this.request('checkpoint', { job: lease.id, token: lease.token, state, progress })).lease_expires_at;
  }

  /** Finishes the job; `enqueue` follow-ups commit with it, all or nothing. */
  async complete(lease, result, { enqueue } = {}) {
    const reply = await this.request('complete', {
      job: lease.id, token: lease.token, result, enqueue: enqueue?.map((job) => wire(job)),
    });
    return reply.jobs ?? [];
  }

  /** Finishes the job and, in the same request, leases the next ready job of `queues`: one
   * round trip per job instead of two. Resolves with that job, or null when none was ready
   * (then `claim` with a wait). A repeat after a lost reply claims again; the job the lost
   * reply leased expires like any other. */
  async completeAndClaim(lease, queues, result, { enqueue, worker, leaseMs } = {}) {
    const claim = { queues, worker, lease_ms: leaseMs };
    for (const name of Object.keys(claim)) if (claim[name] === undefined) delete claim[name];
    const reply = await this.request('complete', {
      job: lease.id, token: lease.token, result, enqueue: enqueue?.map((job) => wire(job)), claim,
    });
    return reply.job;
  }

  /** Ends the attempt unsuccessfully; resolves with the job's state (retrying or failed). */
  async fail(lease, error, { retry, retryInMs } = {}) {
    const reply = await this.request('fail', {
      job: lease.id, token: lease.token, error, retry: retry === false ? false : undefined, retry_in_ms: retryInMs,
    });
    return reply.state;
  }

  async release(lease, { delayMs } = {}) {
    await this.request('release', { job: lease.id, token: lease.token, delay_ms: delayMs });
  }

  // Watching and controlling

  async get(job) {
    return (await this.request('get', { job })).job;
  }

  /** A page of jobs: {jobs, next}. Options: queue, state, limit, after, oldestFirst. */
  async list({ queue, state, limit, after, oldestFirst } = {}) {
    const { jobs, next } = await this.request('list', { queue, state, limit, after, order: oldestFirst ? 'oldest' : undefined });
    return { jobs, next };
  }

  async stats() {
    const { id, ok, ...stats } = await this.request('stats');
    return stats;
  }

  async events(job) {
    return (await this.request('events', { job })).events;
  }

  async cancel(job, reason) {
    await this.request('cancel', { job, reason });
  }

  async pause(job) {
    await this.request('pause', { job });
  }

  async resume(job) {
    await this.request('resume', { job });
  }

  async retry(job) {
    await this.request('retry', { job });
  }

  /** Creates or replaces the recurring job `name`: a job of `queue` with `payload` at each
   * slot of `{cron, timezone}` or `{everyMs}`, with `overlap` ('skip' | 'allow'), `catchUp`
   * ('none' | 'latest') and `priority`. Each slot fires at most once. Resolves to the next slot. */
  async schedule(name, queue, payload = null, options = {}) {
    return (await this.request('schedule', { name, queue, payload, ...wire(options) })).next_at;
  }

  /** Deletes a recurring job; resolves to whether there was one. */
  async unschedule(name) {
    return (await this.request('unschedule', { name })).removed;
  }

  /** Every recurring job, by name, with its next slot and last job. */
  async schedules() {
    return (await this.request('schedules')).schedules;
  }

  /** Retries every failed or cancelled job of `queue` in `state` that matches
   * (`{errorContains?, limit?}`), in steps batond interleaves with other requests.
   * Resolves to `{changed, done}`. */
  async retryWhere(queue, state, options = {}) {
    return this.#change('retry', queue, state, options);
  }

  /** Cancels every queued, retrying or paused job of `queue` in `state` that matches
   * (`{errorContains?, limit?, reason?}`); see retryWhere. */
  async cancelWhere(queue, state, options = {}) {
    return this.#change('cancel', queue, state, options);
  }

  /** Deletes every finished job of `queue` in `state` that matches, with its audit trail;
   * see retryWhere. */
  async purge(queue, state, options = {}) {
    return this.#change('purge', queue, state, options);
  }

  async #change(op, queue, state, options) {
    const { changed, done } = await this.request(op, { queue, state, ...wire(options) });
    return { changed, done };
  }

  /** Gives an unfinished job a new priority; resolves to its state, unchanged. */
  async setPriority(job, priority) {
    return (await this.request('set_priority', { job, priority })).state;
  }

  /** Creates or changes a named limit (`tenant:*` is a template for every `tenant:...`).
   * `settings` is `{maxRunning?, rate?, breaker?}` (`rate`: `{count, perMs}`, at most `count`
   * starts in any `perMs`; `breaker`: `{failures, windowMs, cooldownMs}`, a circuit breaker
   * over its jobs' outcomes, which setting the limit closes by hand): those left undefined
   * stay, `null` removes one. Resolves to the limit's settings now, `{maxRunning, rate, breaker}`. */
  async setLimit(name, settings) {
    const reply = await this.request('set_limit', { name, ...wire(settings) });
    const rate = reply.rate && { count: reply.rate.count, perMs: reply.rate.per_ms };
    const breaker = reply.breaker && {
      failures: reply.breaker.failures, windowMs: reply.breaker.window_ms, cooldownMs: reply.breaker.cooldown_ms,
    };
    return { maxRunning: reply.max_running, rate, breaker };
  }

  /** Every limit set and every name in use, each with `rule`, its settings, `running`,
   * `started_in_window` and `holding`, as the protocol names them. */
  async limits() {
    return (await this.request('limits')).limits;
  }

  async pauseQueue(queue) {
    await this.request('pause_queue', { queue });
  }

  async resumeQueue(queue) {
    await this.request('resume_queue', { queue });
  }

  /** Caps the queue's running jobs; null removes the cap. */
  /** Changes a queue's settings. `settings` is `{maxRunning?, timeoutMs?, breaker?}`
   * (`breaker`: `{failures, windowMs, cooldownMs}`): those left undefined stay, `null`
   * removes one. A number alone (or null) is `maxRunning`. Resolves to the queue's
   * settings now, `{maxRunning, timeoutMs, breaker}`. */
  async setQueue(queue, settings) {
    const change = settings !== null && typeof settings === 'object' ? settings : { maxRunning: settings ?? null };
    const reply = await this.request('set_queue', { queue, ...wire(change) });
    const breaker = reply.breaker && {
      failures: reply.breaker.failures, windowMs: reply.breaker.window_ms, cooldownMs: reply.breaker.cooldown_ms,
    };
    return { maxRunning: reply.max_running, timeoutMs: reply.timeout_ms, breaker };
  }
}
