//! JSON validation of client payloads with simd-json. The payload is then
//! embedded in the envelope exactly as sent: never re-serialized. Runs on
//! the connection's home shard; one validator per shard, reused.

/// Validates payloads without allocating per message: simd-json parses in
/// place, so the payload is copied into a reused scratch buffer first.
pub struct JsonValidator {
    scratch: Vec<u8>,
    buffers: simd_json::Buffers,
}

impl Default for JsonValidator {
    fn default() -> Self {
        JsonValidator {
            scratch: Vec::new(),
            buffers: simd_json::Buffers::new(256),
        }
    }
}

impl JsonValidator {
    /// Whether `payload` is exactly one JSON value (whitespace around it is
    /// allowed, as `JSON.parse` allows it).
    pub fn is_valid(&mut self, payload: &[u8]) -> bool {
        self.scratch.clear();
        self.scratch.extend_from_slice(payload);
        if simd_json::to_tape_with_buffers(&mut self.scratch, &mut self.buffers).is_ok() {
            return true;
        }
        // simd-json refuses some valid JSON that JSON.parse accepts (numbers
        // beyond f64, lone surrogate escapes). Rejections are rare, so a
        // second opinion costs nothing on the hot path.
        serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_kind_of_value() {
        let mut v = JsonValidator::default();
        for ok in [
            &br#"{"type":"chat","text":"hi"}"#[..],
            b"[1,2,3]",
            b"\"hello world\"",
            b"42",
            b"-1.5e3",
            b"null",
            b"true",
            b" {\"a\" : [ ] } ",
            "\"h\u{e9}llo \u{1F525}\"".as_bytes(),
            b"123456789012345678901234567890",
            b"1e400",
            br#""\ud800""#,
        ] {
            assert!(v.is_valid(ok), "{}", String::from_utf8_lossy(ok));
        }
    }

    #[test]
    fn rejects_what_json_parse_rejects() {
        let mut v = JsonValidator::default();
        for bad in [
            &b"undefined"[..],
            b"",
            b"   ",
            b"{",
            b"[1,]",
            b"{'a':1}",
            b"1 2",
            b"{} {}",
            b"\"unterminated",
            b"NaN",
            b"\x1Fabc",
        ] {
            assert!(!v.is_valid(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn large_payloads_after_small_ones_still_validate() {
        let mut v = JsonValidator::default();
        assert!(v.is_valid(b"1"));
        let big = format!("[{}]", vec!["1"; 20_000].join(","));
        assert!(v.is_valid(big.as_bytes()));
        assert!(v.is_valid(b"{}"));
    }
}
