//! The wire specifics of the relay under test, behind one trait: how a
//! connection joins a channel, how it knows it has joined, how a message is
//! published, and where a delivered message carries the generator's stamp.
//! Everything else (schedules, accounting, the receive path) is the same for
//! every relay. Three implementations, one per `--proto` value:
//!
//! - `itty`: itty-sockets (PROTOCOL.md): itty-relay, the Node relay.
//! - `nchan`: nginx + nchan, pub/sub over one WebSocket at `/c/<channel>`;
//!   every text frame is the published payload, byte for byte; joined at the
//!   `101`; the publisher gets its own messages back (skipped by publisher id).
//! - `nats`: nats-server's WebSocket listener; `CONNECT`/`SUB`/`PING` after
//!   the upgrade, joined at the `PONG`; server frames are binary and their
//!   payloads one byte stream of protocol lines (`NatsStream`).
//!
//! `loadtest/peers/PROTOCOLS.md` has the byte-level details, as tested.
//!
//! The stamp is always the JSON array `[<publisher>,<seq>,<scheduled_ns>,"<pad>"]`
//! (see `pubsub::schedule::PayloadBuilder`); a protocol only says where in a
//! received message to look for it.

mod nats;

pub use nats::{Nats, NatsOp, NatsStream};

use crate::ws::{self, Target};

/// What a received data frame is, as far as the generator cares
/// (`Framing::Frames` protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// A relayed message: look for the stamp.
    Message,
    /// A server event (join, leave, error); `own_join` when it is the
    /// connection's own join, which ends the setup of that connection.
    Event { own_join: bool },
}

/// How the relay's frames carry messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One message or event per data frame (`classify` says which).
    Frames,
    /// Data frames whose payloads form one byte stream of NATS protocol
    /// lines, messages spanning frames (`NatsStream`).
    NatsStream,
}

/// The protocol a relay speaks. Implementations hold no per-connection state
/// (a `Framing::NatsStream` connection keeps a `NatsStream` of its own).
pub trait Wire: Send + Sync {
    /// The `--proto` name, echoed in the summary.
    fn name(&self) -> &'static str;
    /// The HTTP upgrade request that opens a connection on `channel`.
    fn upgrade_request(&self, target: &Target, channel: &str) -> Vec<u8>;
    /// Appends what to send right after the upgrade so that the connection
    /// joins `channel` (`subscribe`: it receives) and learns when it has.
    fn join_frames(&self, _channel: &str, _subscribe: bool, _out: &mut Vec<u8>) {}
    /// The `101` itself means joined (no join event, nothing to wait for).
    fn joined_on_upgrade(&self) -> bool {
        false
    }
    fn framing(&self) -> Framing {
        Framing::Frames
    }
    /// Classifies a data frame from the relay (payload already unmasked);
    /// `Framing::Frames` only.
    fn classify(&self, payload: &[u8]) -> Incoming;
    /// Appends the frame(s) that publish `payload` on `channel` to `out`.
    fn publish_frame(&self, channel: &str, payload: &[u8], out: &mut Vec<u8>);
    /// The stamp `(publisher, seq, scheduled_ns)` in a delivered message
    /// (the frame's payload, or a NATS `MSG`'s payload); `payload_len` is
    /// the publishers' payload length, a hint for where it is.
    fn find_stamp(&self, frame: &[u8], payload_len: usize) -> Option<(u64, u64, u64)>;
    /// Appends one HTTP request that pushes `body` to `channel`; false when
    /// the protocol has no HTTP push.
    fn push_request(
        &self,
        _target: &Target,
        _channel: &str,
        _send_key: &str,
        _body: &[u8],
        _out: &mut Vec<u8>,
    ) -> bool {
        false
    }
    /// Path of a Prometheus endpoint to read before and after a run.
    fn metrics_path(&self) -> Option<&'static str> {
        None
    }
}

/// `--proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// itty-sockets: itty-relay, the public service, the Node relay.
    Itty,
    /// nginx + nchan (`nchan_pubsub websocket` at `/c/<channel>`).
    Nchan,
    /// nats-server's WebSocket listener (NATS text protocol in binary frames).
    Nats,
}

impl Proto {
    pub fn wire(self) -> &'static dyn Wire {
        match self {
            Proto::Itty => &Itty,
            Proto::Nchan => &Nchan,
            Proto::Nats => &Nats,
        }
    }

    /// Fails for scenarios that need the itty protocol itself.
    pub fn require_itty(self, scenario: &str) -> anyhow::Result<()> {
        if self != Proto::Itty {
            anyhow::bail!(
                "`{scenario}` speaks the itty protocol only (--proto itty); \
                 fanout, rooms, spread, idle and connect take --proto nchan|nats"
            );
        }
        Ok(())
    }
}

