//! Routing and the WebSocket upgrade checks (`http::request::endpoint`) on
//! requests parsed by `http::parse_head` as a connection would.
//!
//! The input is read twice: as the bytes of a request (the seeds are real
//! upgrade requests), and as a structure the target serializes itself,
//! because random bytes almost never make a request with a path the
//! router knows and the four handshake headers right. Checks:
//! - sound: every join or echo is a GET over HTTP/1.1 with `Upgrade:
//!   websocket`, a `Connection` list holding `upgrade`, version 13 and a
//!   key of 16 bytes in base64; its channel and options are exactly what
//!   `decode_channel` and `parse_join_options` make of the target;
//! - complete: a request built valid is never refused;
//! - every refusal is 400, 404, 405 (with `Allow`) or 426 (with
//!   `Upgrade` or `Sec-WebSocket-Version`).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use itty_relay::http::request::{decode_channel, parse_join_options};
use itty_relay::http::{endpoint, parse_head, Endpoint, HeadLimits, RequestHead};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Request {
    method: Method,
    path: Path,
    channel: String,
    query: Option<String>,
    http_1_0: bool,
    upgrade: Value,
    connection: Value,
    version: Value,
    key: Key,
    extra: Vec<(String, String)>,
    /// Send each handshake header twice (the first value wins or lists join).
    repeat: bool,
}

#[derive(Arbitrary, Debug)]
enum Method {
    Get,
    Post,
    Head,
    Other(String),
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    C,
    R,
    Echo,
    Push,
    Version,
    Health,
    Metrics,
    Raw,
}

