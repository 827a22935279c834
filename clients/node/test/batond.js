// Starts the real batond for a test. BATOND names the binary (default: the debug build).
import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';
import { Client } from '../src/index.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const BATOND = process.env.BATOND ?? path.join(ROOT, '.build', 'debug', 'batond');

/**
 * A new store for one test's batond: a SQLite file in `directory`, or, with
 * BATON_TEST_STORE=postgres, a fresh database on the PostgreSQL server BATON_TEST_POSTGRES
 * names (scripts/test runs the suites both ways; the throwaway server goes, with its
 * databases, when it ends).
 */
function testStore(directory) {
  const server = process.env.BATON_TEST_POSTGRES;
  if (process.env.BATON_TEST_STORE !== 'postgres' || !server) return path.join(directory, 'store.sqlite');
  const name = `baton_test_${randomUUID().replaceAll('-', '')}`;
  execFileSync('psql', [server, '-q', '-v', 'ON_ERROR_STOP=1', '-c', `CREATE DATABASE ${name}`]);
  const url = new URL(server);
  url.pathname = `/${name}`;
  return url.toString();
}

/** A PostgreSQL server of a test's own (scripts/postgres), to take down and bring back. */
export class ThrowawayPostgres {
  constructor() {
    this.directory = path.join(tmpdir(), `baton-pg-${randomUUID()}`);
    this.run('start');
    this.url = readFileSync(path.join(this.directory, 'url'), 'utf8').trim();
  }

  run(command) {
    // Standard output ignored: the server the script starts would hold a pipe open.
    execFileSync(path.join(ROOT, 'scripts', 'postgres'), [command, this.directory], { stdio: 'ignore' });
  }

  down() { this.run('down'); }
  up() { this.run('up'); }
  remove() { this.run('stop'); }
}

export class Batond {
  constructor(flags = [], store = undefined) {
    this.directory = mkdtempSync(path.join(tmpdir(), 'baton-node-'));
    this.store = store ?? testStore(this.directory);
    this.socketPath = path.join(this.directory, 'b.sock');
    this.flags = flags;
  }

  static async start(flags = [], store = undefined) {
    const server = new Batond(flags, store);
    await server.start();
    return server;
  }

  async start() {
    let errors = '';
    this.process = spawn(BATOND, ['--socket', this.socketPath, '--store', this.store, ...this.flags], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.process.stderr.on('data', (chunk) => { errors += chunk; });
    // Ready once it answers a connection: the socket file appears at bind(), a moment before
    // listen(), and a connection between the two is refused.
    const deadline = Date.now() + 20000;
    while (!(existsSync(this.socketPath) && (await accepts(this.socketPath)))) {
      if (this.process.exitCode !== null || Date.now() > deadline) throw new Error(`batond did not start: ${errors}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  async stop() {
    if (!this.process || this.process.exitCode !== null) return;
    const exited = new Promise((resolve) => this.process.once('exit', (code) => resolve(code)));
    this.process.kill('SIGTERM');
    const code = await exited;
    if (code !== 0) throw new Error(`batond exited with ${code}`);
  }
}

/** A batond and a client on it for every test of a file; `fixture.server`, `fixture.client`. */
export function useBatond() {
  const fixture = {};
  before(async () => {
    fixture.server = await Batond.start();
    fixture.client = new Client({ socketPath: fixture.server.socketPath, timeoutMs: 10000, reconnectTimeoutMs: 10000 });
  });
  after(async () => {
    fixture.client.close();
    await fixture.server.stop();
  });
  return fixture;
}

export async function eventually(condition, ms = 15000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await condition()) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}

/** Whether a server answers a connection on `socketPath`. */
function accepts(socketPath) {
  return new Promise((resolve) => {
    const probe = createConnection(socketPath);
    probe.once('connect', () => { probe.destroy(); resolve(true); });
    probe.once('error', () => { probe.destroy(); resolve(false); });
  });
}
