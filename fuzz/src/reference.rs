//! Reference implementations written straight from the RFCs, simple rather
//! than fast, and the session-like drivers the targets feed the relay's
//! decoders with. The targets compare the relay's parsers with these.

use itty_relay::ws::codec::{Decoder, Message};

/// The longest client frame header: 2 bytes, a 64-bit length, a mask key.
pub const CLIENT_HEADER_BYTES_MAX: usize = 14;

/// What a WebSocket decoder reports, owned so that runs can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    Violation(u16, &'static str),
}

impl Event {
    fn from_message(message: Message<'_>) -> Event {
        match message {
            Message::Text(t) => Event::Text(t.to_vec()),
            Message::Binary(b) => Event::Binary(b.to_vec()),
            Message::Ping(p) => Event::Ping(p.to_vec()),
            Message::Pong(p) => Event::Pong(p.to_vec()),
            Message::Close(c) => Event::Close(c.map(|(code, reason)| (code, reason.to_owned()))),
            Message::Deflated { .. } => unreachable!("the fuzzed decoder never accepts deflate"),
        }
    }
}

/// What a stream of client bytes decoded to.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamOutcome {
    pub events: Vec<Event>,
    /// Bytes left unconsumed at the end (an incomplete frame); empty after
    /// a violation, when the connection is closed and nothing is kept.
    pub leftover: Vec<u8>,
}

/// Decodes `wire` the way a connection does: each chunk is appended to
/// what is left of the previous ones, every complete message is taken,
/// the consumed bytes are dropped. Stops at the first violation.
///
/// Checks on the way what must hold whatever the input: messages within
/// the limit, text and close reasons valid UTF-8, control payloads within
/// 125 bytes, and never more left over than one frame at the limit.
pub fn decode_stream(message_bytes_max: usize, wire: &[u8], chunks: &[usize]) -> StreamOutcome {
    let mut decoder = Decoder::new(message_bytes_max);
    let mut events = Vec::new();
    let mut carry: Vec<u8> = Vec::new();
    let mut at = 0;
    for &size in chunks {
        carry.extend_from_slice(&wire[at..at + size]);
        at += size;
        let mut start = 0;
        loop {
            match decoder.decode(&mut carry[start..]) {
                Err(violation) => {
                    events.push(Event::Violation(violation.code, violation.reason));
                    return StreamOutcome {
                        events,
                        leftover: Vec::new(),
                    };
                }
                Ok(decoded) => {
                    start += decoded.consumed;
                    let Some(message) = decoded.message else {
                        break;
                    };
                    check_message(&message, message_bytes_max);
                    events.push(Event::from_message(message));
                }
            }
        }
        carry.drain(..start);
        assert!(
            carry.len() < CLIENT_HEADER_BYTES_MAX + message_bytes_max,
            "{} bytes held for one frame, limit {message_bytes_max}",
            carry.len()
        );
    }
    assert_eq!(at, wire.len(), "chunks must cover the input");
    StreamOutcome {
        events,
        leftover: carry,
    }
}

fn check_message(message: &Message<'_>, message_bytes_max: usize) {
    match *message {
        Message::Text(t) => {
            assert!(t.len() <= message_bytes_max);
            assert!(std::str::from_utf8(t).is_ok(), "text not UTF-8");
        }
        Message::Binary(b) => assert!(b.len() <= message_bytes_max),
        Message::Ping(p) | Message::Pong(p) => assert!(p.len() <= 125),
        Message::Close(None) => {}
        Message::Deflated { .. } => unreachable!("the fuzzed decoder never accepts deflate"),
        Message::Close(Some((code, reason))) => {
            assert!(close_code_sendable(code), "close code {code}");
            assert!(reason.len() <= 123);
        }
    }
}

/// RFC 6455 7.4.1 and 7.4.2: codes a peer may put in a close frame. 1004
/// is reserved, 1005, 1006 and 1015 must never be sent, 1012 and up were
/// registered later and 0-999 and 5000 and up are not used.
pub fn close_code_sendable(code: u16) -> bool {
    !(code < 1000 || matches!(code, 1004..=1006) || (1012..3000).contains(&code) || code >= 5000)
}

