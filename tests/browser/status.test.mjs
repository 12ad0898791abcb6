// The relay's own pages in headless Chromium: `/status` with no traffic,
// then while a page applies a load that rises and falls (the figures move,
// agree with /metrics within a second's drift while it runs and exactly
// once it stops, no console error), and the landing page `/`. Screenshots
// go to $SCREENSHOTS (target/browser/ from the Rust test).
//
//   RELAY_HTTP=http://127.0.0.1:PORT LOAD_CHANNEL=<name> SCREENSHOTS=<dir> \
//   node --test-reporter=spec status.test.mjs
//
// tests/browser/main.rs boots the relay (two shards, limits lifted) and
// runs this.

import test, { before, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { launch, startStaticServer, waitFor, errorsOf, scrape, metric, watchdog, RELAY_HTTP, RELAY_WS } from './harness.mjs'

watchdog(120_000)

const LOAD_CHANNEL = process.env.LOAD_CHANNEL ?? `browser-load-${process.pid}`
const SCREENSHOTS = process.env.SCREENSHOTS ?? '.'
/** Members of the load's channel; each message is delivered to all of them. */
const LOAD_MEMBERS = 8
/** The load's publish rate over time: [messages per second, ms]. */
const LOAD_SCHEDULE = [[100, 3000], [250, 3000], [500, 5000]]
/** The page's viewport: the README's picture is its top part. */
const VIEWPORT = { width: 1200, height: 900 }

let chrome, site
const opened = []

before(async () => {
  site = await startStaticServer()
  chrome = await launch()
})

after(async () => {
  await chrome?.browser.close()
  site?.close()
})

function pageTest (name, body) {
  test(name, async () => {
    try {
      await body()
    } catch (e) {
      console.log(`--- console of the pages of "${name}" ---\n${chrome.logsOf(opened)}`)
      throw e
    }
  })
}

async function open (name, url, options) {
  const page = await chrome.open(name, url, options)
  opened.push(page)
  return page
}

/** `/metrics` names for the page's keys (`deliveries`, `dropped.binary`...). */
function metricOf (samples, key) {
  const [family, label] = key.split('.')
  const labelled = {
    closed: ['itty_connections_closed_total', 'reason'],
    dropped: ['itty_messages_dropped_total', 'reason'],
    upgrades_refused: ['itty_upgrades_refused_total', 'reason'],
    push_requests: ['itty_push_requests_total', 'status'],
  }[family]
  if (labelled) return metric(samples, labelled[0], { label: `${labelled[1]}="${label}"` })
  const gauge = ['connections_open', 'channels'].includes(key)
  return metric(samples, gauge ? `itty_${key}` : `itty_${key}_total`)
}

/** A shown rate such as `4.80 k /s` or `12 /s` as a number. */
function parseRate (text) {
  const m = /^([\d.]+)\s*(k|M|G)?/.exec(text.trim())
  assert.ok(m, `a rate: ${JSON.stringify(text)}`)
  return Number(m[1]) * ({ k: 1e3, M: 1e6, G: 1e9 }[m[2]] ?? 1)
}

/**
 * What the status page shows: the total column of every table (`key` ->
 * number as displayed), the total rates, the tiles, and the snapshot's
 * time and poll count.
 */
function shown (page) {
  return page.evaluate(() => {
    const number = text => Number(text.replace(/,/g, ''))
    const out = { totals: {}, rates: {}, tiles: {} }
    for (const td of document.querySelectorAll('td[data-k][data-s="total"]')) {
      out.totals[td.dataset.k] = number(td.firstChild.textContent)
      const rate = td.querySelector('small')
      if (rate) out.rates[td.dataset.k] = rate.textContent
    }
    for (const tile of document.querySelectorAll('.tile')) out.tiles[tile.querySelector('span').textContent] = tile.querySelector('b').textContent
    out.timeMs = Number(document.body.dataset.timeMs)
    out.polls = Number(document.body.dataset.polls)
    out.state = document.getElementById('state').textContent
    out.header = ['version', 'uptime', 'shards', 'rss'].map(id => document.getElementById(id).textContent)
    out.canvases = [...document.querySelectorAll('canvas')].map(c => [c.width, c.height])
    return out
  })
}

/** Waits for the page's next successful poll after now; returns what it shows. */
async function nextPoll (page) {
  const { polls } = await shown(page)
  await page.waitForFunction(n => Number(document.body.dataset.polls) > n, polls, { timeout: 5000 })
  return shown(page)
}

pageTest('the status page renders with no traffic', async () => {
  const page = await open('status-idle', RELAY_HTTP + '/status', { viewport: VIEWPORT })
  await page.waitForFunction(() => Number(document.body.dataset.polls) >= 2, null, { timeout: 10_000 })
  const s = await nextPoll(page)
  const version = await (await fetch(RELAY_HTTP + '/version')).text()
  assert.equal(s.header[0], version)
  assert.equal(s.header[2], '2')
  assert.match(s.header[3], /^\d+(\.\d+)? MiB$/, 'RSS in MiB')
  assert.match(s.state, /^live, updated/)
  for (const key of ['connections_open', 'channels', 'messages_published', 'deliveries', 'forwards', 'dropped.rate_limited', 'push_requests.200']) {
    assert.equal(s.totals[key], 0, `${key} with no traffic`)
  }
  assert.equal(s.tiles['deliveries /s'], '0')
  assert.equal(s.canvases.length, 6)
  for (const [w, h] of s.canvases) assert.ok(w > 100 && h > 50, `a chart is drawn at its size: ${w}x${h}`)
  // Every family and limit has its row.
  assert.equal(Object.keys(s.totals).filter(k => k.startsWith('dropped.')).length, 6)
  assert.equal(Object.keys(s.totals).filter(k => k.startsWith('push_requests.')).length, 11)
  assert.ok(await page.$$eval('#t-limits tr', rows => rows.length) >= 10)
  await page.screenshot({ path: join(SCREENSHOTS, 'status-idle.png') })
  assert.deepEqual(errorsOf(page), [], 'console errors')
})

/**
 * Applies the load from a page of the test site: LOAD_MEMBERS members and
 * one publisher on LOAD_CHANNEL, the publisher following LOAD_SCHEDULE.
 * Resolves once every member has joined; `window.load.done` turns true
 * when the schedule ends.
 */
async function startLoad () {
  const page = await open('load', site.url)
  await page.evaluate(async ([url, members, schedule]) => {
    const { connect } = await import('/itty-sockets.mjs')
    const load = window.load = { joined: 0, received: 0, sent: 0, done: false, sockets: [] }
    for (let i = 0; i < members; i++) {
      load.sockets.push(connect(url).on('join', e => { if (e.self) load.joined++ }).on('message', () => load.received++))
    }
    const publisher = connect(url).on('join', e => { if (e.self) load.joined++ })
    load.sockets.push(publisher)
    while (load.joined < members + 1) await new Promise(resolve => setTimeout(resolve, 10))
    // Every 10 ms, send what the schedule owes by now.
    const start = performance.now()
    const total = schedule.reduce((sum, [, ms]) => sum + ms, 0)
    const owed = elapsed => {
      let n = 0
      let at = 0
      for (const [rate, ms] of schedule) {
        n += rate * Math.max(0, Math.min(ms, elapsed - at)) / 1000
        at += ms
      }
      return Math.floor(n)
    }
    const tick = setInterval(() => {
      const elapsed = performance.now() - start
      for (const due = owed(elapsed); load.sent < due;) publisher.send({ n: load.sent++, at: Date.now() })
      if (elapsed >= total) { clearInterval(tick); load.done = true }
    }, 10)
  }, [`${RELAY_WS}/c/${LOAD_CHANNEL}`, LOAD_MEMBERS, LOAD_SCHEDULE])
  return page
}

pageTest('the status page follows a load and agrees with /metrics', async () => {
  const page = await open('status-load', RELAY_HTTP + '/status', { viewport: VIEWPORT })
  await page.waitForFunction(() => Number(document.body.dataset.polls) >= 3, null, { timeout: 10_000 })
  const load = await startLoad()

  // While the load runs: the figures move, and each agrees with /metrics.
  // A counter the page shows lies between a scrape just before its poll
  // and one just after (exactly), and is never staler than its snapshot
  // (taken at most a second ago: the page polls every second), so it lags
  // the second scrape by at most what the relay does between the two.
  // The levels (connections, channels) are equal.
  const moving = ['messages_published', 'deliveries', 'bytes_in', 'bytes_out']
  const counters = ['messages_published', 'deliveries', 'forwards', 'connections_accepted']
  let before = null
  let checks = 0
  let topRate = 0
  const intervals = []
  while (!(await load.evaluate(() => window.load.done))) {
    const tBefore = Date.now()
    const mBefore = await scrape()
    const s = await nextPoll(page)
    const mAfter = await scrape()
    const tAfter = Date.now()
    const lagSecs = Math.max(1, (tAfter - s.timeMs) / 1000)
    for (const key of counters) {
      const [low, high] = [metricOf(mBefore, key), metricOf(mAfter, key)]
      const perSecond = (high - low) / ((tAfter - tBefore) / 1000)
      const what = `${key}: the page shows ${s.totals[key]}, /metrics ${low} before its poll and ${high} after, ${perSecond.toFixed(0)}/s, snapshot ${tAfter - s.timeMs} ms before the second`
      assert.ok(low <= s.totals[key] && s.totals[key] <= high, what)
      assert.ok(high - s.totals[key] <= perSecond * lagSecs * 1.25 + 20, `staler than its snapshot: ${what}`)
    }
    for (const key of ['connections_open', 'channels']) {
      assert.equal(s.totals[key], metricOf(mAfter, key), key)
    }
    // The rate the page shows (over its last poll interval) is the relay's.
    const relayRate = (metricOf(mAfter, 'deliveries') - metricOf(mBefore, 'deliveries')) / ((tAfter - tBefore) / 1000)
    const pageRate = parseRate(s.rates.deliveries)
    if (relayRate > 1000) {
      assert.ok(pageRate > relayRate / 2 && pageRate < relayRate * 2, `deliveries/s: the page shows ${s.rates.deliveries}, the relay did ${relayRate.toFixed(0)}/s`)
    }
    topRate = Math.max(topRate, pageRate)
    if (before) {
      for (const key of moving) assert.ok(s.totals[key] > before.totals[key], `${key} moves: ${before.totals[key]} then ${s.totals[key]}`)
      intervals.push(s.timeMs - before.timeMs)
    }
    before = s
    checks++
    // The README's picture: the last one taken before the load ends.
    await page.screenshot({ path: join(SCREENSHOTS, 'status.png'), clip: { x: 0, y: 0, width: VIEWPORT.width, height: 560 } })
  }
  // The page's snapshots are about a second apart (the page waits 1 s after
  // each answer; every one of them was seen here, or the gap is two).
  intervals.sort((a, b) => a - b)
  assert.ok(intervals[Math.floor(intervals.length / 2)] <= 1500, `median poll interval: ${intervals}`)
  assert.ok(checks >= 5, `checked ${checks} polls under load`)
  // At the top of the schedule the page showed about the load's rate.
  const top = LOAD_SCHEDULE[LOAD_SCHEDULE.length - 1][0] * LOAD_MEMBERS
  assert.ok(topRate > top * 0.5 && topRate < top * 1.6, `deliveries/s shown at most ${topRate}, load about ${top}/s`)
  await page.screenshot({ path: join(SCREENSHOTS, 'status-load.png'), fullPage: true })

  // The load stops: its members leave, the rates fall to zero, and then
  // every counter the page shows equals /metrics exactly (but those the
  // polling itself moves: HTTP requests and bytes).
  await load.context().close()
  opened.splice(opened.indexOf(load), 1)
  let quiet
  await waitFor('the page to show the load gone', async () => {
    quiet = await nextPoll(page)
    return quiet.totals.connections_open === 0 && quiet.rates.deliveries === '0 /s' ? quiet : null
  }, 15_000)
  const samples = await scrape()
  const polled = ['http_requests', 'bytes_in', 'bytes_out']
  for (const [key, value] of Object.entries(quiet.totals)) {
    if (polled.includes(key)) continue
    assert.equal(value, metricOf(samples, key), `${key} once the load stopped`)
  }
  assert.ok(quiet.totals.deliveries >= 1000, `the load delivered: ${quiet.totals.deliveries}`)
  assert.equal(quiet.tiles['deliveries /s'], '0')
  // A few seconds of quiet, so the picture shows the rise and the fall.
  await page.waitForTimeout(3000)
  await page.screenshot({ path: join(SCREENSHOTS, 'status-after.png'), clip: { x: 0, y: 0, width: VIEWPORT.width, height: 560 } })
  assert.deepEqual(errorsOf(page), [], 'console errors')
})

pageTest('the landing page shows this host\'s URL, its version and the way to /status', async () => {
  const page = await open('landing', RELAY_HTTP + '/', { viewport: { width: 900, height: 900 } })
  const text = await page.evaluate(() => document.body.innerText)
  const version = await (await fetch(RELAY_HTTP + '/version')).text()
  assert.equal(await page.textContent('#version'), version)
  assert.ok(text.includes(`connect('${RELAY_WS}/c/my-channel'`), `the snippet has this host's ws:// URL:\n${text}`)
  assert.ok(text.includes(`${RELAY_HTTP}/push/my-channel`), 'the push example has this host\'s URL')
  assert.ok(!text.includes('THIS-HOST'))
  assert.equal(await page.getAttribute('a[href="/status"]', 'href'), '/status')
  // The link works: it leads to the live page.
  await page.click('a[href="/status"]')
  await page.waitForFunction(() => Number(document.body.dataset?.polls) >= 1, null, { timeout: 5000 })
  await page.goBack()
  await page.screenshot({ path: join(SCREENSHOTS, 'landing.png'), fullPage: true })
  assert.deepEqual(errorsOf(page), [], 'console errors')
})
