//! The one helper that boots the real server for tests: two shards,
//! unpinned, on 127.0.0.1 with an ephemeral port; plus a WebSocket client
//! (tungstenite) and a raw-socket client for hostile input.

#![allow(dead_code)]

mod process;
pub mod tls;
pub use process::*;
#[allow(unused_imports)]
pub use tls::{over_tls, with_tls, Conn};

use itty_relay::access::NamespaceConfig;
use itty_relay::id::ShardId;
use itty_relay::router::owner_shard;
use itty_relay::{Config, Server};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// How long any single expected event may take before a test fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Relay {
    pub server: Option<Server>,
    pub addr: SocketAddr,
    pub shards: usize,
}

/// Boots the real relay (2 shards) with test-friendly settings.
pub fn relay() -> Relay {
    relay_with(|_| {})
}

pub fn relay_with(adjust: impl FnOnce(&mut Config)) -> Relay {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        pin: false,
        // Many servers run at once in one test process: keep the
        // registered io_uring memory small (it counts against memlock).
        io_memory_bytes: 64 * 1024,
        // Tests connect and send from 127.0.0.1 much faster than a person:
        // the limits are lifted here and set low by the tests that check
        // them (see `limits.rs`).
        upgrades_per_ip_per_sec: 1_000_000,
        upgrades_per_ip_burst: 1_000_000,
        pushes_per_ip_per_sec: 1_000_000,
        pushes_per_ip_burst: 1_000_000,
        messages_per_conn_per_sec: 1_000_000,
        messages_per_conn_burst: 1_000_000,
        ..Config::default()
    };
    if over_tls().is_some() {
        let leaf = tls::localhost_leaf();
        config.tls_cert = Some(leaf.cert.clone());
        config.tls_key = Some(leaf.key.clone());
    }
    adjust(&mut config);
    crate::run_log::capture();
    let shards = config.shards;
    let server = Server::start(config).expect("relay starts");
    let addr = server.local_addr();
    Relay {
        server: Some(server),
        addr,
        shards,
    }
}

impl Relay {
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Connects a WebSocket client to `path` and reads its own join event.
    pub fn join(&self, path: &str) -> Client {
        let mut client = self.connect(path);
        let own = client.recv();
        assert_eq!(own["type"], "join", "first frame is the own join: {own}");
        assert_eq!(own["self"], true);
        client.uid = own["uid"].as_str().unwrap().to_owned();
        client.join_event = own;
        client
    }

    /// Connects without reading anything; records the shard it landed on.
    pub fn connect(&self, path: &str) -> Client {
        crate::run_log::record_path(path);
        let before = self.accepted_per_shard();
        let stream = Conn::connect(self.addr);
        let (ws, _) = tungstenite::client::client(self.url(path), stream).expect("handshake");
        let after = self.accepted_per_shard();
        let shard = (0..self.shards)
            .find(|&i| after[i] > before[i])
            .map(|i| ShardId(i as u16))
            .expect("a shard counted the new connection");
        Client {
            ws,
            uid: String::new(),
            join_event: Value::Null,
            shard,
        }
    }

    /// Connects until it has a client on `shard` (the kernel spreads
    /// connections; extra clients are closed). Deterministic in outcome:
    /// the test knows where each client landed.
    pub fn join_on(&self, shard: ShardId, path: &str) -> Client {
        for _ in 0..64 {
            let client = self.join(path);
            if client.shard == shard {
                return client;
            }
            // Wait for the server's close: by then it has sent this
            // attempt's leave, so the attempt does not linger as a member.
            client.close_and_wait();
        }
        panic!("no connection landed on {shard:?} in 64 attempts");
    }

    /// A channel name (with `prefix`) that `shard` owns.
    pub fn channel_owned_by(&self, shard: ShardId, prefix: &str) -> String {
        (0..)
            .map(|i| format!("{prefix}-{i}"))
            .find(|name| owner_shard(name, self.shards) == shard)
            .unwrap()
    }

