//! Per-shard counters. Each shard writes only its own block (a plain
//! load-and-store, no locked instruction: there is one writer), and a scrape
//! reads every block and sums. No channel name, uid, address or payload is
//! ever a label.

use crate::error::CloseReason;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Close reasons in the order of their counters.
pub const CLOSE_LABELS: [&str; 9] = [
    "client_closed",
    "peer_gone",
    "message_too_big",
    "invalid_utf8",
    "protocol_violation",
    "slow_consumer",
    "idle_timeout",
    "server_shutdown",
    "write_failed",
];

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $name:ident, )*) => {
        /// One shard's counters, padded to its own cache lines so shards
        /// never write to a line another shard writes.
        #[repr(align(128))]
        #[derive(Default)]
        pub struct ShardCounters {
            $( $(#[doc = $doc])* pub $name: Counter, )*
            pub closed: [Counter; CLOSE_LABELS.len()],
        }

        const COUNTER_NAMES: &[(&str, &str)] = &[ $( (stringify!($name), concat!($($doc),*)), )* ];

        impl ShardCounters {
            fn values(&self) -> Vec<u64> {
                vec![ $( self.$name.get(), )* ]
            }
        }
    };
}

counters! {
    /// WebSocket connections open now.
    connections_open,
    /// WebSocket connections accepted (upgraded) since start.
    connections_accepted,
    /// HTTP requests answered without an upgrade.
    http_requests,
    /// Channels this shard owns now.
    channels,
    /// Messages published to channels this shard owns.
    messages_published,
    /// Frames queued to this shard's connections.
    deliveries,
    /// Bytes read from clients.
    bytes_in,
    /// Bytes written to clients.
    bytes_out,
    /// Messages forwarded to other shards.
    forwards,
    /// Messages to another shard dropped because its backlog was full.
    forward_drops,
    /// Error events sent to clients.
    error_events,
}

/// A counter with a single writer (its shard).
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        // One writer: load+store is exact and avoids a locked add.
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    #[inline]
    pub fn incr(&self) {
        self.add(1)
    }
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }
    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Every shard's counters, shared read-only except for each shard's block.
pub type Metrics = Arc<[ShardCounters]>;

pub fn new(shards: usize) -> Metrics {
    (0..shards).map(|_| ShardCounters::default()).collect()
}

impl ShardCounters {
    pub fn count_close(&self, reason: CloseReason) {
        let label = reason.label();
        if let Some(i) = CLOSE_LABELS.iter().position(|&l| l == label) {
            self.closed[i].incr();
        }
    }
}

/// The Prometheus text exposition of all shards.
pub fn render(metrics: &[ShardCounters]) -> String {
    let mut out = String::with_capacity(4096);
    let per_shard: Vec<Vec<u64>> = metrics.iter().map(|m| m.values()).collect();
    for (i, (name, help)) in COUNTER_NAMES.iter().enumerate() {
        let kind = if matches!(*name, "connections_open" | "channels") {
            "gauge"
        } else {
            "counter"
        };
        let full = if kind == "counter" {
            format!("itty_{name}_total")
        } else {
            format!("itty_{name}")
        };
        let _ = writeln!(out, "# HELP {full} {}", help.trim());
        let _ = writeln!(out, "# TYPE {full} {kind}");
        for (shard, values) in per_shard.iter().enumerate() {
            let _ = writeln!(out, "{full}{{shard=\"{shard}\"}} {}", values[i]);
        }
    }
    let _ = writeln!(
        out,
        "# HELP itty_connections_closed_total WebSocket connections closed, by reason."
    );
    let _ = writeln!(out, "# TYPE itty_connections_closed_total counter");
    for (shard, m) in metrics.iter().enumerate() {
        for (label, c) in CLOSE_LABELS.iter().zip(m.closed.iter()) {
            let _ = writeln!(
                out,
                "itty_connections_closed_total{{shard=\"{shard}\",reason=\"{label}\"}} {}",
                c.get()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_every_shard_and_reason() {
        let m = new(2);
        m[1].deliveries.add(5);
        m[0].count_close(CloseReason::SlowConsumer);
        let text = render(&m);
        assert!(text.contains("itty_deliveries_total{shard=\"1\"} 5"));
        assert!(
            text.contains("itty_connections_closed_total{shard=\"0\",reason=\"slow_consumer\"} 1")
        );
        assert!(text.contains("# TYPE itty_connections_open gauge"));
    }

    #[test]
    fn every_close_reason_has_a_label() {
        use crate::ws::codec::Violation;
        for r in [
            CloseReason::ClientClosed(None),
            CloseReason::PeerGone,
            CloseReason::Violation(Violation {
                code: 1009,
                reason: "",
            }),
            CloseReason::Violation(Violation {
                code: 1007,
                reason: "",
            }),
            CloseReason::Violation(Violation {
                code: 1002,
                reason: "",
            }),
            CloseReason::SlowConsumer,
            CloseReason::IdleTimeout,
            CloseReason::ServerShutdown,
            CloseReason::WriteFailed,
        ] {
            assert!(CLOSE_LABELS.contains(&r.label()));
        }
    }
}
