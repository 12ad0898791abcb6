//! Rate limiting: `ratelimit` (`Bucket::take`, `IpBuckets::take`,
//! `BanList::check`).
//!
//! Every WebSocket upgrade and every HTTP push checks the client's IP
//! against the ban list and takes a token from its per-IP bucket, on the
//! shard that accepted it, before any other work: under a connection flood
//! this is the first thing that runs per request. `bucket` is the bare GCRA
//! arithmetic (conforming, and refused with the wait computed);
//! `ip_buckets` adds the per-IP hash table, cycling over 1 to 100,000
//! addresses so the table ranges from one cache line to well beyond L2.
//! Time is passed in, advancing a fixed step per take.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use itty_relay::ratelimit::{BanList, Bucket, IpBuckets, IpKey, Rate};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

const SEC: u64 = 1_000_000_000;

fn bucket(c: &mut Criterion) {
    let mut group = c.benchmark_group("bucket");
    group.throughput(Throughput::Elements(1));
    // 1,000 a second: one take every millisecond always conforms.
    let rate = Rate::new(1000, 100);
    let mut b = Bucket::default();
    let mut now = SEC;
    group.bench_function(BenchmarkId::new("take", "conforming"), |bench| {
        bench.iter(|| {
            now += SEC / 1000;
            black_box(b.take(black_box(rate), black_box(now)))
        })
    });
    let mut empty = Bucket::default();
    while empty.take(rate, SEC).is_ok() {}
    group.bench_function(BenchmarkId::new("take", "refused"), |bench| {
        bench.iter(|| black_box(empty.take(black_box(rate), black_box(SEC))))
    });
    group.finish();
}

fn ips(n: usize) -> Vec<IpKey> {
    (0..n)
        .map(|i| IpKey::of(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32))))
        .collect()
}

fn ip_buckets(c: &mut Criterion) {
    let mut group = c.benchmark_group("ip_buckets");
    group.throughput(Throughput::Elements(1));
    for n in [1usize, 1000, 100_000] {
        let keys = ips(n);
        // A million a second per IP, one take per microsecond overall: every
        // take conforms and the table never needs pruning.
        let mut table = IpBuckets::new(Rate::new(1_000_000, 1000), 2 * n + 64);
        let mut now = SEC;
        for &ip in &keys {
            table.take(ip, now).unwrap();
        }
        let mut i = 0;
        group.bench_function(BenchmarkId::new("take", n), |bench| {
            bench.iter(|| {
                now += 1000;
                i = if i + 1 == n { 0 } else { i + 1 };
                black_box(table.take(black_box(keys[i]), now))
            })
        });
        assert_eq!(table.len(), n);
    }
    group.finish();
}

fn ban_list(c: &mut Criterion) {
    let mut group = c.benchmark_group("ban_list");
    group.throughput(Throughput::Elements(1));
    let banned = 1000;
    let mut bans = BanList::new(2 * banned);
    for ip in ips(banned) {
        bans.ban(ip, 3600 * SEC, SEC);
    }
    // An address that is not banned: the common case on every upgrade.
    let clean = IpKey::of(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    group.bench_function(BenchmarkId::new("check_clean", banned), |bench| {
        bench.iter(|| black_box(bans.check(black_box(clean), black_box(2 * SEC))))
    });
    group.finish();
}

criterion_group!(benches, bucket, ip_buckets, ban_list);
criterion_main!(benches);
