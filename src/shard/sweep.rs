//! The once-a-second sweep: liveness (pings, idle drops), pruning of the
//! per-IP tables, and handing freed memory back to the kernel.

use super::Shard;
use crate::conn::handle::Liveness;
use crate::error::CloseReason;
use crate::limits::{TRIM_AFTER_BYTES_DISCARDED, TRIM_AFTER_SOCKETS_CLOSED};
use std::cell::Cell;

impl Shard {
    /// Pings quiet connections, drops silent ones, gives back the queue
    /// memory a burst left behind, prunes the IP tables and, when it is
    /// due, the allocator's free pages. Called every `SWEEP_INTERVAL_MS`
    /// by the sweep task.
    pub(super) fn sweep(&self) {
        let now = self.life.tick();
        let (ping_ms, idle_ms) = (self.config.ping_interval_ms, self.config.idle_timeout_ms);
        self.home.for_each_conn(|conn| {
            match conn.liveness(now, ping_ms, idle_ms) {
                Liveness::Idle => {
                    conn.end(CloseReason::IdleTimeout);
                }
                Liveness::PingDue => {
                    conn.pinged();
                    conn.deliver(crate::ws::frame::ping_frame(b""));
                }
                Liveness::Alive => {}
            }
            conn.shrink_idle_queue();
        });
        self.home.outbox().shrink_idle();
        self.home.shrink_idle();
        self.owner.borrow_mut().shrink_idle();
        self.reader.shrink_idle();
        self.admission.prune(self.now_ns());
        self.inflater.borrow_mut().shrink();
        self.links.shrink_idle();
        let mut inbox = self.inbox.borrow_mut();
        if inbox.is_empty() && inbox.capacity() > 64 {
            inbox.shrink_to(64);
        }
        drop(inbox);
        if let Some(cluster) = self.cluster.clone() {
            let resync = cluster.take_lost(self.id());
            self.with_owner(|o, now, fx| {
                o.cluster_sweep(now, fx);
                if resync {
                    o.cluster_resync(now, fx);
                }
            });
            self.ask_uid_block();
            self.dispatch();
        }
        if self.life.trim_due() {
            release_free_memory();
        }
    }
}

/// When to hand free memory back: after a crowd left (many sockets closed
/// and at most half of the peak still open), not under steady churn, which
/// reuses what it frees; once more at the first sweep after that at which
/// nobody was leaving; or after slow consumers' backlogs were dropped.
#[derive(Default)]
pub struct TrimPolicy {
    /// Sockets closed since the last trim, and the most open at once.
    closed: Cell<usize>,
    peak: Cell<usize>,
    /// `closed` at the previous sweep: unchanged means no socket closed in
    /// between, so whoever was leaving has left.
    closed_at_last_sweep: Cell<usize>,
    /// A crowd's trim ran: trim once more at the first sweep at which no
    /// socket closed since the one before. Sockets still open at the trim
    /// pinned pages of the heap, and some of what a crowd held is freed
    /// only after its sockets: the channels this shard owns lose their
    /// members on other shards when those shards' leaves arrive, and the
    /// sweeps after shrink the tables they emptied.
    follow_up: Cell<bool>,
    /// Bytes of slow consumers' queues dropped since the last trim.
    discarded: Cell<usize>,
}

impl TrimPolicy {
    pub fn opened(&self, open: usize) {
        self.peak.set(self.peak.get().max(open));
    }

    pub fn closed(&self) {
        self.closed.set(self.closed.get() + 1);
    }

    pub fn discarded(&self, bytes: usize) {
        self.discarded.set(self.discarded.get() + bytes);
    }

    /// Whether to trim now, with `open` sockets; called once per sweep. If
    /// so, starts counting afresh.
    pub(super) fn due(&self, open: usize) -> bool {
        let closed = self.closed.get();
        let closing = self.closed_at_last_sweep.replace(closed) != closed;
        let crowd_left = closed >= TRIM_AFTER_SOCKETS_CLOSED && open * 2 <= self.peak.get();
        let crowd_gone = self.follow_up.get() && !closing;
        let due = crowd_left || crowd_gone || self.discarded.get() >= TRIM_AFTER_BYTES_DISCARDED;
        self.follow_up
            .set(crowd_left || (self.follow_up.get() && !crowd_gone));
        if due {
            self.closed.set(0);
            self.closed_at_last_sweep.set(0);
            self.peak.set(open);
            self.discarded.set(0);
        }
        due
    }
}

