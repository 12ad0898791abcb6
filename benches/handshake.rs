//! The HTTP phase of a join, in user space: parse the upgrade request's
//! head (`http::parse_head`), route it (`http::endpoint`: path, channel,
//! options, accept key) and build the `101` (`http::switching_protocols`).
//!
//! Every connection pays it once, so it bounds the joins per second a shard
//! completes in a connection storm (the `connect` scenario, where the relay,
//! not the generator, is the limit). Two requests: the load generator's
//! (five headers) and a browser's (Chromium's thirteen, with cookies).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use itty_relay::http::{endpoint, parse_head, switching_protocols, Endpoint, HeadLimits};
use std::hint::black_box;

const LIMITS: HeadLimits = HeadLimits {
    head_bytes_max: 8192,
    headers_max: 64,
};

const GENERATOR: &[u8] = b"GET /c/room-42?as=member-7 HTTP/1.1\r\n\
    Host: 127.0.0.1:8080\r\n\
    Connection: Upgrade\r\n\
    Upgrade: websocket\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

const BROWSER: &[u8] = b"GET /c/my-team%2Froom-42?as=Alice&echo=true&announce=true HTTP/1.1\r\n\
    Host: relay.example.com\r\n\
    Connection: Upgrade\r\n\
    Pragma: no-cache\r\n\
    Cache-Control: no-cache\r\n\
    User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
    Upgrade: websocket\r\n\
    Origin: https://app.example.com\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Accept-Encoding: gzip, deflate, br, zstd\r\n\
    Accept-Language: en-GB,en;q=0.9\r\n\
    Cookie: session=4f1c2a9e0b7d; theme=dark\r\n\
    Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

/// The whole HTTP phase of one join; returns the `101`'s length.
fn upgrade(request: &[u8]) -> usize {
    let (head, _) = parse_head(request, &LIMITS)
        .expect("well formed")
        .expect("complete");
    match endpoint(&head) {
        Ok(Endpoint::Join { accept_key, .. }) => switching_protocols(&accept_key, None).len(),
        _ => panic!("a join"),
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    for (name, request) in [("generator", GENERATOR), ("browser", BROWSER)] {
        assert!(upgrade(request) > 100);
        group.bench_function(format!("parse/{name}"), |b| {
            b.iter(|| parse_head(black_box(request), &LIMITS))
        });
        group.bench_function(format!("upgrade/{name}"), |b| {
            b.iter(|| upgrade(black_box(request)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
