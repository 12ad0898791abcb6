// An itty-sockets relay on Node and the `ws` package: the relay a user would
// otherwise write, used as a peer in loadtest/side-by-side.sh.
//
// It speaks the part of the protocol (shared PROTOCOL.md) that the stock
// `itty-sockets` client and itty-loadtest use:
//   - `GET /c/<channel>` (and `/r/<channel>`) upgrades, query `as`/`alias`,
//     `echo`, `announce`, `list`;
//   - relayed messages `{"id","uid","alias","date","message"}` with the sent
//     JSON embedded verbatim as the last key;
//   - direct messages (`\x1F<uid>\x1F<json>` and the legacy `@@<uid>@@<json>`);
//   - join, leave and error events;
//   - `GET /version`, `GET /health`; 404 and 426 for the rest.
// Not here: join/send keys, namespaces, HTTP push, rate limits, bans.
//
// Written the way a competent Node developer would: one process, a Map of
// channels to Sets of sockets, the envelope serialized once per message and
// the same bytes handed to every member, slow consumers dropped at 1 MiB of
// buffered output, ws's documented ping/pong heartbeat.
//
//   node relay.mjs [HOST:]PORT        (default 127.0.0.1:18300)

import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { WebSocketServer, WebSocket } from 'ws';

const VERSION = '0.1.0';
/** Largest message accepted (PROTOCOL.md section 8); ws closes with 1009 past it. */
const MESSAGE_BYTES_MAX = 100 * 1024;
/** A member with more unsent bytes than this is closed: it never slows the channel. */
const BUFFERED_BYTES_MAX = 1024 * 1024;
/** Ping every member this often; one that has not ponged since the last ping is dropped. */
const HEARTBEAT_MS = 30_000;
const CHANNEL_BYTES_MAX = 256;
const ALIAS_BYTES_MAX = 64;

const BASE62 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** channel name -> Set of member sockets */
const channels = new Map();
let nextMessageId = 0;

function randomUid() {
  const bytes = randomBytes(6);
  let uid = '';
  for (const b of bytes) uid += BASE62[b % 62];
  return uid;
}

function messageId() {
  let n = nextMessageId++;
  let id = '';
  do {
    id = BASE62[n % 62] + id;
    n = Math.floor(n / 62);
  } while (n > 0);
  return id;
}

function send(member, data) {
  if (member.readyState !== WebSocket.OPEN) return;
  if (member.bufferedAmount > BUFFERED_BYTES_MAX) {
    member.close(1008, 'slow consumer');
    return;
  }
  member.send(data, { binary: false });
}

/** The event a member gets about `who` (join or leave); uid and alias only if announced. */
function event(type, who, total) {
  const e = { type };
  if (who.announce) {
    e.uid = who.uid;
    if (who.alias) e.alias = who.alias;
  }
  e.total = total;
  e.date = Date.now();
  return JSON.stringify(e);
}

function errorEvent(member, message) {
  send(member, JSON.stringify({ type: 'error', message, date: Date.now() }));
}

/** Splits a direct message `\x1F<uid>\x1F<json>` / `@@<uid>@@<json>`; null if it is a broadcast. */
function splitDirect(text) {
  for (const sep of ['\x1F', '@@']) {
    if (!text.startsWith(sep)) continue;
    const end = text.indexOf(sep, sep.length);
    if (end < 0) return { invalid: true };
    return { to: text.slice(sep.length, end), json: text.slice(end + sep.length) };
  }
  return null;
}

function onMessage(member, data, isBinary) {
  if (isBinary) return errorEvent(member, 'binary frames are not supported');
  let json = data.toString();
  const direct = splitDirect(json);
  if (direct?.invalid) return errorEvent(member, 'message is not valid JSON');
  if (direct) json = direct.json;
  try {
    JSON.parse(json); // validation only: the sender's text is relayed as it came
  } catch {
    return errorEvent(member, 'message is not valid JSON');
  }
  const alias = member.alias ? `,"alias":${JSON.stringify(member.alias)}` : '';
  const envelope = Buffer.from(
    `{"id":"${messageId()}","uid":"${member.uid}"${alias},"date":${Date.now()},"message":${json}}`,
  );
  const members = channels.get(member.channel);
  if (direct) {
    for (const m of members) {
      if (m.uid === direct.to) return send(m, envelope);
    }
    return errorEvent(member, `no user ${direct.to} on this channel`);
  }
  for (const m of members) {
    if (m !== member || member.echo) send(m, envelope);
  }
}

