//! The wire specifics of the relay under test, behind one trait: how a
//! connection joins a channel, how its own join is recognised, how a message
//! is published, and where a delivered frame carries the generator's stamp.
//! Everything else (schedules, accounting, the receive path) is the same for
//! every relay, so another protocol (nchan, NATS over WebSocket) is one more
//! implementation of `Wire` and one more `--proto` value.
//!
//! The stamp is always the JSON array `[<publisher>,<seq>,<scheduled_ns>,"<pad>"]`
//! (see `pubsub::exec::PayloadBuilder`); a protocol only says where in a
//! received frame to look for it.

use crate::ws::{self, Target};

/// What a received text frame is, as far as the generator cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// A relayed message: look for the stamp.
    Message,
    /// A server event (join, leave, error); `own_join` when it is the
    /// connection's own join, which ends the setup of that connection.
    Event { own_join: bool },
}

/// The protocol a relay speaks. Implementations hold no per-connection state.
pub trait Wire: Send + Sync {
    /// The `--proto` name, echoed in the summary.
    fn name(&self) -> &'static str;
    /// The HTTP upgrade request that opens a connection joined to `channel`.
    fn upgrade_request(&self, target: &Target, channel: &str) -> Vec<u8>;
    /// Classifies a text frame from the relay (payload already unmasked).
    fn classify(&self, payload: &[u8]) -> Incoming;
    /// Appends the frame(s) that publish `payload` on `channel` to `out`.
    fn publish_frame(&self, channel: &str, payload: &[u8], out: &mut Vec<u8>);
    /// The stamp `(publisher, seq, scheduled_ns)` in a delivered message;
    /// `payload_len` is the publishers' payload length, a hint for where it is.
    fn find_stamp(&self, frame: &[u8], payload_len: usize) -> Option<(u64, u64, u64)>;
    /// Appends one HTTP request that pushes `body` to `channel`; false when
    /// the protocol has no HTTP push.
    fn push_request(
        &self,
        target: &Target,
        channel: &str,
        send_key: &str,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> bool;
    /// Path of a Prometheus endpoint to read before and after a run.
    fn metrics_path(&self) -> Option<&'static str>;
}

/// `--proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// itty-sockets: itty-relay, the public service, any compatible server.
    Itty,
}

impl Proto {
    pub fn wire(self) -> &'static dyn Wire {
        match self {
            Proto::Itty => &Itty,
        }
    }
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
#[inline]
pub fn find_stamp(frame: &[u8], payload_len: usize) -> Option<(u64, u64, u64)> {
    let at = frame
        .len()
        .checked_sub(payload_len + 1 + MESSAGE_KEY.len())
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
}
