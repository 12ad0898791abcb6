//! Per-shard counters. Each shard writes only its own block (a plain
//! load-and-store, no locked instruction: there is one writer), and a scrape
//! reads every block and sums. No channel name, uid, address or payload is
//! ever a label.

use crate::error::CloseReason;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Close reasons in the order of their counters.
pub const CLOSE_LABELS: [&str; 11] = [
    "client_closed",
    "peer_gone",
    "message_too_big",
    "invalid_utf8",
    "protocol_violation",
    "slow_consumer",
    "idle_timeout",
    "server_shutdown",
    "write_failed",
    "rate_limited",
    "join_refused",
];

/// Why a message (or a frame) was not relayed, in the order of `dropped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Over the sender's message rate (a warning went out).
    RateLimited = 0,
    /// The sender lacks the channel's send key.
    NoSendKey,
    /// Not one JSON value (or an unterminated direct-message prefix).
    InvalidJson,
    /// A binary frame.
    Binary,
    /// A direct message to a uid not on the channel.
    NoRecipient,
    /// A forward to another shard whose backlog was full.
    ForwardBacklogFull,
}

pub const DROP_LABELS: [&str; 6] = [
    "rate_limited",
    "no_send_key",
    "invalid_json",
    "binary",
    "no_recipient",
    "forward_backlog_full",
];

/// Why an upgrade was refused before it became a connection, in the order
/// of `upgrades_refused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeRefusal {
    /// Over the per-IP upgrade rate (429).
    RateLimited = 0,
    /// The IP is banned (429).
    Banned,
    /// The shard serves `connections_per_shard_max` already (503).
    ShardFull,
    /// A wrong or missing join key (403), namespace or ephemeral.
    JoinKey,
    /// The server is draining (503).
    Draining,
}

pub const UPGRADE_REFUSAL_LABELS: [&str; 5] = [
    "rate_limited",
    "banned",
    "shard_full",
    "join_key",
    "draining",
];

/// Push response statuses, in the order of `push_requests`.
pub const PUSH_STATUSES: [u16; 11] = [200, 400, 401, 403, 404, 405, 408, 413, 429, 501, 503];

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $name:ident, )*) => {
        /// One shard's counters, padded to its own cache lines so shards
        /// never write to a line another shard writes.
        #[repr(align(128))]
        #[derive(Default)]
        pub struct ShardCounters {
            $( $(#[doc = $doc])* pub $name: Counter, )*
            /// WebSocket connections closed, by `CLOSE_LABELS`.
            pub closed: [Counter; CLOSE_LABELS.len()],
            /// Messages not relayed, by `DROP_LABELS`.
            pub dropped: [Counter; DROP_LABELS.len()],
            /// Upgrades refused, by `UPGRADE_REFUSAL_LABELS`.
            pub upgrades_refused: [Counter; UPGRADE_REFUSAL_LABELS.len()],
            /// Push requests answered, by `PUSH_STATUSES`.
            pub push_requests: [Counter; PUSH_STATUSES.len()],
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
    /// Error events sent to clients.
    error_events,
    /// Messages over a connection's rate that got a warning.
    rate_limit_warnings,
    /// Connections closed for going on over their rate after the warnings.
    kicks,
    /// IPs banned (one per kick).
    bans,
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

    pub fn count_drop(&self, why: Drop) {
        self.dropped[why as usize].incr();
    }

    pub fn count_upgrade_refused(&self, why: UpgradeRefusal) {
        self.upgrades_refused[why as usize].incr();
    }

    pub fn count_push(&self, status: u16) {
        if let Some(i) = PUSH_STATUSES.iter().position(|&s| s == status) {
            self.push_requests[i].incr();
        }
    }
}

/// Writes one labelled counter family: a line per shard and label.
fn render_family<L: std::fmt::Display>(
    out: &mut String,
    metrics: &[ShardCounters],
    name: &str,
    help: &str,
    label: &str,
    values: &[L],
    counters: impl Fn(&ShardCounters) -> &[Counter],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (shard, m) in metrics.iter().enumerate() {
        for (value, c) in values.iter().zip(counters(m)) {
            let _ = writeln!(
                out,
                "{name}{{shard=\"{shard}\",{label}=\"{value}\"}} {}",
                c.get()
            );
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
    render_family(
        &mut out,
        metrics,
        "itty_connections_closed_total",
        "WebSocket connections closed, by reason.",
        "reason",
        &CLOSE_LABELS,
        |m| &m.closed,
    );
    render_family(
        &mut out,
        metrics,
        "itty_messages_dropped_total",
        "Messages not relayed, by reason.",
        "reason",
        &DROP_LABELS,
        |m| &m.dropped,
    );
    render_family(
        &mut out,
        metrics,
        "itty_upgrades_refused_total",
        "WebSocket upgrades refused before the connection opened, by reason.",
        "reason",
        &UPGRADE_REFUSAL_LABELS,
        |m| &m.upgrades_refused,
    );
    render_family(
        &mut out,
        metrics,
        "itty_push_requests_total",
        "HTTP push requests answered, by status.",
        "status",
        &PUSH_STATUSES,
        |m| &m.push_requests,
    );
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
            CloseReason::RateLimited,
            CloseReason::JoinRefused,
        ] {
            assert!(CLOSE_LABELS.contains(&r.label()));
        }
    }
}
