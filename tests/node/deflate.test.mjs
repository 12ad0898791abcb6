// The stock client under Node with `ws`' default permessage-deflate offer,
// against a relay with `--compression on` (RELAY_URL, set by
// tests/relay/node_client.rs). `ws` inflates transparently, so what the
// client delivers must be exactly what a plain member gets; the relay's
// `itty_messages_compressed_total` shows that compression happened, once
// per large message and never for small ones. Raw frames (RSV1 on the wire)
// are checked in tests/relay/deflate.rs.

import assert from 'node:assert/strict'
import { RELAY_URL, channelUrl, randomChannel, relayTest } from './helpers.mjs'

const METRICS_URL = RELAY_URL.replace(/^ws/, 'http') + '/metrics'

async function compressions () {
  const text = await (await fetch(METRICS_URL)).text()
  return text
    .split('\n')
    .filter((l) => l.startsWith('itty_messages_compressed_total{'))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0)
}

/** A JSON object of about `bytes` bytes that compresses well. */
function state (bytes) {
  const rows = []
  while (JSON.stringify(rows).length < bytes) rows.push({ id: rows.length, name: `row ${rows.length}`, ok: true })
  return { type: 'state', rows }
}

relayTest('deflate: negotiated by ws\' default offer; large messages compressed once, small ones not', async (s) => {
  const url = channelUrl(randomChannel('deflate'))
  const a = await s.join('A', url)
  const b = await s.join('B', url)
  const c = await s.join('C', url)
  for (const m of [a, b, c]) {
    assert.match(m.ws.extensions, /^permessage-deflate/, `${m.label} negotiated permessage-deflate`)
  }

  const before = await compressions()
  const big = state(4000)
  a.client.send(big)
  for (const m of [b, c]) {
    const got = await m.message((e) => e.message?.type === 'state', 'the large state message')
    assert.deepEqual(got.message, big)
  }
  assert.equal(await compressions() - before, 1, 'compressed once for both members')

  a.client.send({ type: 'small', n: 1 })
  for (const m of [b, c]) {
    const got = await m.message((e) => e.message?.type === 'small', 'the small message')
    assert.equal(got.message.n, 1)
  }
  assert.equal(await compressions() - before, 1, 'a small message goes out plain')
})
