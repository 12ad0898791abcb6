// Shared by the browser suites: Debian's Chromium (never a downloaded
// browser) driven by playwright-core, a tiny static server that gives the
// pages the stock itty-sockets ESM build from node_modules, pages whose
// console is recorded and printed when a test fails, and waits with
// deadlines. Nothing is fetched from the internet.

import { createServer } from 'node:http'
import { readFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import { chromium } from 'playwright-core'

const here = dirname(fileURLToPath(import.meta.url))

/** The relay under test: `http://127.0.0.1:PORT` (the Rust test sets RELAY_HTTP). */
export const RELAY_HTTP = (process.env.RELAY_HTTP ?? '').replace(/\/+$/, '')
if (!/^http:\/\/[^/]+$/.test(RELAY_HTTP)) {
  throw new Error(`RELAY_HTTP must be the relay's base URL, e.g. http://127.0.0.1:4000 (got ${JSON.stringify(process.env.RELAY_HTTP)})`)
}
export const RELAY_WS = RELAY_HTTP.replace(/^http/, 'ws')

/** Debian's package puts it here; CHROMIUM overrides. */
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium'

/**
 * Flags this machine needs: no sandbox as root, no GPU, and none of the
 * background traffic (updates, sync, QUIC probes) a closed network refuses.
 */
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage', '--disable-extensions', '--mute-audio',
  // Background tabs would throttle timers; every page here is "visible".
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
]

/** Last resort: however a suite gets stuck, the process ends. */
export function watchdog (ms) {
  setTimeout(() => {
    console.error(`watchdog fired after ${ms} ms; exiting`)
    process.exit(1)
  }, ms).unref()
}

/**
 * Serves the test page and the client: `/itty-sockets.mjs` is
 * node_modules/itty-sockets/connect.mjs byte for byte (the package's ESM
 * build), `/` an empty page that imports nothing by itself.
 */
export async function startStaticServer () {
  const client = await readFile(join(here, 'node_modules/itty-sockets/connect.mjs'))
  const page = '<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>itty-sockets test page</title></head><body></body></html>'
  const server = createServer((req, res) => {
    if (req.url === '/itty-sockets.mjs') {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' })
      res.end(client)
    } else if (req.url === '/' || req.url.startsWith('/?')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
      res.end(page)
    } else {
      res.writeHead(404).end()
    }
  })
  await new Promise(resolve => server.listen(0, '127.0.0.1', resolve))
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() }
}

/**
 * Starts Chromium with a fresh profile. Returns the browser and `open()`,
 * which makes a page in its own context (its own cookies and cache, as a
 * separate visitor), recording its console, page errors and failed requests
 * into `page.log`.
 */
export async function launch () {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: apt-get install chromium (.ci/run does)`)
  }
  // playwright-core gives the browser a fresh temporary --user-data-dir.
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  })
  const pages = []
  async function open (name, url, { viewport = { width: 900, height: 700 } } = {}) {
    const context = await browser.newContext({ viewport })
    const page = await context.newPage()
    page.name = name
    page.log = []
    const note = line => page.log.push(`[${name}] ${line}`)
    page.on('console', m => note(`console.${m.type()}: ${m.text()}`))
    page.on('pageerror', e => note(`pageerror: ${e.message}`))
    page.on('requestfailed', r => note(`requestfailed: ${r.url()} ${r.failure()?.errorText}`))
    page.on('crash', () => note('crashed'))
    pages.push(page)
    if (url) await page.goto(url)
    return page
  }
  /**
   * A page in a Chromium of its own, and `kill()`, which ends that browser
   * with SIGKILL: its sockets die with the process, no close frame sent.
   */
  async function openKillable (name, url) {
    const server = await chromium.launchServer({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 })
    const other = await chromium.connect(server.wsEndpoint())
    const page = await (await other.newContext()).newPage()
    page.name = name
    page.log = []
    page.on('console', m => page.log.push(`[${name}] console.${m.type()}: ${m.text()}`))
    page.on('pageerror', e => page.log.push(`[${name}] pageerror: ${e.message}`))
    pages.push(page)
    if (url) await page.goto(url)
    return { page, kill: () => server.kill() }
  }
  /** The log of `some` pages (all by default), for a failure message. */
  function logsOf (some = pages) {
    return some.map(p => p.log.length ? p.log.join('\n') : `[${p.name}] (console empty)`).join('\n')
  }
  return { browser, open, openKillable, logsOf }
}

/** Console errors and page errors a page logged, less those `allowed` matches. */
export function errorsOf (page, allowed = []) {
  return page.log.filter(line =>
    /console\.error|pageerror|crashed/.test(line) && !allowed.some(re => re.test(line)))
}

/** Waits for `check()` (sync or async) to return a truthy value, or fails naming `what`. */
export async function waitFor (what, check, timeoutMs = 5000, everyMs = 25) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    try {
      last = await check()
      if (last) return last
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`)
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
}

/** The relay's /metrics as { 'name{labels}': value }. */
export async function scrape () {
  const text = await (await fetch(RELAY_HTTP + '/metrics')).text()
  const samples = {}
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue
    const at = line.lastIndexOf(' ')
    samples[line.slice(0, at)] = Number(line.slice(at + 1))
  }
  return samples
}

/** Sum of `itty_<name>` over shards (and labels), from a scrape; `shard` picks one. */
export function metric (samples, name, { shard, label } = {}) {
  let total = 0
  for (const [key, value] of Object.entries(samples)) {
    const brace = key.indexOf('{')
    if (key.slice(0, brace) !== name) continue
    if (shard != null && !key.includes(`shard="${shard}"`)) continue
    if (label != null && !key.includes(label)) continue
    total += value
  }
  return total
}
