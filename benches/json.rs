//! JSON validation of client payloads: `pubsub::json::JsonValidator`
//! against simd-json alone and serde_json alone, side by side.
//!
//! Every published payload is checked to be one JSON value on the
//! publisher's home shard, once, before it is routed; the relay then embeds
//! it untouched. `ours` is the relay's validator (up to 256 bytes one plain
//! pass of its own; beyond, simd-json into a reused scratch buffer, with
//! serde_json as a second opinion when simd-json refuses);
//! `simd_json` is the same simd-json call without the fallback; `serde_json`
//! is the cheapest serde validation (`from_slice::<IgnoredAny>`). Valid
//! payloads are the common case; invalid ones show what the fallback costs
//! (both parsers run). Invalid payloads are the valid ones with the final
//! `}` turned into a space: same length, caught only at the end.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use itty_relay::pubsub::json::JsonValidator;
use std::hint::black_box;

/// Small (a chat line), the last size the relay checks in one plain pass,
/// medium and large.
const SIZES: [usize; 4] = [64, 256, 1024, 65536];

/// A JSON object of exactly `len` bytes (at least 64): a typed message
/// with a list of records of mixed values (a state update), padded with a
/// string. Many small values: the tape-heavy case.
fn records(len: usize) -> Vec<u8> {
    let mut out = br#"{"type":"state","from":"h\u00e9l\u00e8ne","items":["#.to_vec();
    let tail = br#"],"pad":""}"#;
    let mut i = 0;
    loop {
        let item = format!(
            r#"{}{{"id":{i},"x":{}.25,"name":"item-{i}","ok":{},"tags":["a","b"]}}"#,
            if i == 0 { "" } else { "," },
            i * 7,
            i % 2 == 0
        );
        if out.len() + item.len() + tail.len() > len {
            break;
        }
        out.extend_from_slice(item.as_bytes());
        i += 1;
    }
    out.extend_from_slice(&tail[..tail.len() - 2]);
    out.resize(len - 2, b'z');
    out.extend_from_slice(b"\"}");
    assert_eq!(out.len(), len);
    out
}

/// A JSON object of exactly `len` bytes (at least 64): a chat message
/// whose text is prose with a few escapes and non-ASCII letters. Few values,
/// long strings: the scan-heavy case.
fn text(len: usize) -> Vec<u8> {
    let mut out = br#"{"type":"chat","text":""#.to_vec();
    let words = [
        "the ",
        "relay ",
        "said ",
        r#"\"hi\" "#,
        "to ",
        r"ren\u00e9e ",
        "and ",
        "zoë. ",
    ];
    for word in words.iter().cycle() {
        if out.len() + word.len() + 2 > len {
            break;
        }
        out.extend_from_slice(word.as_bytes());
    }
    out.resize(len - 2, b'.');
    out.extend_from_slice(b"\"}");
    assert_eq!(out.len(), len);
    out
}

/// simd-json alone, as the relay calls it (it parses in place, so the
/// payload is copied into a reused buffer first).
struct SimdOnly {
    scratch: Vec<u8>,
    buffers: simd_json::Buffers,
}

impl SimdOnly {
    fn is_valid(&mut self, payload: &[u8]) -> bool {
        self.scratch.clear();
        self.scratch.extend_from_slice(payload);
        simd_json::to_tape_with_buffers(&mut self.scratch, &mut self.buffers).is_ok()
    }
}

fn serde_is_valid(payload: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok()
}

fn bench(c: &mut Criterion) {
    let mut ours = JsonValidator::default();
    let mut simd = SimdOnly {
        scratch: Vec::new(),
        buffers: simd_json::Buffers::new(256),
    };
    for valid in [true, false] {
        let mut group = c.benchmark_group(if valid { "json_valid" } else { "json_invalid" });
        for (shape, make) in [("records", records as fn(usize) -> Vec<u8>), ("text", text)] {
            for size in SIZES {
                let mut input = make(size);
                if !valid {
                    *input.last_mut().unwrap() = b' ';
                }
                assert_eq!(ours.is_valid(&input), valid);
                assert_eq!(simd.is_valid(&input), valid);
                assert_eq!(serde_is_valid(&input), valid);
                group.throughput(Throughput::Bytes(size as u64));
                let param = format!("{shape}/{size}");
                group.bench_function(BenchmarkId::new("ours", &param), |b| {
                    b.iter(|| ours.is_valid(black_box(&input)))
                });
                group.bench_function(BenchmarkId::new("simd_json", &param), |b| {
                    b.iter(|| simd.is_valid(black_box(&input)))
                });
                group.bench_function(BenchmarkId::new("serde_json", &param), |b| {
                    b.iter(|| serde_is_valid(black_box(&input)))
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
