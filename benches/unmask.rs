//! Unmasking client payloads: `ws::codec::unmask`, 8 bytes at a time.
//!
//! Every payload byte a client sends is XORed with its 4-byte key once, in
//! place, inside `Decoder::decode` on the home shard. The peer in the same
//! group is the byte-at-a-time loop one would write first, so the ratio
//! shows what the wide loop buys (or that the compiler already vectorizes
//! the naive one). Unmasking twice restores the input, so the buffer is
//! reused without a copy.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use itty_relay::ws::codec::unmask;
use std::hint::black_box;

/// 125 is the largest payload with a 2-byte header (and not a multiple of
/// 8, so the tail loop runs).
const SIZES: [usize; 5] = [16, 125, 1024, 16384, 65536];
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn naive_unmask(buf: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for size in SIZES {
        let mut buf: Vec<u8> = (0..size).map(|i| (i * 31) as u8).collect();
        let mut check = buf.clone();
        unmask(&mut check, KEY);
        let mut naive = buf.clone();
        naive_unmask(&mut naive, KEY);
        assert_eq!(check, naive);

        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("ours", size), |b| {
            b.iter(|| unmask(black_box(&mut buf), black_box(KEY)))
        });
        group.bench_function(BenchmarkId::new("naive", size), |b| {
            b.iter(|| naive_unmask(black_box(&mut buf), black_box(KEY)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
