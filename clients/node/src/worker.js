import { BatonError, ConnectionLost, LEASE_ENDING_CODES, RequestTimeout } from './errors.js';
import { flushTraces, inConsumerSpan } from './tracing.js';

/** Throw it from a handler to fail the job for good, without retries. */
/** Resolve a handler with it to complete the job with `result` and follow-up jobs
 * (`enqueue`: objects with `enqueue`'s options, such as `{ queue: 'embed', payload }`),
 * enqueued in the same commit as the completion, all or nothing. */
export class Completion {
  constructor(result = null, { enqueue = [] } = {}) {
    this.result = result;
    this.enqueue = enqueue;
  }
}

export class PermanentFailure extends Error {
  constructor(message) {
    super(message);
    this.name = 'PermanentFailure';
  }
}

/** Thrown by `job.throwIfStopping()` when the handler must stop: its lease was lost, the
 * job was cancelled or paused, or the worker is shutting down. */
export class Stopped extends Error {
  constructor(reason) {
    super(`stop working on this job: ${reason}`);
    this.name = 'Stopped';
    this.reason = reason;
  }
}

/** What a handler gets: the job, its last checkpoint, and ways to report on it. */
export class JobContext {
  #client;
  #controller = new AbortController();
  #progress;

  constructor(client, lease) {
    this.#client = client;
    this.lease = lease;
    this.id = lease.id;
    this.queue = lease.queue;
    this.payload = lease.payload;
    this.checkpoint = lease.checkpoint;
    /** The progress the last attempt reported, as claimed. */
    this.progress = lease.progress;
    this.attempt = lease.attempt;
    /** The trace context ({traceparent, tracestate?}) of the consumer span the handler runs
     * in, a child of the producer's; follow-ups in a Completion carry it. */
    this.trace = lease.trace;
    /** Aborted when the handler should stop; `signal.reason` (and `stopReason`) say why. */
    this.signal = this.#controller.signal;
  }

  get stopReason() {
    return this.signal.aborted ? this.signal.reason : null;
  }

  /** Stores `state` durably: a retry of this job starts from it. Allowed during a shutdown's
   * grace period, so that a stage finished then is kept; refused (`Stopped`) once the lease
   * is gone. */
  async saveCheckpoint(state, { percent, message } = {}) {
    if (this.stopReason !== null && this.stopReason !== 'shutdown') throw new Stopped(this.stopReason);
    try {
      await this.#client.checkpoint(this.lease, state, { progress: progress(percent, message) });
    } catch (error) {
      if (error instanceof BatonError && LEASE_ENDING_CODES.has(error.code)) {
        this.stop(error.code);
        throw new Stopped(error.code);
      }
      throw error;
    }
    this.checkpoint = state;
  }

  /** Progress to send with the next heartbeat (shown by `get` and `list`). */
  reportProgress(percent, message) {
    this.#progress = progress(percent, message);
  }

  throwIfStopping() {
    if (this.signal.aborted) throw new Stopped(this.signal.reason);
  }

  stop(reason) {
    if (!this.signal.aborted) this.#controller.abort(reason);
  }

  takeProgress() {
    const taken = this.#progress;
    this.#progress = undefined;
    return taken;
  }
}

