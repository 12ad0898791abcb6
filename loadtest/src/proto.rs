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
//! (see `pubsub::exec::PayloadBuilder`); a protocol only says where in a
//! received message to look for it.

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
                 fanout, rooms, spread and idle take --proto nchan|nats"
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

/// nats-server's WebSocket listener with `peers/nats/nats.conf`: the NATS
/// text protocol in binary frames. After the upgrade a connection sends
/// `CONNECT` (not verbose, no echo), `SUB <channel> 1` when it receives, and
/// `PING`; it has joined when the `PONG` comes back. Publishing is `PUB`.
pub struct Nats;

/// Not verbose (no `+OK`s), no echo of the connection's own publishes, no
/// headers (`MSG`, never `HMSG`).
pub const NATS_CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\
\"headers\":false,\"protocol\":1}\r\n";
/// The subscription id every `MSG` line carries: short, it is in every
/// delivery's bytes.
pub const NATS_SID: &str = "1";

impl Wire for Nats {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn upgrade_request(&self, target: &Target, channel: &str) -> Vec<u8> {
        upgrade_at_c(target, channel)
    }

    fn join_frames(&self, channel: &str, subscribe: bool, out: &mut Vec<u8>) {
        let sub = if subscribe {
            format!("SUB {channel} {NATS_SID}\r\n")
        } else {
            String::new()
        };
        ws::client_frame_parts(
            ws::OP_BINARY,
            &[NATS_CONNECT, sub.as_bytes(), b"PING\r\n"],
            out,
        );
    }

    fn framing(&self) -> Framing {
        Framing::NatsStream
    }

    fn classify(&self, _payload: &[u8]) -> Incoming {
        Incoming::Message
    }

    fn publish_frame(&self, channel: &str, payload: &[u8], out: &mut Vec<u8>) {
        let mut len = [0u8; 20];
        let digits = write_usize(payload.len(), &mut len);
        ws::client_frame_parts(
            ws::OP_BINARY,
            &[
                b"PUB ",
                channel.as_bytes(),
                b" ",
                digits,
                b"\r\n",
                payload,
                b"\r\n",
            ],
            out,
        );
    }

    #[inline]
    fn find_stamp(&self, payload: &[u8], _payload_len: usize) -> Option<(u64, u64, u64)> {
        stamp_at_start(payload)
    }
}