    pub fn http(&self, request: &str) -> (u16, String, String) {
        http_request(self.addr, request)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let (status, _, body) = self.http(&format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        ));
        (status, body)
    }

    pub fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200);
        body
    }

    /// A per-shard metric value, e.g. `metric("forwards_total", 0)`.
    pub fn metric(&self, name: &str, shard: usize) -> u64 {
        metric_in(&self.metrics(), name, shard)
    }

    pub fn metric_sum(&self, name: &str) -> u64 {
        let text = self.metrics();
        (0..self.shards).map(|s| metric_in(&text, name, s)).sum()
    }

    /// WebSocket connections accepted per shard: monotonic, so a diff
    /// around one connect names the shard it landed on.
    fn accepted_per_shard(&self) -> Vec<u64> {
        let text = self.metrics();
        (0..self.shards)
            .map(|s| metric_in(&text, "connections_accepted_total", s))
            .collect()
    }

    /// Tries a WebSocket upgrade on `path` over a raw socket; returns the
    /// status, the response head (and body, when refused) and the socket.
    pub fn upgrade(&self, path: &str) -> (u16, String, Raw) {
        crate::run_log::record_path(path);
        let mut raw = Raw::connect(self.addr);
        raw.stream
            .write_all(Raw::handshake_request(path).as_bytes())
            .unwrap();
        let mut head = raw.read_head();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        if status != 101 {
            let _ = raw.stream.read_to_string(&mut head);
        }
        (status, head, raw)
    }

    /// `POST /push/<channel>` with `x-send-key: key` (when given) and
    /// `body`; returns status, head and body.
    pub fn push(&self, channel: &str, key: Option<&str>, body: &str) -> (u16, String, String) {
        crate::run_log::record_path(&format!("/push/{channel}"));
        crate::run_log::record_sent(body);
        key.inspect(|key| crate::run_log::record_sent(key));
        let key = key.map_or(String::new(), |k| format!("x-send-key: {k}\r\n"));
        self.http(&format!(
            "POST /push/{channel} HTTP/1.1\r\nHost: t\r\n{key}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ))
    }

    /// The value of `name{shard="i",label="value"}` summed over shards.
    pub fn metric_labelled(&self, name: &str, label: &str, value: &str) -> u64 {
        let text = self.metrics();
        let needle = format!(",{label}=\"{value}\"}}");
        text.lines()
            .filter(|l| l.starts_with(&format!("itty_{name}{{")) && l.contains(&needle))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }

    /// Polls `done` every 20 ms until it holds; fails after `within`,
    /// naming `what` and showing the metrics.
    pub fn wait_until(&self, within: Duration, what: &str, mut done: impl FnMut(&Relay) -> bool) {
        let deadline = Instant::now() + within;
        while !done(self) {
            assert!(Instant::now() < deadline, "{what}:\n{}", self.metrics());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until no connection and no channel is left.
    pub fn wait_until_empty(&self, within: Duration) {
        self.wait_until(within, "connections or channels left behind", |r| {
            r.metric_sum("itty_connections_open") + r.metric_sum("itty_channels") == 0
        });
    }

    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().expect("clean shutdown");
        }
    }
}

/// A raw member of `path` with a 4 KiB receive buffer that reads its
/// head and own join, then never reads again.
pub fn stalled_member(addr: std::net::SocketAddr, path: &str) -> Raw {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: std::net::TcpStream = socket.into();
    let mut stream = match over_tls() {
        None => Conn::Plain(stream),
        Some(config) => Conn::tls(stream, config, "localhost"),
    };
    stream
        .write_all(Raw::handshake_request(path).as_bytes())
        .unwrap();
    let mut raw = Raw { stream };
    raw.stream.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    raw.read_head();
    raw.read_json();
    raw
}

pub fn metric_in(text: &str, name: &str, shard: usize) -> u64 {
    let name = if name.starts_with("itty_") {
        name.to_owned()
    } else {
        format!("itty_{name}")
    };
    let prefix = format!("{name}{{shard=\"{shard}\"");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Sends one raw HTTP request; returns status, head and body.
pub fn http_request(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = Conn::connect(addr);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

pub struct Client {
    pub ws: WebSocket<Conn>,
    pub uid: String,
    pub join_event: Value,
    pub shard: ShardId,
}

impl Client {
    pub fn send(&mut self, text: &str) {
        crate::run_log::record_sent(text);
        self.ws.send(Message::text(text)).unwrap();
    }

    pub fn send_json(&mut self, value: &Value) {
        self.send(&value.to_string())
    }

    /// The next text frame as JSON; fails the test on timeout or close.
    pub fn recv(&mut self) -> Value {
        let raw = self.recv_raw();
        let frame = serde_json::from_str(&raw)
            .unwrap_or_else(|e| panic!("server frame is not JSON ({e}): {raw}"));
        crate::run_log::record_uids(&frame);
        frame
    }

    /// The next text frame exactly as sent.
    pub fn recv_raw(&mut self) -> String {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "timed out waiting for a frame");
            match self.ws.read() {
                Ok(Message::Text(t)) => return t.to_string(),
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                Ok(other) => panic!("expected a text frame, got {other:?}"),
                Err(e) => panic!("expected a text frame, got error {e}"),
            }
        }
    }

    /// The next frame that is not a join/leave event.
    pub fn recv_message(&mut self) -> Value {
        loop {
            let v = self.recv();
            if v["type"] != "join" && v["type"] != "leave" {
                return v;
            }
        }
    }

    /// The next event of `kind` ("join", "leave", "error"), skipping others.
    pub fn recv_event(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv();
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Reads until the server's close frame; returns its code and reason.
    pub fn recv_close(&mut self) -> (u16, String) {
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(frame))) => {
                    return (u16::from(frame.code), frame.reason.to_string())
                }
                Ok(Message::Close(None)) => return (1005, String::new()),
                Ok(_) => continue,
                Err(e) => panic!("expected a close frame, got error {e}"),
            }
        }
    }

    /// Closes and reads until the server's answering close (or EOF).
    pub fn close_and_wait(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Close(_)) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    }

    pub fn close(mut self) {
        let _ = self.ws.close(Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
        let _ = self.ws.flush();
    }
}