function progress(percent, message) {
  if (percent === undefined) return undefined;
  return message === undefined ? { percent } : { percent, message };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs `handler` on jobs of `queues`, up to `concurrency` at a time.
 *
 * The handler's resolved value completes the job; a rejection fails the attempt (retried
 * by the job's rules), PermanentFailure fails it for good. While it runs the worker
 * heartbeats at a third of the lease. When the lease is lost, or the job is cancelled or
 * paused, `job.signal` aborts and the handler's result is not reported.
 *
 * `run()` resolves after `stop()` or SIGTERM/SIGINT: no more jobs are claimed, running
 * handlers are aborted with reason "shutdown" and given `shutdownGraceMs`, and jobs still
 * unfinished are released (their attempts are not spent).
 */
export class Worker {
  constructor(client, queues, handler, { concurrency = 1, name, leaseMs, shutdownGraceMs = 30000, pollMs = 1000, handleSignals = true } = {}) {
    Object.assign(this, { client, queues, handler, concurrency, name, leaseMs, shutdownGraceMs, pollMs, handleSignals });
    this.active = new Map();
    this.stopping = false;
    this.stopped = new Promise((resolve) => { this.resolveStopped = resolve; });
  }

  stop() {
    this.stopping = true;
    this.resolveStopped();
  }

  async run() {
    const onSignal = () => this.stop();
    if (this.handleSignals) {
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
    }
    try {
      const slots = Array.from({ length: this.concurrency }, () => this.#slot());
      await this.stopped;
      for (const context of this.active.values()) context.stop('shutdown');
      // The grace timer is cleared as soon as the handlers are done, so that it does not
      // keep the process alive after run() resolves.
      let timer;
      const grace = new Promise((resolve) => { timer = setTimeout(resolve, this.shutdownGraceMs); });
      await Promise.race([Promise.all(slots), grace]).finally(() => clearTimeout(timer));
      for (const context of this.active.values()) {
        // The handler did not stop in time: give the job back for another worker.
        this.active.delete(context.id);
        await this.#report(() => this.client.release(context.lease));
      }
    } finally {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      await flushTraces();
    }
  }

  async #slot() {
    let lease = null;
    while (!this.stopping) {
      if (!lease) {
        try {
          lease = await this.client.claim(this.queues, { worker: this.name, leaseMs: this.leaseMs, waitMs: this.pollMs });
        } catch (error) {
          // batond restarting (unreachable, or `shutting_down` on its way out), or a refusal
          // an operator must fix: keep the slot alive and try again.
          if (!(error instanceof ConnectionLost || error instanceof RequestTimeout || error instanceof BatonError)) throw error;
          await sleep(500);
          continue;
        }
        if (!lease) continue;
      }
      if (this.stopping) break;
      // A completion leases the slot's next job in the same request, when one is ready.
      lease = await this.#work(new JobContext(this.client, lease));
    }
    if (lease) {
      // Leased as the worker began to stop: give it back for another worker.
      const unwanted = lease;
      await this.#report(() => this.client.release(unwanted));
    }
  }

  /** Completes the job, and leases the slot's next one with it unless stopping. */
  async #complete(lease, returned, trace) {
    const completion = returned instanceof Completion ? returned : new Completion(returned);
    const followUps = completion.enqueue.map((job) => (job.trace === undefined ? { ...job, trace } : job));
    const enqueue = followUps.length > 0 ? followUps : undefined;
    if (this.stopping) {
      await this.client.complete(lease, completion.result, { enqueue });
      return null;
    }
    return this.client.completeAndClaim(lease, this.queues, completion.result, { enqueue, worker: this.name, leaseMs: this.leaseMs });
  }

  /** Runs the handler on one job and reports how it ended; resolves with the next job
   * when the completion leased one. */
  async #work(context) {
    this.active.set(context.id, context);
    const beats = setInterval(() => this.#heartbeat(context), Math.max(context.lease.lease_ms / 3, 10));
    let outcome;
    try {
      const result = await inConsumerSpan(context.lease, (trace) => {
        context.trace = trace;
        return this.handler(context);
      });
      outcome = () => this.#complete(context.lease, result, context.trace);
    } catch (error) {
      if (error instanceof Stopped || context.stopReason !== null) {
        // Told to stop, it stopped: give the job back at shutdown; otherwise it is not ours.
        outcome = context.stopReason === 'shutdown' ? async () => { await this.client.release(context.lease); return null; } : null;
      } else {
        const retry = !(error instanceof PermanentFailure);
        const reason = retry ? describeFailure(error) : error.message || String(error);
        // Resolves with no next job: only a completion leases one.
        outcome = async () => { await this.client.fail(context.lease, reason, { retry }); return null; };
      }
    } finally {
      clearInterval(beats);
    }
    const owned = this.active.get(context.id) === context;
    this.active.delete(context.id);
    if (owned && outcome && (context.stopReason === null || context.stopReason === 'shutdown')) {
      return (await this.#report(outcome)) ?? null;
    }
    return null;
  }

  async #heartbeat(context) {
    if (context.beating) return;
    context.beating = true;
    try {
      await this.client.heartbeat(context.lease, { progress: context.takeProgress() });
    } catch (error) {
      if (error instanceof BatonError && LEASE_ENDING_CODES.has(error.code)) context.stop(error.code);
    } finally {
      context.beating = false;
    }
  }

  async #report(outcome) {
    try {
      return await outcome();
    } catch (error) {
      if (!(error instanceof BatonError || error instanceof ConnectionLost || error instanceof RequestTimeout)) throw error;
      return undefined;
    }
  }
}

/** The most of a handler's error kept in `last_error`, in bytes (PROTOCOL.md). */
export const FAILURE_LIMIT = 2000;

/** `Name: message`, then the innermost frames of its stack, within FAILURE_LIMIT bytes. */
export function describeFailure(error) {
  if (!(error instanceof Error)) return bounded(String(error));
  const head = error.message ? `${error.name}: ${error.message}` : error.name;
  const frames = String(error.stack ?? '').split('\n').filter((line) => /^\s+at /.test(line)).slice(0, 5);
  return bounded(frames.length ? `${head}\n${frames.join('\n')}` : head);
}

/** Keeps the start and the end of `text` when it is longer than FAILURE_LIMIT bytes. */
function bounded(text) {
  const bytes = Buffer.from(text);
  if (bytes.length <= FAILURE_LIMIT) return text;
  const half = FAILURE_LIMIT / 2;
  // A cut inside a character leaves a replacement character, which is still short enough.
  const start = bytes.subarray(0, half - 5).toString().replace(/\uFFFD$/, '');
  const end = bytes.subarray(bytes.length - half + 5).toString().replace(/^\uFFFD/, '');
  return `${start}\n...\n${end}`;
}
