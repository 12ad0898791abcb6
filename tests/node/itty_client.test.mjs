// The stock npm client `itty-sockets` 0.6.1, unchanged, against the relay.
//
//   RELAY_URL=ws://127.0.0.1:PORT node tests/node/itty_client.test.mjs
//
// Every test uses full `ws://127.0.0.1:PORT/c/<channel>` URLs, a fresh random
// channel, a hard timeout, and closes every client it opened; a failing test
// makes the process exit non-zero (node:test does that). Helpers: helpers.mjs.
//
// ---------------------------------------------------------------------------
// What itty-sockets 0.6.1 really does. Read from node_modules/itty-sockets/
// connect.mjs (the whole client is one minified ~820-byte function; connect.js
// is the same code as CommonJS, connect.d.ts the types). The tests rely on
// these facts, not on the docs.
//
// URL. connect(channel, options = {}) opens
//     (/^wss?:/.test(channel) ? channel : 'wss://itty.ws/c/' + channel)
//       + '?' + new URLSearchParams(options)
//   - A channel starting with `ws:` or `wss:` is used verbatim: nothing is
//     encoded or added except the query. Anything else goes to the public
//     service, unencoded. (The d.ts still types the first argument as a
//     channel id; the code takes a URL.)
//   - '?' is always appended, even with no options: the relay sees
//     `GET /c/<name>?`. A URL that already has a query would get a second '?'.
//   - Options pass through URLSearchParams: every value is String()-ed
//     (true -> `true`, false -> `false`, undefined -> `undefined`), spaces
//     become `+`, non-ASCII is percent-encoded UTF-8: `{ as: 'Zoë Ω' }` is
//     `as=Zo%C3%AB+%CE%A9`, so the relay must decode with form rules.
//
// WebSocket. `new WebSocket(url)` on the free identifier `WebSocket`, looked
//   up when the socket is opened: that is `globalThis.WebSocket`. There is no
//   option and no import. Node v20 has no global WebSocket unless run with
//   --experimental-websocket, so helpers.mjs sets `globalThis.WebSocket` to
//   the `ws` package's client (a subclass that only records).
//   - The socket is opened lazily: connect() alone opens nothing; the first
//     .on(), .send(), .push(), .open() or .remove() does. .close() never does.
//   - The client sets onopen, onmessage and onclose, and NO onerror. With
//     `ws`, an 'error' event with no listener is thrown: a refused handshake
//     (403, 429, 400...) or any protocol error by the server (bad frame, bad
//     close code, unrequested subprotocol or extension) crashes a plain Node
//     app. helpers.mjs adds an 'error' listener so such a case fails the test
//     with its message instead.
//   - connect() returns a Proxy over a function; unknown properties are
//     undefined (so it is not a thenable), and the socket, its readyState and
//     close codes are not reachable through it.
//
// Receiving. For every frame:
//     s = JSON.parse(event.data)          // no try/catch: a non-JSON frame throws
//     p = s?.message
//     ev = { ...(p?.[0] == null && p), ...s }
//   - If `message` is an object (no `0` key) its fields are copied to the top
//     level of the event, and the frame's own keys (id, uid, alias, date,
//     message, type) override them. Strings and non-empty arrays are not
//     spread. So a payload `{ type: 'chat', text: 'hi' }` arrives as
//     `{ type: 'chat', text: 'hi', id, uid, date, message: {...} }`.
//   - `date` stays the server's number: 0.6.1 does NOT make it a Date (the
//     0.5 snippet did `new Date(s.date)`; 0.6 dropped that).
//   Then, in this order:
//     1. listeners[s.type ?? p?.type](ev): the top-level `type` of an event
//        (join, leave, error); for a relayed message, which has no top-level
//        type, `message.type`: typed routing, `{ type: 'chat' }` reaches
//        .on('chat', fn).
//     2. if (!s.type) listeners.message(ev): relayed messages only, never
//        join/leave/error. A relayed frame with a top-level `type` would skip
//        'message' listeners and be routed as that event.
//     3. every filter: f(ev) && fn(ev): filters see every frame, events too.
//   'open' listeners are called with no argument, after the queue is flushed;
//   'close' listeners with no argument (no code, no reason).
//
// .on(type, fn). If fn is falsy nothing is registered. If `type?.[0]` is
//   truthy (a non-empty string) fn goes to listeners[type]: 'message', 'join',
//   'leave', 'error', 'open', 'close' or any custom type. Otherwise (a
//   function) [type, fn] is a filter: fn(ev) runs when type(ev) is truthy. Both
//   forms then open the socket and return the proxy. .remove(type, fn) drops a
//   typed listener (never a filter), and also (re)opens the socket.
//
// .send(payload, uid). frame = JSON.stringify(payload); if uid is truthy,
//   frame = '\x1F' + uid + '\x1F' + frame (0x1F both sides; 0.6 no longer
//   sends the old `@@uid@@` form). If readyState is 1 it is sent now,
//   otherwise queued and the socket opened; onopen flushes the queue in order.
//   .send() with no argument sends JSON.stringify(undefined) = undefined, which
//   `ws` sends as an empty binary frame.
//
// .push(payload, uid). Sets a close-after-open flag, then .send(). On a socket
//   not open yet: the frame is queued; onopen flushes it, then calls
//   ws.close() with no code (an empty close frame). On an open socket it is a
//   plain send and nothing closes it (the flag is read only in onopen and
//   reset in onclose).
//
// .close(). If open: ws.close() with no code. Otherwise it only sets the
//   close-after-open flag (a connecting socket closes as soon as it opens).
// .open(). Opens a socket if there is none: after a close this reconnects with
//   the same listeners (and the server gives a new uid).
// ---------------------------------------------------------------------------

