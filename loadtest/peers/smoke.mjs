// A small fan-out client for every peer protocol: the recipes of
// PROTOCOLS.md in executable form, used to check them at scale (hundreds of
// connections) before itty-loadtest gains `--proto nchan|nats`. It is no
// benchmark: one Node thread, so it saturates long before the servers do.
//
//   node smoke.mjs --proto itty|nchan|nats --url ws://127.0.0.1:PORT \
//       [--members 200] [--rate 50] [--seconds 3] [--payload-bytes 64] [--channel smoke]
//
// Members join one channel; one publisher sends `--rate` messages a second
// whose payload is the generator's `[<publisher>,<seq>,<scheduled_ms>,"xx.."]`;
// each member finds the stamp the way PROTOCOLS.md says and counts it.
// Prints one JSON line of results; exits 1 if anything was lost or unparsed.

import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';

const require = createRequire(new URL('./node-relay/package.json', import.meta.url));
const { WebSocket } = require('ws');

const { values: opt } = parseArgs({
  options: {
    proto: { type: 'string', default: 'itty' },
    url: { type: 'string', default: 'ws://127.0.0.1:18300' },
    members: { type: 'string', default: '200' },
    rate: { type: 'string', default: '50' },
    seconds: { type: 'string', default: '3' },
    'payload-bytes': { type: 'string', default: '64' },
    channel: { type: 'string', default: 'smoke' },
  },
});
const proto = opt.proto;
const members = Number(opt.members);
const rate = Number(opt.rate);
const total = Math.round(rate * Number(opt.seconds));
const channel = opt.channel;

const stats = { joined: 0, received: 0, unstamped: 0, ownEchoes: 0, otherFrames: 0, reorders: 0, latencies: [] };

/** Reads `[p,seq,ms,` at `i` (the `[` of the payload); null if not a stamp. */
function stampAt(buf, i) {
  if (buf[i] !== 0x5b) return null;
  const nums = [];
  let n = 0;
  let digits = 0;
  for (i++; i < buf.length && nums.length < 3; i++) {
    const c = buf[i];
    if (c >= 0x30 && c <= 0x39) {
      n = n * 10 + (c - 0x30);
      digits++;
    } else if (c === 0x2c && digits > 0) {
      nums.push(n);
      n = 0;
      digits = 0;
    } else return null;
  }
  return nums.length === 3 ? nums : null;
}

function deliver(member, stamp, self) {
  if (!stamp) return void stats.unstamped++;
  const [publisher, seq, scheduled] = stamp;
  if (publisher === self) return void stats.ownEchoes++;
  if (seq <= member.lastSeq) stats.reorders++;
  member.lastSeq = seq;
  stats.received++;
  stats.latencies.push(performance.now() - scheduled / 1000);
}

// ---- per protocol: the URL, what "joined" is, how to publish, how to read ----

const paths = { itty: `/c/${channel}`, nchan: `/c/${channel}`, nats: '/' };

