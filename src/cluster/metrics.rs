//! The backplane's counters: one set per node (not per shard), written by
//! the bridge thread and the shards (so with atomic adds), rendered after
//! the shards' counters on `/metrics`. No channel, hash or uid is a label.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Which way a dropped item was going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Shard to engine: the shard's queue was full (the engine is slow or
    /// down).
    Out,
    /// Engine to shard: the shard's queue was full.
    In,
}

#[derive(Default)]
pub struct ClusterCounters {
    up: AtomicU64,
    lag_ms: AtomicU64,
    dropped_out: AtomicU64,
    dropped_in: AtomicU64,
    dropped_down: AtomicU64,
    reconnects: AtomicU64,
    live_nodes: AtomicU64,
    reaped_members: AtomicU64,
    config_mismatched: AtomicU64,
    published: AtomicU64,
    received: AtomicU64,
    commands: AtomicU64,
}

impl ClusterCounters {
    pub fn dropped(&self, dir: Direction) {
        match dir {
            Direction::Out => &self.dropped_out,
            Direction::In => &self.dropped_in,
        }
        .fetch_add(1, Relaxed);
    }

    /// A command not sent because the engine was unreachable.
    pub fn dropped_while_down(&self, n: u64) {
        self.dropped_down.fetch_add(n, Relaxed);
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up as u64, Relaxed);
    }

    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }

    pub fn heartbeat(&self, live_nodes: u64, mismatched: u64, reaped: u64) {
        self.live_nodes.store(live_nodes, Relaxed);
        self.config_mismatched.store(mismatched, Relaxed);
        self.reaped_members.fetch_add(reaped, Relaxed);
    }

    /// A message from another node arrived `lag_ms` after it was sent.
    pub fn lag(&self, lag_ms: u64) {
        self.lag_ms.store(lag_ms, Relaxed);
    }

    pub fn published(&self) {
        self.published.fetch_add(1, Relaxed);
    }

    pub fn received(&self) {
        self.received.fetch_add(1, Relaxed);
    }

    pub fn commands(&self, n: u64) {
        self.commands.fetch_add(n, Relaxed);
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed) == 1
    }

    /// The Prometheus text of these counters, with `queued_bytes` (read
    /// from the shards' queues at the scrape).
    pub fn render(&self, out: &mut String, queued_bytes: usize) {
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        one(
            "itty_backplane_up",
            "gauge",
            "1 while this node is connected to the engine.",
            self.up.load(Relaxed),
        );
        one(
            "itty_backplane_lag_ms",
            "gauge",
            "Age of the last message from another node when it arrived, in ms.",
            self.lag_ms.load(Relaxed),
        );
        one(
            "itty_backplane_queued_bytes",
            "gauge",
            "Frame bytes queued toward the engine.",
            queued_bytes as u64,
        );
        one(
            "itty_backplane_reconnects_total",
            "counter",
            "Times the connection to the engine was lost and made again.",
            self.reconnects.load(Relaxed),
        );
        one(
            "itty_backplane_live_nodes",
            "gauge",
            "Nodes alive in the cluster, this one included, at the last heartbeat.",
            self.live_nodes.load(Relaxed),
        );
        one(
            "itty_backplane_reaped_members_total",
            "counter",
            "Members of dead nodes this node removed (their leaves went out).",
            self.reaped_members.load(Relaxed),
        );
        one(
            "itty_backplane_config_mismatched_nodes",
            "gauge",
            "Live nodes whose namespaces differ from this node's.",
            self.config_mismatched.load(Relaxed),
        );
        one(
            "itty_backplane_published_total",
            "counter",
            "Messages this node published to other nodes.",
            self.published.load(Relaxed),
        );
        one(
            "itty_backplane_received_total",
            "counter",
            "Payloads (messages and events) this node received from the engine.",
            self.received.load(Relaxed),
        );
        one(
            "itty_backplane_commands_total",
            "counter",
            "Commands this node sent to the engine.",
            self.commands.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP itty_backplane_dropped_total Items dropped on the way to or from the engine, by direction and reason."
        );
        let _ = writeln!(out, "# TYPE itty_backplane_dropped_total counter");
        for (dir, reason, c) in [
            ("out", "queue_full", &self.dropped_out),
            ("out", "engine_down", &self.dropped_down),
            ("in", "queue_full", &self.dropped_in),
        ] {
            let _ = writeln!(
                out,
                "itty_backplane_dropped_total{{dir=\"{dir}\",reason=\"{reason}\"}} {}",
                c.load(Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_without_names_or_uids() {
        let c = ClusterCounters::default();
        c.set_up(true);
        c.dropped(Direction::Out);
        c.heartbeat(3, 0, 2);
        let mut out = String::new();
        c.render(&mut out, 17);
        assert!(out.contains("itty_backplane_up 1\n"));
        assert!(out.contains("itty_backplane_live_nodes 3\n"));
        assert!(out.contains("itty_backplane_reaped_members_total 2\n"));
        assert!(out.contains("itty_backplane_queued_bytes 17\n"));
        assert!(out.contains("itty_backplane_dropped_total{dir=\"out\",reason=\"queue_full\"} 1\n"));
    }
}
