//! permessage-deflate (RFC 7692) without context takeover: negotiating it
//! at the upgrade, compressing a message once into a frame every member
//! that negotiated it can take, and inflating a client's message into a
//! bounded buffer.
//!
//! No connection keeps compression state: the relay always answers with
//! `server_no_context_takeover; client_no_context_takeover`, so one
//! message compresses to the same bytes for every member, and each message
//! a client sends inflates on its own. A shard holds one `Compressor` (in
//! its owner) and one `Inflater` (for its sessions); memory per connection
//! is one byte (`Negotiated`). Pure apart from zlib's own state; never
//! waits.

use super::frame::{finish_frame_with, start_frame};
use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tungstenite::protocol::frame::coding::{Data, OpCode};

/// The extension's name in `Sec-WebSocket-Extensions`.
const NAME: &str = "permessage-deflate";

/// What every deflate block flushed with `Sync` ends with; RFC 7692 7.2.1
/// strips it from the frame and 7.2.2 appends it again before inflating.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The smallest window zlib can compress raw deflate with. A client asking
/// for 8 (`server_max_window_bits=8`) gets 9-bit output: zlib's longest
/// distance with 9 bits is 2^9 - 262 = 250, within an 8-bit window.
const WINDOW_BITS_MIN: u8 = 9;
const WINDOW_BITS_MAX: u8 = 15;

/// Bytes inflated per step; the output grows by this much at most past
/// what it needs, so a bomb is refused within one step of the limit.
const INFLATE_STEP_BYTES: usize = 16 * 1024;

/// zlib's level 1: the research measured it as the best trade for
/// envelopes (twice level 6's speed for 5-10% more bytes).
const LEVEL: u32 = 1;

/// What a connection negotiated: the window its compressed frames may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// `server_max_window_bits` as offered (8-15), if the client limited it.
    pub server_max_window_bits: Option<u8>,
}

impl Negotiated {
    /// The window our frames for this connection are compressed with.
    pub fn window_bits(self) -> u8 {
        self.server_max_window_bits
            .unwrap_or(WINDOW_BITS_MAX)
            .max(WINDOW_BITS_MIN)
    }

    /// The `Sec-WebSocket-Extensions` value of the `101`.
    pub fn response_header(self) -> String {
        let mut value = format!("{NAME}; server_no_context_takeover; client_no_context_takeover");
        if let Some(bits) = self.server_max_window_bits {
            value.push_str(&format!("; server_max_window_bits={bits}"));
        }
        value
    }
}

/// Picks the first `permessage-deflate` offer the relay can honour from
/// the request's `Sec-WebSocket-Extensions` values; `None` declines (the
/// connection goes on uncompressed). User agents whose deflate is known to
/// be broken get none.
pub fn negotiate<'a>(
    offers: impl IntoIterator<Item = &'a str>,
    user_agent: Option<&str>,
) -> Option<Negotiated> {
    if user_agent.is_some_and(broken_deflate) {
        return None;
    }
    offers
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(accept_offer)
}

/// One offer: `permessage-deflate` and its parameters, each known, valid
/// and not repeated; anything else declines this offer.
fn accept_offer(offer: &str) -> Option<Negotiated> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut negotiated = Negotiated {
        server_max_window_bits: None,
    };
    for param in parts.filter(|p| !p.is_empty()) {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        if seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            return None;
        }
        seen.push(name);
        match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            // We inflate with a full window whatever the client uses.
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                window_bits_param(v)?;
            }
            ("server_max_window_bits", Some(v)) => {
                negotiated.server_max_window_bits = Some(window_bits_param(v)?);
            }
            _ => return None,
        }
    }
    Some(negotiated)
}

