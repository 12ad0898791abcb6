//! The client frame decoder (`ws::codec`) on raw bytes off the wire.
//!
//! Input: byte 0 picks the message size limit, byte 1 the split points,
//! the rest is what a client sent. Checks:
//! - the stream decodes to the same messages, the same violation and the
//!   same leftover whether it arrives whole or split anywhere;
//! - messages stay within the limit, text is UTF-8, control payloads fit
//!   125 bytes, close codes are ones a peer may send;
//! - no more than one frame at the limit is ever held back (a frame over
//!   the limit is refused from its header, before its payload arrives).
#![no_main]

use itty_relay_fuzz::reference::decode_stream;
use itty_relay_fuzz::{chunk_lengths, message_bytes_max};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [limit, split, wire @ ..] = data else {
        return;
    };
    let max = message_bytes_max(*limit);
    let whole = decode_stream(max, wire, &[wire.len()]);
    let split = decode_stream(max, wire, &chunk_lengths(*split, wire.len()));
    assert_eq!(
        whole, split,
        "same bytes, different split, different outcome"
    );
    // Byte by byte: every frame is refused or taken at its last byte.
    let bytewise = decode_stream(max, wire, &vec![1; wire.len()]);
    assert_eq!(whole, bytewise, "fed byte by byte");
});
