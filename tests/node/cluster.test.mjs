// The stock itty-sockets client (0.6.1, unchanged) against a cluster:
// clients of one channel on different relay nodes. RELAY_URLS lists the
// nodes' base URLs, comma-separated (tests/cluster/node_client.rs starts
// them on one redis-server).

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import test from 'node:test'
import { WebSocket } from 'ws'

globalThis.WebSocket = WebSocket
const { connect } = await import('itty-sockets')

const URLS = (process.env.RELAY_URLS ?? '').split(',').filter(Boolean)
if (URLS.length < 3) throw new Error(`RELAY_URLS must list 3 nodes (got ${process.env.RELAY_URLS})`)

const WAIT_MS = 5000

/** A client on `url` that records every event it gets. */
function member (url, channel, options = {}) {
  const m = { events: [], uid: undefined }
  m.client = connect(`${url}/c/${channel}`, options)
  for (const type of ['join', 'leave', 'message', 'error']) {
    m.client.on(type, (e) => {
      if (type === 'join' && e.self) m.uid = e.uid
      m.events.push({ ...e, kind: type })
    })
  }
  return m
}

async function waitFor (what, predicate) {
  const deadline = Date.now() + WAIT_MS
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

const of = (m, kind) => m.events.filter((e) => e.kind === kind)

test('stock clients on three nodes: joins and totals, messages, a direct message, a leave', async () => {
  const channel = `cluster-${randomBytes(6).toString('hex')}`
  const alice = member(URLS[0], channel, { as: 'Alice', announce: true })
  await waitFor('alice joined', () => alice.uid)
  const bob = member(URLS[1], channel, { as: 'Bob', announce: true })
  await waitFor('bob joined', () => bob.uid)
  const carol = member(URLS[2], channel, { as: 'Carol' })
  await waitFor('carol joined', () => carol.uid)
  await waitFor('alice saw two joins', () => of(alice, 'join').length === 3)
  assert.deepEqual(of(alice, 'join').map((e) => e.total), [1, 2, 3])
  assert.equal(of(alice, 'join')[1].uid, bob.uid)
  assert.equal(of(alice, 'join')[2].uid, undefined, 'carol did not announce')
  assert.equal(of(carol, 'join')[0].total, 3)

  bob.client.send({ hi: 'from bob' })
  await waitFor('alice and carol got it', () => of(alice, 'message').length === 1 && of(carol, 'message').length === 1)
  for (const m of [alice, carol]) {
    const got = of(m, 'message')[0]
    assert.deepEqual(got.message, { hi: 'from bob' })
    assert.equal(got.uid, bob.uid)
    assert.equal(got.alias, 'Bob')
  }

  carol.client.send('just for alice', alice.uid)
  await waitFor('alice got the direct message', () => of(alice, 'message').length === 2)
  assert.equal(of(alice, 'message')[1].message, 'just for alice')

  bob.client.close()
  await waitFor('the others saw bob leave', () => of(alice, 'leave').length === 1 && of(carol, 'leave').length === 1)
  assert.equal(of(alice, 'leave')[0].total, 2)
  assert.equal(of(alice, 'leave')[0].uid, bob.uid)
  assert.equal(of(bob, 'message').length, 0, 'bob got neither its own message nor the direct one')
  alice.client.close()
  carol.client.close()
})
