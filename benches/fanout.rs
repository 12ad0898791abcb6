//! Fanning one frame out into member queues: `conn::handle::ConnHandle::deliver`
//! over a channel's local subscriber list.
//!
//! For every relayed message the owner shard (and every other shard with
//! members) clones the one frame `Bytes` into each local member's bounded
//! queue; this loop is the part of the relay's cost that grows with the
//! audience, so its cost per delivery sets the deliveries per second a
//! core can reach. The loop is the one in `Home::fan_out` (skip the
//! sender, count what was queued) over `Rc<ConnHandle>`s as the shard
//! keeps them.
//!
//! Memory stays bounded without reaching into the writer: a set of handles
//! takes at most `ROUNDS` frames each (within the idle queue's 8 slots),
//! then it is dropped and a fresh set is made, outside the timed part.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use itty_relay::conn::handle::{ConnHandle, Delivery};
use itty_relay::id::{ConnId, Uid};
use itty_relay::pubsub::envelope::{self, Who};
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

const MEMBERS: [usize; 3] = [100, 1000, 10_000];
/// The relay's default `outgoing_queue_bytes_max`.
const QUEUE_BYTES_MAX: usize = 1024 * 1024;
/// Frames delivered to one set of handles before it is replaced.
const ROUNDS: u64 = 8;

fn handles(n: usize) -> Vec<Rc<ConnHandle>> {
    (0..n)
        .map(|i| {
            Rc::new(ConnHandle::new(
                ConnId(i as u64),
                Uid(*b"abC123"),
                false,
                QUEUE_BYTES_MAX,
                0,
                Rc::default(),
            ))
        })
        .collect()
}

/// `Home::fan_out`'s loop.
fn fan_out(list: &[Rc<ConnHandle>], frame: &Bytes, except: Option<ConnId>) -> u64 {
    let mut delivered = 0;
    for conn in list {
        if Some(conn.id()) != except && conn.deliver(frame.clone()) == Delivery::Queued {
            delivered += 1;
        }
    }
    delivered
}

fn bench(c: &mut Criterion) {
    let uid = Uid(*b"zzzzzz");
    // A 128-byte chat message as the owner builds it.
    let mut payload = b"{\"text\":\"".to_vec();
    payload.resize(126, b'a');
    payload.extend_from_slice(b"\"}");
    let frame = envelope::message(
        b"2Vx",
        Some(Who {
            uid: &uid,
            alias_json: None,
        }),
        1_754_659_171_196,
        &payload,
    );
    let mut group = c.benchmark_group("fanout");
    for members in MEMBERS {
        group.throughput(Throughput::Elements(members as u64));
        group.bench_function(BenchmarkId::new("deliver", members), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let (mut done, mut delivered) = (0, 0);
                while done < iters {
                    let list = handles(members);
                    let rounds = ROUNDS.min(iters - done);
                    let start = Instant::now();
                    for _ in 0..rounds {
                        delivered += fan_out(black_box(&list), &frame, Some(ConnId(u64::MAX)));
                    }
                    timed += start.elapsed();
                    done += rounds;
                }
                assert_eq!(delivered, iters * members as u64, "every delivery queued");
                timed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
