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
        if simd_json_misreads(payload) {
            return strictly_valid(payload);
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(payload);
        if simd_json::to_tape_with_buffers(&mut self.scratch, &mut self.buffers).is_ok() {
            return true;
        }
        // simd-json refuses some valid JSON that JSON.parse accepts (numbers
        // beyond f64, lone surrogate escapes). Rejections are rare, so a
        // second opinion costs nothing on the hot path.
        strictly_valid(payload)
    }
}

fn strictly_valid(payload: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok()
}

/// Whether `payload` has what simd-json (0.15) accepts wrongly, as the
/// `classify` fuzz target found: a NUL byte right after a top-level
/// number, `true` or `null` (`1\0anything`), and any byte after a number
/// whose sign, digits and point before the exponent reach 19 characters
/// (`[1111111111111111111x]`, `-11111111111111111.5e1!`): its slow path
/// for long numbers never checks what follows them. Valid JSON never holds
/// a raw NUL and long numbers are rare, so these go to serde_json alone.
fn simd_json_misreads(payload: &[u8]) -> bool {
    /// The shortest number text that takes simd-json's slow path.
    const LONG_NUMBER: usize = 19;
    if payload.contains(&0) {
        return true;
    }
    let in_number = |b: &&u8| b.is_ascii_digit() || **b == b'.' || **b == b'-';
    // A run of 19 such bytes covers one of every 19 positions: look only
    // at those, and measure the run around one found there.
    (LONG_NUMBER - 1..payload.len())
        .step_by(LONG_NUMBER)
        .filter(|&i| in_number(&&payload[i]))
        .any(|i| {
            let before = payload[..i].iter().rev().take_while(in_number).count();
            let after = payload[i + 1..].iter().take_while(in_number).count();
            before + 1 + after >= LONG_NUMBER
        })
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

    /// Found by the `classify` fuzz target: simd-json accepted these, and
    /// the relay would have sent receivers an envelope JSON.parse rejects.
    #[test]
    fn nul_after_a_top_level_scalar_is_invalid() {
        let mut v = JsonValidator::default();
        for bad in [
            &b"140\0"[..],
            b"140\0\0\0\0",
            b"1\x001",
            b"true\0",
            b"null\0",
            b"-1.5e3\0x",
            b"\"a\0\"",
        ] {
            assert!(!v.is_valid(bad), "{}", String::from_utf8_lossy(bad));
        }
        assert!(v.is_valid(br#""a\u0000""#));
    }

    /// Found by the `classify` fuzz target: simd-json skips the check of
    /// what follows a number of 19 characters or more.
    #[test]
    fn garbage_after_a_long_number_is_invalid() {
        let mut v = JsonValidator::default();
        for bad in [
            &b"12345678901234567890!"[..],
            b"12345678901234567890x",
            b"123456789012345678901e2!",
            b"4444444444444444444444444444444404441e20!",
            b"[12345678901234567890!]",
            b"1111111111111111111x",
            b"4444444444444444444<44444444440!",
            b"[-11111111111111111.5e1a]",
            b"-111111111111111111x",
        ] {
            assert!(!v.is_valid(bad), "{}", String::from_utf8_lossy(bad));
        }
        for ok in [
            &b"12345678901234567890"[..],
            b"[12345678901234567890, -98765432109876543210.5e3]",
            br#"{"big":123456789012345678901234567890}"#,
            br#""12345678901234567890x""#,
            b"0.30000000000000004",
            b"[-11111111111111111.5e1]",
        ] {
            assert!(v.is_valid(ok), "{}", String::from_utf8_lossy(ok));
        }
        // Runs are found wherever they start (the check samples positions).
        for offset in 0..45 {
            let pad = " ".repeat(offset);
            let long = "1".repeat(19);
            assert!(
                !v.is_valid(format!("[{pad}{long}x]").as_bytes()),
                "{offset}"
            );
            assert!(v.is_valid(format!("[{pad}{long}]").as_bytes()), "{offset}");
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
