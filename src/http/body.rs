//! Request bodies (for `POST /push/...`): framing from the head
//! (`Content-Length` or `Transfer-Encoding: chunked`, RFC 9112 section 6)
//! and an incremental, sans-IO decoder that takes bytes as they arrive, in
//! any split, and never holds more than the body limit.
//!
//! Pure; never panics on peer input.

use super::head::RequestHead;

/// Longest chunk-size line (size, extensions, CRLF) or trailer section we
/// read before calling the body malformed.
const CHUNK_LINE_BYTES_MAX: usize = 4096;
const TRAILER_BYTES_MAX: usize = 8192;

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
}

/// Why a body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// 400: framing headers that contradict each other, or bad chunking.
    Malformed,
    /// 413: over the limit.
    TooLarge,
    /// 501: a transfer coding other than chunked.
    UnsupportedCoding,
}

impl BodyError {
    pub fn status(self) -> u16 {
        match self {
            BodyError::Malformed => 400,
            BodyError::TooLarge => 413,
            BodyError::UnsupportedCoding => 501,
        }
    }
}

/// The framing the head announces. Both headers at once, or differing
/// lengths, are refused (the classic request-smuggling ambiguity).
pub fn framing(head: &RequestHead) -> Result<Framing, BodyError> {
    let lengths: Vec<&[u8]> = head.headers_named("content-length").collect();
    let codings: Vec<&[u8]> = head
        .headers_named("transfer-encoding")
        .flat_map(|v| v.split(|&b| b == b','))
        .map(trim)
        .filter(|c| !c.is_empty())
        .collect();
    if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err(BodyError::Malformed);
        }
        return match codings.as_slice() {
            [c] if c.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            _ => Err(BodyError::UnsupportedCoding),
        };
    }
    let mut length = None;
    for value in lengths {
        for item in value.split(|&b| b == b',') {
            let item = trim(item);
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Err(BodyError::Malformed);
            }
            let n: u64 = std::str::from_utf8(item)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(BodyError::Malformed)?;
            if length.is_some_and(|l| l != n) {
                return Err(BodyError::Malformed);
            }
            length = Some(n);
        }
    }
    Ok(Framing::Length(length.unwrap_or(0)))
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t'))
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading exactly this many more body bytes.
    Length(u64),
    /// Reading a chunk-size line: the size so far, whether any hex digit
    /// was seen, whether we are past the digits (extensions), bytes read.
    SizeLine {
        size: u64,
        digits: bool,
        ext: bool,
        read: usize,
    },
    /// The size line's CR was read; its LF must follow.
    SizeLf {
        size: u64,
    },
    ChunkData {
        left: u64,
    },
    /// After a chunk's data: its CRLF (`cr_seen` once the CR was read).
    ChunkEnd {
        cr_seen: bool,
    },
    /// After the last (zero) chunk: trailer lines until an empty one.
    Trailer {
        line: usize,
        read: usize,
        cr: bool,
    },
    Done,
}

/// Takes the body's bytes as they arrive; see `feed`.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
    limit: usize,
    body: Vec<u8>,
}

