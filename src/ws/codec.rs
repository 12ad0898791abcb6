//! RFC 6455 frame codec for the server side of a WebSocket connection.
//!
//! Owns frame-level protocol handling: parsing and validating client frames (masking, reserved
//! bits, opcodes, control-frame rules, fragmentation, size limits, UTF-8 of text and close
//! reasons), reassembling fragmented messages, and building unmasked server frames.
//!
//! It is pure (sans-IO): no sockets, no async, no clocks, so it runs on whichever shard owns the
//! connection. Peer input never makes it panic; every protocol violation comes back as a
//! [`Violation`] carrying the close code to send.

use std::io::Cursor;

use bytes::{Buf, Bytes};
use tungstenite::protocol::frame::{
    coding::{Control, Data, OpCode},
    FrameHeader,
};

/// Longest server (unmasked) frame header: 2 bytes plus a 64-bit extended length.
pub const HEADER_BYTES_MAX: usize = 10;

const CONTROL_PAYLOAD_MAX: usize = 125;
const CLOSE_REASON_BYTES_MAX: usize = CONTROL_PAYLOAD_MAX - 2;
/// A fragment buffer that grew beyond this is freed instead of kept for reuse, so one large
/// message does not pin memory on an otherwise idle connection.
const FRAGMENT_RETAIN_BYTES: usize = 64 * 1024;

/// A protocol violation: the close code to send (RFC 6455 7.4.1) and a short lower-case reason
/// with no user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

impl Violation {
    const TOO_BIG: Self = Self {
        code: 1009,
        reason: "message too big",
    };
    const INVALID_UTF8: Self = Self {
        code: 1007,
        reason: "invalid utf-8",
    };

    const fn protocol(reason: &'static str) -> Self {
        Self { code: 1002, reason }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.code)
    }
}

impl std::error::Error for Violation {}

