//! `--deflate`: the generator offers permessage-deflate (RFC 7692) as a
//! browser would, and inflates what arrives compressed, so a run measures
//! what a browser gets (bytes on the wire, and the relay's cost of
//! compressing). One `Inflater` per executor; nothing per connection.

use flate2::{Decompress, FlushDecompress, Status};

/// The offer: no context takeover either way, so every message inflates on
/// its own (the relay accepts only that; a browser's offer lets the server
/// choose it).
pub const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; \
     client_no_context_takeover; server_no_context_takeover\r\n";

/// What every message flushed with `Sync` ends with; RFC 7692 7.2.2 has the
/// receiver append it again before inflating.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The largest inflated message the generator takes: its read buffer's size
/// (64 KiB), as a plain frame could not be larger either.
const INFLATED_MAX_BYTES: usize = 64 * 1024;

/// Appends the offer to an upgrade request (before the blank line that ends
/// its head).
pub fn offer(request: &mut Vec<u8>) {
    debug_assert!(request.ends_with(b"\r\n\r\n"));
    request.truncate(request.len() - 2);
    request.extend_from_slice(OFFER.as_bytes());
    request.extend_from_slice(b"\r\n");
}

/// `--deflate head`: bytes inflated of each message; the envelope's head
/// and the payload's stamp are well within them.
const HEAD_BYTES: usize = 512;

/// One executor's inflater and its output buffer.
pub struct Inflater {
    raw: Decompress,
    out: Vec<u8>,
    /// Inflate only the first `HEAD_BYTES` of each message.
    head_only: bool,
}

impl Inflater {
    pub fn new(head_only: bool) -> Inflater {
        Inflater {
            raw: Decompress::new(false),
            out: Vec::with_capacity(if head_only {
                HEAD_BYTES
            } else {
                INFLATED_MAX_BYTES
            }),
            head_only,
        }
    }

    /// The message a compressed frame's payload holds (or its head), or
    /// `None` when it is not valid deflate data or inflates past 64 KiB.
    pub fn inflate(&mut self, compressed: &[u8]) -> Option<&[u8]> {
        self.raw.reset(false);
        self.out.clear();
        for input in [compressed, &SYNC_TAIL[..]] {
            let mut rest = input;
            loop {
                let (before, produced) = (self.raw.total_in(), self.out.len());
                let status = self
                    .raw
                    .decompress_vec(rest, &mut self.out, FlushDecompress::Sync)
                    .ok()?;
                let consumed = (self.raw.total_in() - before) as usize;
                rest = &rest[consumed..];
                if rest.is_empty() || status == Status::StreamEnd {
                    break;
                }
                let room = self.out.len() < self.out.capacity();
                if consumed == 0 && self.out.len() == produced && room {
                    return None; // no progress with room to spare: corrupt
                }
                if self.out.len() == self.out.capacity() {
                    if self.head_only {
                        return Some(&self.out);
                    }
                    if self.out.len() >= INFLATED_MAX_BYTES {
                        return None;
                    }
                    self.out.reserve(INFLATED_MAX_BYTES - self.out.len());
                }
            }
        }
        Some(&self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut c = Compress::new(Compression::fast(), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&SYNC_TAIL));
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn inflates_what_a_relay_compressed_message_by_message() {
        let mut i = Inflater::new(false);
        for msg in [&b"{\"a\":1}"[..], &[b'x'; 5000][..], b"[]"] {
            assert_eq!(i.inflate(&deflate(msg)).unwrap(), msg);
        }
    }

    #[test]
    fn refuses_garbage_and_bombs() {
        let mut i = Inflater::new(false);
        assert!(i.inflate(&[0xff, 0xff, 0xff]).is_none());
        assert!(i.inflate(&deflate(&vec![b'a'; 200_000])).is_none());
        assert_eq!(i.inflate(&deflate(b"ok")).unwrap(), b"ok");
    }

    #[test]
    fn inflates_only_the_head_when_asked() {
        let msg: Vec<u8> = (0..3000u32)
            .flat_map(|n| n.to_string().into_bytes())
            .collect();
        let mut i = Inflater::new(true);
        assert_eq!(i.inflate(&deflate(&msg)).unwrap(), &msg[..HEAD_BYTES]);
        assert_eq!(i.inflate(&deflate(b"short")).unwrap(), b"short");
    }

    #[test]
    fn offers_in_the_request_head() {
        let mut req = b"GET /c/x HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
        offer(&mut req);
        let s = String::from_utf8(req).unwrap();
        assert!(s.ends_with("server_no_context_takeover\r\n\r\n"), "{s}");
    }
}