import assert from 'node:assert/strict'
import { channelUrl, randomChannel, relayTest, sleep } from './helpers.mjs'

const UID = /^[A-Za-z0-9]{6}$/

relayTest('connect: own join event first, with self, a 6-char uid and total 1', async (s) => {
  // ':' and '/' are namespace boundaries; the name is still one channel.
  const url = channelUrl(`${randomChannel('connect')}:sub/room`)
  const a = await s.member('A', url)
  const join = await a.joined()

  assert.equal(a.ws.url, `${url}?`, 'the client uses a ws:// channel URL as is, plus "?"')
  assert.equal(join.type, 'join')
  assert.equal(join.self, true)
  assert.match(join.uid, UID)
  assert.equal(join.total, 1)
  assert.ok(!('alias' in join), 'no alias key without as=')
  assert.ok(!('users' in join), 'no users without list=true')
  assert.equal(typeof join.date, 'number', 'itty-sockets 0.6.1 leaves date a number')
  assert.equal(a.opens, 1, "the 'open' listener ran")
  assert.deepEqual(a.messages, [], "a join event never reaches 'message' listeners")
  assert.equal(a.events[0], join, 'the join event is the first thing delivered')

  // A second member: its own join counts both.
  const b = await s.join('B', url)
  assert.equal(b.ownJoin.total, 2)
  assert.notEqual(b.uid, a.uid)
})

relayTest('reconnect: .open() after .close() rejoins with a new uid', async (s) => {
  const url = channelUrl(randomChannel('reopen'))
  const a = await s.join('A', url)
  const first = a.uid
  a.client.close()
  await a.closed()
  a.reopen()
  const second = await a.until(() => a.joins.filter((e) => e.self).length === 2 && a.joins.filter((e) => e.self)[1], 'a second own join')
  assert.match(second.uid, UID)
  assert.notEqual(second.uid, first, 'a new uid on every reconnect')
  assert.equal(second.total, 1)
})

