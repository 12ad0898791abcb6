//! permessage-deflate (`ws::deflate`): the extension offer parser and the
//! bounded inflater, on arbitrary input.
//!
//! Checks:
//! - `negotiate` never panics; what it accepts answers with both
//!   no-context-takeover parameters and a window of 9 to 15 bits, and a
//!   `server_max_window_bits` it echoes is one the offer carried;
//! - `inflate` of arbitrary bytes never panics and never returns more than
//!   its limit, and the inflater works again after any input;
//! - what the compressor builds inflates back exactly (round trip), for the
//!   window the input picks.
#![no_main]

use itty_relay::ws::deflate::{negotiate, Compressor, Inflater};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

thread_local! {
    /// Reused across inputs, as each shard reuses its own.
    static STATE: RefCell<(Compressor, Inflater)> = RefCell::new(Default::default());
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let limit = 1 + (selector as usize) * 64;
    if let Ok(offer) = std::str::from_utf8(rest) {
        if let Some(n) = negotiate([offer], None) {
            let header = n.response_header();
            assert!(header.starts_with(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            ));
            assert!((9..=15).contains(&n.window_bits()));
            if let Some(bits) = n.server_max_window_bits {
                assert!(offer.contains(&bits.to_string()));
            }
        }
    }
    STATE.with(|state| {
        let (compressor, inflater) = &mut *state.borrow_mut();
        if let Ok(out) = inflater.inflate(rest, limit) {
            assert!(out.len() <= limit);
        }
        let bits = 9 + selector % 7;
        if let Some(frame) = compressor.text_frame(rest, bits) {
            let payload = itty_relay::ws::frame::payload_of(&frame);
            assert_eq!(frame[0] & 0x40, 0x40, "RSV1 on a compressed frame");
            let back = inflater
                .inflate(payload, rest.len())
                .expect("our own frame inflates within its original size");
            assert_eq!(back, rest);
        }
    });
});