/// A client on a raw socket, for frames a real client would never send.
pub struct Raw {
    pub stream: Conn,
}

impl Raw {
    /// Connects (over TLS when the test runs over TLS).
    pub fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: Conn::connect(addr),
        }
    }

    pub fn handshake_request(path: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    }

    /// Upgrades on `path`, reads the 101 and returns what followed it.
    pub fn upgrade(addr: SocketAddr, path: &str) -> Raw {
        crate::run_log::record_path(path);
        let mut raw = Raw::connect(addr);
        raw.stream
            .write_all(Raw::handshake_request(path).as_bytes())
            .unwrap();
        raw.read_head();
        raw
    }

    /// Reads up to the end of an HTTP response head.
    pub fn read_head(&mut self) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(
                self.stream.read(&mut byte).unwrap(),
                1,
                "connection closed in the head"
            );
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    /// A client frame: `opcode`, masked unless `mask` is None.
    pub fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n < 65536 => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(m) => {
                out.extend_from_slice(&m);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let frame = Raw::frame(fin, opcode, payload, Some([1, 2, 3, 4]));
        self.stream.write_all(&frame).unwrap();
    }

    pub fn send_text(&mut self, text: &str) {
        crate::run_log::record_sent(text);
        self.send_frame(true, 1, text.as_bytes());
    }

    /// Reads one server frame: (opcode, payload).
    pub fn read_frame(&mut self) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).unwrap();
        assert_eq!(head[1] & 0x80, 0, "server frames are unmasked");
        let len = match head[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b).unwrap();
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).unwrap();
        (head[0] & 0x0F, payload)
    }

    /// Reads frames until a close frame; returns its code.
    pub fn read_close_code(&mut self) -> u16 {
        loop {
            let (opcode, payload) = self.read_frame();
            if opcode == 8 {
                return if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    1005
                };
            }
        }
    }

    /// The next text frame as JSON, skipping pings (this client need not
    /// answer them: tests that check liveness use `read_frame`).
    pub fn read_json(&mut self) -> Value {
        let (opcode, payload) = loop {
            match self.read_frame() {
                (9, _) => continue,
                frame => break frame,
            }
        };
        assert_eq!(opcode, 1, "text frame");
        let frame = serde_json::from_slice(&payload).unwrap();
        crate::run_log::record_uids(&frame);
        frame
    }

    /// True once the server closed the TCP connection (EOF or reset).
    pub fn closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}

/// A namespace for `Config::namespace`.
pub fn namespace(prefix: &str, join_key: Option<&str>, send_key: Option<&str>) -> NamespaceConfig {
    NamespaceConfig {
        prefix: prefix.into(),
        join_key: join_key.map(Into::into),
        send_key: send_key.map(Into::into),
    }
}

/// Unique channel names per test, so failures never cross tests.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