/// One client frame as a fuzz target built it.
#[derive(Debug, Clone)]
pub struct FrameSpec {
    /// FIN, RSV1-3 and the opcode, as on the wire.
    pub first: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
    /// A length the header announces instead of the payload's; only ever
    /// set larger than any limit, so the frame is refused from its header.
    pub declared_len: Option<u64>,
}

/// What RFC 6455 says a server must make of these frames, in order,
/// ending at the first violation (the close code and the relay's reason).
pub fn expected_events(frames: &[FrameSpec], message_bytes_max: usize) -> Vec<Event> {
    let mut events = Vec::new();
    // The opcode and payload of a fragmented message being reassembled.
    let mut fragments: Option<(u8, Vec<u8>)> = None;
    for frame in frames {
        match expected_event(frame, &mut fragments, message_bytes_max) {
            Ok(None) => {}
            Ok(Some(event)) => events.push(event),
            Err(violation) => {
                events.push(violation);
                break;
            }
        }
    }
    events
}

fn expected_event(
    frame: &FrameSpec,
    fragments: &mut Option<(u8, Vec<u8>)>,
    message_bytes_max: usize,
) -> Result<Option<Event>, Event> {
    let protocol = |reason| Err(Event::Violation(1002, reason));
    let opcode = frame.first & 0x0F;
    let fin = frame.first & 0x80 != 0;
    let len = frame.declared_len.unwrap_or(frame.payload.len() as u64);
    let control = opcode >= 8;
    if matches!(opcode, 3..=7 | 11..=15) {
        return protocol("invalid opcode");
    }
    if !frame.masked {
        return protocol("unmasked client frame");
    }
    if frame.first & 0x70 != 0 {
        return protocol("reserved bits set");
    }
    if len >= 1 << 63 {
        return protocol("invalid frame length");
    }
    if control && !fin {
        return protocol("fragmented control frame");
    }
    if control && len > 125 {
        return protocol("control frame too long");
    }
    if opcode == 0 && fragments.is_none() {
        return protocol("unexpected continuation frame");
    }
    if (opcode == 1 || opcode == 2) && fragments.is_some() {
        return protocol("expected continuation frame");
    }
    let buffered = match (opcode, &fragments) {
        (0, Some((_, so_far))) => so_far.len() as u64,
        _ => 0,
    };
    if buffered + len > message_bytes_max as u64 {
        return Err(Event::Violation(1009, "message too big"));
    }
    assert!(
        frame.declared_len.is_none(),
        "declared lengths must exceed the limit"
    );
    let invalid_utf8 = Event::Violation(1007, "invalid utf-8");
    // RFC 6455 8.1: a text message fails as soon as its bytes so far cannot
    // begin valid UTF-8, at the fragment that breaks it (a sequence cut at
    // the fragment's end may still be completed by the next one).
    let broken_text = |first: u8, so_far: &[u8]| {
        first == 1 && matches!(std::str::from_utf8(so_far), Err(e) if e.error_len().is_some())
    };
    let (opcode, payload) = match opcode {
        0 => {
            let (first, so_far) = fragments.as_mut().expect("checked above");
            so_far.extend_from_slice(&frame.payload);
            if !fin {
                if broken_text(*first, so_far) {
                    return Err(invalid_utf8);
                }
                return Ok(None);
            }
            fragments.take().expect("checked above")
        }
        1 | 2 if !fin => {
            if broken_text(opcode, &frame.payload) {
                return Err(invalid_utf8);
            }
            *fragments = Some((opcode, frame.payload.clone()));
            return Ok(None);
        }
        _ => (opcode, frame.payload.clone()),
    };
    Ok(Some(match opcode {
        1 => match std::str::from_utf8(&payload) {
            Ok(_) => Event::Text(payload),
            Err(_) => return Err(invalid_utf8),
        },
        2 => Event::Binary(payload),
        9 => Event::Ping(payload),
        10 => Event::Pong(payload),
        _ => match payload.as_slice() {
            [] => Event::Close(None),
            [_] => return protocol("invalid close payload"),
            [hi, lo, reason @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                if !close_code_sendable(code) {
                    return protocol("invalid close code");
                }
                match std::str::from_utf8(reason) {
                    Ok(reason) => Event::Close(Some((code, reason.to_owned()))),
                    Err(_) => return Err(invalid_utf8),
                }
            }
        },
    }))
}