relayTest('echo: the sender gets its own message only with { echo: true }', async (s) => {
  const url = channelUrl(randomChannel('echo'))
  const plain = await s.join('plain', url)
  const echoer = await s.join('echoer', url, { echo: true })
  const other = await s.join('other', url)
  assert.equal(echoer.ws.url, `${url}?echo=true`)

  echoer.client.send('from echoer')
  const back = await echoer.message((e) => e.message === 'from echoer', 'its own echo')
  assert.equal(back.uid, echoer.uid)
  await other.message((e) => e.message === 'from echoer')

  plain.client.send('from plain')
  await other.message((e) => e.message === 'from plain', 'the message from plain')
  await echoer.message((e) => e.message === 'from plain')
  // other's marker is relayed after plain's message, so had plain been echoed
  // its echo would already be here.
  await s.barrier(other, [plain, echoer])
  assert.ok(!plain.payloads.includes('from plain'), 'no echo without echo=true')
})

relayTest('alias: { as } shows as alias on messages; no alias key without it', async (s) => {
  const url = channelUrl(randomChannel('alias'))
  const receiver = await s.join('receiver', url)
  const alice = await s.join('alice', url, { as: 'Alice' })
  const zoe = await s.join('zoe', url, { as: 'Zoë Ω' }) // sent as as=Zo%C3%AB+%CE%A9
  const anon = await s.join('anon', url)
  const empty = await s.join('empty', url, { as: '' })
  const byAlias = await s.join('byAlias', url, { alias: 'Carol' })

  assert.equal(alice.ownJoin.alias, 'Alice')
  assert.equal(zoe.ws.url, `${url}?as=Zo%C3%AB+%CE%A9`)
  assert.equal(zoe.ownJoin.alias, 'Zoë Ω', 'the query is decoded with form rules (+ is a space)')
  assert.ok(!('alias' in empty.ownJoin), 'an empty as= means no alias')

  for (const m of [alice, zoe, anon, empty, byAlias]) m.client.send(`hi from ${m.label}`)
  const got = {}
  for (const m of [alice, zoe, anon, empty, byAlias]) {
    got[m.label] = await receiver.message((e) => e.message === `hi from ${m.label}`, `the message from ${m.label}`)
    assert.equal(got[m.label].uid, m.uid)
  }
  assert.equal(got.alice.alias, 'Alice')
  assert.equal(got.zoe.alias, 'Zoë Ω')
  assert.equal(got.byAlias.alias, 'Carol', 'alias= works like as=')
  assert.ok(!('alias' in got.anon), 'no alias key when none was set')
  assert.ok(!('alias' in got.empty), 'no alias key for an empty as=')
})

relayTest('announce: others see the joiner uid and alias only with { announce: true }', async (s) => {
  const url = channelUrl(randomChannel('announce'))
  const a = await s.join('A', url)

  const bob = await s.join('Bob', url, { announce: true, as: 'Bob' })
  const seen = await a.until(() => a.joins.find((e) => !e.self && e.uid === bob.uid), "Bob's join event")
  assert.equal(seen.type, 'join')
  assert.equal(seen.alias, 'Bob')
  assert.equal(seen.total, 2)
  assert.ok(!('self' in seen), 'only the joiner gets self')
  assert.ok(!('users' in seen))

  const carol = await s.join('Carol', url, { as: 'Carol' }) // alias but no announce
  const quiet = await a.until(() => a.joins.find((e) => !e.self && e.total === 3), "Carol's join event")
  assert.ok(!('uid' in quiet), 'no uid without announce')
  assert.ok(!('alias' in quiet), 'no alias without announce')
  assert.equal(quiet.total, 3)
  // Bob sees Carol's (anonymous) join too, with the same total.
  const bobSeen = await bob.until(() => bob.joins.find((e) => !e.self && e.total === 3), "Carol's join at Bob")
  assert.ok(!('uid' in bobSeen))
  assert.equal(carol.ownJoin.total, 3)
})

relayTest('list: { list: true } puts users, itself with self: true, in its own join', async (s) => {
  const url = channelUrl(randomChannel('list'))
  const bob = await s.join('Bob', url, { announce: true, as: 'Bob' })
  const hidden = await s.join('hidden', url) // not announced: not listed
  const a = await s.join('A', url, { list: true })

  const { users, total } = a.ownJoin
  assert.equal(total, 3)
  assert.ok(Array.isArray(users), 'users is an array')
  const own = users.find((u) => u.uid === a.uid)
  assert.deepEqual(own, { uid: a.uid, self: true }, 'itself with self: true even without announce')
  const other = users.find((u) => u.uid === bob.uid)
  assert.deepEqual(other, { uid: bob.uid, alias: 'Bob' }, 'announced members with alias, no self key')
  assert.ok(!users.some((u) => u.uid === hidden.uid), 'members that did not announce are not listed')
  assert.equal(users.length, 2)

  // Without list: no users.
  assert.ok(!('users' in bob.ownJoin))
  assert.ok(!('users' in hidden.ownJoin))
})