/// A handshake header: the right value (in some spelling), absent, or any.
#[derive(Arbitrary, Debug)]
enum Value {
    Right {
        upper: bool,
        list_before: Option<String>,
    },
    Missing,
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Key {
    Valid([u8; 16]),
    Missing,
    Any(String),
}

const LIMITS: HeadLimits = HeadLimits {
    head_bytes_max: 8192,
    headers_max: 64,
};

impl Request {
    fn target(&self) -> String {
        let prefix = match self.path {
            Path::C => "/c/",
            Path::R => "/r/",
            Path::Echo => "/__echo",
            Path::Push => "/push/",
            Path::Version => "/version",
            Path::Health => "/health",
            Path::Metrics => "/metrics",
            Path::Raw => "/",
        };
        let channel = match self.path {
            Path::C | Path::R | Path::Push | Path::Raw => self.channel.as_str(),
            _ => "",
        };
        match &self.query {
            Some(query) => format!("{prefix}{channel}?{query}"),
            None => format!("{prefix}{channel}"),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let method = match &self.method {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Head => "HEAD",
            Method::Other(m) => m,
        };
        let minor = if self.http_1_0 { 0 } else { 1 };
        let mut out = format!(
            "{method} {} HTTP/1.{minor}\r\nHost: relay\r\n",
            self.target()
        );
        let copies = if self.repeat { 2 } else { 1 };
        for _ in 0..copies {
            header(&mut out, "Upgrade", &self.upgrade, "websocket");
            header(&mut out, "Connection", &self.connection, "Upgrade");
            header(&mut out, "Sec-WebSocket-Version", &self.version, "13");
            match &self.key {
                Key::Valid(nonce) => {
                    out.push_str(&format!("Sec-WebSocket-Key: {}\r\n", base64(nonce)))
                }
                Key::Missing => {}
                Key::Any(key) => out.push_str(&format!("Sec-WebSocket-Key: {key}\r\n")),
            }
        }
        for (name, value) in &self.extra {
            out.push_str(&format!("X-{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    /// Whether the generator built everything right: then it must route.
    fn built_valid(&self) -> bool {
        let right = |v: &Value| {
            matches!(
                v,
                Value::Right {
                    list_before: None,
                    ..
                }
            )
        };
        let listed = |v: &Value| match v {
            Value::Right { list_before, .. } => list_before
                .as_deref()
                .is_none_or(|b| b.bytes().all(|b| (b' '..=b'~').contains(&b))),
            _ => false,
        };
        let route_ok = match self.path {
            Path::C | Path::R => {
                visible(&self.channel)
                    && decode_ok(&self.channel)
                    && self
                        .query
                        .as_deref()
                        .is_none_or(|q| visible(q) && parse_join_options(q).is_ok())
            }
            Path::Echo => self.query.is_none(),
            _ => false,
        };
        matches!(self.method, Method::Get)
            && !self.http_1_0
            && right(&self.upgrade)
            && listed(&self.connection)
            && right(&self.version)
            && matches!(self.key, Key::Valid(_))
            && self.extra.is_empty()
            && !self.repeat
            && route_ok
    }
}

/// What a request target may hold unescaped (visible ASCII).
fn visible(s: &str) -> bool {
    s.bytes().all(|b| (b'!'..=b'~').contains(&b))
}

fn decode_ok(raw: &str) -> bool {
    !raw.contains(['?', '#']) && decode_channel(raw).is_ok()
}

fn header(out: &mut String, name: &str, value: &Value, right: &str) {
    match value {
        Value::Right { upper, list_before } => {
            let right = if *upper {
                right.to_uppercase()
            } else {
                right.to_lowercase()
            };
            match list_before {
                Some(before) => out.push_str(&format!("{name}: {before}, {right}\r\n")),
                None => out.push_str(&format!("{name}: {right}\r\n")),
            }
        }
        Value::Missing => {}
        Value::Any(v) => out.push_str(&format!("{name}: {v}\r\n")),
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // As sent: real requests in the seeds reach the router directly.
    if let Ok(Some((head, _))) = parse_head(data, &LIMITS) {
        check_route(&head, None);
    }
    // As a structure: requests with every handshake part right or wrong.
    if let Ok(request) = Request::arbitrary_take_rest(Unstructured::new(data)) {
        match parse_head(&request.bytes(), &LIMITS) {
            Ok(Some((head, _))) => check_route(&head, Some(&request)),
            _ => assert!(!request.built_valid(), "a valid request did not parse"),
        }
    }
});

/// `request`: how the head was built, when the target built it.
fn check_route(head: &RequestHead, request: Option<&Request>) {
    let built_valid = request.is_some_and(Request::built_valid);
    match endpoint(head) {
        Ok(Endpoint::Join {
            channel,
            options,
            accept_key,
        }) => {
            assert_handshake(head, &accept_key);
            let (path, query) = head.target().split_once('?').unwrap_or((head.target(), ""));
            let raw = path
                .strip_prefix("/c/")
                .or_else(|| path.strip_prefix("/r/"))
                .unwrap();
            assert_eq!(decode_channel(raw).as_ref(), Ok(&channel));
            assert!(!channel.is_empty() && channel.len() <= 256);
            assert_eq!(parse_join_options(query).as_ref(), Ok(&options));
        }
        Ok(Endpoint::Echo { accept_key }) => {
            assert_handshake(head, &accept_key);
            assert_eq!(head.target().split('?').next(), Some("/__echo"));
        }
        Ok(Endpoint::Push { channel }) => {
            assert_eq!(head.method(), "POST");
            assert!(head.target().starts_with("/push/"));
            assert!(!channel.is_empty() && channel.len() <= 256);
        }
        Ok(Endpoint::Version | Endpoint::Health | Endpoint::Metrics | Endpoint::Page(_)) => {
            assert!(head.method() == "GET" || head.method() == "HEAD");
        }
        Err(refusal) => {
            assert!(!built_valid, "refused {}: {request:?}", refusal.body);
            let names: Vec<&str> = refusal.headers.iter().map(|(n, _)| *n).collect();
            match refusal.status {
                400 | 404 => assert!(names.is_empty()),
                405 => assert_eq!(names, ["Allow"]),
                426 => assert!(names == ["Upgrade"] || names == ["Sec-WebSocket-Version"]),
                status => panic!("unexpected status {status}"),
            }
            let plain = |b: u8| b.is_ascii_lowercase() || b" -/.0123456789".contains(&b);
            assert!(refusal.body.bytes().all(plain));
        }
    }
}

/// RFC 6455 4.2.1, checked on the raw header list.
fn assert_handshake(head: &RequestHead, accept_key: &str) {
    let values = |name: &str| -> Vec<String> {
        head.headers()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    };
    let listed = |name: &str, token: &str| {
        values(name)
            .iter()
            .flat_map(|v| {
                v.split(',')
                    .map(|t| t.trim_matches([' ', '\t']).to_ascii_lowercase())
                    .collect::<Vec<_>>()
            })
            .any(|t| t == token)
    };
    assert_eq!(head.method(), "GET");
    assert_eq!(head.version_minor, 1);
    assert!(listed("upgrade", "websocket"));
    assert!(listed("connection", "upgrade"));
    let version = values("sec-websocket-version");
    assert_eq!(
        version.first().map(|v| v.trim_matches([' ', '\t'])),
        Some("13")
    );
    let key = values("sec-websocket-key");
    let key = key
        .first()
        .expect("a key")
        .trim_matches([' ', '\t'])
        .to_owned();
    assert_eq!(key.len(), 24);
    assert!(key.ends_with("=="));
    assert!(key[..22]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'));
    assert_eq!(accept_key.len(), 28);
    assert_eq!(
        accept_key,
        tungstenite::handshake::derive_accept_key(key.as_bytes())
    );
}
