/** batond refused a request. `code` is the protocol's error code: match on it. `state` is
 * the job's state when the refusal is about one job. */
export class BatonError extends Error {
  constructor(code, message, state = null) {
    super(`${code}: ${message}`);
    this.name = 'BatonError';
    this.code = code;
    this.state = state;
  }
}

/** The connection to batond closed, or could not be made, before the reply came. */
export class ConnectionLost extends Error {
  constructor(message) {
    super(message);
    this.name = 'ConnectionLost';
  }
}

/** batond sent something that is not a valid reply; the connection is closed. */
export class ProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/** No reply came in time. */
export class RequestTimeout extends Error {
  constructor(message) {
    super(message);
    this.name = 'RequestTimeout';
  }
}

/** The codes after which a worker must stop working on its job. */
// Codes after which an op safe to resend is sent again after a pause ("Codes to retry later").
export const RETRY_LATER_CODES = new Set(['unavailable']);

export const LEASE_ENDING_CODES = new Set([
  'lease_lost', 'cancelled', 'paused', 'timed_out', 'invalid_transition', 'not_found', 'forbidden',
]);
