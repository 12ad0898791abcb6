//! Per-shard counters. Each shard writes only its own block (a plain
//! load-and-store, no locked instruction: there is one writer), and a scrape
//! reads every block and sums. No channel name, uid, address or payload is
//! ever a label.

use crate::error::{CloseKind, CloseReason};
use crate::outcome::{DropReason, PushStatus, UpgradeRefusal};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $name:ident, )*) => {
        /// One shard's counters, padded to its own cache lines so shards
        /// never write to a line another shard writes.
        #[repr(align(128))]
        #[derive(Default)]
        pub struct ShardCounters {
            $( $(#[doc = $doc])* pub $name: Counter, )*
            /// WebSocket connections closed, by `CloseKind`.
            pub closed: [Counter; CloseKind::COUNT],
            /// Messages not relayed, by `DropReason`.
            pub dropped: [Counter; DropReason::COUNT],
            /// Upgrades refused, by `UpgradeRefusal`.
            pub upgrades_refused: [Counter; UpgradeRefusal::COUNT],
            /// Push requests answered, by `PushStatus`.
            pub push_requests: [Counter; PushStatus::COUNT],
        }

        /// The plain counters' names (as in `itty_<name>[_total]`) and help
        /// texts, in the order of `ShardCounters::values`.
        pub const COUNTER_NAMES: &[(&str, &str)] = &[ $( (stringify!($name), concat!($($doc),*)), )* ];

        impl ShardCounters {
            /// The plain counters' values, in the order of `COUNTER_NAMES`.
            pub fn values(&self) -> Vec<u64> {
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
    /// HTTP request heads read (upgrades included).
    http_requests,
    /// Channels this shard owns now.
    channels,
    /// Messages published to channels this shard owns.
    messages_published,
    /// Frames queued to this shard's connections.
    deliveries,
    /// Messages compressed (permessage-deflate): once each, for every
    /// member that negotiated it.
    messages_compressed,
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
    /// TLS handshakes completed (`--tls-cert`).
    tls_handshakes,
    /// TLS handshakes that failed: an alert, a bad record, the deadline,
    /// plain HTTP on the TLS port, or the client leaving.
    tls_handshake_failures,
    /// TLS connections closed at accept, before any TLS work: a banned or
    /// rate-limited IP, or the shard's handshakes-in-progress bound.
    tls_handshakes_refused,
    /// TLS handshakes in progress now.
    tls_handshakes_in_progress,
    /// TLS records sealed by connection writers (frames per record:
    /// `tls_frames_sealed / tls_records_sealed`).
    tls_records_sealed,
    /// WebSocket frames (and HTTP responses) sealed into those records.
    tls_frames_sealed,
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
        self.closed[reason.kind().index()].incr();
    }

    pub fn count_drop(&self, why: DropReason) {
        self.dropped[why.index()].incr();
    }

    pub fn count_upgrade_refused(&self, why: UpgradeRefusal) {
        self.upgrades_refused[why.index()].incr();
    }

    pub fn count_push(&self, status: PushStatus) {
        self.push_requests[status.index()].incr();
    }
}

/// Whether the plain counter `name` is a gauge (a level, not a total).
pub fn is_gauge(name: &str) -> bool {
    matches!(
        name,
        "connections_open" | "channels" | "tls_handshakes_in_progress"
    )
}

/// Writes one labelled counter family: a line per shard and label.
fn render_family(
    out: &mut String,
    metrics: &[ShardCounters],
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
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

/// The labels of a family's variants, in counter order.
pub fn labels<T: Copy>(all: &[T], label: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|&v| label(v)).collect()
}

/// The Prometheus text exposition of all shards.
pub fn render(metrics: &[ShardCounters]) -> String {
    let mut out = String::with_capacity(4096);
    let per_shard: Vec<Vec<u64>> = metrics.iter().map(|m| m.values()).collect();
    for (i, (name, help)) in COUNTER_NAMES.iter().enumerate() {
        let kind = if is_gauge(name) { "gauge" } else { "counter" };
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
        &labels(CloseKind::ALL, CloseKind::label),
        |m| &m.closed,
    );
    render_family(
        &mut out,
        metrics,
        "itty_messages_dropped_total",
        "Messages not relayed, by reason.",
        "reason",
        &labels(DropReason::ALL, DropReason::label),
        |m| &m.dropped,
    );
    render_family(
        &mut out,
        metrics,
        "itty_upgrades_refused_total",
        "WebSocket upgrades refused before the connection opened, by reason.",
        "reason",
        &labels(UpgradeRefusal::ALL, UpgradeRefusal::label),
        |m| &m.upgrades_refused,
    );
    render_family(
        &mut out,
        metrics,
        "itty_push_requests_total",
        "HTTP push requests answered, by status.",
        "status",
        &labels(PushStatus::ALL, PushStatus::label),
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

    /// Counts every variant of every labelled family once and checks that
    /// the scrape shows each at 1: a variant that is not counted or not
    /// rendered fails here.
    #[test]
    fn every_outcome_is_counted_and_rendered_under_its_label() {
        let m = new(1);
        for &k in CloseKind::ALL {
            m[0].closed[k.index()].incr();
        }
        for &r in DropReason::ALL {
            m[0].count_drop(r);
        }
        for &r in UpgradeRefusal::ALL {
            m[0].count_upgrade_refused(r);
        }
        for &s in PushStatus::ALL {
            m[0].count_push(s);
        }
        let text = render(&m);
        let lines = |family: &str, label: &str, values: Vec<&str>| {
            for v in values {
                let line = format!("{family}{{shard=\"0\",{label}=\"{v}\"}} 1\n");
                assert!(text.contains(&line), "missing: {line}");
            }
        };
        lines(
            "itty_connections_closed_total",
            "reason",
            labels(CloseKind::ALL, CloseKind::label),
        );
        lines(
            "itty_messages_dropped_total",
            "reason",
            labels(DropReason::ALL, DropReason::label),
        );
        lines(
            "itty_upgrades_refused_total",
            "reason",
            labels(UpgradeRefusal::ALL, UpgradeRefusal::label),
        );
        lines(
            "itty_push_requests_total",
            "status",
            labels(PushStatus::ALL, PushStatus::label),
        );
    }

    #[test]
    fn every_close_reason_maps_to_its_kind() {
        use crate::ws::codec::Violation;
        let violation = |code| CloseReason::Violation(Violation { code, reason: "" });
        let reasons = [
            CloseReason::ClientClosed(None),
            CloseReason::PeerGone,
            violation(1009),
            violation(1007),
            violation(1002),
            CloseReason::SlowConsumer,
            CloseReason::IdleTimeout,
            CloseReason::ServerShutdown,
            CloseReason::WriteFailed,
            CloseReason::RateLimited,
            CloseReason::JoinRefused,
        ];
        let kinds: Vec<_> = reasons.iter().map(|r| r.kind()).collect();
        assert_eq!(kinds, CloseKind::ALL, "one reason per kind, in order");
    }
}
