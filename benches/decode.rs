//! Decoding client frames: `ws::codec::Decoder::decode`.
//!
//! Every byte a client sends passes through it on the connection's home
//! shard, before anything else happens to a message: header parsing and
//! checks, unmasking in place, and UTF-8 validation of text messages. One
//! socket read usually carries many small frames, which `decode_batch`
//! measures.
//!
//! The frames are masked with the all-zero key, so decoding in place leaves
//! the buffer as it was and the same bytes can be decoded again without a
//! copy in the timed loop. The decoder does the same work for every key: it
//! XORs the payload whatever the key is.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use itty_relay::ws::codec::{Decoder, Message};
use std::hint::black_box;

/// The relay's default `message_bytes_max`.
const MESSAGE_BYTES_MAX: usize = 100 * 1024;
const PAYLOAD_SIZES: [usize; 4] = [16, 128, 1024, 16384];
const KEY: [u8; 4] = [0; 4];
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;

/// A masked client frame with FIN set.
fn client_frame(opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
    frame
}

/// A JSON chat message of exactly `len` bytes (at least 12).
fn chat_payload(len: usize) -> Vec<u8> {
    let mut payload = b"{\"text\":\"".to_vec();
    payload.resize(len - 2, b'a');
    payload.extend_from_slice(b"\"}");
    payload
}

fn decode_one(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, opcode) in [("text", TEXT), ("binary", BINARY)] {
        for size in PAYLOAD_SIZES {
            let mut frame = client_frame(opcode, &chat_payload(size), KEY);
            let mut decoder = Decoder::new(MESSAGE_BYTES_MAX);
            let frame_len = frame.len();
            let decoded = decoder.decode(&mut frame).expect("a valid frame");
            assert_eq!(decoded.consumed, frame_len);
            assert!(matches!(
                decoded.message,
                Some(Message::Text(p) | Message::Binary(p)) if p.len() == size
            ));
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_function(BenchmarkId::new(name, size), |b| {
                b.iter(|| {
                    let decoded = decoder.decode(black_box(&mut frame)).unwrap();
                    black_box((decoded.consumed, decoded.message.is_some()))
                })
            });
        }
    }
    group.finish();
}

/// One read holding `frames` text frames of `payload` bytes each, decoded
/// the way a session does it: call again on what is left.
fn decode_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_batch");
    for (frames, payload) in [(64usize, 32usize), (16, 128)] {
        let one = client_frame(TEXT, &chat_payload(payload), KEY);
        let mut buf = one.repeat(frames);
        let mut decoder = Decoder::new(MESSAGE_BYTES_MAX);
        group.throughput(Throughput::Elements(frames as u64));
        let id = BenchmarkId::new(format!("text_{payload}B"), frames);
        group.bench_function(id, |b| {
            b.iter(|| {
                let buf = black_box(&mut buf[..]);
                let (mut at, mut messages) = (0, 0usize);
                loop {
                    let decoded = decoder.decode(&mut buf[at..]).unwrap();
                    if decoded.message.is_none() {
                        break;
                    }
                    at += decoded.consumed;
                    messages += 1;
                }
                assert_eq!(messages, frames);
                black_box(at)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode_one, decode_batch);
criterion_main!(benches);
