// The stock itty-sockets client (0.6.1, its ESM build from npm, unchanged)
// in real pages of headless Chromium, with the browser's own WebSocket,
// against the real relay (two shards). What a web app does: pages on one
// channel exchanging messages, echo, alias, join and leave with total and
// users, a direct message, a wrong join key, the rate-limit error event, a
// page closed and a page crashed, and channels owned by the other shard.
//
//   RELAY_HTTP=http://127.0.0.1:PORT NAMESPACE=browserns JOIN_KEY=bk \
//   OWNED_BY_0=<channel> OWNED_BY_1=<channel> node --test-reporter=spec client.test.mjs
//
// tests/browser/main.rs boots the relay (the default message burst and
// warnings, refilled at 1/s; upgrade limits lifted; the namespace) and runs
// this. A failing test prints every
// page's console.

import test, { before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { launch, startStaticServer, waitFor, errorsOf, scrape, metric, watchdog, RELAY_WS } from './harness.mjs'

watchdog(150_000)

const NAMESPACE = process.env.NAMESPACE ?? 'browserns'
const JOIN_KEY = process.env.JOIN_KEY ?? 'bk'
const OWNED_BY = [process.env.OWNED_BY_0, process.env.OWNED_BY_1]

/** How long one expected event may take. */
const EVENT_MS = 5000

/**
 * What Chromium itself logs for a refused handshake; the only console
 * error a test may cause, and only the one that expects it.
 */
const REFUSED_HANDSHAKE = /WebSocket connection to .* failed/

let chrome, site
let opened = []   // this test's pages

before(async () => {
  site = await startStaticServer()
  chrome = await launch()
})

after(async () => {
  await chrome?.browser.close()
  site?.close()
})

/**
 * A test with pages: on failure it prints the console of every page it
 * opened; either way it closes them.
 */
function browserTest (name, body) {
  test(name, async () => {
    try {
      await body()
    } catch (e) {
      console.log(`--- console of the pages of "${name}" ---\n${chrome.logsOf(opened)}`)
      throw e
    } finally {
      for (const page of opened) await page.context().close().catch(() => {})
      opened = []
    }
  })
}

const fresh = prefix => `${prefix}-${randomBytes(4).toString('hex')}`
const url = channel => `${RELAY_WS}/c/${channel}`

/**
 * A page of the test site with the client loaded from `/itty-sockets.mjs`
 * and `join(key, url, options)`, which connects and records every event
 * into `window.events[key]` (with `kind`: open, close, join, leave, error,
 * message). With `killable`, the page has a Chromium of its own and
 * `page.kill()` ends it with SIGKILL.
 */
async function visitor (name, { killable = false } = {}) {
  let page
  if (killable) {
    const own = await chrome.openKillable(name, site.url)
    page = own.page
    page.kill = own.kill
  } else {
    page = await chrome.open(name, site.url)
  }
  opened.push(page)
  await page.evaluate(async () => {
    const { connect } = await import('/itty-sockets.mjs')
    window.sockets = {}
    window.events = {}
    window.join = (key, url, options) => {
      const log = window.events[key] = []
      const socket = connect(url, options)
      for (const kind of ['open', 'close', 'join', 'leave', 'error', 'message']) {
        socket.on(kind, event => log.push({ ...event, kind }))
      }
      window.sockets[key] = socket
    }
  })
  return page
}

/** The events of `key` in `page` of one `kind` (all kinds when omitted). */
const events = (page, key, kind) =>
  page.evaluate(([key, kind]) => (window.events[key] ?? []).filter(e => !kind || e.kind === kind), [key, kind])

/** Waits until `page` has `count` events of `kind` on `key`; returns them. */
async function expectEvents (page, key, kind, count = 1, what = `${count} ${kind} event(s) on ${key} in ${page.name}`) {
  try {
    await page.waitForFunction(([key, kind, count]) =>
      (window.events[key] ?? []).filter(e => e.kind === kind).length >= count, [key, kind, count], { timeout: EVENT_MS })
  } catch (e) {
    throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(await events(page, key))}`)
  }
  return events(page, key, kind)
}

/** Opens `key` on `page` and returns its own join event. */
async function joined (page, key, channel, options) {
  await page.evaluate(([key, u, options]) => window.join(key, u, options), [key, url(channel), options])
  const [own] = await expectEvents(page, key, 'join', 1, `${page.name}'s own join on ${key}`)
  assert.equal(own.self, true, `${page.name}: the first join is its own: ${JSON.stringify(own)}`)
  return own
}

const send = (page, key, payload, uid) =>
  page.evaluate(([key, payload, uid]) => { window.sockets[key].send(payload, uid) }, [key, payload, uid])

function assertNoConsoleErrors (allowed = []) {
  for (const page of opened) {
    assert.deepEqual(errorsOf(page, allowed), [], `${page.name} logged errors`)
  }
}

browserTest('two pages on one channel exchange messages, with alias and echo', async () => {
  const channel = fresh('chat')
  const alice = await visitor('alice')
  const bob = await visitor('bob')
  const aliceJoin = await joined(alice, 'c', channel, { as: 'Alice', echo: true })
  await joined(bob, 'c', channel, { as: 'Bob Ω' })

  await send(alice, 'c', { text: 'hi from Alice', n: 1 })
  const [atBob] = await expectEvents(bob, 'c', 'message')
  assert.equal(atBob.alias, 'Alice')
  assert.equal(atBob.uid, aliceJoin.uid)
  assert.deepEqual(atBob.message, { text: 'hi from Alice', n: 1 })
  assert.equal(atBob.text, 'hi from Alice', 'the client spreads an object message onto the event')
  assert.equal(typeof atBob.id, 'string')
  assert.ok(Math.abs(atBob.date - Date.now()) < 60_000, `date is server time in ms: ${atBob.date}`)
  // echo=true: Alice gets her own message back, the same envelope.
  const [echoed] = await expectEvents(alice, 'c', 'message')
  assert.equal(echoed.id, atBob.id)

  await send(bob, 'c', 'hello Alice')
  const fromBob = (await expectEvents(alice, 'c', 'message', 2))[1]
  assert.equal(fromBob.alias, 'Bob Ω', 'a non-ASCII alias survives the form encoding')
  assert.equal(fromBob.message, 'hello Alice')
  // Without echo, Bob never sees his own message (Alice's reached him first).
  await alice.waitForTimeout(100)
  assert.equal((await events(bob, 'c', 'message')).length, 1)
  assertNoConsoleErrors()
})

browserTest('join and leave events carry total, announced users and the list', async () => {
  const channel = fresh('presence')
  const ann = await visitor('ann')
  const shy = await visitor('shy')
  const lister = await visitor('lister')
  const annJoin = await joined(ann, 'c', channel, { as: 'Ann', announce: true })
  assert.equal(annJoin.total, 1)
  const shyJoin = await joined(shy, 'c', channel, { as: 'Shy' })
  assert.equal(shyJoin.total, 2)
  const shyAtAnn = (await expectEvents(ann, 'c', 'join', 2))[1]
  assert.equal(shyAtAnn.total, 2)
  assert.equal(shyAtAnn.uid, undefined, 'a member who did not announce is not named')
  assert.equal(shyAtAnn.alias, undefined)

  const listJoin = await joined(lister, 'c', channel, { list: true })
  assert.equal(listJoin.total, 3)
  const users = [...listJoin.users].sort((a, b) => a.uid.localeCompare(b.uid))
  const expected = [{ uid: annJoin.uid, alias: 'Ann' }, { uid: listJoin.uid, self: true }].sort((a, b) => a.uid.localeCompare(b.uid))
  assert.deepEqual(users, expected, 'users lists the announced member and the lister itself, never the shy one')

  // Ann leaves: the others get a leave naming her, with the new total.
  await ann.evaluate(() => window.sockets.c.close())
  for (const page of [shy, lister]) {
    const [leave] = await expectEvents(page, 'c', 'leave')
    assert.equal(leave.uid, annJoin.uid)
    assert.equal(leave.alias, 'Ann')
    assert.equal(leave.total, 2)
  }
  await expectEvents(ann, 'c', 'close')
  assertNoConsoleErrors()
})

browserTest('a direct message between pages reaches its recipient only', async () => {
  const channel = fresh('dm')
  const [a, b, c] = [await visitor('dm-a'), await visitor('dm-b'), await visitor('dm-c')]
  await joined(a, 'c', channel, { as: 'A' })
  const bJoin = await joined(b, 'c', channel, { as: 'B' })
  await joined(c, 'c', channel, { as: 'C' })
  await send(a, 'c', { secret: 'for B' }, bJoin.uid)
  await send(a, 'c', { after: 'everyone' })
  const atB = await expectEvents(b, 'c', 'message', 2)
  assert.deepEqual(atB.map(e => e.message), [{ secret: 'for B' }, { after: 'everyone' }])
  // C gets the broadcast sent after the direct message, and nothing before it.
  const atC = await expectEvents(c, 'c', 'message')
  assert.deepEqual(atC.map(e => e.message), [{ after: 'everyone' }])
  // A direct message to nobody: an error event for the sender.
  await send(a, 'c', 'anyone?', 'Zz9Zz9')
  const [error] = await expectEvents(a, 'c', 'error')
  assert.equal(error.message, 'no user Zz9Zz9 on this channel')
  assertNoConsoleErrors()
})

browserTest('a wrong join key is refused, the right one joins', async () => {
  const channel = `${NAMESPACE}:${fresh('locked')}`
  const page = await visitor('keyholder')
  const refusedBefore = metric(await scrape(), 'itty_upgrades_refused_total', { label: 'reason="join_key"' })
  await page.evaluate(u => window.join('wrong', u, { joinKey: 'not-the-key' }), url(channel))
  await expectEvents(page, 'wrong', 'close', 1, 'the refused socket to close')
  assert.deepEqual((await events(page, 'wrong')).map(e => e.kind), ['close'], 'no open, no join: only a close')
  const refusedAfter = metric(await scrape(), 'itty_upgrades_refused_total', { label: 'reason="join_key"' })
  assert.equal(refusedAfter, refusedBefore + 1, 'the relay counted one join-key refusal')

  const own = await joined(page, 'right', channel, { joinKey: JOIN_KEY, as: 'Keyholder' })
  assert.equal(own.total, 1)
  // Chromium logs the refused handshake itself; nothing else may be logged.
  assert.ok(page.log.some(l => REFUSED_HANDSHAKE.test(l)), `Chromium logs the refusal:\n${page.log.join('\n')}`)
  assertNoConsoleErrors([REFUSED_HANDSHAKE])
})

browserTest('a page sending over its rate gets the rate-limit error event', async () => {
  const channel = fresh('flood')
  const flooder = await visitor('flooder')
  const listener = await visitor('flood-listener')
  await joined(flooder, 'c', channel)
  await joined(listener, 'c', channel)
  // The default burst is 100 messages: 102 at once puts 2 over it, each
  // dropped with a warning (a 4th over would kick the page and ban its IP).
  await flooder.evaluate(() => { for (let i = 0; i < 102; i++) window.sockets.c.send({ i }) })
  const errors = await expectEvents(flooder, 'c', 'error')
  assert.match(errors[0].message, /^rate limit exceeded \(warning 1 of 3\)$/)
  // The listener got the burst, in order, and none of what was dropped.
  const got = await expectEvents(listener, 'c', 'message', 100)
  assert.deepEqual(got.slice(0, 100).map(e => e.message.i), [...Array(100).keys()])
  // The bucket refills (at 1/s here, see main.rs) while the 102 go out:
  // one more may pass, never both.
  await listener.waitForTimeout(200)
  const all = (await events(listener, 'c', 'message')).map(e => e.message.i)
  assert.ok(all.length <= 101, `at most the burst and a refill got through: ${all.length}`)
  assert.deepEqual(all, [...all].sort((x, y) => x - y), 'in order')
  // Warned, not kicked: once its bucket refilled (1/s), the page still
  // publishes on the channel.
  await flooder.waitForTimeout(1500)
  await send(flooder, 'c', 'still here')
  await listener.waitForFunction(() => window.events.c.some(e => e.message === 'still here'), null, { timeout: EVENT_MS })
  assertNoConsoleErrors()
})

browserTest('a page closed, and a browser killed: their leaves reach the others', async () => {
  const channel = fresh('abrupt')
  const watcher = await visitor('watcher')
  const closer = await visitor('closer')
  const killed = await visitor('killed', { killable: true })
  await joined(watcher, 'c', channel)
  const closerJoin = await joined(closer, 'c', channel, { announce: true })
  const killedJoin = await joined(killed, 'c', channel, { announce: true })
  await expectEvents(watcher, 'c', 'join', 3)

  // The tab is closed (no beforeunload, no client close() call).
  await closer.close()
  const [left] = await expectEvents(watcher, 'c', 'leave')
  assert.equal(left.uid, closerJoin.uid)
  assert.equal(left.total, 2)

  // The whole browser dies (SIGKILL): no close frame, the kernel ends TCP.
  await killed.kill()
  const leaves = await expectEvents(watcher, 'c', 'leave', 2)
  assert.equal(leaves[1].uid, killedJoin.uid)
  assert.equal(leaves[1].total, 1)
  opened = opened.filter(p => p !== killed && p !== closer)
  assertNoConsoleErrors()
})

/** connections_accepted_total per shard. */
async function acceptedPerShard () {
  const samples = await scrape()
  return [0, 1].map(shard => metric(samples, 'itty_connections_accepted_total', { shard }))
}

/**
 * Joins `page` to a channel owned by the shard its connection did NOT land
 * on: connects, learns its home shard from the relay's accepted counters,
 * and retries (closing) until home and owner differ. Deterministic in
 * outcome, as tests/relay's `join_on`.
 */
async function joinAcrossShards (page, key) {
  for (let attempt = 0; attempt < 32; attempt++) {
    const owner = attempt % 2
    const before = await acceptedPerShard()
    const own = await joined(page, key, OWNED_BY[owner])
    const after = await acceptedPerShard()
    const home = after.findIndex((n, i) => n > before[i])
    assert.ok(home >= 0, 'a shard counted the connection')
    if (home !== owner) return { own, home, owner, channel: OWNED_BY[owner] }
    await page.evaluate(key => window.sockets[key].close(), key)
    await expectEvents(page, key, 'close')
  }
  throw new Error('no connection landed off its channel\'s owner in 32 attempts')
}

browserTest('pages on a channel owned by the other shard: messages cross shards both ways', async () => {
  assert.ok(OWNED_BY[0] && OWNED_BY[1], 'OWNED_BY_0 and OWNED_BY_1 name channels owned by each shard')
  const sender = await visitor('cross-sender')
  const sent = await joinAcrossShards(sender, 'x')
  const receiver = await visitor('cross-receiver')
  // The receiver on the channel the sender chose; wherever it lands.
  await joined(receiver, 'x', sent.channel, { as: 'Receiver' })
  await expectEvents(sender, 'x', 'join', 2)

  const forwardsBefore = metric(await scrape(), 'itty_forwards_total', { shard: sent.home })
  await send(sender, 'x', { across: `shard ${sent.home} to owner ${sent.owner}` })
  const [got] = await expectEvents(receiver, 'x', 'message')
  assert.equal(got.uid, sent.own.uid)
  assert.deepEqual(got.message, { across: `shard ${sent.home} to owner ${sent.owner}` })
  await waitFor('the home shard to count a forward', async () =>
    metric(await scrape(), 'itty_forwards_total', { shard: sent.home }) > forwardsBefore)

  // And back: the receiver answers, the sender (off the owner) gets it.
  await send(receiver, 'x', 'back')
  const [answer] = await expectEvents(sender, 'x', 'message')
  assert.equal(answer.message, 'back')
  assert.equal(answer.alias, 'Receiver')
  assertNoConsoleErrors()
})