/// A window-bits value: 8 to 15, digits only (RFC 7692 7.1.2).
fn window_bits_param(value: &str) -> Option<u8> {
    if value.is_empty() || value.len() > 2 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// Safari 15.0 to 15.3 ignore `client_no_context_takeover` (uWebSockets
/// #1347): they get no compression.
fn broken_deflate(user_agent: &str) -> bool {
    let safari = user_agent.contains("Safari/")
        && !user_agent.contains("Chrome/")
        && !user_agent.contains("Chromium/");
    safari
        && user_agent.split("Version/").nth(1).is_some_and(|v| {
            ["15.0", "15.1", "15.2", "15.3"].iter().any(|bad| {
                v.starts_with(bad) && !v[bad.len()..].starts_with(|c: char| c.is_ascii_digit())
            })
        })
}

/// A shard's compressor: one zlib stream per window size, created when
/// first needed and reset for every message.
#[derive(Default)]
pub struct Compressor {
    streams: [Option<Compress>; (WINDOW_BITS_MAX - WINDOW_BITS_MIN + 1) as usize],
}

impl Compressor {
    /// The compressed text frame (RSV1 set) of `payload`, or `None` when it
    /// would not be smaller than the plain frame's payload.
    pub fn text_frame(&mut self, payload: &[u8], window_bits: u8) -> Option<Bytes> {
        self.frame(payload, OpCode::Data(Data::Text), window_bits, false)
    }

    /// The compressed frame of `payload` with `opcode`, smaller or not
    /// (`None` only if zlib fails): the echo endpoint's answers.
    pub fn frame_always(
        &mut self,
        payload: &[u8],
        opcode: OpCode,
        window_bits: u8,
    ) -> Option<Bytes> {
        self.frame(payload, opcode, window_bits, true)
    }

    fn frame(
        &mut self,
        payload: &[u8],
        opcode: OpCode,
        window_bits: u8,
        even_if_larger: bool,
    ) -> Option<Bytes> {
        let bits = window_bits.clamp(WINDOW_BITS_MIN, WINDOW_BITS_MAX);
        let stream = self.streams[(bits - WINDOW_BITS_MIN) as usize].get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(LEVEL), false, bits)
        });
        stream.reset();
        let mut out = start_frame(payload.len() / 2 + 64);
        let header = out.len();
        let mut input = payload;
        loop {
            let before = stream.total_in();
            if out.capacity() - out.len() < 64 {
                out.reserve(out.len().max(256));
            }
            stream
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .ok()?;
            input = &input[(stream.total_in() - before) as usize..];
            // Done once the input is taken and the flush fits (room is left).
            if input.is_empty() && out.len() < out.capacity() && out.ends_with(&SYNC_TAIL) {
                break;
            }
        }
        out.truncate(out.len() - SYNC_TAIL.len());
        if out.len() - header >= payload.len() && !even_if_larger {
            return None;
        }
        Some(finish_frame_with(out, opcode, true))
    }
}

/// Why a client's compressed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the message size limit (1009).
    TooBig,
    /// Not valid deflate data (1007).
    Invalid,
}

/// A shard's inflater: one raw-deflate stream, reset for every message, and
/// one output buffer that never grows past the limit plus one step.
pub struct Inflater {
    stream: Decompress,
    out: Vec<u8>,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater {
            stream: Decompress::new_with_window_bits(false, WINDOW_BITS_MAX),
            out: Vec::new(),
        }
    }
}

impl Inflater {
    /// Inflates one message (its frames' payloads joined, the sync tail
    /// stripped as sent); refused past `limit` bytes, before they are held.
    pub fn inflate(&mut self, compressed: &[u8], limit: usize) -> Result<&[u8], InflateError> {
        self.stream.reset(false);
        self.out.clear();
        for input in [compressed, &SYNC_TAIL[..]] {
            let mut input = input;
            loop {
                if self.out.len() > limit {
                    return Err(InflateError::TooBig);
                }
                let room = (limit + 1 - self.out.len()).min(INFLATE_STEP_BYTES);
                self.out.reserve(room);
                let before_in = self.stream.total_in();
                let before_out = self.out.len();
                let status = self
                    .stream
                    .decompress_vec(input, &mut self.out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Invalid)?;
                let taken = (self.stream.total_in() - before_in) as usize;
                input = &input[taken..];
                let progressed = taken > 0 || self.out.len() > before_out;
                match status {
                    Status::StreamEnd => break,
                    _ if input.is_empty() && self.out.len() < self.out.capacity() => break,
                    _ if !progressed && input.is_empty() => break,
                    _ if !progressed => return Err(InflateError::Invalid),
                    _ => {}
                }
            }
        }
        if self.out.len() > limit {
            return Err(InflateError::TooBig);
        }
        Ok(&self.out)
    }

    /// Frees what a large message made the buffer grow to (the sweep).
    pub fn shrink(&mut self) {
        if self.out.capacity() > INFLATE_STEP_BYTES {
            self.out = Vec::new();
        }
    }
}

#[cfg(test)]
#[path = "deflate_tests.rs"]
mod tests;
