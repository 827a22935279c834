// The Node client's copies of the rules in PROTOCOL.md ("What every client does") say what
// the document says.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { DEFAULT_SOCKET, REPEATABLE } from '../src/client.js';
import { LEASE_ENDING_CODES, RETRY_LATER_CODES } from '../src/errors.js';
import { ROOT } from './batond.js';

/** The backquoted first cells of the table under `### heading` in PROTOCOL.md. */
function documentedNames(heading) {
  const lines = readFileSync(path.join(ROOT, 'protocol', 'PROTOCOL.md'), 'utf8').split('\n');
  const start = lines.indexOf(`### ${heading}`);
  assert.notEqual(start, -1, `PROTOCOL.md has no section ${heading}`);
  const names = new Set();
  for (const line of lines.slice(start + 1)) {
    if (line.startsWith('#')) break;
    if (line.startsWith('| `')) names.add(line.slice(3).split('`')[0]);
  }
  return names;
}

test('the ops resent after a lost reply are the documented ones', () => {
  assert.deepEqual([...REPEATABLE].sort(), [...documentedNames('Ops safe to resend')].sort());
});

test('the codes that stop a worker are the documented ones', () => {
  assert.deepEqual([...LEASE_ENDING_CODES].sort(), [...documentedNames('Codes that end a lease')].sort());
});

test('the codes retried later are the documented ones', () => {
  assert.deepEqual([...RETRY_LATER_CODES].sort(), [...documentedNames('Codes to retry later')].sort());
});

test('the default socket is the documented one', () => {
  assert.equal(DEFAULT_SOCKET, path.join('baton-data', 'baton.sock'));
});