impl BodyDecoder {
    /// A decoder for `framing`; a `Content-Length` over `limit` fails at
    /// once (before any body byte is read).
    pub fn new(framing: Framing, limit: usize) -> Result<BodyDecoder, BodyError> {
        let state = match framing {
            Framing::Length(n) if n > limit as u64 => return Err(BodyError::TooLarge),
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::SizeLine {
                size: 0,
                digits: false,
                ext: false,
                read: 0,
            },
        };
        Ok(BodyDecoder {
            state,
            limit,
            body: Vec::new(),
        })
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes bytes from `input`; returns how many it consumed (it stops at
    /// the body's end, so what follows is the next request's).
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, BodyError> {
        let mut i = 0;
        while i < input.len() && self.state != State::Done {
            match self.state {
                State::Length(left) => {
                    let n = (left.min((input.len() - i) as u64)) as usize;
                    self.body.extend_from_slice(&input[i..i + n]);
                    i += n;
                    self.state = match left - n as u64 {
                        0 => State::Done,
                        left => State::Length(left),
                    };
                }
                State::ChunkData { left } => {
                    let n = (left.min((input.len() - i) as u64)) as usize;
                    if self.body.len() + n > self.limit {
                        return Err(BodyError::TooLarge);
                    }
                    self.body.extend_from_slice(&input[i..i + n]);
                    i += n;
                    self.state = match left - n as u64 {
                        0 => State::ChunkEnd { cr_seen: false },
                        left => State::ChunkData { left },
                    };
                }
                _ => {
                    self.step(input[i])?;
                    i += 1;
                }
            }
        }
        Ok(i)
    }

    /// One byte of chunk framing.
    fn step(&mut self, b: u8) -> Result<(), BodyError> {
        self.state = match self.state {
            State::SizeLine {
                size,
                digits,
                ext,
                read,
            } => {
                if read >= CHUNK_LINE_BYTES_MAX {
                    return Err(BodyError::Malformed);
                }
                let read = read + 1;
                match b {
                    b'\r' if digits => State::SizeLf { size },
                    // Extensions are skipped, but a control character
                    // (above all a bare LF, which some proxies take for
                    // a line end) would let a proxy in front of us read
                    // different chunk boundaries: refuse it.
                    _ if ext && (b < b' ' && b != b'\t' || b == 0x7F) => {
                        return Err(BodyError::Malformed)
                    }
                    _ if ext => State::SizeLine {
                        size,
                        digits,
                        ext,
                        read,
                    },
                    b';' if digits => State::SizeLine {
                        size,
                        digits,
                        ext: true,
                        read,
                    },
                    _ => {
                        let d = (b as char).to_digit(16).ok_or(BodyError::Malformed)?;
                        let size = size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(d)))
                            .ok_or(BodyError::TooLarge)?;
                        if size > self.limit as u64 {
                            return Err(BodyError::TooLarge);
                        }
                        State::SizeLine {
                            size,
                            digits: true,
                            ext,
                            read,
                        }
                    }
                }
            }
            State::SizeLf { size } => match (b, size) {
                (b'\n', 0) => State::Trailer {
                    line: 0,
                    read: 0,
                    cr: false,
                },
                (b'\n', left) => State::ChunkData { left },
                _ => return Err(BodyError::Malformed),
            },
            State::ChunkEnd { cr_seen: false } if b == b'\r' => State::ChunkEnd { cr_seen: true },
            State::ChunkEnd { cr_seen: true } if b == b'\n' => State::SizeLine {
                size: 0,
                digits: false,
                ext: false,
                read: 0,
            },
            State::Trailer { line, read, cr } => {
                if read >= TRAILER_BYTES_MAX {
                    return Err(BodyError::Malformed);
                }
                match (b, cr) {
                    (b'\r', false) => State::Trailer {
                        line,
                        read: read + 1,
                        cr: true,
                    },
                    (b'\n', true) if line == 0 => State::Done,
                    (b'\n', true) => State::Trailer {
                        line: 0,
                        read: read + 1,
                        cr: false,
                    },
                    (b'\r' | b'\n', _) => return Err(BodyError::Malformed),
                    (_, false) => State::Trailer {
                        line: line + 1,
                        read: read + 1,
                        cr: false,
                    },
                    (_, true) => return Err(BodyError::Malformed),
                }
            }
            _ => return Err(BodyError::Malformed),
        };
        Ok(())
    }

