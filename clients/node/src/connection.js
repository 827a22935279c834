import net from 'node:net';
import { ConnectionLost, ProtocolError, RequestTimeout } from './errors.js';

/** A unix socket read and written one line at a time. */
export class LineChannel {
  /** Connects; rejects with ConnectionLost when nobody listens at `path`. */
  static connect(path, timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(path);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new ConnectionLost(`cannot connect to ${path}: timed out`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new LineChannel(socket));
      });
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(new ConnectionLost(`cannot connect to ${path}: ${error.message}`));
      });
    });
  }

  constructor(socket) {
    this.socket = socket;
    this.lines = [];
    this.waiters = [];
    this.ended = false;
    this.onLine = null;
    this.onEnd = null;
    let buffer = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk) => {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        this.#deliver(buffer.slice(0, newline));
        buffer = buffer.slice(newline + 1);
      }
    });
    const end = (error) => {
      if (this.ended) return;
      this.ended = true;
      for (const waiter of this.waiters.splice(0)) waiter.resolve(null);
      this.onEnd?.(error);
    };
    socket.on('end', () => end());
    socket.on('close', () => end());
    socket.on('error', (error) => end(error));
  }

  #deliver(line) {
    if (this.onLine) return this.onLine(line);
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve(line);
    else this.lines.push(line);
  }

  sendLine(line) {
    if (this.ended) throw new ConnectionLost('the connection is closed');
    this.socket.write(line + '\n');
  }

  /** The next line, or null once the server has closed; rejects after `timeoutMs`. */
  readLine(timeoutMs = 10000) {
    if (this.lines.length > 0) return Promise.resolve(this.lines.shift());
    if (this.ended) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (line) => {
          clearTimeout(timer);
          resolve(line);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(new RequestTimeout(`no line from batond within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** The next reply, parsed; null once the server has closed. */
  async readReply(timeoutMs = 10000) {
    const line = await this.readLine(timeoutMs);
    return line === null ? null : parseReply(line);
  }

  close() {
    this.socket.destroy();
  }
}

export function parseReply(line) {
  let reply;
  try {
    reply = JSON.parse(line);
  } catch {
    throw new ProtocolError(`batond sent a line that is not JSON: ${line.slice(0, 200)}`);
  }
  if (reply === null || typeof reply !== 'object' || Array.isArray(reply) || typeof reply.ok !== 'boolean') {
    throw new ProtocolError(`batond sent something that is not a reply: ${line.slice(0, 200)}`);
  }
  return reply;
}

/** One connection for many concurrent requests: each gets an id, and each reply goes to
 * the request with its id, so a long-polling claim never holds up a heartbeat. */
export class Connection {
  static async connect(path) {
    return new Connection(await LineChannel.connect(path));
  }

  constructor(channel) {
    this.channel = channel;
    this.nextId = 1;
    this.pending = new Map();
    this.failure = null;
    channel.onLine = (line) => {
      let reply;
      try {
        reply = parseReply(line);
      } catch (error) {
        return this.#fail(error);
      }
      const waiter = this.pending.get(reply.id);
      if (!waiter) return this.#fail(new ProtocolError(`batond sent a reply to no request of ours: ${line.slice(0, 200)}`));
      this.pending.delete(reply.id);
      waiter.resolve(reply);
    };
    channel.onEnd = (error) => this.#fail(new ConnectionLost(`batond closed the connection${error ? `: ${error.message}` : ''}`));
  }

  get isOpen() {
    return this.failure === null;
  }

  request(fields, timeoutMs) {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RequestTimeout(`no reply from batond to ${fields.op} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (reply) => { clearTimeout(timer); resolve(reply); },
        reject: (error) => { clearTimeout(timer); reject(error); },
      });
      try {
        this.channel.sendLine(JSON.stringify({ ...fields, id }));
      } catch (error) {
        this.#fail(error);
      }
    });
  }

  close() {
    this.#fail(new ConnectionLost('the connection was closed'));
  }

  #fail(error) {
    if (!this.failure) this.failure = error;
    const waiting = [...this.pending.values()];
    this.pending.clear();
    for (const waiter of waiting) waiter.reject(error);
    this.channel.close();
  }
}
