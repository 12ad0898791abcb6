// Shared helpers for itty_client.test.mjs: the WebSocket implementation the
// stock client uses under Node, a per-test scope that owns and closes every
// client, waits with deadlines, pacing that stays inside the relay's default
// limits, and a check of every frame the relay sent against docs/PROTOCOL.md §5.
//
// Nothing here changes the client: `itty-sockets` is imported as published and
// only finds `WebSocket` as a global, as it would in a browser.

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import test, { after } from 'node:test'
import { WebSocket as WsWebSocket } from 'ws'
import { connect } from 'itty-sockets'

/** The relay's base URL, e.g. `ws://127.0.0.1:4000` (no trailing slash). */
export const RELAY_URL = (process.env.RELAY_URL ?? '').replace(/\/+$/, '')
if (!/^wss?:\/\/[^/]+$/.test(RELAY_URL)) {
  throw new Error(`RELAY_URL must be the relay's base URL, e.g. ws://127.0.0.1:4000 (got ${JSON.stringify(process.env.RELAY_URL)})`)
}

/** Default hard timeout of one test, in ms. */
export const TEST_TIMEOUT_MS = 6000

/** How long the clients may take to finish their close handshakes at the end of a test. */
const CLOSE_WAIT_MS = 1500

/**
 * A wait gives up this long before its test's hard timeout, leaving time for
 * the closing checks, so it fails with a useful message rather than a bare
 * "test timed out".
 */
const WAIT_MARGIN_MS = CLOSE_WAIT_MS + 500

/**
 * The relay allows 10 upgrades per second per IP with a burst of 20
 * (docs/PROTOCOL.md §8). Every connection here comes from 127.0.0.1, so the suite
 * paces itself below that: a bucket of `RELAY_CONNECT_BURST` (default 15)
 * refilled at `RELAY_CONNECT_RATE` per second (default 8). A harness that
 * raises the relay's limit may set RELAY_CONNECT_RATE=0 to turn pacing off.
 */
const CONNECT_RATE_PER_SEC = Number(process.env.RELAY_CONNECT_RATE ?? 8)
const CONNECT_BURST = Number(process.env.RELAY_CONNECT_BURST ?? 15)

/** Last resort: however the suite gets stuck, the process ends. Unref'd, so it never keeps it alive. */
const WATCHDOG_MS = 180_000
setTimeout(() => {
  console.error(`itty_client.test.mjs: watchdog fired after ${WATCHDOG_MS} ms; exiting`)
  process.exit(1)
}, WATCHDOG_MS).unref()

// ---------------------------------------------------------------------------
// The WebSocket the client uses.
//
// itty-sockets 0.6.1 calls `new WebSocket(url)` on the free identifier
// `WebSocket`, i.e. `globalThis.WebSocket`; Node 20 has none unless flagged.
// We install the `ws` package's client there, subclassed only to *record*:
// the frames the client sends (to check the wire format), every frame the
// relay sends (to check it against the protocol), errors, and the close code.
// The one behavioural difference from bare `ws`: an 'error' listener is
// attached, so a socket error (refused handshake, bad frame from the relay)
// is recorded and fails the test with a message instead of being an
// unhandled 'error' event that would crash a real Node app.
// ---------------------------------------------------------------------------

/** Every socket the client has created, in creation order. */
const createdSockets = []

class RecordingWebSocket extends WsWebSocket {
  constructor (address, protocols, options) {
    super(address, protocols, options)
    /** Frames the client handed to send(), as given (string, or undefined for `.send()`). */
    this.sentFrames = []
    /** Frames the relay sent: `{ text, isBinary }`. */
    this.receivedFrames = []
    /** Errors emitted by ws (handshake refused, protocol violation by the relay, ...). */
    this.errors = []
    /** Close code as ws reports it (1005 = close frame without a code). */
    this.closeCode = undefined
    this.on('error', (err) => this.errors.push(err))
    this.on('message', (data, isBinary) => this.receivedFrames.push({ text: isBinary ? null : data.toString(), isBinary }))
    this.on('close', (code) => { this.closeCode = code })
    createdSockets.push(this)
  }

  send (data, ...rest) {
    this.sentFrames.push(data)
    return super.send(data, ...rest)
  }
}

globalThis.WebSocket = RecordingWebSocket

// Whatever happened, no socket outlives the suite.
after(() => {
  for (const ws of createdSockets) if (ws.readyState !== WsWebSocket.CLOSED) ws.terminate()
})

