//! The owner path: what a shard does for a message to a channel it owns,
//! from the publish to the fan-out, and for a member joining and leaving.
//!
//! One shard of one (everything local, so no forward queue is involved):
//! the publish is routed, the owner finds the channel and the sender,
//! stamps a message id and date, builds the envelope once, and fans it out
//! to its members, each of which is offered the frame. The members'
//! connections have ended, so each offer is refused at once: their queues
//! (measured by `fanout`) stay out of the figure, and what is left is the
//! owner's per-message and per-member work.
//!
//! - `owner/publish/{1,100}`: a broadcast to a channel of 1 or 100 members
//!   (the sender has no echo, so 1 member means no delivery at all).
//! - `owner/direct/100`: a direct message to one of 100 members.
//! - `owner/join_leave/100`: a new connection opens, joins a channel of
//!   100 (its own join event with the list, the others' event), leaves
//!   (the leave event) and closes: presence, the owner's other half.
//!
//! Timings on a shared machine drift; for a same-run comparison of two
//! builds that does not, `OWNER_CASE=publish/100 OWNER_ITERS=N` runs one
//! case N times without criterion, to be counted in instructions:
//! `valgrind --tool=callgrind` at N and at 0, the difference over N.

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use itty_relay::access::Namespaces;
use itty_relay::error::CloseReason;
use itty_relay::http::JoinOptions;
use itty_relay::id::{ShardId, UidCipher};
use itty_relay::shard::join::KeyCheck;
use itty_relay::shard::{Congestion, Shard};
use itty_relay::Config;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const CHANNEL: &str = "bench-room";

fn shard() -> Shard {
    let congestion: Congestion = Arc::from(vec![AtomicBool::new(false)]);
    Shard::new(
        ShardId(0),
        1,
        Arc::new(Config::default()),
        UidCipher::new(7),
        itty_relay::metrics::new(1),
        congestion,
        Arc::new(Namespaces::default()),
    )
}

fn options() -> JoinOptions {
    JoinOptions {
        alias: Some("Alice".into()),
        announce: true,
        list: true,
        ..JoinOptions::default()
    }
}

fn keys() -> KeyCheck {
    KeyCheck::Namespace { may_send: true }
}

/// A shard with a channel of `members`, all ended but the first (the
/// publisher), which is returned.
fn channel_of(shard: &Shard, members: usize) -> Vec<Rc<itty_relay::conn::handle::ConnHandle>> {
    let conns: Vec<_> = (0..members)
        .map(|_| {
            let conn = shard.open_conn(false);
            shard.join(CHANNEL, &conn, &options(), keys());
            conn
        })
        .collect();
    for conn in &conns[1..] {
        conn.end(CloseReason::ServerShutdown);
    }
    conns
}

fn bench(c: &mut Criterion) {
    let mut payload = b"{\"text\":\"".to_vec();
    payload.resize(126, b'a');
    payload.extend_from_slice(b"\"}");

    let mut group = c.benchmark_group("owner");
    group.throughput(Throughput::Elements(1));
    for members in [1usize, 100] {
        let shard = shard();
        let conns = channel_of(&shard, members);
        group.bench_function(BenchmarkId::new("publish", members), |b| {
            b.iter(|| shard.publish(&conns[0], None, black_box(&payload)))
        });
    }
    {
        let shard = shard();
        let conns = channel_of(&shard, 100);
        let to = Some(conns[50].uid());
        group.bench_function(BenchmarkId::new("direct", 100), |b| {
            b.iter(|| shard.publish(&conns[0], to, black_box(&payload)))
        });
    }
    {
        let shard = shard();
        let _conns = channel_of(&shard, 100);
        group.bench_function(BenchmarkId::new("join_leave", 100), |b| {
            b.iter(|| {
                let conn = shard.open_conn(false);
                shard.join(CHANNEL, &conn, &options(), keys());
                shard.leave(&conn);
                shard.close_conn(&conn, CloseReason::ClientClosed(None));
            })
        });
    }
    group.finish();
}

/// Runs one case `iters` times, outside criterion (see the module doc).
fn count(case: &str, iters: u64) {
    let mut payload = b"{\"text\":\"".to_vec();
    payload.resize(126, b'a');
    payload.extend_from_slice(b"\"}");
    let shard = shard();
    let members = if case == "publish/1" { 1 } else { 100 };
    let conns = channel_of(&shard, members);
    let to = (case == "direct/100").then(|| conns[50].uid());
    for _ in 0..iters {
        match case {
            "join_leave/100" => {
                let conn = shard.open_conn(false);
                shard.join(CHANNEL, &conn, &options(), keys());
                shard.leave(&conn);
                shard.close_conn(&conn, CloseReason::ClientClosed(None));
            }
            _ => shard.publish(&conns[0], to, black_box(&payload)),
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    if let (Ok(case), Ok(iters)) = (std::env::var("OWNER_CASE"), std::env::var("OWNER_ITERS")) {
        return count(&case, iters.parse().expect("OWNER_ITERS is a number"));
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
