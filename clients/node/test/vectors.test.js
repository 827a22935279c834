// Replays the protocol's conformance vectors (protocol/vectors, format in its README)
// through this client's own line channel.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { LineChannel } from '../src/index.js';
import { Batond, ROOT } from './batond.js';

const VECTORS = path.join(ROOT, 'protocol', 'vectors');
const STEP = /^([a-z]+)?([<>]) (.*)$/;

function load(file) {
  const vector = { flags: [], steps: [] };
  readFileSync(path.join(VECTORS, file), 'utf8').split('\n').forEach((line, index) => {
    const at = `${file}:${index + 1}`;
    if (!line.trim() || line.startsWith('#')) return;
    if (line.startsWith('! ')) vector.flags.push(...line.slice(2).split(' '));
    else if (line.startsWith('= sleep ')) vector.steps.push({ kind: 'sleep', ms: Number(line.slice(8)), at });
    else if (line === '= closed' || line.startsWith('= closed ')) vector.steps.push({ kind: 'closed', connection: line.slice(8).trim() || 'a', at });
    else {
      const found = STEP.exec(line);
      assert.ok(found, `${at}: not a step`);
      const connection = found[1] ?? 'a';
      if (found[2] === '>') vector.steps.push({ kind: 'send', connection, text: found[3], at });
      else vector.steps.push({ kind: 'expect', connection, expected: JSON.parse(found[3]), at });
    }
  });
  return vector;
}

// JSON.parse cannot tell 1 from 1.0; the vectors never rely on that difference.
function match(expected, actual, captured, where) {
  if (expected === '*') return;
  if (typeof expected === 'string' && expected.startsWith('$')) {
    const name = expected.slice(1);
    if (name in captured) assert.deepEqual(actual, captured[name], `${where}: $${name}`);
    else captured[name] = actual;
    return;
  }
  if (Array.isArray(expected)) {
    assert.ok(Array.isArray(actual) && actual.length === expected.length, `${where}: ${JSON.stringify(actual)}`);
    expected.forEach((item, index) => match(item, actual[index], captured, `${where}[${index}]`));
    return;
  }
  if (expected !== null && typeof expected === 'object') {
    assert.ok(actual !== null && typeof actual === 'object' && !Array.isArray(actual), `${where}: not an object`);
    assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort(), `${where}: keys`);
    for (const key of Object.keys(expected)) match(expected[key], actual[key], captured, `${where}.${key}`);
    return;
  }
  assert.strictEqual(actual, expected, where);
}

async function replay(vector, socketPath) {
  const connections = new Map();
  const received = new Map();
  const captured = {};
  const connection = async (name) => {
    if (!connections.has(name)) {
      connections.set(name, await LineChannel.connect(socketPath));
      received.set(name, []);
    }
    return connections.get(name);
  };
  try {
    for (const step of vector.steps) {
      if (step.kind === 'sleep') {
        await new Promise((resolve) => setTimeout(resolve, step.ms));
      } else if (step.kind === 'send') {
        const line = step.text.replace(/\$(\w+)/g, (_, name) => JSON.stringify(captured[name]));
        (await connection(step.connection)).sendLine(line);
      } else if (step.kind === 'expect') {
        const channel = await connection(step.connection);
        const waiting = received.get(step.connection);
        let wanted = step.expected.id;
        if (typeof wanted === 'string' && (wanted === '*' || wanted.startsWith('$'))) wanted = null;
        let index;
        while ((index = waiting.findIndex((reply) => wanted == null || reply.id === wanted)) < 0) {
          const reply = await channel.readReply(10000);
          assert.ok(reply, `${step.at}: the server closed the connection before replying`);
          waiting.push(reply);
        }
        match(step.expected, waiting.splice(index, 1)[0], captured, step.at);
      } else if (step.kind === 'closed') {
        assert.deepEqual(received.get(step.connection), [], `${step.at}: unmatched replies before the close`);
        assert.equal(await (await connection(step.connection)).readReply(10000), null, `${step.at}: expected a close`);
      }
    }
    for (const [name, left] of received) assert.deepEqual(left, [], `replies never matched on ${name}`);
  } finally {
    for (const channel of connections.values()) channel.close();
  }
}

for (const file of readdirSync(VECTORS).filter((name) => name.endsWith('.txt')).sort()) {
  test(`vector ${file}`, async () => {
    const vector = load(file);
    const server = await Batond.start(vector.flags);
    try {
      await replay(vector, server.socketPath);
    } finally {
      await server.stop();
    }
  });
}
