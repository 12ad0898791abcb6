// Black-box tests of relay.mjs: the real relay on port 0, clients from `ws`
// and the stock `itty-sockets` client.   npm test

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';

let relay;
let base;

before(async () => {
  relay = spawn(process.execPath, ['relay.mjs', '127.0.0.1:0'], { cwd: fileURLToPath(new URL('.', import.meta.url)), stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  for await (const chunk of relay.stderr) {
    err += chunk;
    const m = /listening on ([\d.]+):(\d+)/.exec(err);
    if (m) {
      base = `ws://${m[1]}:${m[2]}`;
      break;
    }
  }
});

after(() => relay.kill('SIGTERM'));

/** A client that queues every text frame it receives, as raw strings. */
async function client(path) {
  const ws = new WebSocket(base + path);
  const frames = [];
  const waiters = [];
  ws.on('message', (data, isBinary) => {
    assert.equal(isBinary, false, 'server frames are text');
    frames.push(data.toString());
    waiters.splice(0).forEach((w) => w());
  });
  ws.next = async (ms = 2000) => {
    const deadline = Date.now() + ms;
    while (frames.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame within ${ms} ms`);
      await new Promise((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, left);
      });
    }
    return frames.shift();
  };
  ws.pending = () => frames.length;
  await once(ws, 'open');
  return ws;
}

const settle = () => new Promise((r) => setTimeout(r, 100));

test('joiner gets its own join first, others get a join with uid only when announced', async () => {
  const a = await client('/c/joins?as=Alice&announce=true');
  const aJoin = JSON.parse(await a.next());
  assert.deepEqual(Object.keys(aJoin), ['type', 'uid', 'alias', 'self', 'total', 'date']);
  assert.equal(aJoin.type, 'join');
  assert.match(aJoin.uid, /^[A-Za-z0-9]{6}$/);
  assert.equal(aJoin.self, true);
  assert.equal(aJoin.total, 1);

  const b = await client('/c/joins?as=Bob');
  assert.equal(JSON.parse(await b.next()).total, 2);
  const bSeen = JSON.parse(await a.next());
  assert.deepEqual(Object.keys(bSeen), ['type', 'total', 'date']); // Bob did not announce

  const c = await client('/c/joins?list=true');
  const cJoin = JSON.parse(await c.next());
  assert.deepEqual(cJoin.users, [{ uid: aJoin.uid, alias: 'Alice' }, { uid: cJoin.uid, self: true }]);
  await a.next(); // c's join
  await b.next();

  b.close();
  const leave = JSON.parse(await a.next());
  assert.equal(leave.type, 'leave');
  assert.equal(leave.total, 2);
  assert.equal(leave.uid, undefined);
  a.close();
  c.close();
});

test('a message reaches the others verbatim as the last key, not the sender unless echo', async () => {
  const a = await client('/c/relay?as=Alice');
  const aUid = JSON.parse(await a.next()).uid;
  const b = await client('/c/relay');
  await b.next();
  await a.next();
  const e = await client('/c/relay?echo=true');
  await e.next();
  await a.next();
  await b.next();

  const sent = '[0, 17,123456789,"xxxx"]'; // the generator's payload shape, spaces kept
  a.send(sent);
  const raw = await b.next();
  assert.match(raw, new RegExp(`^\\{"id":"[A-Za-z0-9]+","uid":"${aUid}","alias":"Alice","date":\\d+,"message":`));
  assert.ok(raw.endsWith(`"message":${sent}}`), raw);
  assert.equal(raw.slice(raw.lastIndexOf('"message":[') + 10, -1), sent);
  assert.equal(await e.next(), raw, 'every member gets the same bytes');

  e.send('{"n":1}');
  const own = JSON.parse(await e.next());
  assert.deepEqual(own.message, { n: 1 });
  assert.equal('alias' in own, false);
  await a.next();
  await b.next();
  await settle();
  assert.equal(a.pending(), 0, 'no echo without echo=true');
  a.close();
  b.close();
  e.close();
});

test('bad input gets an error event; direct messages reach only their recipient', async () => {
  const a = await client('/c/errors');
  const aUid = JSON.parse(await a.next()).uid;
  const b = await client('/c/errors');
  const bUid = JSON.parse(await b.next()).uid;
  await a.next();

  a.send('{nope');
  assert.equal(JSON.parse(await a.next()).message, 'message is not valid JSON');
  a.send(Buffer.from('[1]'), { binary: true });
  assert.equal(JSON.parse(await a.next()).message, 'binary frames are not supported');
  a.send(`\x1FZZZZZZ\x1F"hi"`);
  assert.match(JSON.parse(await a.next()).message, /ZZZZZZ/);

  a.send(`\x1F${bUid}\x1F"psst"`);
  const direct = JSON.parse(await b.next());
  assert.equal(direct.uid, aUid);
  assert.equal(direct.message, 'psst');
  b.send(`@@${aUid}@@{"legacy":true}`);
  assert.deepEqual(JSON.parse(await a.next()).message, { legacy: true });
  await settle();
  assert.equal(a.pending() + b.pending(), 0);
  a.close();
  b.close();
});

test('plain HTTP: version, 426 on a non-upgrade channel request, 404 elsewhere', async () => {
  const http = base.replace('ws:', 'http:');
  assert.equal((await (await fetch(`${http}/version`)).text()).trim(), '0.1.0');
  assert.equal((await fetch(`${http}/c/x`)).status, 426);
  assert.equal((await fetch(`${http}/nope`)).status, 404);
});

test('two stock itty-sockets clients exchange a message', async () => {
  globalThis.WebSocket = WebSocket; // Node 20 has no global WebSocket without a flag
  const { connect } = await import('itty-sockets');
  const alice = connect(`${base}/c/stock`, { as: 'Alice', announce: true });
  const bob = connect(`${base}/c/stock`, { as: 'Bob' });
  const joined = new Promise((resolve) => alice.on('join', (e) => e.self || resolve(e)));
  const aliceSelf = new Promise((resolve) => alice.on('join', (e) => e.self && resolve(e)));
  const bobSelf = new Promise((resolve) => bob.on('join', (e) => e.self && resolve(e)));
  await aliceSelf;
  await bobSelf;
  await joined;
  const got = new Promise((resolve) => bob.on('chat', resolve));
  alice.send({ type: 'chat', text: 'hi' });
  const msg = await got;
  assert.equal(msg.text, 'hi');
  assert.equal(msg.alias, 'Alice');
  assert.deepEqual(msg.message, { type: 'chat', text: 'hi' });
  alice.close();
  bob.close();
});