relayTest('leave: the others get a leave with the new total, and the uid when announced', async (s) => {
  const url = channelUrl(randomChannel('leave'))
  const a = await s.join('A', url)
  const bob = await s.join('Bob', url, { announce: true, as: 'Bob' })
  const quiet = await s.join('quiet', url)
  await a.until(() => a.joins.some((e) => !e.self && e.total === 3), 'the third join')

  quiet.client.close()
  const first = await a.until(() => a.leaves[0], "quiet's leave")
  assert.equal(first.type, 'leave')
  assert.equal(first.total, 2)
  assert.ok(!('uid' in first), 'no uid for a member that did not announce')
  await quiet.closed()

  const bobUid = bob.uid
  bob.client.close()
  const second = await a.until(() => a.leaves[1], "Bob's leave")
  assert.equal(second.uid, bobUid)
  assert.equal(second.alias, 'Bob')
  assert.equal(second.total, 1)
  assert.deepEqual(a.messages, [], "leave events never reach 'message' listeners")
  await bob.closed()
})

relayTest('message envelope: id, uid, date and the payload deep-equal, for every JSON kind', async (s) => {
  const url = channelUrl(randomChannel('envelope'))
  const sender = await s.join('sender', url)
  const receiver = await s.join('receiver', url)
  const payloads = [
    'hello',
    '',
    'a@@b\u001fc "quoted" \\ slash', // the DM separators inside a broadcast string
    [1, 2, 3],
    [],
    { a: 1, b: { c: [true, false, null] } },
    {},
    42,
    -3.5e-7,
    0,
    false,
    null,
    { text: 'héllo wörld 日本語 🔥', nested: { deep: ['é', { ключ: 'значение', emoji: '👩‍👩‍👧' }] }, zero: 0 }
  ]
  payloads.forEach((p, i) => sender.client.send({ seq: i, p }))
  // The payloads themselves, bare (not wrapped), in the same order.
  for (const p of payloads) sender.client.send(p)

  const total = payloads.length * 2
  await receiver.until(() => receiver.messages.length >= total, `${total} messages`)
  const events = receiver.messages.slice(0, total)
  const ids = new Set()
  events.forEach((e, i) => {
    const expected = i < payloads.length ? { seq: i, p: payloads[i] } : payloads[i - payloads.length]
    assert.deepEqual(e.message, expected, `message ${i} arrives deep-equal and in order`)
    assert.equal(typeof e.id, 'string')
    assert.ok(e.id.length > 0)
    ids.add(e.id)
    assert.equal(e.uid, sender.uid)
    assert.ok(!('alias' in e))
    assert.equal(typeof e.date, 'number', '0.6.1 does not turn date into a Date')
    assert.ok(Number.isInteger(e.date))
    assert.ok(Math.abs(e.date - Date.now()) < 60_000, 'date is server time in ms since the epoch')
    assert.ok(!Number.isNaN(new Date(e.date).getTime()))
  })
  assert.equal(ids.size, total, 'every message has its own id')

  // The client copies an object payload's fields to the top level; the
  // envelope's own keys win.
  const obj = events[payloads.length + 5]
  assert.equal(obj.a, 1)
  assert.deepEqual(obj.b, { c: [true, false, null] })
  // And on the wire the envelope has exactly these keys, no top-level type.
  const raw = receiver.ws.receivedFrames.map((f) => JSON.parse(f.text)).filter((v) => v.type === undefined)
  for (const v of raw) assert.deepEqual(Object.keys(v).sort(), ['date', 'id', 'message', 'uid'])
})

