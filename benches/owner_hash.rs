//! Routing a channel to its owner shard: `router::owner_shard` (ahash with
//! fixed seeds, then a multiply-shift onto the shard count).
//!
//! Every join, publish and leave on a multi-shard server computes it on the
//! home shard to decide "handle here or forward". The peer is the same
//! multiply-shift over std's SipHash-1-3 (`DefaultHasher`), the hash one
//! would reach for first. Channel names run from a short room name to the
//! 256-byte maximum.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use itty_relay::router::owner_shard;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::hint::black_box;

const LENGTHS: [usize; 4] = [8, 32, 64, 256];
const SHARDS: usize = 2;

fn siphash_owner(channel: &str, shards: usize) -> u16 {
    let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(channel);
    (((h >> 32) * shards as u64) >> 32) as u16
}

/// A channel name of exactly `len` bytes, like the ones clients pick.
fn channel(len: usize) -> String {
    "my-team/room-42-".chars().cycle().take(len).collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("owner_shard");
    group.throughput(Throughput::Elements(1));
    for len in LENGTHS {
        let name = channel(len);
        group.bench_function(BenchmarkId::new("ahash", len), |b| {
            b.iter(|| owner_shard(black_box(&name), black_box(SHARDS)))
        });
        group.bench_function(BenchmarkId::new("siphash", len), |b| {
            b.iter(|| siphash_owner(black_box(&name), black_box(SHARDS)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
