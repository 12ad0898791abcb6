// permessage-deflate with Chromium's own WebSocket (it offers
// `permessage-deflate; client_max_window_bits` on every socket and
// compresses every message it sends), the stock itty-sockets client in the
// pages, against a relay with compression on (two shards; the smallest
// envelope compressed: 512 bytes, its default). Checks, per channel owned
// by each shard: the relay accepted the offer with no context takeover
// either way (the 101's header, read through the DevTools protocol); a
// large message reaches every other page intact, compressed exactly once
// by the relay whatever the number of members (its counter); a small one
// reaches them too and is not compressed; what Chromium sent compressed
// was inflated by the relay (the pages got it back byte for byte).
//
//   RELAY_HTTP=http://127.0.0.1:PORT OWNED_BY_0=<channel> OWNED_BY_1=<channel> \
//   node --test-reporter=spec deflate.test.mjs

import test, { before, after } from 'node:test'
import assert from 'node:assert/strict'
import { launch, startStaticServer, waitFor, errorsOf, scrape, metric, watchdog, RELAY_WS } from './harness.mjs'

watchdog(120_000)

const OWNED_BY = [process.env.OWNED_BY_0, process.env.OWNED_BY_1]
/** How long one expected message may take. */
const EVENT_MS = 5000

let chrome, site

before(async () => {
  site = await startStaticServer()
  chrome = await launch()
})

after(async () => {
  await chrome?.browser.close()
  site?.close()
})

/**
 * A page with the client loaded, recording the `Sec-WebSocket-Extensions`
 * of every 101 it gets (DevTools protocol) and every message into
 * `window.messages`.
 */
async function member (name, channel) {
  const page = await chrome.open(name, site.url)
  page.extensions = []
  const cdp = await page.context().newCDPSession(page)
  await cdp.send('Network.enable')
  cdp.on('Network.webSocketHandshakeResponseReceived', ({ response }) => {
    const headers = Object.fromEntries(Object.entries(response.headers).map(([k, v]) => [k.toLowerCase(), v]))
    page.extensions.push(headers['sec-websocket-extensions'] ?? '')
  })
  await page.evaluate(async url => {
    const { connect } = await import('/itty-sockets.mjs')
    window.messages = []
    window.joined = false
    window.socket = connect(url, { echo: true })
      .on('join', e => { if (e.self) window.joined = true })
      .on('message', e => window.messages.push(e.message))
  }, `${RELAY_WS}/c/${channel}`)
  await page.waitForFunction(() => window.joined, null, { timeout: EVENT_MS })
  return page
}

/** Waits until `page` holds `count` messages; returns them. */
async function messagesOf (page, count) {
  await page.waitForFunction(n => window.messages.length >= n, count, { timeout: EVENT_MS })
    .catch(async () => { throw new Error(`${page.name}: ${count} message(s) expected, got ${JSON.stringify(await page.evaluate(() => window.messages))}`) })
  return page.evaluate(() => window.messages)
}

const compressed = async () => metric(await scrape(), 'itty_messages_compressed_total')

/** Dashboard-like state: about 3 KiB of records, which compresses well. */
const state = Array.from({ length: 40 }, (_, i) => ({ id: i, name: `pump-${i % 7}`, value: i * 1.25, state: i % 3 ? 'ok' : 'warn' }))

for (const shard of [0, 1]) {
  test(`pages on a channel owned by shard ${shard}: compressed once for all, inflated from Chromium`, async () => {
    const channel = OWNED_BY[shard]
    assert.ok(channel, `OWNED_BY_${shard} is set`)
    const pages = []
    try {
      for (const name of ['a', 'b', 'c']) pages.push(await member(`${name}-${shard}`, channel))
      for (const page of pages) {
        assert.equal(page.extensions.length, 1, `${page.name}: one handshake seen`)
        assert.match(page.extensions[0], /^permessage-deflate; server_no_context_takeover; client_no_context_takeover/,
          `${page.name}: the relay accepted Chromium's offer without context takeover`)
      }

      const before = await compressed()
      // Large: Chromium compresses it, the relay inflates it, checks it,
      // builds the envelope once, compresses it once, and every member
      // (the sender too: echo) inflates the same frame.
      await pages[0].evaluate(s => window.socket.send({ state: s }), state)
      for (const page of pages) {
        const [got] = await messagesOf(page, 1)
        assert.deepEqual(got, { state }, `${page.name} got the large message intact`)
      }
      await waitFor('the relay counted one compression', async () => (await compressed()) === before + 1)

      // Small: Chromium still compresses it; the relay's envelope stays
      // under 512 bytes and goes out plain.
      await pages[1].evaluate(() => window.socket.send('short'))
      for (const page of pages) {
        const got = await messagesOf(page, 2)
        assert.equal(got[1], 'short', `${page.name} got the small message`)
      }
      await pages[0].waitForTimeout(200)
      assert.equal(await compressed(), before + 1, 'the small message was not compressed')

      for (const page of pages) assert.deepEqual(errorsOf(page), [], `${page.name} logged errors`)
    } catch (e) {
      console.log(`--- console ---\n${chrome.logsOf(pages)}`)
      throw e
    } finally {
      for (const page of pages) await page.context().close().catch(() => {})
    }
  })
}