/// `GET <prefix>/c/<channel>`: itty's path, and the one nchan's config maps
/// (nats-server upgrades any path).
fn upgrade_at_c(target: &Target, channel: &str) -> Vec<u8> {
    format!(
        "GET {}/c/{channel} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\
         User-Agent: itty-loadtest\r\n\r\n",
        target.prefix,
        target.host,
        ws::KEY,
    )
    .into_bytes()
}

/// The itty-sockets protocol (PROTOCOL.md): `GET /c/<channel>`, no echo,
/// events are objects starting with `{"type":`, a relayed message embeds the
/// publisher's JSON verbatim at the end of its envelope.
pub struct Itty;

/// Every server event (join, leave, error) starts with this; a relayed
/// message never has a top-level `type` (PROTOCOL.md 5).
const EVENT_PREFIX: &[u8] = b"{\"type\":";
const MESSAGE_KEY: &[u8] = b"\"message\":[";

impl Wire for Itty {
    fn name(&self) -> &'static str {
        "itty"
    }

    fn upgrade_request(&self, target: &Target, channel: &str) -> Vec<u8> {
        upgrade_at_c(target, channel)
    }

    #[inline]
    fn classify(&self, payload: &[u8]) -> Incoming {
        if !payload.starts_with(EVENT_PREFIX) {
            return Incoming::Message;
        }
        let own_join =
            payload.starts_with(b"{\"type\":\"join\"") && contains(payload, b"\"self\":true");
        Incoming::Event { own_join }
    }

    fn publish_frame(&self, _channel: &str, payload: &[u8], out: &mut Vec<u8>) {
        ws::client_frame(ws::OP_TEXT, payload, out);
    }

    #[inline]
    fn find_stamp(&self, frame: &[u8], payload_len: usize) -> Option<(u64, u64, u64)> {
        find_stamp(frame, payload_len)
    }

    fn push_request(
        &self,
        target: &Target,
        channel: &str,
        send_key: &str,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        use std::io::Write;
        let _ = write!(
            out,
            "POST {}/push/{channel} HTTP/1.1\r\nHost: {}\r\nx-send-key: {send_key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            target.prefix,
            target.host,
            body.len()
        );
        out.extend_from_slice(body);
        true
    }

    fn metrics_path(&self) -> Option<&'static str> {
        Some("/metrics")
    }
}

/// The publisher's stamp in an itty envelope, which ends with
/// `"message":[<publisher>,<seq>,<scheduled_ns>,"<padding>"]}`. The exact
/// spot (from `payload_len`) is tried first; otherwise the last
/// `"message":[` is searched from the end.
///
/// The key's `[` is the payload's first byte, so the key starts
/// `payload_len + MESSAGE_KEY.len()` bytes from the end (`- 1 + 1`: the
/// shared `[`, the closing `}`).
#[inline]
pub fn find_stamp(frame: &[u8], payload_len: usize) -> Option<(u64, u64, u64)> {
    let at = frame
        .len()
        .checked_sub(payload_len + MESSAGE_KEY.len())
        .filter(|&i| frame[i..].starts_with(MESSAGE_KEY))
        .or_else(|| {
            frame
                .windows(MESSAGE_KEY.len())
                .rposition(|w| w == MESSAGE_KEY)
        })?;
    let mut rest = &frame[at + MESSAGE_KEY.len()..];
    let a = take_u64(&mut rest)?;
    let b = take_u64(&mut rest)?;
    let c = take_u64(&mut rest)?;
    Some((a, b, c))
}

/// The stamp at the very start of a message: the payload as published,
/// `[<publisher>,<seq>,<scheduled_ns>,...` (nchan frames, NATS `MSG`s).
#[inline]
pub fn stamp_at_start(payload: &[u8]) -> Option<(u64, u64, u64)> {
    let mut rest = payload.strip_prefix(b"[")?;
    let a = take_u64(&mut rest)?;
    let b = take_u64(&mut rest)?;
    let c = take_u64(&mut rest)?;
    Some((a, b, c))
}

/// nginx + nchan with `peers/nchan/nginx.conf`: publish and subscribe over
/// one WebSocket at `/c/<channel>`. No join event (with one worker the
/// subscriber is registered before the `101` goes out), nothing but
/// messages arrive, each one text frame holding the published payload byte
/// for byte, and the publisher gets its own messages back: the receive path
/// skips those by publisher id (never a delivery, never expected).
pub struct Nchan;

impl Wire for Nchan {
    fn name(&self) -> &'static str {
        "nchan"
    }

    fn upgrade_request(&self, target: &Target, channel: &str) -> Vec<u8> {
        upgrade_at_c(target, channel)
    }

    fn joined_on_upgrade(&self) -> bool {
        true
    }

    #[inline]
    fn classify(&self, _payload: &[u8]) -> Incoming {
        Incoming::Message
    }

    fn publish_frame(&self, _channel: &str, payload: &[u8], out: &mut Vec<u8>) {
        ws::client_frame(ws::OP_TEXT, payload, out);
    }

    #[inline]
    fn find_stamp(&self, frame: &[u8], _payload_len: usize) -> Option<(u64, u64, u64)> {
        stamp_at_start(frame)
    }
}