/// Percent-decoding as the WHATWG URL standard's "percent-decode" plus the
/// form rule (`+` is a space) when asked; `None` where the relay refuses
/// what the standard would keep literally: a `%` without two hex digits.
pub fn percent_decode(input: &str, plus_is_space: bool) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = input.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            out.push(if plus_is_space && byte == b'+' {
                b' '
            } else {
                byte
            });
            rest = tail;
        }
    }
    Some(out)
}

/// What a whole chunked body (RFC 9112 7.1) decodes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunked {
    /// The body and the bytes it took, final CRLF included.
    Done {
        body: Vec<u8>,
        consumed: usize,
    },
    /// A valid beginning: more bytes are needed.
    Incomplete,
    Invalid,
}

/// Decodes a chunked body strictly by the RFC grammar, without extension
/// whitespace (`BWS`) or bare LF line ends, which the relay refuses too:
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// last-chunk   = 1*("0") [ chunk-ext ] CRLF
/// chunk-ext    = *( ";" 1*( VCHAR / obs-text / SP / HTAB ) )
/// ```
///
/// Trailer lines are skipped without checking their field syntax, but may
/// not hold a bare CR or LF. `long_lines` is set when a size line or the
/// trailers come near the relay's line limits, where the two may differ.
pub fn chunked(input: &[u8], long_lines: &mut bool) -> Chunked {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_end) = find_crlf(input, at) else {
            return match valid_line_prefix(&input[at..]) {
                true => {
                    *long_lines |= input.len() - at > 4000;
                    Chunked::Incomplete
                }
                false => Chunked::Invalid,
            };
        };
        let line = &input[at..line_end];
        *long_lines |= line.len() > 4000;
        let Some(size) = chunk_size(line) else {
            return Chunked::Invalid;
        };
        at = line_end + 2;
        if size == 0 {
            return trailers(input, at, body, long_lines);
        }
        let Some(data) = usize::try_from(size)
            .ok()
            .and_then(|size| input.get(at..at.checked_add(size)?))
        else {
            return Chunked::Incomplete;
        };
        body.extend_from_slice(data);
        at += data.len();
        match input.get(at..at + 2) {
            Some(b"\r\n") => at += 2,
            Some(_) => return Chunked::Invalid,
            None if input[at..].iter().all(|&b| b == b'\r') => return Chunked::Incomplete,
            None => return Chunked::Invalid,
        }
    }
}

fn find_crlf(input: &[u8], from: usize) -> Option<usize> {
    input[from..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| from + p)
}

/// `chunk-size [chunk-ext]` without its CRLF.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let (hex, ext) = line.split_at(digits);
    if hex.is_empty() || !valid_ext(ext) {
        return None;
    }
    let hex = std::str::from_utf8(hex).ok()?;
    let hex = hex.trim_start_matches('0');
    if hex.len() > 16 {
        return Some(u64::MAX);
    }
    Some(u64::from_str_radix(hex, 16).unwrap_or(0))
}

fn valid_ext(ext: &[u8]) -> bool {
    ext.is_empty() || (ext[0] == b';' && ext.iter().all(|&b| b == b'\t' || b >= b' ' && b != 0x7F))
}

/// Whether bytes with no CRLF yet can still begin a valid size line.
fn valid_line_prefix(rest: &[u8]) -> bool {
    let (rest, cr) = match rest.strip_suffix(b"\r") {
        Some(rest) => (rest, true),
        None => (rest, false),
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let ext = &rest[digits..];
    match cr || !ext.is_empty() {
        true => digits > 0 && valid_ext(ext),
        false => true,
    }
}

fn trailers(input: &[u8], mut at: usize, body: Vec<u8>, long_lines: &mut bool) -> Chunked {
    let start = at;
    loop {
        *long_lines |= at - start > 8000;
        let Some(line_end) = find_crlf(input, at) else {
            let rest = &input[at..];
            let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
            return match rest.contains(&b'\r') || rest.contains(&b'\n') {
                true => Chunked::Invalid,
                false => Chunked::Incomplete,
            };
        };
        let line = &input[at..line_end];
        if line.contains(&b'\r') || line.contains(&b'\n') {
            return Chunked::Invalid;
        }
        at = line_end + 2;
        if line.is_empty() {
            return Chunked::Done { body, consumed: at };
        }
    }
}
