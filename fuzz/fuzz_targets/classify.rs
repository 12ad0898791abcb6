//! The message classifier (`pubsub::classify`) and the JSON check
//! (`pubsub::json`) on a client's text.
//!
//! Checks:
//! - a broadcast is the text unchanged and starts with neither prefix;
//! - a `\x1F` direct message's uid is exactly what precedes the second
//!   `\x1F`, and uid + separators + payload is the text again;
//! - an `@@` direct message's uid is exactly what precedes the first
//!   `@@` after the prefix, and the parts make the text again;
//! - a prefix without its closing separator is "unterminated";
//! - the JSON check accepts only UTF-8 that a strict JSON parser
//!   (serde_json, like `JSON.parse`) accepts, apart from nesting deeper than
//!   serde_json's recursion limit, and gives the same answer when the
//!   validator is reused after other payloads.
#![no_main]

use itty_relay::pubsub::classify::{classify, Classified};
use itty_relay::pubsub::json::JsonValidator;
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

const SEPARATOR: u8 = 0x1F;

thread_local! {
    /// Reused across inputs, as each shard reuses its own.
    static VALIDATOR: RefCell<JsonValidator> = RefCell::new(JsonValidator::default());
}

fuzz_target!(|text: &[u8]| {
    let payload = match classify(text) {
        Classified::Broadcast(payload) => {
            assert_eq!(payload, text);
            assert!(!text.starts_with(&[SEPARATOR]) && !text.starts_with(b"@@"));
            payload
        }
        Classified::Direct { to, payload } if text.first() == Some(&SEPARATOR) => {
            assert!(
                !to.contains(&SEPARATOR),
                "the uid ends at the first separator"
            );
            assert_eq!([&[SEPARATOR], to, &[SEPARATOR], payload].concat(), text);
            payload
        }
        Classified::Direct { to, payload } => {
            assert!(text.starts_with(b"@@"));
            // The uid ends at the first `@@`: no `@@` inside it, nor one
            // straddling its end.
            let with_next = [to, b"@"].concat();
            assert!(!with_next.windows(2).any(|w| w == b"@@"), "uid {to:?}");
            assert_eq!([b"@@", to, b"@@", payload].concat(), text);
            payload
        }
        Classified::Unterminated => {
            match text {
                [SEPARATOR, rest @ ..] => assert!(!rest.contains(&SEPARATOR)),
                [b'@', b'@', rest @ ..] => assert!(!rest.windows(2).any(|w| w == b"@@")),
                _ => panic!("unterminated without a prefix"),
            }
            return;
        }
    };
    check_json(payload);
});

fn check_json(payload: &[u8]) {
    // JSON is UTF-8; serde_json skips an ignored string's bytes unchecked.
    let strict = std::str::from_utf8(payload)
        .map_err(<serde_json::Error as serde::de::Error>::custom)
        .and_then(|_| serde_json::from_slice::<serde::de::IgnoredAny>(payload));
    let too_deep = strict
        .as_ref()
        .is_err_and(|e| e.to_string().starts_with("recursion limit exceeded"));
    VALIDATOR.with_borrow_mut(|validator| {
        let valid = validator.is_valid(payload);
        if !too_deep {
            assert_eq!(
                valid,
                strict.is_ok(),
                "{:?}",
                String::from_utf8_lossy(payload)
            );
        }
        // Reused after a different payload, the answer is the same.
        validator.is_valid(b"[1,{\"a\":\"b\"}]");
        assert_eq!(validator.is_valid(payload), valid);
    });
}