/// `v` in decimal, in the tail of `buf`.
fn write_usize(mut v: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

/// One NATS protocol operation from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsOp<'a> {
    /// `MSG <subject> <sid> [reply-to] <n>`: the message's payload.
    Msg(&'a [u8]),
    /// Must be answered with `PONG`.
    Ping,
    /// The answer to our `PING`: every command sent before it is in effect.
    Pong,
    /// `+OK`, `INFO {...}`, or anything else (the line, without `\r\n`).
    Other(&'a [u8]),
    /// `-ERR '<reason>'` (the line).
    Err(&'a [u8]),
}

/// Why `parse_nats_op` could not return an operation yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NatsNeed {
    /// The control line is not complete.
    Line,
    /// The line is a `MSG` whose payload needs this many bytes in all.
    Total(usize),
}

/// The first operation in `buf` and the bytes it takes. No allocation, no
/// copy: a `MSG`'s payload is a slice of `buf`.
#[inline]
fn parse_nats_op(buf: &[u8]) -> Result<(NatsOp<'_>, usize), NatsNeed> {
    let nl = buf.iter().position(|&b| b == b'\n').ok_or(NatsNeed::Line)?;
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.starts_with(b"MSG ") {
        // The payload size is the line's last token.
        let digits = &line[line.iter().rposition(|&b| b == b' ').unwrap_or(0) + 1..];
        let mut n: usize = 0;
        let valid = !digits.is_empty()
            && digits.iter().all(|&d| {
                n = n
                    .saturating_mul(10)
                    .saturating_add(d.wrapping_sub(b'0') as usize);
                d.is_ascii_digit()
            });
        if !valid {
            return Ok((NatsOp::Err(line), nl + 1));
        }
        let total = nl + 1 + n + 2;
        if buf.len() < total {
            return Err(NatsNeed::Total(total));
        }
        return Ok((NatsOp::Msg(&buf[nl + 1..nl + 1 + n]), total));
    }
    let op = match line {
        b"PING" => NatsOp::Ping,
        b"PONG" => NatsOp::Pong,
        _ if line.starts_with(b"-ERR") => NatsOp::Err(line),
        _ => NatsOp::Other(line),
    };
    Ok((op, nl + 1))
}

/// A connection's NATS byte stream: the payloads of the server's frames, in
/// order, cut anywhere. Whole operations in a frame are parsed in place; the
/// bytes of one cut by the frame's end are carried (copied) into the next.
#[derive(Debug, Default)]
pub struct NatsStream {
    carry: Vec<u8>,
}

/// More carried bytes than this (no line end in sight, or a `MSG` claiming
/// more than nats-server's 1 MiB `max_payload` plus its line): give up on
/// the stream's position.
const NATS_MAX_CARRY: usize = 2 * 1024 * 1024;

impl NatsStream {
    /// Feeds the next bytes of the stream; `f` gets every operation they
    /// complete, in order.
    #[inline]
    pub fn feed(&mut self, mut data: &[u8], f: &mut impl FnMut(NatsOp<'_>)) {
        // First complete the carried operation, taking no more bytes than
        // it needs, then go on in place.
        while !self.carry.is_empty() {
            if data.is_empty() {
                return;
            }
            let take = match parse_nats_op(&self.carry) {
                Err(NatsNeed::Line) => data
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(data.len(), |i| i + 1),
                Err(NatsNeed::Total(t)) => (t - self.carry.len()).min(data.len()),
                Ok(_) => 0, // not left carried; handled below
            };
            self.carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.carry.len() > NATS_MAX_CARRY {
                f(NatsOp::Err(b"-ERR 'itty-loadtest: unparsable stream'"));
                self.carry.clear();
                return;
            }
            if let Ok((op, used)) = parse_nats_op(&self.carry) {
                f(op);
                self.carry.drain(..used);
            }
        }
        loop {
            match parse_nats_op(data) {
                Ok((op, used)) => {
                    f(op);
                    data = &data[used..];
                }
                Err(_) => {
                    self.carry.extend_from_slice(data);
                    return;
                }
            }
        }
    }

    /// Bytes waiting for the rest of their operation.
    #[cfg(test)]
    pub fn carried(&self) -> usize {
        self.carry.len()
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

    fn unmasked(frame: &[u8]) -> (u8, Vec<u8>) {
        let h = ws::parse_header(frame).unwrap();
        assert_eq!(h.mask, Some(ws::MASK));
        assert_eq!(frame.len(), h.header_len + h.payload_len);
        let mut body = frame[h.header_len..].to_vec();
        ws::mask_in_place(&mut body);
        (h.opcode, body)
    }

    #[test]
    fn nats_join_and_publish_frames() {
        let w = Proto::Nats.wire();
        let mut out = Vec::new();
        w.join_frames("loadtest-fanout-1", true, &mut out);
        let (op, body) = unmasked(&out);
        assert_eq!(op, ws::OP_BINARY);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\"headers\":false,\
             \"protocol\":1}\r\nSUB loadtest-fanout-1 1\r\nPING\r\n"
        );
        out.clear();
        w.join_frames("x", false, &mut out);
        let (_, body) = unmasked(&out);
        assert!(!String::from_utf8(body).unwrap().contains("SUB"));
        out.clear();
        w.publish_frame("room", br#"[0,1,123456789,"xxxx"]"#, &mut out);
        let (op, body) = unmasked(&out);
        assert_eq!(op, ws::OP_BINARY);
        assert_eq!(body, b"PUB room 22\r\n[0,1,123456789,\"xxxx\"]\r\n");
        let mut big = vec![b'x'; 1000];
        big[0] = b'[';
        out.clear();
        w.publish_frame("r", &big, &mut out);
        let (_, body) = unmasked(&out);
        assert!(body.starts_with(b"PUB r 1000\r\n["));
        assert_eq!(body.len(), "PUB r 1000\r\n".len() + 1000 + 2);
    }

    /// What a subscriber's stream may hold: control lines, messages with
    /// and without a reply subject, a payload holding `\r\n` and `MSG`.
    fn nats_sample() -> (Vec<u8>, Vec<String>) {
        let stream = concat!(
            "INFO {\"server_id\":\"NCCZ\",\"max_payload\":1048576} \r\n",
            "PONG\r\n",
            "MSG room 1 22\r\n[0,1,123456789,\"xxxx\"]\r\n",
            "PING\r\n",
            "MSG room 1 22\r\n[0,2,123456790,\"xxxx\"]\r\n",
            "MSG room.a 7 _INBOX.x 12\r\nMSG x\r\nPING\r\r\n",
            "+OK\r\n",
            "MSG room 1 0\r\n\r\n",
            "-ERR 'Unknown Protocol Operation'\r\n",
            "MSG room 1 22\r\n[3,4,123456791,\"xxxx\"]\r\n",
        )
        .as_bytes()
        .to_vec();
        let ops = [
            "other INFO {\"server_id\":\"NCCZ\",\"max_payload\":1048576} ",
            "pong",
            "msg [0,1,123456789,\"xxxx\"]",
            "ping",
            "msg [0,2,123456790,\"xxxx\"]",
            "msg MSG x\r\nPING\r",
            "other +OK",
            "msg ",
            "err -ERR 'Unknown Protocol Operation'",
            "msg [3,4,123456791,\"xxxx\"]",
        ];
        (stream, ops.iter().map(|s| s.to_string()).collect())
    }

    fn describe(op: NatsOp<'_>) -> String {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match op {
            NatsOp::Msg(p) => format!("msg {}", s(p)),
            NatsOp::Ping => "ping".into(),
            NatsOp::Pong => "pong".into(),
            NatsOp::Other(l) => format!("other {}", s(l)),
            NatsOp::Err(l) => format!("err {}", s(l)),
        }
    }

    fn feed_all(chunks: &[&[u8]]) -> (Vec<String>, usize) {
        let mut ns = NatsStream::default();
        let mut got = Vec::new();
        for c in chunks {
            ns.feed(c, &mut |op| got.push(describe(op)));
        }
        (got, ns.carried())
    }

    #[test]
    fn nats_stream_whole() {
        let (stream, want) = nats_sample();
        let (got, left) = feed_all(&[&stream]);
        assert_eq!(got, want);
        assert_eq!(left, 0);
    }

    #[test]
    fn nats_stream_split_at_every_byte() {
        let (stream, want) = nats_sample();
        for cut in 0..=stream.len() {
            let (got, left) = feed_all(&[&stream[..cut], &stream[cut..]]);
            assert_eq!(got, want, "cut at {cut}");
            assert_eq!(left, 0, "cut at {cut}");
        }
        // Two cuts anywhere (three frames).
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let (got, _) = feed_all(&[&stream[..a], &stream[a..b], &stream[b..]]);
                assert_eq!(got, want, "cuts at {a} and {b}");
            }
        }
        // One byte per frame.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(feed_all(&bytes).0, want);
    }

    #[test]
    fn nats_stream_waits_for_the_rest() {
        let (got, left) = feed_all(&[b"MSG room 1 22\r\n[0,1,1"]);
        assert!(got.is_empty());
        assert_eq!(left, 21);
        let (got, left) = feed_all(&[b"PIN"]);
        assert!(got.is_empty());
        assert_eq!(left, 3);
        // A malformed size is an error line, not a stuck stream.
        let (got, left) = feed_all(&[b"MSG room 1 x2\r\nPONG\r\n"]);
        assert_eq!(got, vec!["err MSG room 1 x2", "pong"]);
        assert_eq!(left, 0);
    }

    #[test]
    fn nats_stamps_are_at_the_payload_start() {
        let w = Proto::Nats.wire();
        let (stream, _) = nats_sample();
        let mut stamps = Vec::new();
        NatsStream::default().feed(&stream, &mut |op| {
            if let NatsOp::Msg(p) = op {
                stamps.push(w.find_stamp(p, 22));
            }
        });
        assert_eq!(
            stamps,
            vec![
                Some((0, 1, 123456789)),
                Some((0, 2, 123456790)),
                None,
                None,
                Some((3, 4, 123456791))
            ]
        );
    }
}
