//! JSON validation of client payloads: a plain one-pass check for short
//! ones (most chat messages), simd-json for longer ones. The payload is
//! then embedded in the envelope exactly as sent: never re-serialized.
//! Runs on the connection's home shard; one validator per shard, reused.

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
        if payload.len() <= SHORT_PAYLOAD {
            return std::str::from_utf8(payload).is_ok_and(|text| scan(text.as_bytes()));
        }
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

/// Payloads up to this many bytes are checked by `scan`, one plain pass,
/// rather than by simd-json, whose set-up (copy, index, tape) costs more
/// than the whole check of a chat-sized payload. Also the bound on `scan`'s
/// nesting: each level opens with a byte of its own.
const SHORT_PAYLOAD: usize = 256;

/// Whether `p` (UTF-8, at most `SHORT_PAYLOAD` bytes) is exactly one JSON
/// value with only whitespace around it: RFC 8259's grammar, as serde_json
/// and `JSON.parse` read it (any `\u` escape, lone surrogates included;
/// numbers of any length).
fn scan(p: &[u8]) -> bool {
    debug_assert!(p.len() <= SHORT_PAYLOAD);
    scan_value(p).is_some()
}

/// `scan`, with `None` for "not JSON".
fn scan_value(p: &[u8]) -> Option<()> {
    // Open containers, innermost last: true for an object.
    let mut open = [false; SHORT_PAYLOAD];
    let mut depth = 0;
    let mut i = ws(p, 0);
    loop {
        // A value starts at `i`.
        i = match *p.get(i)? {
            b'{' => {
                i = ws(p, i + 1);
                if p.get(i) != Some(&b'}') {
                    open[depth] = true;
                    depth += 1;
                    i = key(p, i)?;
                    continue;
                }
                i + 1
            }
            b'[' => {
                i = ws(p, i + 1);
                if p.get(i) != Some(&b']') {
                    open[depth] = false;
                    depth += 1;
                    continue;
                }
                i + 1
            }
            b'"' => string(p, i)?,
            b't' if p[i..].starts_with(b"true") => i + 4,
            b'f' if p[i..].starts_with(b"false") => i + 5,
            b'n' if p[i..].starts_with(b"null") => i + 4,
            b'-' | b'0'..=b'9' => number(p, i)?,
            _ => return None,
        };
        // After a value: close what ends here, then the next value.
        loop {
            i = ws(p, i);
            if depth == 0 {
                return (i == p.len()).then_some(());
            }
            let in_object = open[depth - 1];
            match *p.get(i)? {
                b',' if in_object => {
                    i = key(p, ws(p, i + 1))?;
                    break;
                }
                b',' => {
                    i = ws(p, i + 1);
                    break;
                }
                b'}' if in_object => depth -= 1,
                b']' if !in_object => depth -= 1,
                _ => return None,
            }
            i += 1;
        }
    }
}

/// Past JSON whitespace from `i`.
fn ws(p: &[u8], mut i: usize) -> usize {
    while matches!(p.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// An object's key and its colon at `i`: where its value starts.
fn key(p: &[u8], i: usize) -> Option<usize> {
    let i = ws(p, string(p, i)?);
    (p.get(i) == Some(&b':')).then(|| ws(p, i + 1))
}

/// From `i` in a string, the index of the next quote, backslash or control
/// byte (or the end): eight bytes at a time, in a word.
fn plain_run_end(p: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // The high bit of each byte that is zero in `x`. Exact up to the first
    // such byte, which is all that is read of it.
    let zeros = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    while let Some(chunk) = p.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let controls = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        let stops = controls | zeros(w ^ (ONES * b'"' as u64)) | zeros(w ^ (ONES * b'\\' as u64));
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while p
        .get(i)
        .is_some_and(|&b| b != b'"' && b != b'\\' && b >= 0x20)
    {
        i += 1;
    }
    i
}

/// A string at `i`: the index past its closing quote.
fn string(p: &[u8], mut i: usize) -> Option<usize> {
    if p.get(i) != Some(&b'"') {
        return None;
    }
    i += 1;
    loop {
        i = plain_run_end(p, i);
        match *p.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => match *p.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' if p.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => i += 6,
                _ => return None,
            },
            _ => return None, // a control byte
        }
    }
}

/// A number at `i`: the index past it.
fn number(p: &[u8], mut i: usize) -> Option<usize> {
    let digits = |i: usize| i + p[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    if p.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match p.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(i),
        _ => return None,
    };
    if p.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if matches!(p.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(p.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits(i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

/// serde_json's answer, and UTF-8: JSON is UTF-8 (RFC 8259 section 8.1),
/// and serde_json skips a string it ignores without checking its bytes.
fn strictly_valid(payload: &[u8]) -> bool {
    std::str::from_utf8(payload).is_ok()
        && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok()
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

    /// The short path against serde_json (JSON.parse's grammar) on payloads
    /// made of JSON's own pieces, so most are near misses: a fixed seed,
    /// the same cases every run. The `classify` fuzz target does the same
    /// on arbitrary bytes.
    #[test]
    fn the_short_path_agrees_with_serde_json() {
        const PIECES: &[&str] = &[
            "{", "}", "[", "]", ",", ":", " ", "\n", "\"", "\"a\"", "\\", "\\u00e9", "\\ud800",
            "\\x", "\\n", "0", "1", "-", "+", ".", "e", "E", "12", "00", "true", "fals", "false",
            "null", "nul", "x", "\u{1}", "\u{1F}", "\u{7F}", "\u{e9}", "\t", "\r", "\u{0}",
        ];
        let mut v = JsonValidator::default();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut valid, cases) = (0, 100_000);
        for _ in 0..cases {
            let len = 1 + next() % 12;
            let text: String = (0..len)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            let expected = strictly_valid(text.as_bytes());
            assert_eq!(scan(text.as_bytes()), expected, "{text:?}");
            assert_eq!(v.is_valid(text.as_bytes()), expected, "{text:?}");
            valid += expected as u32;
        }
        assert!(valid > 1_000, "too few valid cases to mean much: {valid}");
    }

    /// A string's plain runs are skipped eight bytes at a time: a stop
    /// byte is found at every offset in the word, after any byte.
    #[test]
    fn every_stop_in_a_string_is_found_wherever_it_falls() {
        for offset in 0..24 {
            for stop in [
                "\"", "\\\"", "\\n", "\\u00e9", "\\q", "\u{1}", "\u{1F}", "\n",
            ] {
                for before in ["a", "\u{e9}", "\u{7F}", "\u{21}", "\u{5B}"] {
                    let text = format!("[\"{}{stop}x\"]", before.repeat(offset));
                    let expected = strictly_valid(text.as_bytes());
                    assert_eq!(scan(text.as_bytes()), expected, "{text:?}");
                }
            }
        }
    }

    #[test]
    fn the_short_path_ends_where_the_long_one_starts() {
        let mut v = JsonValidator::default();
        for len in SHORT_PAYLOAD - 3..SHORT_PAYLOAD + 3 {
            let ok = format!("\"{}\"", "a".repeat(len - 2));
            assert!(v.is_valid(ok.as_bytes()), "{len}");
            let bad = format!("\"{}", "a".repeat(len - 1));
            assert!(!v.is_valid(bad.as_bytes()), "{len}");
        }
        for not_utf8 in [&b"\"\xff\""[..], b"[\"\xc3\"]"] {
            assert!(!v.is_valid(not_utf8), "short: not UTF-8");
            let long = [not_utf8, &b" ".repeat(SHORT_PAYLOAD)].concat();
            assert!(!v.is_valid(&long), "long: not UTF-8");
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