// ---------------------------------------------------------------------------
// Small utilities.
// ---------------------------------------------------------------------------

/** A channel name nobody else uses: `node-<time>-<random>`. */
export function randomChannel (tag = 'c') {
  return `node-${tag}-${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`
}

/** The full channel URL the tests hand to the stock client. */
export function channelUrl (name) {
  return `${RELAY_URL}/c/${name}`
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

let connectTokens = CONNECT_BURST
let connectTokensAt = Date.now()
let connectQueue = Promise.resolve()

/** Resolves when one more WebSocket upgrade fits the pacing above. */
function connectSlot () {
  if (!(CONNECT_RATE_PER_SEC > 0)) return Promise.resolve()
  const slot = connectQueue.then(async () => {
    for (;;) {
      const now = Date.now()
      connectTokens = Math.min(CONNECT_BURST, connectTokens + ((now - connectTokensAt) / 1000) * CONNECT_RATE_PER_SEC)
      connectTokensAt = now
      if (connectTokens >= 1) { connectTokens -= 1; return }
      await sleep(Math.ceil(((1 - connectTokens) / CONNECT_RATE_PER_SEC) * 1000))
    }
  })
  connectQueue = slot
  return slot
}

/** A short, readable summary of a delivered event for failure messages. */
function brief (e) {
  const s = JSON.stringify(e)
  return s && s.length > 160 ? s.slice(0, 157) + '...' : s
}

// ---------------------------------------------------------------------------
// Member: one stock client plus what it received through its own listeners.
// ---------------------------------------------------------------------------

export class Member {
  /**
   * @param {Scope} scope
   * @param {string} label name used in failure messages
   * @param {string} url full ws:// channel URL, handed to the client as is
   * @param {object} options query options handed to the client as is
   * @param {(client) => void} [beforeListen] runs right after connect(), before
   *   any `.on()` (the first `.on()` opens the socket)
   */
  constructor (scope, label, url, options, beforeListen) {
    this.scope = scope
    this.label = label
    /** Every event the client delivered, via a catch-all filter `.on(() => true, fn)`. */
    this.events = []
    /** Delivered to `.on('message')`. */
    this.messages = []
    /** Delivered to `.on('join')`, `.on('leave')`, `.on('error')`. */
    this.joins = []
    this.leaves = []
    this.errorEvents = []
    /** Calls of `.on('open')` / `.on('close')` listeners. */
    this.opens = 0
    this.closes = 0
    /** Sockets this client created (more than one after a reconnect). */
    this.sockets = []
    this.waiters = new Set()

    const firstSocket = createdSockets.length
    this.client = connect(url, options)
    beforeListen?.(this.client)
    const record = (list) => (e) => { list.push(e); this.notify() }
    this.client
      .on('open', () => { this.opens++; this.notify() })
      .on('close', () => { this.closes++; this.notify() })
      .on('message', record(this.messages))
      .on('join', record(this.joins))
      .on('leave', record(this.leaves))
      .on('error', record(this.errorEvents))
      .on(() => true, record(this.events))
    this.adoptNewSockets(firstSocket)
    assert.equal(this.sockets.length, 1, `${label}: the client should have created exactly one WebSocket`)
    scope.members.push(this)
  }

  adoptNewSockets (from) {
    for (const ws of createdSockets.slice(from)) {
      ws.on('close', () => this.notify())
      this.sockets.push(ws)
    }
  }

  /** The client's current socket. */
  get ws () { return this.sockets[this.sockets.length - 1] }

  /** Own join event (self: true) of the current connection, if it arrived. */
  get ownJoin () { return this.joins.filter((e) => e.self === true)[this.sockets.length - 1] }

  get uid () { return this.ownJoin?.uid }

  /** Delivered 'message' payloads. */
  get payloads () { return this.messages.map((e) => e.message) }

  /** Calls the client's `.open()` and records the new socket (a reconnect after close). */
  reopen () {
    const from = createdSockets.length
    this.client.open()
    this.adoptNewSockets(from)
  }

  notify () {
    for (const w of [...this.waiters]) w()
  }

  /**
   * Resolves with the first truthy value of `check()`, evaluated now and after
   * every event; rejects at the scope's deadline, listing what did arrive.
   */
  until (check, what) {
    return new Promise((resolve, reject) => {
      let timer
      const done = () => { clearTimeout(timer); this.waiters.delete(poll) }
      const poll = () => {
        let value
        try { value = check() } catch (err) { done(); reject(err); return }
        if (value) { done(); resolve(value); return }
        // Nothing more can arrive on a closed socket (until a reconnect).
        if (this.ws.readyState === WsWebSocket.CLOSED) { done(); reject(this.failure(`${what}: the socket closed first`)) }
      }
      this.waiters.add(poll)
      timer = setTimeout(() => { done(); reject(this.failure(`timed out waiting for ${what}`)) }, this.scope.remainingMs())
      poll()
    })
  }

  /** An Error saying what this member's socket and listeners saw. */
  failure (headline) {
    const ws = this.ws
    return new Error(
      `${this.label}: ${headline}\n` +
      `  socket readyState=${ws.readyState} closeCode=${ws.closeCode} errors=${ws.errors.map((e) => e.message).join('; ') || 'none'}\n` +
      `  last events (${this.events.length} in all): ${this.events.slice(-8).map(brief).join('\n    ') || 'none'}`
    )
  }

  /** Waits for the client's 'message' listener to get an event matching `pred`. */
  message (pred, what = 'a message') {
    return this.until(() => this.messages.find(pred), what)
  }

  /** Waits for this member's own join event. */
  joined () {
    return this.until(() => this.ownJoin, 'its own join event')
  }

  /** Waits until the client reported 'close' and the socket is closed. */
  closed () {
    return this.until(() => this.closes >= this.sockets.length && this.ws.readyState === WsWebSocket.CLOSED, "the 'close' event")
  }
}

// ---------------------------------------------------------------------------
// Scope: everything one test opened; closed and checked at its end.
// ---------------------------------------------------------------------------

let barrierSeq = 0

export class Scope {
  constructor (name, timeoutMs) {
    this.name = name
    this.deadline = Date.now() + timeoutMs - WAIT_MARGIN_MS
    this.members = []
  }

  remainingMs () {
    return Math.max(50, this.deadline - Date.now())
  }

  /** A stock client on `url`, listeners attached (so it is connecting), not waited for. */
  async member (label, url, options = {}, beforeListen) {
    await connectSlot()
    return new Member(this, label, url, options, beforeListen)
  }

  /** A stock client on `url` that has received its own join event. */
  async join (label, url, options = {}) {
    const m = await this.member(label, url, options)
    await m.joined()
    return m
  }

  /**
   * Causal barrier: `from` broadcasts a marker and every member of `to` waits
   * for it. Anything the relay sent `to` before the marker (because of an
   * earlier frame) has arrived by then, so "X was not delivered" can be
   * asserted after it without sleeping.
   */
  async barrier (from, to) {
    const marker = `barrier-${++barrierSeq}`
    from.client.send({ barrier: marker })
    await Promise.all(to.map((m) => m.message((e) => e.message?.barrier === marker, `barrier ${marker} from ${from.label}`)))
    return marker
  }

  /**
   * End of a passing test: closes every client at once with the stock
   * `.close()`. Each close handshake must finish within CLOSE_WAIT_MS with the
   * relay's answer to an empty close (1005, or 1000), and no socket may have
   * had an error or received a frame that breaks docs/PROTOCOL.md §5.
   */
  async closeAllChecked () {
    const problems = []
    await Promise.all(this.members.map(async (m) => {
      const ws = m.ws
      if (ws.readyState === WsWebSocket.CLOSED) return
      const wasOpen = ws.readyState === WsWebSocket.OPEN
      m.client.close()
      const ok = await new Promise((resolve) => {
        if (ws.readyState === WsWebSocket.CLOSED) return resolve(true)
        const timer = setTimeout(() => resolve(false), CLOSE_WAIT_MS)
        ws.once('close', () => { clearTimeout(timer); resolve(true) })
      })
      if (!ok) {
        problems.push(`${m.label}: close handshake not finished after ${CLOSE_WAIT_MS} ms (readyState ${ws.readyState}); the relay must answer the close frame and then close the TCP connection`)
        ws.terminate()
      } else if (wasOpen && ![1000, 1005].includes(ws.closeCode)) {
        problems.push(`${m.label}: the relay answered an empty close with code ${ws.closeCode}, expected an empty close (1005) or 1000`)
      }
    }))
    for (const m of this.members) {
      for (const ws of m.sockets) {
        for (const err of ws.errors) problems.push(`${m.label}: WebSocket error: ${err.message}`)
        problems.push(...frameProblems(m.label, ws.receivedFrames))
      }
    }
    assert.deepEqual(problems, [], 'problems found while closing / checking frames')
  }

  /** After a failure: drop every socket at once, no handshake. */
  terminateAll () {
    for (const m of this.members) for (const ws of m.sockets) if (ws.readyState !== WsWebSocket.CLOSED) ws.terminate()
  }
}

/** Runs `fn(scope)` as a node:test test with a hard timeout; every client is closed at the end. */
export function relayTest (name, fn, { timeout = TEST_TIMEOUT_MS } = {}) {
  test(name, { timeout }, async () => {
    const scope = new Scope(name, timeout)
    try {
      await fn(scope)
      await scope.closeAllChecked()
    } finally {
      scope.terminateAll()
    }
  })
}

// ---------------------------------------------------------------------------
// Frame check against docs/PROTOCOL.md §5 (every frame of every test goes through it).
// ---------------------------------------------------------------------------

const isUid = (v) => typeof v === 'string' && /^[A-Za-z0-9]{6}$/.test(v)
const isDate = (v) => Number.isInteger(v) && Math.abs(v - Date.now()) < 10 * 60_000
const ALLOWED_KEYS = {
  join: ['type', 'uid', 'alias', 'self', 'users', 'total', 'date'],
  leave: ['type', 'uid', 'alias', 'total', 'date'],
  error: ['type', 'message', 'date'],
  relayed: ['id', 'uid', 'alias', 'date', 'message']
}

/** Problems with the relay's frames as received by one socket (empty when all is well). */
export function frameProblems (label, frames) {
  const out = []
  frames.forEach(({ text, isBinary }, i) => {
    const at = `${label}: frame ${i}`
    if (isBinary) { out.push(`${at}: binary frame (the relay must send text frames only)`); return }
    let v
    try { v = JSON.parse(text) } catch { out.push(`${at}: not one JSON value (this crashes the client): ${text.slice(0, 80)}`); return }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) { out.push(`${at}: not a JSON object: ${text.slice(0, 80)}`); return }
    const kind = v.type === undefined ? 'relayed' : v.type
    const allowed = ALLOWED_KEYS[kind]
    if (!allowed) { out.push(`${at}: unknown top-level type ${JSON.stringify(v.type)}`); return }
    const extra = Object.keys(v).filter((k) => !allowed.includes(k))
    if (extra.length) out.push(`${at}: unexpected keys ${extra.join(',')} on a ${kind} frame`)
    if (!isDate(v.date)) out.push(`${at}: date is not integer ms near now: ${v.date}`)
    if ('uid' in v && !isUid(v.uid)) out.push(`${at}: bad uid ${JSON.stringify(v.uid)}`)
    if ('alias' in v && (typeof v.alias !== 'string' || v.alias === '')) out.push(`${at}: bad alias ${JSON.stringify(v.alias)}`)
    if (kind === 'relayed') {
      if (typeof v.id !== 'string' || v.id === '') out.push(`${at}: relayed message without a string id`)
      if (!('message' in v)) out.push(`${at}: relayed message without message`)
    } else if (kind === 'error') {
      if (typeof v.message !== 'string' || v.message === '') out.push(`${at}: error event without a message string`)
    } else {
      if (!Number.isInteger(v.total) || v.total < (kind === 'join' ? 1 : 0)) out.push(`${at}: bad total ${v.total}`)
      if (kind === 'join' && 'self' in v && v.self !== true) out.push(`${at}: self must be true when present`)
      if (kind === 'join' && v.self === true && !isUid(v.uid)) out.push(`${at}: own join without uid`)
      if (kind === 'join' && 'users' in v) {
        if (v.self !== true) out.push(`${at}: users on someone else's join`)
        if (!Array.isArray(v.users)) out.push(`${at}: users is not an array`)
        else {
          for (const u of v.users) {
            const ek = Object.keys(u).filter((k) => !['uid', 'alias', 'self'].includes(k))
            if (!isUid(u.uid) || ek.length) out.push(`${at}: bad users entry ${JSON.stringify(u)}`)
            if ('self' in u && (u.self !== true || u.uid !== v.uid)) out.push(`${at}: only the joiner's own users entry may carry self (true)`)
          }
        }
      }
    }
  })
  if (frames.length) {
    const first = frames[0].isBinary ? null : (() => { try { return JSON.parse(frames[0].text) } catch { return null } })()
    if (!(first?.type === 'join' && first.self === true)) out.push(`${label}: the first frame was not its own join event`)
  }
  return out
}
