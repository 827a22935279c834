export { Client, DEFAULT_SOCKET } from './client.js';
export { Connection, LineChannel, parseReply } from './connection.js';
export { BatonError, ConnectionLost, ProtocolError, RequestTimeout } from './errors.js';
export { Completion, JobContext, PermanentFailure, Stopped, Worker } from './worker.js';
export { currentTrace, flushTraces } from './tracing.js';
