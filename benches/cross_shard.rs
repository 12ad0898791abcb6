//! The cross-shard queue: a shard's `PeerLink` batching what it forwards
//! into a glommio `shared_channel` slot, and the peer shard receiving the
//! batches, on two real glommio executors.
//!
//! Every message between shards crosses it: publishes to a channel owned
//! elsewhere, and the owner's fan-out to the other shards with members.
//! `PeerLink` collects up to 1024 messages per slot so the receiving shard
//! wakes once per batch; the batch size sets how much of the wake-up cost
//! each message carries. Measured with 1, 64 and 1024 messages a batch, as
//! messages a second from the first send to the last message received.
//!
//! The peer, `crossbeam`, runs the same `PeerLink` batching over a bounded
//! crossbeam channel between two plain threads (blocking, no executor):
//! how much the executor's transport costs against a common lock-free one.
//!
//! Each sample starts two fresh executors (`Placement::Unbound`: the
//! benchmark machine has 2 cores; 256 KiB of io_uring memory each, within
//! the default memlock limit), outside the timed part. The messages are
//! `FanOut`s carrying a static frame, so refcounts stay out of the figure.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};
use itty_relay::id::ChannelToken;
use itty_relay::shard::links::PeerLink;
use itty_relay::shard::message::{Batch, Frames, ShardMsg};
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// The relay's default `forward_queue_slots`.
const QUEUE_SLOTS: usize = 64;
const BATCH_SIZES: [usize; 3] = [1, 64, 1024];
const IO_MEMORY: usize = 256 * 1024;
const FRAME: &[u8] = b"\x81\x1f{\"id\":\"2Vx\",\"date\":1,\"message\":1}";

fn msg() -> ShardMsg {
    ShardMsg::FanOut {
        token: ChannelToken(7),
        frames: Frames::plain(Bytes::from_static(FRAME)),
        except: None,
    }
}

/// Sends `batches` batches of `batch` messages from one executor to
/// another; returns the time from the first send to the last receipt.
fn glommio_run(batch: usize, batches: u64) -> Duration {
    let (tx, rx) = shared_channel::new_bounded::<Batch>(QUEUE_SLOTS);
    let total = batch as u64 * batches;
    let sender = LocalExecutorBuilder::new(Placement::Unbound)
        .name("bench-sender")
        .io_memory(IO_MEMORY)
        .spawn(move || async move {
            let tx = tx.connect().await;
            let link = PeerLink::default();
            let start = Instant::now();
            for _ in 0..batches {
                for _ in 0..batch {
                    link.forward(msg(), usize::MAX);
                }
                let batch = link.next_batch().await;
                if tx.send(batch).await.is_err() {
                    panic!("the receiver stopped");
                }
            }
            start
        })
        .expect("sender executor");
    let receiver = LocalExecutorBuilder::new(Placement::Unbound)
        .name("bench-receiver")
        .io_memory(IO_MEMORY)
        .spawn(move || async move {
            let rx = rx.connect().await;
            let mut received = 0u64;
            while received < total {
                let batch = rx.recv().await.expect("the sender stopped early");
                for msg in batch {
                    black_box(&msg);
                    received += 1;
                }
            }
            Instant::now()
        })
        .expect("receiver executor");
    let start = sender.join().expect("sender");
    let end = receiver.join().expect("receiver");
    end - start
}

/// The same over a bounded crossbeam channel between two threads.
fn crossbeam_run(batch: usize, batches: u64) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<Batch>(QUEUE_SLOTS);
    let total = batch as u64 * batches;
    let ready = Arc::new(Barrier::new(2));
    let sender = {
        let ready = ready.clone();
        std::thread::spawn(move || {
            let link = PeerLink::default();
            ready.wait();
            let start = Instant::now();
            for _ in 0..batches {
                for _ in 0..batch {
                    link.forward(msg(), usize::MAX);
                }
                let batch = futures_lite::future::block_on(link.next_batch());
                tx.send(batch).expect("the receiver stopped");
            }
            start
        })
    };
    let receiver = std::thread::spawn(move || {
        ready.wait();
        let mut received = 0u64;
        while received < total {
            let batch = rx.recv().expect("the sender stopped early");
            for msg in batch {
                black_box(&msg);
                received += 1;
            }
        }
        Instant::now()
    });
    let start = sender.join().expect("sender");
    let end = receiver.join().expect("receiver");
    end - start
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("cross_shard");
    // Each sample starts two executors: fewer, longer samples.
    group.sample_size(20);
    for batch in BATCH_SIZES {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::new("glommio", batch), |b| {
            b.iter_custom(|iters| glommio_run(batch, iters))
        });
        group.bench_function(BenchmarkId::new("crossbeam", batch), |b| {
            b.iter_custom(|iters| crossbeam_run(batch, iters))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