/// Parses digits up to a comma and skips the comma.
#[inline]
fn take_u64(rest: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    let mut digits = 0;
    for (i, &c) in rest.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
                digits += 1;
            }
            b',' if digits > 0 => {
                *rest = &rest[i + 1..];
                return Some(v);
            }
            _ => return None,
        }
    }
    None
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_stamp() {
        let f = br#"{"id":"a","uid":"b","date":1,"message":[3,17,123456789,"xxxx"]}"#;
        assert_eq!(find_stamp(f, 27), Some((3, 17, 123456789)));
        assert_eq!(find_stamp(f, 99), Some((3, 17, 123456789)));
        let nested = br#"{"id":"a","date":1,"message":[1,"message":[2,3,4,"x"]}"#;
        assert_eq!(find_stamp(nested, 0), Some((2, 3, 4)));
        assert_eq!(find_stamp(br#"{"message":{"a":1}}"#, 5), None);
    }

    /// The exact spot is where the payload starts: a second key further on
    /// (not JSON, but what the search from the end would take) is not read.
    #[test]
    fn finds_the_stamp_at_the_exact_spot() {
        let payload = br#"[3,17,123456789,"x","message":[9,9,9,"y"]"#;
        let mut f = br#"{"id":"a","uid":"b","date":1,"message":"#.to_vec();
        f.extend_from_slice(payload);
        f.push(b'}');
        assert_eq!(find_stamp(&f, payload.len()), Some((3, 17, 123456789)));
        assert_eq!(find_stamp(&f, payload.len() + 1), Some((9, 9, 9)));
    }

    #[test]
    fn classifies_itty_frames() {
        let w = Proto::Itty.wire();
        assert_eq!(
            w.classify(br#"{"type":"join","uid":"abc123","self":true,"total":1,"date":1}"#),
            Incoming::Event { own_join: true }
        );
        assert_eq!(
            w.classify(br#"{"type":"join","total":2,"date":1}"#),
            Incoming::Event { own_join: false }
        );
        assert_eq!(
            w.classify(br#"{"id":"x","date":1,"message":[0,0,0,""]}"#),
            Incoming::Message
        );
    }

    #[test]
    fn push_request_has_length_and_key() {
        let t = Target::parse("ws://127.0.0.1:9/base").unwrap();
        let mut out = Vec::new();
        assert!(Itty.push_request(&t, "ns:a", "k", b"[1]", &mut out));
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("POST /base/push/ns:a HTTP/1.1\r\n"));
        assert!(text.contains("x-send-key: k\r\n"));
        assert!(text.ends_with("Content-Length: 3\r\n\r\n[1]"));
    }

    #[test]
    fn stamps_at_the_start() {
        assert_eq!(
            stamp_at_start(br#"[0,1,123456789,"xxxx"]"#),
            Some((0, 1, 123456789))
        );
        assert_eq!(stamp_at_start(br#"[0,1,"#), None);
        assert_eq!(stamp_at_start(br#"{"a":[0,1,2,"x"]}"#), None);
        assert_eq!(stamp_at_start(b""), None);
    }

    #[test]
    fn nchan_frames_are_payloads() {
        // Captured (PROTOCOLS.md): the server's frame for a published
        // `[0,1,123456789,"xxxx"]`.
        let frame = b"\x81\x16[0,1,123456789,\"xxxx\"]";
        let h = ws::parse_header(frame).unwrap();
        assert_eq!(
            (h.opcode, h.header_len, h.payload_len),
            (ws::OP_TEXT, 2, 22)
        );
        let payload = &frame[h.header_len..];
        let w = Proto::Nchan.wire();
        assert_eq!(w.classify(payload), Incoming::Message);
        assert_eq!(w.find_stamp(payload, 64), Some((0, 1, 123456789)));
        assert!(w.joined_on_upgrade());
        assert_eq!(w.framing(), Framing::Frames);
        // Anything else is not a stamp (and counts as unstamped).
        assert_eq!(w.find_stamp(b"queued messages: 0", 64), None);
        // Publishing: a masked text frame of the payload itself.
        let mut out = Vec::new();
        w.publish_frame("ch", b"[1,2,3,\"x\"]", &mut out);
        let h = ws::parse_header(&out).unwrap();
        assert_eq!(h.opcode, ws::OP_TEXT);
        let mut body = out[h.header_len..].to_vec();
        ws::mask_in_place(&mut body);
        assert_eq!(body, b"[1,2,3,\"x\"]");
        let t = Target::parse("ws://127.0.0.1:9").unwrap();
        let req = String::from_utf8(w.upgrade_request(&t, "room-1")).unwrap();
        assert!(req.starts_with("GET /c/room-1 HTTP/1.1\r\n"));
        assert!(!req.contains("Sec-WebSocket-Protocol"));
        let mut join = Vec::new();
        w.join_frames("room-1", true, &mut join);
        assert!(join.is_empty());
    }
}