relayTest("typed routing: { type: 'chat' } reaches .on('chat') and not .on('move')", async (s) => {
  const url = channelUrl(randomChannel('typed'))
  const sender = await s.join('sender', url)
  const receiver = await s.join('receiver', url)
  const chats = []
  const moves = []
  receiver.client.on('chat', (e) => chats.push(e)).on('move', (e) => moves.push(e))

  sender.client.send({ type: 'chat', text: 'hi' })
  await receiver.message((e) => e.message?.type === 'chat')
  assert.equal(chats.length, 1)
  assert.equal(moves.length, 0)
  const chat = chats[0]
  assert.deepEqual(chat.message, { type: 'chat', text: 'hi' })
  assert.equal(chat.type, 'chat', "the payload's type is copied to the top level by the client")
  assert.equal(chat.text, 'hi')
  assert.equal(chat.uid, sender.uid)

  sender.client.send({ type: 'move', x: 1, y: 2 })
  await receiver.message((e) => e.message?.type === 'move')
  assert.equal(moves.length, 1)
  assert.deepEqual(moves[0].message, { type: 'move', x: 1, y: 2 })
  assert.equal(chats.length, 1, "'chat' listeners did not get the move")
  // Typed messages still reach 'message' listeners too (no top-level type on the wire).
  assert.deepEqual(receiver.payloads, [{ type: 'chat', text: 'hi' }, { type: 'move', x: 1, y: 2 }])
})

relayTest('filter function: .on(e => e.message?.n > 5, fn) only gets matching events', async (s) => {
  const url = channelUrl(randomChannel('filter'))
  const sender = await s.join('sender', url)
  const receiver = await s.join('receiver', url)
  const big = []
  const leaves = []
  receiver.client
    .on((e) => e.message?.n > 5, (e) => big.push(e))
    .on((e) => e.type === 'leave', (e) => leaves.push(e)) // filters see events too

  for (let n = 1; n <= 10; n++) sender.client.send({ n })
  await receiver.message((e) => e.message?.n === 10, 'n = 10')
  assert.deepEqual(big.map((e) => e.message.n), [6, 7, 8, 9, 10])
  assert.ok(big.every((e) => e.uid === sender.uid))
  assert.equal(leaves.length, 0)

  sender.client.close()
  await receiver.until(() => receiver.leaves.length === 1, 'the leave event')
  assert.equal(leaves.length, 1, 'a filter receives join/leave/error events as well')
  assert.equal(leaves[0].total, 1)
})

relayTest('direct message: .send(payload, uid) reaches only the recipient', async (s) => {
  const url = channelUrl(randomChannel('dm'))
  const sender = await s.join('sender', url, { echo: true })
  const recipient = await s.join('recipient', url)
  const third = await s.join('third', url)

  const payload = { secret: 'just us', n: [1, 2] }
  sender.client.send(payload, recipient.uid)
  assert.equal(sender.ws.sentFrames.at(-1), `\x1F${recipient.uid}\x1F${JSON.stringify(payload)}`, 'the 0.6.1 wire form')

  const dm = await recipient.message((e) => e.message?.secret === 'just us', 'the direct message')
  assert.deepEqual(dm.message, payload)
  assert.equal(dm.uid, sender.uid)
  assert.equal(typeof dm.id, 'string')

  // Relayed after the DM was handled: whoever wrongly got the DM has it by now.
  await s.barrier(recipient, [sender, third])
  assert.ok(!third.messages.some((e) => e.message?.secret), 'a third member does not get it')
  assert.ok(!sender.messages.some((e) => e.message?.secret), 'the sender does not get it, even with echo')
  assert.deepEqual(sender.errorEvents, [])
})