/** Opens one connection; resolves when it has joined. `self` is its publisher id (-1 for members). */
function connect(self) {
  const member = { lastSeq: -1 };
  const ws = new WebSocket(opt.url + paths[proto], { perMessageDeflate: false });
  member.ws = ws;
  return new Promise((resolve, reject) => {
    ws.on('error', reject);
    if (proto === 'itty') {
      ws.on('message', (data) => {
        // Events start with {"type":; the joiner's own join (self:true) comes first.
        if (data[2] === 0x74 && data.toString('latin1', 0, 8) === '{"type":') {
          if (!member.joined && data.includes('"self":true')) {
            member.joined = true;
            resolve(member);
          } else stats.otherFrames++;
          return;
        }
        const i = data.lastIndexOf('"message":[');
        deliver(member, i < 0 ? null : stampAt(data, i + 10), self);
      });
    } else if (proto === 'nchan') {
      // Subscribed once the 101 is in (single worker; see PROTOCOLS.md).
      ws.on('open', () => resolve(member));
      ws.on('message', (data) => deliver(member, stampAt(data, 0), self));
    } else if (proto === 'nats') {
      let pending = Buffer.alloc(0);
      ws.on('message', (data) => {
        // Server frames are binary and carry a byte stream: a frame may hold
        // many MSGs, or part of one.
        pending = pending.length ? Buffer.concat([pending, data]) : data;
        let i = 0;
        for (;;) {
          const eol = pending.indexOf('\r\n', i);
          if (eol < 0) break;
          if (pending[i] === 0x4d /* M */) {
            // MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>\r\n
            const size = Number(pending.toString('latin1', pending.lastIndexOf(' ', eol) + 1, eol));
            if (eol + 2 + size + 2 > pending.length) break; // the payload is not all in yet
            deliver(member, stampAt(pending, eol + 2), self);
            i = eol + 2 + size + 2;
            continue;
          }
          const line = pending.toString('latin1', i, eol);
          i = eol + 2;
          if (line === 'PING') ws.send(Buffer.from('PONG\r\n'));
          else if (line === 'PONG' && !member.joined) {
            member.joined = true;
            resolve(member);
          } else if (line.startsWith('INFO ')) {
            ws.send(Buffer.from(
              'CONNECT {"verbose":false,"pedantic":false,"echo":false,"headers":false,"protocol":1,"name":"smoke"}\r\n' +
                `SUB ${channel} 1\r\nPING\r\n`,
            ));
          } else if (line.startsWith('-ERR')) reject(new Error(line));
          else stats.otherFrames++;
        }
        pending = pending.subarray(i);
      });
    }
  });
}

function publish(ws, payload) {
  if (proto === 'nats') ws.send(Buffer.from(`PUB ${channel} ${Buffer.byteLength(payload)}\r\n${payload}\r\n`));
  else ws.send(payload); // itty and nchan: the payload as one text frame
}

// ---- the run ----

const t0 = performance.now();
const conns = [];
for (let i = 0; i < members; i += 100) {
  const batch = [];
  for (let j = i; j < Math.min(members, i + 100); j++) batch.push(connect(-1));
  conns.push(...(await Promise.all(batch)));
}
stats.joined = conns.length;
const publisher = await connect(0);
if (proto === 'nchan') {
  // Cross-check the count on the channel info location.
  const info = await fetch(`${opt.url.replace('ws:', 'http:')}/info/${channel}`, { headers: { Accept: 'text/json' } });
  stats.nchanSubscribers = (await info.json()).subscribers;
}
const setupMs = performance.now() - t0;

const pad = 'x'.repeat(Math.max(0, Number(opt['payload-bytes']) - 32));
const start = performance.now() + 50;
for (let seq = 0; seq < total; seq++) {
  const at = start + (seq * 1000) / rate;
  const wait = at - performance.now();
  if (wait > 1) await new Promise((r) => setTimeout(r, wait));
  publish(publisher.ws, `[0,${seq},${Math.round(at * 1000)},"${pad}"]`);
}
const expected = total * members;
const deadline = performance.now() + 3000;
while (stats.received < expected && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));

const lat = stats.latencies.sort((a, b) => a - b);
const q = (p) => (lat.length ? Number(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))].toFixed(2)) : null);
const result = {
  proto,
  url: opt.url,
  members,
  joined: stats.joined,
  setup_ms: Math.round(setupMs),
  published: total,
  expected,
  received: stats.received,
  lost: expected - stats.received,
  unstamped: stats.unstamped,
  reorders: stats.reorders,
  own_echoes: stats.ownEchoes,
  other_frames: stats.otherFrames,
  latency_ms_p50: q(0.5),
  latency_ms_p99: q(0.99),
  ...(stats.nchanSubscribers !== undefined && { nchan_info_subscribers: stats.nchanSubscribers }),
};
console.log(JSON.stringify(result));
for (const c of [...conns, publisher]) c.ws.terminate();
process.exit(result.lost || result.unstamped || result.reorders ? 1 : 0);
