//! Building envelopes: `pubsub::envelope` (`message`, `join`, `leave`,
//! `join_self`, `error`).
//!
//! The owner shard builds each relayed message's frame exactly once, as
//! finished WebSocket frame bytes, before fanning it out: this is the
//! per-message cost that does not grow with the number of members. Join
//! and leave events are built once per membership change; `join_self` is
//! built once per joiner and grows with the member list it carries. Each
//! iteration builds and drops one frame (allocation and free included).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use itty_relay::id::{message_id, ShardId, Uid};
use itty_relay::pubsub::envelope::{self, alias_json, Who};
use std::hint::black_box;

const PAYLOAD_SIZES: [usize; 4] = [16, 128, 1024, 16384];
const DATE_MS: u64 = 1_754_659_171_196;

/// A JSON chat message of exactly `len` bytes (at least 12).
fn chat_payload(len: usize) -> Vec<u8> {
    let mut payload = b"{\"text\":\"".to_vec();
    payload.resize(len - 2, b'a');
    payload.extend_from_slice(b"\"}");
    payload
}

fn message(c: &mut Criterion) {
    let uid = Uid(*b"abC123");
    let alias = alias_json("Alice");
    let mut id = [0u8; 12];
    let id_len = message_id(123_456_789, ShardId(0), 2, &mut id);
    let id = &id[..id_len];
    let mut group = c.benchmark_group("envelope_message");
    for size in PAYLOAD_SIZES {
        let payload = chat_payload(size);
        group.throughput(Throughput::Bytes(size as u64));
        // From a member with an alias: the longest header.
        group.bench_function(BenchmarkId::new("member", size), |b| {
            b.iter(|| {
                let from = Who {
                    uid: &uid,
                    alias_json: Some(&alias),
                };
                envelope::message(
                    black_box(id),
                    Some(from),
                    black_box(DATE_MS),
                    black_box(&payload),
                )
            })
        });
        // An HTTP push: no sender.
        group.bench_function(BenchmarkId::new("push", size), |b| {
            b.iter(|| {
                envelope::message(black_box(id), None, black_box(DATE_MS), black_box(&payload))
            })
        });
    }
    group.finish();
}

fn events(c: &mut Criterion) {
    let uid = Uid(*b"abC123");
    let alias = alias_json("Alice");
    let who = Who {
        uid: &uid,
        alias_json: Some(&alias),
    };
    let mut group = c.benchmark_group("envelope_event");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("join", "announced"), |b| {
        b.iter(|| envelope::join(Some(black_box(who)), black_box(42), black_box(DATE_MS)))
    });
    group.bench_function(BenchmarkId::new("leave", "anonymous"), |b| {
        b.iter(|| envelope::leave(None, black_box(41), black_box(DATE_MS)))
    });
    group.bench_function(BenchmarkId::new("error", "no_such_user"), |b| {
        b.iter(|| envelope::error(black_box("no user \"zzzzzz\" on this channel"), DATE_MS))
    });
    group.finish();
}

/// The joiner's own join event with the member list (`?list`), every
/// member announced, half of them with an alias.
fn join_self(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope_join_self");
    group.throughput(Throughput::Elements(1));
    for members in [1usize, 10, 100, 1000] {
        let uids: Vec<Uid> = (0..members)
            .map(|i| {
                let mut u = *b"aaaaaa";
                for (k, byte) in u.iter_mut().enumerate() {
                    *byte = b'a' + ((i >> (4 * k)) % 16) as u8;
                }
                Uid(u)
            })
            .collect();
        let aliases: Vec<Box<str>> = (0..members)
            .map(|i| alias_json(&format!("user {i}")))
            .collect();
        let users: Vec<Who> = uids
            .iter()
            .zip(&aliases)
            .enumerate()
            .map(|(i, (uid, alias))| Who {
                uid,
                alias_json: (i % 2 == 0).then_some(&**alias),
            })
            .collect();
        let me = users[members - 1];
        group.bench_function(BenchmarkId::new("members", members), |b| {
            b.iter(|| {
                envelope::join_self(
                    black_box(me),
                    Some(black_box(&users).iter().copied()),
                    members,
                    DATE_MS,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, message, events, join_self);
criterion_main!(benches);