function join(member) {
  let members = channels.get(member.channel);
  if (!members) channels.set(member.channel, (members = new Set()));
  members.add(member);
  const self = { type: 'join', uid: member.uid };
  if (member.alias) self.alias = member.alias;
  self.self = true;
  if (member.list) {
    self.users = [];
    for (const m of members) {
      if (m === member) self.users.push(m.alias ? { uid: m.uid, alias: m.alias, self: true } : { uid: m.uid, self: true });
      else if (m.announce) self.users.push(m.alias ? { uid: m.uid, alias: m.alias } : { uid: m.uid });
    }
  }
  self.total = members.size;
  self.date = Date.now();
  send(member, JSON.stringify(self));
  const others = event('join', member, members.size);
  for (const m of members) if (m !== member) send(m, others);
}

function leave(member) {
  const members = channels.get(member.channel);
  if (!members?.delete(member)) return;
  if (members.size === 0) return channels.delete(member.channel);
  const e = event('leave', member, members.size);
  for (const m of members) send(m, e);
}

/** Parses `/c/<channel>?...`; returns the member's options or an HTTP status and reason. */
function parseJoin(url) {
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  const m = /^\/[cr]\/(.+)$/.exec(path);
  if (!m) return { status: 404, reason: 'not found' };
  let channel;
  try {
    channel = decodeURIComponent(m[1]);
  } catch {
    return { status: 400, reason: 'channel is not valid UTF-8' };
  }
  if (Buffer.byteLength(channel) > CHANNEL_BYTES_MAX) return { status: 400, reason: 'channel name too long' };
  const params = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
  const alias = params.get('as') ?? params.get('alias') ?? '';
  if (Buffer.byteLength(alias) > ALIAS_BYTES_MAX) return { status: 400, reason: 'alias too long' };
  return {
    channel,
    alias,
    echo: params.get('echo') === 'true',
    announce: params.get('announce') === 'true',
    list: params.get('list') === 'true',
  };
}

function refuse(socket, status, reason) {
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: text/plain\r\n` +
      `Content-Length: ${Buffer.byteLength(reason) + 1}\r\nConnection: close\r\n\r\n${reason}\n`,
  );
}

const wss = new WebSocketServer({ noServer: true, maxPayload: MESSAGE_BYTES_MAX, clientTracking: false });

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  const [status, body] =
    req.method === 'GET' && path === '/version' ? [200, VERSION]
    : req.method === 'GET' && path === '/health' ? [200, 'ok']
    : /^\/[cr]\/./.test(path) ? [426, 'upgrade required']
    : [404, 'not found'];
  res.writeHead(status, { 'Content-Type': 'text/plain' }).end(body + '\n');
});

server.on('upgrade', (req, socket, head) => {
  const opts = parseJoin(req.url);
  if (opts.status) return refuse(socket, opts.status, opts.reason);
  wss.handleUpgrade(req, socket, head, (member) => {
    Object.assign(member, opts, { uid: randomUid(), alive: true });
    member.on('message', (data, isBinary) => onMessage(member, data, isBinary));
    member.on('pong', () => (member.alive = true));
    member.on('close', () => leave(member));
    member.on('error', () => {}); // 'close' follows; nothing else to do
    join(member);
  });
});

// ws's documented heartbeat: drop members that did not answer the last ping.
const heartbeat = setInterval(() => {
  for (const members of channels.values()) {
    for (const m of members) {
      if (!m.alive) {
        m.terminate();
        continue;
      }
      m.alive = false;
      m.ping();
    }
  }
}, HEARTBEAT_MS);

const listen = process.argv[2] ?? '127.0.0.1:18300';
const [host, port] = listen.includes(':') ? listen.split(/:(?=\d+$)/) : ['127.0.0.1', listen];
server.listen(Number(port), host, () => {
  const a = server.address();
  console.error(`node-relay ${VERSION} listening on ${a.address}:${a.port} (pid ${process.pid})`);
});

// Shutdown: members get 1001, then the process exits 200 ms later (or at
// once on a second signal), whatever is still queued.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (!server.listening) process.exit(0);
    clearInterval(heartbeat);
    server.close();
    for (const members of channels.values()) for (const m of members) m.close(1001, 'server shutting down');
    setTimeout(() => process.exit(0), 200);
  });
}
