//! `--proto nats`: nats-server's WebSocket listener. The NATS text protocol
//! in binary frames, whose payloads form one byte stream of protocol lines
//! (`NatsStream` parses it in place, across frame boundaries).

use super::*;

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

#[cfg(test)]
mod tests {
    use super::*;

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