    /// The whole body, once `is_done`.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        RequestHead::new("POST", "/push/x", 1, &headers)
    }

    /// Feeds `wire` in pieces of `step` bytes; returns the body and the
    /// bytes consumed.
    fn decode(framing: Framing, wire: &[u8], step: usize) -> Result<(Vec<u8>, usize), BodyError> {
        let mut d = BodyDecoder::new(framing, 100)?;
        let mut at = 0;
        while !d.is_done() && at < wire.len() {
            let end = (at + step).min(wire.len());
            at += d.feed(&wire[at..end])?;
        }
        assert!(d.is_done(), "incomplete");
        Ok((d.into_body(), at))
    }

    #[test]
    fn framing_comes_from_the_head() {
        assert_eq!(framing(&head(&[])), Ok(Framing::Length(0)));
        assert_eq!(
            framing(&head(&[("content-length", "12")])),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            framing(&head(&[("content-length", "12, 12")])),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            framing(&head(&[("transfer-encoding", "Chunked")])),
            Ok(Framing::Chunked)
        );
        for bad in [
            vec![("content-length", "1"), ("content-length", "2")],
            vec![("content-length", "-1")],
            vec![("content-length", "")],
            vec![("content-length", "99999999999999999999")],
            vec![("content-length", "3"), ("transfer-encoding", "chunked")],
        ] {
            assert_eq!(framing(&head(&bad)), Err(BodyError::Malformed), "{bad:?}");
        }
        assert_eq!(
            framing(&head(&[("transfer-encoding", "gzip, chunked")])),
            Err(BodyError::UnsupportedCoding)
        );
    }

    #[test]
    fn a_length_body_stops_at_its_end_in_any_split() {
        for step in [1, 2, 5, 100] {
            let (body, used) = decode(Framing::Length(5), b"hello GET /", step).unwrap();
            assert_eq!(body, b"hello");
            assert_eq!(used, 5);
        }
        assert_eq!(
            BodyDecoder::new(Framing::Length(101), 100).unwrap_err(),
            BodyError::TooLarge
        );
    }

    #[test]
    fn a_chunked_body_is_reassembled_in_any_split() {
        let wire = b"3\r\n{\"a\r\n4;ext=1\r\n\":1}\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 1000] {
            let (body, used) = decode(Framing::Chunked, wire, step).unwrap();
            assert_eq!(body, b"{\"a\":1}");
            assert_eq!(&wire[used..], b"NEXT");
        }
        let (body, _) = decode(Framing::Chunked, b"A\r\n0123456789\r\n0\r\n\r\n", 4).unwrap();
        assert_eq!(body, b"0123456789");
    }

    /// Found by the `push_body` fuzz target against RFC 9112's grammar:
    /// `1;a\nb\r\n` was read as one size line, where a proxy that ends
    /// lines at a bare LF sees another, so the two disagree on the body.
    #[test]
    fn control_characters_in_chunk_extensions_are_refused() {
        for bad in [
            &b"1;a\nb\r\nx\r\n0\r\n\r\n"[..],
            b"1;a\x00\r\nx\r\n0\r\n\r\n",
            b"1;\x7F\r\nx\r\n0\r\n\r\n",
            b"0;a\rb\r\n\r\n",
        ] {
            let mut d = BodyDecoder::new(Framing::Chunked, 100).unwrap();
            assert_eq!(d.feed(bad), Err(BodyError::Malformed), "{bad:?}");
        }
        let (body, _) = decode(Framing::Chunked, b"1;a=\"b\tc\"\r\nx\r\n0\r\n\r\n", 1).unwrap();
        assert_eq!(body, b"x");
    }

    #[test]
    fn chunked_bodies_over_the_limit_or_malformed_are_refused() {
        let big = format!(
            "40\r\n{}\r\n40\r\n{}\r\n0\r\n\r\n",
            "x".repeat(64),
            "y".repeat(64)
        );
        assert_eq!(
            decode(Framing::Chunked, big.as_bytes(), 10).unwrap_err(),
            BodyError::TooLarge
        );
        assert_eq!(
            decode(Framing::Chunked, b"FFFFFFFFFFFFFFFFFFFF\r\n", 1).unwrap_err(),
            BodyError::TooLarge
        );
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"3\r\nabcX",
            b"3\nabc",
            b"0\r\nbad\rx",
        ] {
            let mut d = BodyDecoder::new(Framing::Chunked, 100).unwrap();
            assert_eq!(d.feed(bad), Err(BodyError::Malformed), "{bad:?}");
        }
        let long_line = format!("1;{}", "e".repeat(5000));
        let mut d = BodyDecoder::new(Framing::Chunked, 100).unwrap();
        assert_eq!(d.feed(long_line.as_bytes()), Err(BodyError::Malformed));
    }

    #[test]
    fn chunk_lines_and_trailers_may_reach_their_limits_and_no_further() {
        // A size line counts its bytes up to and including the CR.
        let size_line = |len: usize| format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(len - 3));
        // A trailer section counts every byte after the last chunk's line.
        let trailer = |len: usize| format!("1\r\nx\r\n0\r\nX: {}\r\n\r\n", "v".repeat(len - 7));
        for (wire, limit) in [
            (&size_line as &dyn Fn(usize) -> String, CHUNK_LINE_BYTES_MAX),
            (&trailer, TRAILER_BYTES_MAX),
        ] {
            let (body, _) = decode(Framing::Chunked, wire(limit).as_bytes(), 1000).unwrap();
            assert_eq!(body, b"x");
            assert_eq!(
                decode(Framing::Chunked, wire(limit + 1).as_bytes(), 1000),
                Err(BodyError::Malformed),
                "{limit} + 1"
            );
        }
    }
}
