//! The push body decoder (`http::body::BodyDecoder`): a `Content-Length`
//! or chunked body arriving in pieces.
//!
//! Input: byte 0 picks the framing and the size limit, byte 1 the split
//! points; the rest is the bytes after the request head. Checks:
//! - the same body, the same bytes consumed and the same error whatever
//!   the split points; the body never exceeds the limit;
//! - a length body is exactly the first `Content-Length` bytes;
//! - a chunked body is what RFC 9112's grammar gives (`reference`), both
//!   ways: what the reference decodes is decoded the same, what it
//!   refuses is refused;
//! - the input itself, sent as a chunked body with chunk sizes, extensions
//!   and trailers from the input, decodes back to itself (or is refused as
//!   too large when over the limit).
#![no_main]

use itty_relay::http::body::{BodyDecoder, BodyError, Framing};
use itty_relay_fuzz::chunk_lengths;
use itty_relay_fuzz::reference::{self, Chunked};
use libfuzzer_sys::fuzz_target;

/// A decoder's end: done with the body and the bytes it took, still
/// waiting, or refused.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done(Vec<u8>, usize),
    Waiting,
    Refused(BodyError),
}

fn feed(framing: Framing, limit: usize, wire: &[u8], chunks: &[usize]) -> Outcome {
    let mut decoder = match BodyDecoder::new(framing, limit) {
        Ok(decoder) => decoder,
        Err(e) => return Outcome::Refused(e),
    };
    if decoder.is_done() {
        return Outcome::Done(Vec::new(), 0);
    }
    let mut at = 0;
    for &size in chunks {
        // A connection only feeds the unconsumed rest of what it read.
        let mut piece = &wire[at..at + size];
        while !piece.is_empty() && !decoder.is_done() {
            match decoder.feed(piece) {
                Ok(0) => panic!("fed {} bytes, none taken, not done", piece.len()),
                Ok(n) => {
                    at += n;
                    piece = &piece[n..];
                }
                Err(e) => return Outcome::Refused(e),
            }
        }
        if decoder.is_done() {
            let body = decoder.into_body();
            assert!(
                body.len() <= limit,
                "body {} over limit {limit}",
                body.len()
            );
            return Outcome::Done(body, at);
        }
    }
    Outcome::Waiting
}

fuzz_target!(|data: &[u8]| {
    let [config, split, wire @ ..] = data else {
        return;
    };
    let limit = [100, 0, 1, 16, 1000, 65_536][usize::from(config >> 2) % 6];
    let framing = match config & 3 {
        0 | 1 => Framing::Chunked,
        2 => Framing::Length(u64::from(config >> 4)),
        _ => Framing::Length(wire.len() as u64 / 2),
    };
    let whole = feed(framing, limit, wire, &[wire.len()]);
    let split_run = feed(framing, limit, wire, &chunk_lengths(*split, wire.len()));
    let bytewise = feed(framing, limit, wire, &vec![1; wire.len()]);
    assert_eq!(whole, split_run);
    assert_eq!(whole, bytewise);
    match framing {
        Framing::Length(n) => check_length(n, limit, wire, &whole),
        Framing::Chunked => check_chunked(limit, wire, &whole),
    }
    round_trip(*config, *split, wire);
});

fn check_length(n: u64, limit: usize, wire: &[u8], outcome: &Outcome) {
    let expected = match usize::try_from(n) {
        Ok(n) if n > limit => Outcome::Refused(BodyError::TooLarge),
        Ok(n) if n <= wire.len() => Outcome::Done(wire[..n].to_vec(), n),
        _ => Outcome::Waiting,
    };
    assert_eq!(outcome, &expected);
}

fn check_chunked(limit: usize, wire: &[u8], outcome: &Outcome) {
    let mut long_lines = false;
    let expected = reference::chunked(wire, &mut long_lines);
    if long_lines {
        return;
    }
    match (expected, outcome) {
        (Chunked::Done { body, consumed }, _) if body.len() <= limit => {
            assert_eq!(outcome, &Outcome::Done(body, consumed));
        }
        // Over the limit: refused as soon as a size line says so.
        (Chunked::Done { .. }, Outcome::Refused(BodyError::TooLarge)) => {}
        (Chunked::Incomplete, Outcome::Waiting | Outcome::Refused(BodyError::TooLarge)) => {}
        (Chunked::Invalid, Outcome::Refused(_)) => {}
        (expected, _) => panic!("reference {expected:?}, decoder {outcome:?}"),
    }
}

/// The input as the body of a chunked request the relay must accept.
fn round_trip(config: u8, split: u8, body: &[u8]) {
    let mut wire = Vec::new();
    let mut at = 0;
    for (i, size) in chunk_lengths(split, body.len()).into_iter().enumerate() {
        let ext = if (usize::from(config) + i).is_multiple_of(3) {
            ";name=\"value\""
        } else {
            ""
        };
        wire.extend_from_slice(format!("{size:x}{ext}\r\n").as_bytes());
        wire.extend_from_slice(&body[at..at + size]);
        wire.extend_from_slice(b"\r\n");
        at += size;
    }
    wire.extend_from_slice(b"0\r\n");
    if config & 0x40 != 0 {
        wire.extend_from_slice(b"X-Checksum: 1\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    let after = wire.len();
    wire.extend_from_slice(b"GET /next HTTP/1.1\r\n");
    let limit = [100, 0, 1, 16, 1000, 65_536][usize::from(config >> 2) % 6];
    let expected = if body.len() <= limit {
        Outcome::Done(body.to_vec(), after)
    } else {
        Outcome::Refused(BodyError::TooLarge)
    };
    let chunks = chunk_lengths(config, wire.len());
    assert_eq!(feed(Framing::Chunked, limit, &wire, &chunks), expected);
}