relayTest('error event: a direct message to an unknown uid; the connection stays open', async (s) => {
  const url = channelUrl(randomChannel('error'))
  const a = await s.join('A', url)
  const b = await s.join('B', url)

  a.client.send('anyone there?', 'ZZZZZZ')
  const err = await a.until(() => a.errorEvents[0], 'an error event')
  assert.equal(err.type, 'error')
  assert.equal(typeof err.message, 'string')
  assert.ok(err.message.includes('ZZZZZZ'), `the error names the uid: ${err.message}`)
  assert.equal(typeof err.date, 'number')
  assert.deepEqual(a.messages, [], "error events never reach 'message' listeners")

  a.client.send('still here')
  await b.message((e) => e.message === 'still here', 'a later message from A')
  assert.ok(!b.payloads.includes('anyone there?'), 'nothing was relayed for the failed DM')
  assert.equal(a.ws.readyState, 1, 'the connection stays open')
  assert.equal(a.closes, 0)
  assert.deepEqual(b.errorEvents, [])
})

relayTest('bad input: .send() with no payload gives an error event and keeps the connection', async (s) => {
  const url = channelUrl(randomChannel('bad'))
  const a = await s.join('A', url)
  const b = await s.join('B', url)

  a.client.send() // JSON.stringify(undefined): `ws` sends an empty binary frame
  assert.equal(a.ws.sentFrames.at(-1), undefined)
  const err = await a.until(() => a.errorEvents[0], 'an error event')
  assert.match(err.message, /binary|JSON/)

  // A legacy/partial DM prefix without its closing separator is invalid JSON.
  a.ws.send('\x1Fabc')
  await a.until(() => a.errorEvents[1], 'a second error event')

  a.client.send('after')
  await b.message((e) => e.message === 'after')
  assert.deepEqual(b.payloads, ['after'], 'nothing was relayed for bad input')
  assert.equal(a.ws.readyState, 1)
})

relayTest('legacy direct message: a raw @@uid@@json frame (clients up to 0.5) works the same', async (s) => {
  const url = channelUrl(randomChannel('legacy'))
  const sender = await s.join('sender', url)
  const recipient = await s.join('recipient', url)
  const third = await s.join('third', url)

  sender.ws.send(`@@${recipient.uid}@@${JSON.stringify({ old: 'style' })}`)
  const dm = await recipient.message((e) => e.message?.old === 'style', 'the legacy direct message')
  assert.equal(dm.uid, sender.uid)
  await s.barrier(recipient, [third])
  assert.ok(!third.messages.some((e) => e.message?.old))
})

relayTest('push: .push() on a client not yet open sends, then closes', async (s) => {
  const url = channelUrl(randomChannel('push'))
  const receiver = await s.join('receiver', url)

  const payload = { event: 'signup', userId: 123 }
  // The first call on the fresh client is push(): the socket is only connecting.
  const pusher = await s.member('pusher', url, { announce: true }, (client) => client.push(payload))
  assert.deepEqual(pusher.ws.sentFrames, [], 'queued until open')

  const join = await receiver.until(() => receiver.joins.find((e) => !e.self), "the pusher's join")
  const msg = await receiver.message((e) => e.message?.event === 'signup', 'the pushed message')
  const leave = await receiver.until(() => receiver.leaves[0], "the pusher's leave")
  await pusher.closed()

  assert.deepEqual(msg.message, payload)
  assert.match(join.uid, UID)
  assert.equal(msg.uid, join.uid, 'relayed from the pusher')
  assert.equal(leave.uid, join.uid)
  assert.equal(leave.total, 1)
  const order = [join, msg, leave].map((e) => receiver.events.indexOf(e))
  assert.deepEqual(order, [...order].sort((x, y) => x - y), 'join, then the message, then the leave')

  assert.deepEqual(pusher.ws.sentFrames, [JSON.stringify(payload)])
  assert.ok([1000, 1005].includes(pusher.ws.closeCode), `empty close answered with empty close or 1000, got ${pusher.ws.closeCode}`)
  assert.equal(pusher.closes, 1)
})