#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Complete message, UTF-8 already validated.
    Text(&'a [u8]),
    /// Complete message.
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// `None` for an empty close frame; otherwise the (validated) code and the reason.
    Close(Option<(u16, &'a str)>),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub consumed: usize,
    pub message: Option<Message<'a>>,
}

impl Decoded<'_> {
    const fn need_more(consumed: usize) -> Self {
        Self {
            consumed,
            message: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
    Ping,
    Pong,
    Close,
}

/// A validated client frame header.
struct Header {
    /// For a continuation frame, the kind of the message it continues.
    kind: Kind,
    /// Part of a fragmented message (a non-final first frame or any continuation frame).
    fragment: bool,
    is_final: bool,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
}

#[derive(Debug)]
pub struct Decoder {
    message_bytes_max: usize,
    /// Kind of the fragmented message being reassembled into `buffer`.
    fragment: Option<Kind>,
    buffer: Vec<u8>,
}

impl Decoder {
    pub fn new(message_bytes_max: usize) -> Self {
        Self {
            message_bytes_max,
            fragment: None,
            buffer: Vec::new(),
        }
    }

    /// True while a fragmented message is being reassembled.
    pub fn in_fragment(&self) -> bool {
        self.fragment.is_some()
    }

    /// Decodes from the front of `buf` (bytes received from a client), unmasking payloads in
    /// place, until it has one complete message or needs more bytes.
    ///
    /// `consumed` counts the bytes of every frame fully processed (continuation frames included);
    /// the caller drops those bytes and calls again. `message: None` means "need more bytes"
    /// (`consumed` may still be > 0). An incomplete frame is never consumed. After a
    /// [`Violation`] the decoder state is unspecified: send the close frame and drop the
    /// connection. A large reassembly buffer is released at the start of the next call.
    pub fn decode<'a>(&'a mut self, buf: &'a mut [u8]) -> Result<Decoded<'a>, Violation> {
        if self.fragment.is_none() && self.buffer.capacity() > FRAGMENT_RETAIN_BYTES {
            // The message reassembled by the previous call is no longer borrowed.
            self.buffer = Vec::new();
        }
        let mut consumed = 0;
        // The payload is located by range and borrowed only after the loop, because a borrow
        // returned from inside the loop would keep `buf` and `self` borrowed across iterations.
        let (kind, range) = loop {
            let Some(header) = self.parse_header(&buf[consumed..])? else {
                return Ok(Decoded::need_more(consumed));
            };
            let start = consumed + header.header_len;
            if buf.len() - start < header.payload_len {
                return Ok(Decoded::need_more(consumed));
            }
            let end = start + header.payload_len;
            unmask(&mut buf[start..end], header.mask);
            consumed = end;
            if !header.fragment {
                break (header.kind, Some(start..end));
            }
            if self.fragment.is_none() {
                self.buffer.clear();
                self.fragment = Some(header.kind);
            }
            self.buffer.extend_from_slice(&buf[start..end]);
            if header.is_final {
                self.fragment = None;
                break (header.kind, None);
            }
        };
        let payload: &'a [u8] = match range {
            Some(range) => &buf[range],
            None => &self.buffer,
        };
        let message = match kind {
            Kind::Text => {
                std::str::from_utf8(payload).map_err(|_| Violation::INVALID_UTF8)?;
                Message::Text(payload)
            }
            Kind::Binary => Message::Binary(payload),
            Kind::Ping => Message::Ping(payload),
            Kind::Pong => Message::Pong(payload),
            Kind::Close => Message::Close(parse_close(payload)?),
        };
        Ok(Decoded {
            consumed,
            message: Some(message),
        })
    }

    /// Validates everything knowable from the header, so a hostile length or a protocol error is
    /// rejected before the caller buffers any payload.
    fn parse_header(&self, input: &[u8]) -> Result<Option<Header>, Violation> {
        const INVALID_OPCODE: Violation = Violation::protocol("invalid opcode");
        let mut cursor = Cursor::new(input);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(None),
            // The only error parse can produce on an in-memory cursor is a reserved opcode.
            Err(_) => return Err(INVALID_OPCODE),
        };
        let Some(mask) = header.mask else {
            return Err(Violation::protocol("unmasked client frame"));
        };
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(Violation::protocol("reserved bits set"));
        }
        if len >> 63 != 0 {
            return Err(Violation::protocol("invalid frame length"));
        }
        let (kind, fragment) = match (header.opcode, self.fragment) {
            (OpCode::Control(control), _) => {
                if !header.is_final {
                    return Err(Violation::protocol("fragmented control frame"));
                }
                if len > CONTROL_PAYLOAD_MAX as u64 {
                    return Err(Violation::protocol("control frame too long"));
                }
                let kind = match control {
                    Control::Close => Kind::Close,
                    Control::Ping => Kind::Ping,
                    Control::Pong => Kind::Pong,
                    Control::Reserved(_) => return Err(INVALID_OPCODE),
                };
                (kind, false)
            }
            (OpCode::Data(Data::Reserved(_)), _) => return Err(INVALID_OPCODE),
            (OpCode::Data(Data::Continue), Some(kind)) => (kind, true),
            (OpCode::Data(Data::Continue), None) => {
                return Err(Violation::protocol("unexpected continuation frame"));
            }
            (OpCode::Data(_), Some(_)) => {
                return Err(Violation::protocol("expected continuation frame"));
            }
            (OpCode::Data(Data::Text), None) => (Kind::Text, !header.is_final),
            (OpCode::Data(Data::Binary), None) => (Kind::Binary, !header.is_final),
        };
        // A first frame must not count the previous message still sitting in the buffer.
        let buffered = if fragment && self.fragment.is_some() {
            self.buffer.len()
        } else {
            0
        };
        let room = self.message_bytes_max.saturating_sub(buffered);
        let payload_len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= room)
            .ok_or(Violation::TOO_BIG)?;
        Ok(Some(Header {
            kind,
            fragment,
            is_final: header.is_final,
            mask,
            // Bounded by the 14-byte maximum header.
            header_len: cursor.position() as usize,
            payload_len,
        }))
    }
}

