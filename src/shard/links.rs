//! Forwarding between shards: one bounded link per peer shard, and the
//! congestion flags that make every shard's readers wait when a link backs
//! up. Each link batches what the shard forwarded during a turn into one
//! queue slot, so the receiving shard wakes once per batch.
//!
//! The queues are glommio `shared_channel`s (lock-free SPSC rings that wake
//! a parked executor through its eventfd), wired pairwise by `server.rs`.
//! We do not use glommio's `MeshBuilder`: in 0.9 it is `Send` while holding
//! an `Rc`, and it orders peers by executor id rather than by our shard
//! index.
//!
//! Overflow policy: when a peer's queue is full, messages wait in the
//! link's backlog. Past `FORWARD_CONGESTED` messages the shard raises its
//! congestion flag and every shard's socket readers stop reading (TCP
//! pushes back on publishers) until it drains (`Links::room`); past
//! `forward_backlog_max`, messages are dropped and counted
//! (`messages_dropped{reason="forward_backlog_full"}`). Queue receivers
//! never wait, so shards cannot deadlock on each other, and a full queue
//! never blocks the shard.

use super::message::{Batch, ShardMsg};
use crate::id::ShardId;
use crate::limits::{FORWARD_BATCH_MAX, FORWARD_CONGESTED};
use crate::wake::{WakerList, WakerSlot};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Backlog slots a link keeps once a burst is over (a few cache lines of
/// messages); the sweep frees the rest, as it does connections' queues.
const IDLE_BACKLOG_SLOTS: usize = 64;

/// Every shard's congestion flag, each written only by its shard: set
/// while that shard has a congested forward link.
pub type Congestion = Arc<[AtomicBool]>;

/// The sending side of one peer: a backlog, the forwarder task's waker, and
/// the readers waiting for the backlog to shrink.
#[derive(Default)]
pub struct PeerLink {
    backlog: RefCell<VecDeque<ShardMsg>>,
    /// The forwarder task for this peer, parked until the backlog has
    /// something.
    forwarder: WakerSlot,
    /// Socket readers parked until the backlog is below the congestion mark.
    room_waiters: WakerList,
}

impl PeerLink {
    /// Queues `msg` for the peer and returns the backlog's new length;
    /// `None` when the backlog is full and the message was dropped.
    pub fn forward(&self, msg: ShardMsg, backlog_max: usize) -> Option<usize> {
        let mut backlog = self.backlog.borrow_mut();
        if backlog.len() >= backlog_max {
            return None;
        }
        backlog.push_back(msg);
        if backlog.len() == 1 {
            self.forwarder.wake();
        }
        Some(backlog.len())
    }

    pub fn backlog_len(&self) -> usize {
        self.backlog.borrow().len()
    }

    /// Frees what a burst made the (now empty) backlog grow to.
    pub fn shrink_idle(&self) {
        let mut backlog = self.backlog.borrow_mut();
        if backlog.is_empty() && backlog.capacity() > IDLE_BACKLOG_SLOTS {
            backlog.shrink_to(IDLE_BACKLOG_SLOTS);
        }
    }

    /// Waits for messages, then takes up to `FORWARD_BATCH_MAX` of them as
    /// one batch (the cap keeps a full queue's memory bounded).
    pub async fn next_batch(&self) -> Batch {
        let batch = self
            .forwarder
            .until(|| {
                let mut backlog = self.backlog.borrow_mut();
                let n = backlog.len().min(FORWARD_BATCH_MAX);
                (n > 0).then(|| backlog.drain(..n).collect::<Batch>())
            })
            .await;
        if self.backlog_len() < FORWARD_CONGESTED {
            self.room_waiters.wake_all();
        }
        batch
    }

    /// Resolves once the backlog is below the congestion mark. Socket
    /// readers wait on it before reading more, so a publisher faster than a
    /// peer shard is slowed by TCP instead of losing messages.
    pub async fn room(&self) {
        self.room_waiters
            .until(|| self.backlog_len() < FORWARD_CONGESTED)
            .await
    }
}

/// A shard's links to its peers and its view of every shard's congestion.
pub struct Links {
    here: ShardId,
    /// One link per other shard (`None` at our own index).
    peers: Vec<Option<PeerLink>>,
    congested: Congestion,
}

impl Links {
    pub fn new(here: ShardId, congested: Congestion) -> Links {
        let peers = (0..congested.len())
            .map(|i| (i != here.index()).then(PeerLink::default))
            .collect();
        Links {
            here,
            peers,
            congested,
        }
    }

    fn peer(&self, shard: usize) -> &PeerLink {
        self.peers[shard].as_ref().expect("never forward to self")
    }

    /// Queues `msg` for `to`; `false` when its backlog was full and the
    /// message was dropped.
    pub fn forward(&self, to: ShardId, msg: ShardMsg, backlog_max: usize) -> bool {
        match self.peer(to.index()).forward(msg, backlog_max) {
            Some(FORWARD_CONGESTED) => {
                self.update_congestion();
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Frees what bursts left in idle backlogs (the sweep).
    pub fn shrink_idle(&self) {
        for link in self.peers.iter().flatten() {
            link.shrink_idle();
        }
    }

    /// Takes the next batch for `peer` and updates the congestion flag.
    pub async fn next_batch(&self, peer: usize) -> Batch {
        let batch = self.peer(peer).next_batch().await;
        self.update_congestion();
        batch
    }

    /// Whether no shard has a congested forward link.
    pub fn has_room(&self) -> bool {
        !self.congested.iter().any(|f| f.load(Ordering::Acquire))
    }

    /// Waits until no shard has a congested forward link; a reader calls
    /// it before reading more from its socket. Every shard's readers pause,
    /// not only this one's: a publisher on shard A can congest the link
    /// from the owner B back to A, which A's own links do not show.
    pub async fn room(&self) {
        loop {
            let Some(congested) = self
                .congested
                .iter()
                .position(|f| f.load(Ordering::Acquire))
            else {
                return;
            };
            if congested == self.here.index() {
                for link in self.peers.iter().flatten() {
                    link.room().await;
                }
                self.update_congestion();
            } else {
                // Another shard's flag clears without telling us: look again
                // shortly. This only runs while the relay is overloaded.
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    }

    /// Raises or clears this shard's congestion flag from its links'
    /// backlogs. Called when a backlog reaches the mark and after every
    /// batch sent.
    fn update_congestion(&self) {
        let congested = self
            .peers
            .iter()
            .flatten()
            .any(|l| l.backlog_len() >= FORWARD_CONGESTED);
        let flag = &self.congested[self.here.index()];
        if flag.load(Ordering::Relaxed) != congested {
            flag.store(congested, Ordering::Release);
        }
    }
}