relayTest('ordering: 200 numbered messages arrive in order at two receivers', async (s) => {
  const url = channelUrl(randomChannel('order'))
  const sender = await s.join('sender', url)
  const r1 = await s.join('r1', url)
  const r2 = await s.join('r2', url)

  // Stay inside the default per-connection limit (40/s, burst 100): a burst
  // of 80, then 10 every 300 ms.
  const COUNT = 200
  let seq = 0
  while (seq < 80) sender.client.send({ seq: seq++ })
  while (seq < COUNT) {
    await sleep(300)
    for (let i = 0; i < 10 && seq < COUNT; i++) sender.client.send({ seq: seq++ })
  }

  const expected = Array.from({ length: COUNT }, (_, i) => i)
  for (const r of [r1, r2]) {
    await r.until(() => r.messages.length >= COUNT, `${COUNT} messages`)
    assert.deepEqual(r.messages.map((e) => e.message.seq), expected, `${r.label} sees 0..${COUNT - 1} in order`)
    assert.ok(r.messages.every((e) => e.uid === sender.uid))
  }
  assert.deepEqual(sender.errorEvents, [], 'no rate-limit warnings')
}, { timeout: 15_000 })

// ---------------------------------------------------------------------------
// Keys and limits (docs/PROTOCOL.md sections 6 and 8). The Rust harness starts the
// relay with the default limits and a namespace `nodens` (joinKey `nk`,
// sendKey `ns`).
// ---------------------------------------------------------------------------

/** Waits until `member`'s handshake was refused; returns the error message. */
async function refused (member) {
  await member.until(() => member.ws.errors.length > 0 && member.ws.readyState === 3, 'a refused handshake')
  const message = member.ws.errors[0].message
  member.ws.errors.length = 0 // expected here, so not a problem at the end of the test
  return message
}

relayTest('keys: a wrong ephemeral join key is refused with 403; the client never opens', async (s) => {
  const url = channelUrl(randomChannel('joinkey'))
  const owner = await s.join('owner', url, { joinKey: 'right-key' })
  const intruder = await s.member('intruder', url, { joinKey: 'wrong-key' })
  assert.match(await refused(intruder), /403/)
  assert.equal(intruder.opens, 0)
  assert.deepEqual(intruder.events, [])
  const friend = await s.join('friend', url, { joinKey: 'right-key' })
  owner.client.send('hello friend')
  await friend.message((e) => e.message === 'hello friend')
})

relayTest("keys: a namespace's join key is required; with it the client joins", async (s) => {
  const url = channelUrl(`nodens:${randomChannel('ns')}`)
  const stranger = await s.member('stranger', url)
  assert.match(await refused(stranger), /403/)
  const member = await s.join('member', url, { joinKey: 'nk', sendKey: 'ns' })
  assert.equal(member.ownJoin.total, 1, 'the refused client never joined')
})

relayTest('keys: without the send key a member listens, and its send gets an error event', async (s) => {
  const url = channelUrl(randomChannel('sendkey'))
  const writer = await s.join('writer', url, { sendKey: 'pen' }) // creates the channel and sets its send key
  const reader = await s.join('reader', url)

  reader.client.send({ n: 1 })
  const err = await reader.until(() => reader.errorEvents[0], 'an error event')
  assert.equal(err.type, 'error')
  assert.equal(err.message, 'a send key is required to send on this channel')
  assert.deepEqual(reader.messages, [], "error events never reach 'message' listeners")

  writer.client.send('from the writer')
  await reader.message((e) => e.message === 'from the writer')
  assert.deepEqual(writer.messages, [], "nothing of the reader's was relayed")
  assert.equal(reader.ws.readyState, 1, 'the reader stays connected')
})

relayTest('limits: a burst past the message bucket gets a rate-limit warning event', async (s) => {
  const url = channelUrl(randomChannel('flood'))
  const sender = await s.join('sender', url)
  const receiver = await s.join('receiver', url)
  // The default bucket holds 100: the 101st is dropped with warning 1 of 3.
  for (let i = 0; i < 101; i++) sender.client.send({ i })
  const warning = await sender.until(() => sender.errorEvents[0], 'a warning')
  assert.equal(warning.message, 'rate limit exceeded (warning 1 of 3)')
  await receiver.until(() => receiver.messages.length >= 100, '100 messages')
  assert.ok(receiver.messages.every((e) => e.message.i < 100), 'the 101st was not relayed')
  assert.equal(sender.ws.readyState, 1, 'a warning does not close the connection')
})