fn parse_close(payload: &[u8]) -> Result<Option<(u16, &str)>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::protocol("invalid close payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code_allowed(code) {
                return Err(Violation::protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| Violation::INVALID_UTF8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// RFC 6455 7.4: codes a peer may send. Stricter than tungstenite's `CloseCode::is_allowed`,
/// which also accepts the later IANA registrations 1012 and 1013.
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// Unmasks (or masks) `buf` in place with a 4-byte key, starting at key offset 0.
pub fn unmask(buf: &mut [u8], mask: [u8; 4]) {
    // Every 8-byte chunk starts at a multiple of 4, so each sees the key from offset 0.
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let (chunks, tail) = buf.as_chunks_mut::<8>();
    for chunk in chunks {
        *chunk = (u64::from_ne_bytes(*chunk) ^ wide).to_ne_bytes();
    }
    for (byte, key) in tail.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

/// Starts a server frame: a Vec holding `HEADER_BYTES_MAX` placeholder bytes, with capacity for
/// the payload the caller appends before calling [`finish_frame`].
pub fn start_frame(payload_capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_BYTES_MAX.saturating_add(payload_capacity));
    buf.resize(HEADER_BYTES_MAX, 0);
    buf
}

/// Writes the real (unmasked, FIN set) header just before the payload of a buffer from
/// [`start_frame`] and returns the frame without copying the payload.
pub fn finish_frame(mut buf: Vec<u8>, opcode: OpCode) -> Bytes {
    assert!(
        buf.len() >= HEADER_BYTES_MAX,
        "finish_frame needs a buffer from start_frame"
    );
    let len = buf.len() - HEADER_BYTES_MAX;
    let mut header = [0u8; HEADER_BYTES_MAX];
    header[0] = 0x80 | u8::from(opcode);
    let header_len = match len {
        0..=CONTROL_PAYLOAD_MAX => {
            header[1] = len as u8;
            2
        }
        126..=0xFFFF => {
            header[1] = 126;
            header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            header[1] = 127;
            header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    let start = HEADER_BYTES_MAX - header_len;
    buf[start..HEADER_BYTES_MAX].copy_from_slice(&header[..header_len]);
    let mut frame = Bytes::from(buf);
    // Unlike `slice`, advancing does not clone (and so never promotes to a shared allocation).
    frame.advance(start);
    frame
}

fn frame_from(payload: &[u8], opcode: OpCode) -> Bytes {
    let mut buf = start_frame(payload.len());
    buf.extend_from_slice(payload);
    finish_frame(buf, opcode)
}

pub fn text_frame(payload: &[u8]) -> Bytes {
    frame_from(payload, OpCode::Data(Data::Text))
}

pub fn pong_frame(payload: &[u8]) -> Bytes {
    debug_assert!(payload.len() <= CONTROL_PAYLOAD_MAX);
    frame_from(payload, OpCode::Control(Control::Pong))
}

pub fn ping_frame(payload: &[u8]) -> Bytes {
    debug_assert!(payload.len() <= CONTROL_PAYLOAD_MAX);
    frame_from(payload, OpCode::Control(Control::Ping))
}

/// Close frame with a status code and a reason, truncated on a char boundary so the payload
/// stays within the 125 bytes allowed for control frames.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let reason = &reason[..reason.floor_char_boundary(CLOSE_REASON_BYTES_MAX)];
    let mut buf = start_frame(2 + reason.len());
    buf.extend_from_slice(&code.to_be_bytes());
    buf.extend_from_slice(reason.as_bytes());
    finish_frame(buf, OpCode::Control(Control::Close))
}

pub fn empty_close_frame() -> Bytes {
    Bytes::from_static(&[0x88, 0x00])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;
    const CONTINUE: u8 = 0x00;
    const LAST: u8 = 0x80; // final continuation frame
    const TEXT: u8 = 0x81;
    const BINARY: u8 = 0x82;
    const CLOSE: u8 = 0x88;
    const PING: u8 = 0x89;
    const PONG: u8 = 0x8A;
    const NOT_FIN: u8 = 0x7F;

    /// A masked client frame; `first` is the first header byte (FIN, RSV bits, opcode).
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xFA, 0x21, 0x3D];
        let mut out = vec![first];
        match payload.len() {
            len @ 0..=125 => out.push(0x80 | len as u8),
            len @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        out
    }

    /// Decodes `bytes` with a fresh decoder and checks the outcome of the first call.
    fn check(bytes: &[u8], consumed: usize, message: Option<Message>) {
        let mut buf = bytes.to_vec();
        let expected = Ok(Decoded { consumed, message });
        assert_eq!(Decoder::new(MAX).decode(&mut buf), expected);
    }

    /// Checks that `bytes` decode to exactly one message.
    fn check_message(bytes: &[u8], message: Message) {
        check(bytes, bytes.len(), Some(message));
    }

    fn violation(max: usize, bytes: &[u8]) -> Violation {
        let mut decoder = Decoder::new(max);
        decoder
            .decode(&mut bytes.to_vec())
            .expect_err("expected a violation")
    }

    fn protocol(reason: &'static str) -> Violation {
        Violation::protocol(reason)
    }

    #[test]
    fn decodes_single_masked_text_frame() {
        check_message(&frame(TEXT, b"hello"), Message::Text(b"hello"));
    }

    #[test]
    fn decodes_back_to_back_frames_one_message_per_call() {
        let first = frame(TEXT, b"one");
        let mut buf = [first.clone(), frame(BINARY, b"two!")].concat();
        let total = buf.len();
        let mut decoder = Decoder::new(MAX);
        let message = Some(Message::Text(b"one"));
        let expected = Ok(Decoded {
            consumed: first.len(),
            message,
        });
        assert_eq!(decoder.decode(&mut buf), expected);
        let message = Some(Message::Binary(b"two!"));
        let expected = Ok(Decoded {
            consumed: total - first.len(),
            message,
        });
        assert_eq!(decoder.decode(&mut buf[first.len()..]), expected);
    }

    #[test]
    fn incomplete_input_at_every_split_consumes_only_whole_frames() {
        let first = frame(TEXT & NOT_FIN, &[b'a'; 200]);
        let whole = [first.clone(), frame(LAST, b"bc")].concat();
        for split in 0..whole.len() {
            let consumed = if split >= first.len() { first.len() } else { 0 };
            check(&whole[..split], consumed, None);
        }
        let expected = [&[b'a'; 200][..], b"bc"].concat();
        check_message(&whole, Message::Text(&expected));
    }

    #[test]
    fn decodes_16_and_64_bit_lengths() {
        for len in [126, 300, 0xFFFF, 0x10000, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            check_message(&frame(BINARY, &payload), Message::Binary(&payload));
        }
    }

    #[test]
    fn reassembles_fragmented_text_returning_interleaved_ping() {
        let head = [frame(TEXT & NOT_FIN, b"hel"), frame(PING, b"p")].concat();
        let tail = [frame(CONTINUE, b"lo "), frame(LAST, b"world")].concat();
        let mut buf = [head.clone(), tail.clone()].concat();
        let mut decoder = Decoder::new(MAX);
        let message = Some(Message::Ping(b"p"));
        let expected = Ok(Decoded {
            consumed: head.len(),
            message,
        });
        assert_eq!(decoder.decode(&mut buf), expected);
        assert!(decoder.in_fragment());
        let message = Some(Message::Text(b"hello world"));
        let expected = Ok(Decoded {
            consumed: tail.len(),
            message,
        });
        assert_eq!(decoder.decode(&mut buf[head.len()..]), expected);
        assert!(!decoder.in_fragment());
    }

    #[test]
    fn accepts_empty_message_and_empty_fragments() {
        check_message(&frame(TEXT, b""), Message::Text(b""));
        let parts = [
            frame(TEXT & NOT_FIN, b""),
            frame(CONTINUE, b""),
            frame(LAST, b""),
        ];
        check_message(&parts.concat(), Message::Text(b""));
    }

    #[test]
    fn rejects_unmasked_frame() {
        let unmasked = [TEXT, 0x02, b'h', b'i'];
        assert_eq!(violation(MAX, &unmasked), protocol("unmasked client frame"));
    }

    #[test]
    fn rejects_reserved_bits() {
        for rsv in [0x40, 0x20, 0x10] {
            let bytes = frame(TEXT | rsv, b"x");
            assert_eq!(violation(MAX, &bytes), protocol("reserved bits set"));
        }
    }

    #[test]
    fn rejects_reserved_opcodes() {
        for opcode in (0x3..=0x7).chain(0xB..=0xF) {
            let bytes = frame(0x80 | opcode, b"");
            assert_eq!(violation(MAX, &bytes), protocol("invalid opcode"));
        }
    }

    #[test]
    fn rejects_fragmented_ping() {
        let bytes = frame(PING & NOT_FIN, b"");
        assert_eq!(violation(MAX, &bytes), protocol("fragmented control frame"));
    }

    #[test]
    fn rejects_ping_over_125_bytes() {
        let bytes = frame(PING, &[0; 126]);
        assert_eq!(violation(MAX, &bytes), protocol("control frame too long"));
    }

    #[test]
    fn rejects_continuation_without_start() {
        let bytes = frame(LAST, b"x");
        assert_eq!(
            violation(MAX, &bytes),
            protocol("unexpected continuation frame")
        );
    }

    #[test]
    fn rejects_new_data_frame_during_fragmented_message() {
        let bytes = [frame(TEXT & NOT_FIN, b"a"), frame(BINARY, b"b")].concat();
        assert_eq!(
            violation(MAX, &bytes),
            protocol("expected continuation frame")
        );
    }

    #[test]
    fn rejects_64_bit_length_with_top_bit_set() {
        let header = [BINARY, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(violation(MAX, &header), protocol("invalid frame length"));
    }

    #[test]
    fn rejects_oversized_frame_from_header_alone() {
        let header = &frame(BINARY, &[0; 1001])[..8];
        assert_eq!(violation(1000, header), Violation::TOO_BIG);
        let (mut decoder, mut buf) = (Decoder::new(1001), header.to_vec());
        let result = decoder.decode(&mut buf);
        assert_eq!(
            result,
            Ok(Decoded {
                consumed: 0,
                message: None
            })
        );
    }

    #[test]
    fn rejects_reassembly_over_limit_from_continuation_header() {
        let mut decoder = Decoder::new(1000);
        let first = frame(BINARY & NOT_FIN, &[0; 600]);
        let mut at_limit = [first.clone(), frame(LAST, &[0; 400])].concat();
        assert!(decoder.decode(&mut at_limit).unwrap().message.is_some());
        let mut first = first;
        let len = first.len();
        assert_eq!(decoder.decode(&mut first), Ok(Decoded::need_more(len)));
        let over = &mut frame(LAST, &[0; 401])[..8];
        assert_eq!(decoder.decode(over), Err(Violation::TOO_BIG));
    }

    #[test]
    fn rejects_invalid_utf8_text() {
        let bytes = frame(TEXT, b"ok\xFF");
        assert_eq!(violation(MAX, &bytes), Violation::INVALID_UTF8);
        let truncated = [frame(TEXT & NOT_FIN, b"\xE2\x82"), frame(LAST, b"")].concat();
        assert_eq!(violation(MAX, &truncated), Violation::INVALID_UTF8);
    }

    #[test]
    fn accepts_utf8_sequence_split_across_fragments() {
        let euro = "€".as_bytes();
        let parts = [
            frame(TEXT & NOT_FIN, &euro[..1]),
            frame(CONTINUE, &euro[1..2]),
            frame(LAST, &euro[2..]),
        ];
        check_message(&parts.concat(), Message::Text(euro));
    }

    #[test]
    fn decodes_close_and_pong_payloads() {
        check_message(&frame(CLOSE, b""), Message::Close(None));
        check_message(&frame(CLOSE, b"\x03\xE8"), Message::Close(Some((1000, ""))));
        check_message(
            &frame(CLOSE, b"\x0F\xA0bye"),
            Message::Close(Some((4000, "bye"))),
        );
        check_message(&frame(PONG, b"p"), Message::Pong(b"p"));
    }

    #[test]
    fn rejects_bad_close_payloads() {
        let one_byte = frame(CLOSE, &[0x03]);
        assert_eq!(violation(MAX, &one_byte), protocol("invalid close payload"));
        for code in [0u16, 999, 1004, 1005, 1006, 1012, 1015, 2000, 2999, 5000] {
            let bytes = frame(CLOSE, &code.to_be_bytes());
            assert_eq!(
                violation(MAX, &bytes),
                protocol("invalid close code"),
                "{code}"
            );
        }
        let bad_reason = frame(CLOSE, b"\x03\xE8\xC3\x28");
        assert_eq!(violation(MAX, &bad_reason), Violation::INVALID_UTF8);
    }

    #[test]
    fn close_codes_are_tungstenites_minus_later_iana_registrations() {
        use tungstenite::protocol::frame::coding::CloseCode;
        for code in 0..=u16::MAX {
            let expected = CloseCode::from(code).is_allowed() && !matches!(code, 1012 | 1013);
            assert_eq!(close_code_allowed(code), expected, "code {code}");
        }
    }

    #[test]
    fn large_fragment_buffer_is_freed_on_next_call() {
        let parts = [frame(BINARY & NOT_FIN, &[7; 70_000]), frame(LAST, b"")];
        let mut decoder = Decoder::new(MAX);
        assert!(decoder
            .decode(&mut parts.concat())
            .unwrap()
            .message
            .is_some());
        assert!(decoder.buffer.capacity() > FRAGMENT_RETAIN_BYTES);
        let result = decoder.decode(&mut []);
        assert_eq!(
            result,
            Ok(Decoded {
                consumed: 0,
                message: None
            })
        );
        assert_eq!(decoder.buffer.capacity(), 0);
    }

    #[test]
    fn unmask_matches_naive_for_all_lengths_and_alignments() {
        let mask = [0xA1, 0x02, 0x5C, 0xFF];
        let data: Vec<u8> = (0..48u8).map(|i| i.wrapping_mul(37)).collect();
        for offset in 0..8 {
            for len in 0..=40 {
                let mut fast = data.clone();
                unmask(&mut fast[offset..offset + len], mask);
                let mut naive = data.clone();
                for (i, byte) in naive[offset..offset + len].iter_mut().enumerate() {
                    *byte ^= mask[i % 4];
                }
                assert_eq!(fast, naive, "offset {offset} len {len}");
            }
        }
    }

    #[test]
    fn finish_frame_header_matches_tungstenite() {
        let opcode = OpCode::Data(Data::Binary);
        for len in [0usize, 1, 125, 126, 65535, 65536] {
            let mut buf = start_frame(len);
            buf.resize(HEADER_BYTES_MAX + len, 0xAB);
            let frame = finish_frame(buf, opcode);
            let mut header = Vec::new();
            let expected = FrameHeader {
                opcode,
                ..FrameHeader::default()
            };
            expected.format(len as u64, &mut header).unwrap();
            assert_eq!(frame[..header.len()], header[..], "length {len}");
            assert_eq!(frame.len(), header.len() + len);
            assert!(frame[header.len()..].iter().all(|&b| b == 0xAB));
        }
    }

    #[test]
    fn convenience_builders_produce_expected_frames() {
        assert_eq!(text_frame(b"hi")[..], b"\x81\x02hi"[..]);
        assert_eq!(ping_frame(b"p")[..], b"\x89\x01p"[..]);
        assert_eq!(pong_frame(b"")[..], b"\x8A\x00"[..]);
        assert_eq!(close_frame(1000, "bye")[..], b"\x88\x05\x03\xE8bye"[..]);
        assert_eq!(empty_close_frame()[..], b"\x88\x00"[..]);
    }

    #[test]
    fn close_frame_truncates_reason_on_char_boundary() {
        // 121 + 3 bytes would be 124 > 123, so the first euro sign is dropped whole.
        let reason = "a".repeat(121) + "€€";
        let frame = close_frame(1001, &reason);
        assert_eq!(frame[..4], [0x88, 2 + 121, 0x03, 0xE9]);
        assert_eq!(frame[4..], reason.as_bytes()[..121]);
        let frame = close_frame(1001, &"b".repeat(200));
        assert_eq!((frame[1], frame.len()), (125, 127));
    }

    #[test]
    fn hostile_random_input_never_panics() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut messages = 0;
        for _ in 0..5000 {
            let len = (next() % 96) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Mostly a known opcode and the mask bit, so frames get past the first checks.
            if len > 1 && next() % 4 != 0 {
                let opcodes = [0x0, 0x1, 0x2, 0x8, 0x9, 0xA];
                buf[0] = (buf[0] & 0x80) | opcodes[(next() % 6) as usize];
                buf[1] = (buf[1] | 0x80) & !(next() as u8 & 0x40);
            }
            let mut decoder = Decoder::new(64);
            while let Ok(decoded) = decoder.decode(&mut buf) {
                assert!(decoded.consumed <= len);
                let (consumed, done) = (decoded.consumed, decoded.message.is_none());
                buf.drain(..consumed);
                if done {
                    break;
                }
                messages += 1;
            }
        }
        assert!(messages > 100, "only {messages} messages decoded");
    }
}
