//! RFC 6455 frame codec for the server side of a WebSocket connection.
//!
//! Owns frame-level protocol handling: parsing and validating client frames (masking, reserved
//! bits, opcodes, control-frame rules, fragmentation, size limits, UTF-8 of text and close
//! reasons) and reassembling fragmented messages. Server frames are built in `frame`.
//!
//! It is pure (sans-IO): no sockets, no async, no clocks, so it runs on whichever shard owns the
//! connection. Peer input never makes it panic; every protocol violation comes back as a
//! [`Violation`] carrying the close code to send.

use std::io::Cursor;

use tungstenite::protocol::frame::{
    coding::{Control, Data, OpCode},
    FrameHeader,
};

pub use super::frame::HEADER_BYTES_MAX;

/// Control frames carry at most this much payload (RFC 6455 5.5).
pub(super) const CONTROL_PAYLOAD_MAX: usize = 125;
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
    pub const TOO_BIG: Self = Self {
        code: 1009,
        reason: "message too big",
    };
    pub const INVALID_UTF8: Self = Self {
        code: 1007,
        reason: "invalid utf-8",
    };
    /// A compressed message that does not inflate (RFC 7692 8.2.3.1 fails
    /// the connection; 1007: the data is inconsistent with its type).
    pub const INVALID_DEFLATE: Self = Self {
        code: 1007,
        reason: "invalid deflate data",
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
    /// Complete compressed message (RSV1 on its first frame; only after
    /// `Decoder::accept_deflate`): to be inflated, then UTF-8 checked if
    /// `text`.
    Deflated {
        text: bool,
        payload: &'a [u8],
    },
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
    /// RSV1 on a message's first frame: its payload is compressed.
    compressed: bool,
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
    /// Bytes at the front of `buffer` already known to be valid UTF-8 (a text message being
    /// reassembled), so each byte is checked once.
    utf8_checked: usize,
    /// Whether the connection negotiated permessage-deflate (RSV1 allowed).
    deflate: bool,
    /// Whether the fragmented message being reassembled is compressed.
    fragment_compressed: bool,
}

impl Decoder {
    pub fn new(message_bytes_max: usize) -> Self {
        Self {
            message_bytes_max,
            fragment: None,
            buffer: Vec::new(),
            utf8_checked: 0,
            deflate: false,
            fragment_compressed: false,
        }
    }

    /// The connection negotiated permessage-deflate: a data message's first
    /// frame may carry RSV1, and such messages come out as `Deflated`.
    pub fn accept_deflate(&mut self) {
        self.deflate = true;
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
        let (kind, range, compressed) = loop {
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
                break (header.kind, Some(start..end), header.compressed);
            }
            if self.fragment.is_none() {
                self.buffer.clear();
                self.utf8_checked = 0;
                self.fragment = Some(header.kind);
                self.fragment_compressed = header.compressed;
            }
            self.buffer.extend_from_slice(&buf[start..end]);
            if header.is_final {
                self.fragment = None;
                break (header.kind, None, self.fragment_compressed);
            }
            // Compressed bytes are checked once inflated.
            if header.kind == Kind::Text && !self.fragment_compressed {
                self.check_utf8_so_far()?;
            }
        };
        let (payload, utf8_checked): (&'a [u8], usize) = match range {
            Some(range) => (&buf[range], 0),
            None => (&self.buffer, self.utf8_checked),
        };
        let message = match kind {
            Kind::Text | Kind::Binary if compressed => Message::Deflated {
                text: kind == Kind::Text,
                payload,
            },
            Kind::Text => {
                // Starts on a character boundary, after the prefix checked fragment by fragment.
                std::str::from_utf8(&payload[utf8_checked..])
                    .map_err(|_| Violation::INVALID_UTF8)?;
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

    /// Fails a fragmented text message as soon as the bytes received so far cannot begin valid
    /// UTF-8, rather than after its last fragment (RFC 6455 8.1; Autobahn cases 6.4.1 and 6.4.2).
    /// A character cut at the end of a fragment is left for the next one to complete.
    fn check_utf8_so_far(&mut self) -> Result<(), Violation> {
        match std::str::from_utf8(&self.buffer[self.utf8_checked..]) {
            Ok(_) => self.utf8_checked = self.buffer.len(),
            Err(cut) if cut.error_len().is_none() => self.utf8_checked += cut.valid_up_to(),
            Err(_) => return Err(Violation::INVALID_UTF8),
        }
        Ok(())
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
        if header.rsv2 || header.rsv3 || (header.rsv1 && !self.deflate) {
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
        // RSV1 marks a compressed message on its first frame only (RFC 7692 6.1).
        let compressed = header.rsv1;
        if compressed && !matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary)) {
            return Err(Violation::protocol(
                "rsv1 on a control or continuation frame",
            ));
        }
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
            compressed,
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

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