/// Keeps the allocator's mmap threshold at its default (128 KiB) instead of
/// letting glibc raise it each time a mapped block is freed (up to 32 MiB).
/// The tables a crowd makes a shard grow (its connections, the reader's,
/// the channels') and large queues are then mappings of their own, handed
/// back whole when freed or shrunk, instead of heap pages that stay pinned
/// by whatever small allocation lands beside them.
pub(crate) fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}

/// glibc's default mmap threshold.
const MMAP_THRESHOLD_BYTES: i32 = 128 * 1024;

/// Hands the allocator's free pages back to the kernel, so that memory
/// returns to its baseline after a crowd of connections has left. glibc
/// keeps freed memory in its arenas and gives back only the top of each
/// heap on its own; `malloc_trim` releases every free page. It locks each
/// arena in turn (8-12 ms for a 60 MB heap here), hence `TrimPolicy`.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let started = std::time::Instant::now();
        // SAFETY: malloc_trim only walks the allocator's own free lists.
        unsafe { libc::malloc_trim(0) };
        tracing::debug!(
            took_us = started.elapsed().as_micros() as u64,
            "released free memory"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_a_crowd_left_but_not_under_steady_churn() {
        let policy = TrimPolicy::default();
        // Steady churn: 5,000 open, thousands come and go.
        for open in 1..=5000 {
            policy.opened(open);
        }
        for _ in 0..3 {
            for _ in 0..2000 {
                policy.closed();
                policy.opened(5000);
            }
            assert!(!policy.due(5000), "churn reuses what it frees");
        }
        // The crowd leaves: due once half of the peak has gone, then not
        // again until another 1,024 close.
        for _ in 0..2400 {
            policy.closed();
        }
        assert!(!policy.due(2600));
        for _ in 0..100 {
            policy.closed();
        }
        assert!(policy.due(2500));
        for _ in 0..1000 {
            policy.closed();
        }
        assert!(!policy.due(1500), "fewer than 1,024 closed since");
        for _ in 0..1500 {
            policy.closed();
        }
        assert!(policy.due(0));
        assert!(policy.due(0), "the follow-up, nobody left since");
        assert!(!policy.due(0));
    }

    #[test]
    fn trims_again_once_the_last_of_a_crowd_left() {
        let policy = TrimPolicy::default();
        for open in 1..=10_000 {
            policy.opened(open);
        }
        // The sweep lands while the crowd is leaving: 9,100 gone, 900 not.
        for _ in 0..9100 {
            policy.closed();
        }
        assert!(policy.due(900));
        // The last 900 go, fewer than the 1,024 a trim waits for; while
        // they are still going, no trim.
        for _ in 0..500 {
            policy.closed();
        }
        assert!(!policy.due(400));
        for _ in 0..400 {
            policy.closed();
        }
        assert!(!policy.due(0), "still leaving at this sweep");
        assert!(policy.due(0), "nobody left since the last sweep: trim");
        assert!(!policy.due(0), "once");
        // A crowd that left between two sweeps is trimmed, and once more
        // at the next sweep: what its leaving freed since (the channels
        // this shard owns, the tables that sweep shrinks) is free by then.
        for open in 1..=5000 {
            policy.opened(open);
        }
        for _ in 0..5000 {
            policy.closed();
        }
        assert!(policy.due(0));
        assert!(policy.due(0), "the follow-up");
        assert!(!policy.due(0));
        policy.closed();
        assert!(!policy.due(0), "one close is no crowd");
        assert!(!policy.due(0));
    }

    #[test]
    fn trims_after_dropped_backlogs_add_up() {
        let policy = TrimPolicy::default();
        policy.discarded(TRIM_AFTER_BYTES_DISCARDED - 1);
        assert!(!policy.due(10));
        policy.discarded(1);
        assert!(policy.due(10));
        assert!(!policy.due(10));
    }
}
