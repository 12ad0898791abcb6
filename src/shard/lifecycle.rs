//! A shard's life: its clocks, its drain and its stop, and the sockets it
//! is still serving (which the drain waits for, and whose closing tells the
//! sweep when to hand memory back).

use super::message::ShardMsg;
use super::stop::StopSignal;
use super::sweep::TrimPolicy;
use super::Shard;
use crate::error::CloseReason;
use crate::id::ShardId;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

/// The shard's side of its shutdown (`run.rs` drives it): drain, tell the
/// peers, stop.
impl Shard {
    /// Starts the drain: every connection gets 1001 after its queue.
    pub(super) fn begin_shutdown(&self) {
        self.life.begin_drain();
        self.home.for_each_conn(|conn| {
            conn.end(CloseReason::ServerShutdown);
        });
    }

    /// Tells every peer this shard's drain is over (after the leaves it
    /// forwarded).
    pub(super) fn tell_peers_drained(&self) {
        for peer in 0..self.router.shard_count() {
            let peer = ShardId(peer as u16);
            if peer != self.id() {
                self.send(peer, ShardMsg::Drained);
            }
        }
        self.dispatch();
    }

    /// Whether every peer's drain is over.
    pub(super) fn peers_drained(&self) -> bool {
        self.life.peers_drained() + 1 >= self.router.shard_count()
    }

    /// Ends the long-lived tasks (they race `stopped`). glommio 0.9 does
    /// not drop a finished executor's remaining tasks, so anything left
    /// running would keep its sockets open: the listener first of all.
    pub(super) fn stop(&self) {
        self.life.stop();
        // Connections still draining at the deadline: cut them.
        self.home.for_each_conn(|conn| conn.shutdown_socket());
    }

    /// Resolves once `stop` was called.
    pub async fn stopped(&self) {
        self.life.stopped().await
    }
}

/// An accepted socket being served; see `Shard::track_socket`.
pub struct SocketGuard(Rc<Shard>);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.0.life.socket_closed();
    }
}

impl Shard {
    /// Counts an accepted socket until the returned guard drops.
    pub fn track_socket(self: &Rc<Self>) -> SocketGuard {
        self.life.socket_opened();
        SocketGuard(self.clone())
    }
}

pub struct Lifecycle {
    started: Instant,
    /// Coarse clock in ms since `started`, advanced by the sweep.
    clock_ms: Cell<u64>,
    /// Set once shutdown began: upgrades refused, `/health` answers 503.
    draining: Cell<bool>,
    /// Accepted sockets still being served (HTTP phase or WebSocket); the
    /// drain waits for them so none is left behind unanswered.
    sockets_open: Cell<usize>,
    /// Peers that said their drain is over (`ShardMsg::Drained`).
    peers_drained: Cell<usize>,
    /// When the sweep hands freed memory back to the kernel.
    trim: TrimPolicy,
    /// Raised when the shard stops for good; its long-lived tasks end.
    stop: StopSignal,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            started: Instant::now(),
            clock_ms: Cell::new(0),
            draining: Cell::new(false),
            sockets_open: Cell::new(0),
            peers_drained: Cell::new(0),
            trim: TrimPolicy::default(),
            stop: StopSignal::default(),
        }
    }
}

impl Lifecycle {
    /// Nanoseconds since the shard started: the clock of its buckets.
    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// The coarse clock (ms), as of the last sweep.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms.get()
    }

    /// Advances the coarse clock; returns it.
    pub fn tick(&self) -> u64 {
        let now = self.started.elapsed().as_millis() as u64;
        self.clock_ms.set(now);
        now
    }

    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    pub fn peer_drained(&self) {
        self.peers_drained.set(self.peers_drained.get() + 1);
    }

    pub fn peers_drained(&self) -> usize {
        self.peers_drained.get()
    }

    pub fn begin_drain(&self) {
        self.draining.set(true);
    }

    pub fn socket_opened(&self) {
        let open = self.sockets_open.get() + 1;
        self.sockets_open.set(open);
        self.trim.opened(open);
    }

    pub fn socket_closed(&self) {
        self.sockets_open.set(self.sockets_open.get() - 1);
        self.trim.closed();
    }

    pub fn open_sockets(&self) -> usize {
        self.sockets_open.get()
    }

    /// Counts a slow consumer's dropped backlog (see `sweep`).
    pub fn note_discarded(&self, bytes: usize) {
        self.trim.discarded(bytes);
    }

    /// Whether the sweep should hand free memory back now.
    pub fn trim_due(&self) -> bool {
        self.trim.due(self.sockets_open.get())
    }

    /// Resolves once `stop` was called.
    pub async fn stopped(&self) {
        self.stop.stopped().await
    }

    pub fn stop(&self) {
        self.stop.stop();
    }
}
