//! permessage-deflate on the owner and home paths: compressing one envelope
//! (done once per message, whatever the fan-out), inflating a client's
//! message, and refusing a zip bomb.
//!
//! The envelopes carry dashboard-like JSON (records of varied numbers and
//! words, as `itty-loadtest --payload-fill json` publishes), not padding,
//! which would compress to nothing. The zip bomb is 8 MiB of spaces
//! (about 8 KiB compressed, 1:1000) against the relay's default 100 KiB
//! message limit: the issue's aim is under 1 ms and no memory growth (the
//! buffer stops one 16 KiB step past the limit; checked before timing).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flate2::{Compress, Compression, FlushCompress};
use itty_relay::ws::deflate::{Compressor, InflateError, Inflater};
use std::hint::black_box;

/// The relay's default message limit (`--message-bytes-max`, 100 KiB).
const LIMIT: usize = 100 * 1024;

/// An itty envelope around `payload_bytes` of dashboard-like JSON.
fn envelope(payload_bytes: usize) -> Vec<u8> {
    let mut payload = String::from("[");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut id = 0;
    while payload.len() < payload_bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        id += 1;
        if id > 1 {
            payload.push(',');
        }
        payload.push_str(&format!(
            r#"{{"id":{id},"name":"pump-{}","value":{}.{:03},"state":"ok","t":{}}}"#,
            x % 97,
            (x >> 8) % 1000,
            (x >> 20) % 1000,
            1_764_600_000 + (x >> 32) % 100_000
        ));
    }
    payload.push(']');
    format!(
        r#"{{"id":"a1b2c3d4e5f6","uid":"Zk3mQ9","date":1764670000000,"alias":"Alice","message":{payload}}}"#
    )
    .into_bytes()
}

/// Raw deflate with a sync flush and the tail stripped, as a browser sends.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::fast(), false);
    let mut out = Vec::with_capacity(data.len() / 100 + 1024);
    loop {
        let before = c.total_in() as usize;
        c.compress_vec(&data[before..], &mut out, FlushCompress::Sync)
            .unwrap();
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    out.truncate(out.len() - 4);
    out
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate");
    let mut compressor = Compressor::default();
    let mut inflater = Inflater::default();
    for payload in [130, 1024, 4096] {
        let env = envelope(payload);
        let frame = compressor.text_frame(&env, 15);
        let compressed = deflate(&env);
        eprintln!(
            "deflate: envelope {} B -> frame {} B (ratio {:.2})",
            env.len(),
            frame.as_ref().map_or(env.len(), |f| f.len()),
            frame
                .as_ref()
                .map_or(1.0, |f| f.len() as f64 / env.len() as f64)
        );
        group.throughput(Throughput::Bytes(env.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("compress_once", env.len()),
            &env,
            |b, e| b.iter(|| black_box(compressor.text_frame(black_box(e), 15))),
        );
        group.bench_with_input(
            BenchmarkId::new("inflate", env.len()),
            &compressed,
            |b, z| b.iter(|| black_box(inflater.inflate(black_box(z), LIMIT).map(|m| m.len()))),
        );
    }
    let bomb = deflate(&vec![b' '; 8 << 20]);
    assert_eq!(
        inflater.inflate(&bomb, LIMIT).err(),
        Some(InflateError::TooBig)
    );
    eprintln!(
        "deflate: zip bomb of {} B compressed (8 MiB inflated)",
        bomb.len()
    );
    group.throughput(Throughput::Bytes(bomb.len() as u64));
    group.bench_function("zip_bomb_refused", |b| {
        b.iter(|| black_box(inflater.inflate(black_box(&bomb), LIMIT).is_err()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
