//! Building server frames: `ws::frame` (`text_frame`, `ping_frame`,
//! `pong_frame`, `close_frame`).
//!
//! Server frames are built once, as the bytes that go on the wire, and the
//! same `Bytes` is queued to every receiver. `text_frame` is the echo
//! endpoint's and any copied payload's path (the envelope builds on the
//! same `start_frame`/`finish_frame`, see the `envelope` bench); pings go
//! to every quiet connection each sweep; pongs answer client pings; close
//! frames end every connection. Each iteration builds and drops one frame
//! (allocation and free included, as in the relay).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use itty_relay::ws::frame::{close_frame, ping_frame, pong_frame, text_frame};
use std::hint::black_box;

const PAYLOAD_SIZES: [usize; 4] = [16, 128, 1024, 16384];

fn data(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for size in PAYLOAD_SIZES {
        let payload = vec![b'a'; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("text", size), |b| {
            b.iter(|| text_frame(black_box(&payload)))
        });
    }
    group.finish();
}

fn control(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_control");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("ping", 0), |b| {
        b.iter(|| ping_frame(black_box(b"")))
    });
    let payload = [b'p'; 125];
    group.bench_function(BenchmarkId::new("pong", 125), |b| {
        b.iter(|| pong_frame(black_box(&payload)))
    });
    let reason = "message too big";
    group.bench_function(BenchmarkId::new("close", reason.len()), |b| {
        b.iter(|| close_frame(black_box(1009), black_box(reason)))
    });
    group.finish();
}

criterion_group!(benches, data, control);
criterion_main!(benches);
