//! The status page's JSON (`GET /status.json`): every per-shard counter of
//! `/metrics`, read from the same `ShardCounters` blocks, plus the process's
//! memory, uptime, version and the limits in force.
//!
//! Pure apart from `rss_bytes` (one read of `/proc/self/statm`). It holds no
//! history and no timer: the page derives rates and charts from successive
//! polls, so a relay nobody watches pays nothing, and one that is watched
//! pays one snapshot per poll. Every key and label is a fixed identifier of
//! this crate: no channel name, uid, alias, address or payload can reach it.

use crate::config::Config;
use crate::error::CloseKind;
use crate::metrics::{is_gauge, labels, ShardCounters, COUNTER_NAMES};
use crate::outcome::{DropReason, PushStatus, UpgradeRefusal};
use std::fmt::{Display, Write};

/// What the snapshot knows besides the counters.
#[derive(Debug, Clone, Copy)]
pub struct Process {
    /// Server time, ms since the Unix epoch: the page's rates divide by the
    /// difference of two of these, not by its own (jittery) poll interval.
    pub time_ms: u64,
    /// Since the serving shard started, in ms (the sweep's coarse clock).
    pub uptime_ms: u64,
    /// Resident memory of the whole process, in bytes (0 when unknown).
    pub rss_bytes: u64,
}

impl Process {
    /// Now, with the process's memory read from `/proc/self/statm`.
    pub fn now(uptime_ms: u64) -> Process {
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Process {
            time_ms,
            uptime_ms,
            rss_bytes: rss_bytes(),
        }
    }
}

/// Resident set size from `/proc/self/statm` (its second field, in pages).
/// A procfs read answers from memory in microseconds; it is done once per
/// poll, never on the data path.
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page_bytes).unwrap_or(4096)
}

/// The limits shown on the page: the operator's settings that bound what a
/// client may do. Never the namespaces (their prefixes are channel names)
/// nor the trusted proxies (addresses).
fn limits(config: &Config) -> [(&'static str, u64); 17] {
    let c = config;
    [
        ("message_bytes_max", c.message_bytes_max as u64),
        (
            "outgoing_queue_bytes_max",
            c.outgoing_queue_bytes_max as u64,
        ),
        (
            "connections_per_shard_max",
            c.connections_per_shard_max as u64,
        ),
        ("upgrades_per_ip_per_sec", c.upgrades_per_ip_per_sec.into()),
        ("upgrades_per_ip_burst", c.upgrades_per_ip_burst.into()),
        ("pushes_per_ip_per_sec", c.pushes_per_ip_per_sec.into()),
        ("pushes_per_ip_burst", c.pushes_per_ip_burst.into()),
        (
            "messages_per_conn_per_sec",
            c.messages_per_conn_per_sec.into(),
        ),
        ("messages_per_conn_burst", c.messages_per_conn_burst.into()),
        ("rate_limit_warnings", c.rate_limit_warnings.into()),
        ("ban_duration_ms", c.ban_duration_ms),
        ("handshake_timeout_ms", c.handshake_timeout_ms),
        ("request_head_bytes_max", c.request_head_bytes_max as u64),
        ("request_headers_max", c.request_headers_max as u64),
        ("ping_interval_ms", c.ping_interval_ms),
        ("idle_timeout_ms", c.idle_timeout_ms),
        ("forward_backlog_max", c.forward_backlog_max as u64),
    ]
}

/// The snapshot as compact JSON. Shape (every array has one value per
/// shard, shard 0 first):
///
/// ```text
/// {"version":"0.1.0","time_ms":..,"uptime_ms":..,"rss_bytes":..,"shards":2,
///  "limits":{"message_bytes_max":102400,..},
///  "gauges":{"connections_open":[3,4],"channels":[1,0]},
///  "counters":{"connections_accepted":[..],"deliveries":[..],..},
///  "closed":{"client_closed":[..],..},"dropped":{"rate_limited":[..],..},
///  "upgrades_refused":{"rate_limited":[..],..},"push_requests":{"200":[..],..}}
/// ```
///
/// Names are those of `/metrics` without `itty_` and `_total`.
pub fn render(metrics: &[ShardCounters], config: &Config, process: Process) -> String {
    let mut out = String::with_capacity(1024 + 256 * metrics.len());
    let _ = write!(
        out,
        "{{\"version\":\"{}\",\"time_ms\":{},\"uptime_ms\":{},\"rss_bytes\":{},\"shards\":{}",
        crate::conn::VERSION,
        process.time_ms,
        process.uptime_ms,
        process.rss_bytes,
        metrics.len()
    );
    out.push_str(",\"limits\":{");
    for (i, (name, value)) in limits(config).iter().enumerate() {
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(out, "{comma}\"{name}\":{value}");
    }
    out.push('}');

    let per_shard: Vec<Vec<u64>> = metrics.iter().map(|m| m.values()).collect();
    for gauges in [true, false] {
        out.push_str(if gauges {
            ",\"gauges\":{"
        } else {
            ",\"counters\":{"
        });
        let mut first = true;
        for (i, (name, _)) in COUNTER_NAMES.iter().enumerate() {
            if is_gauge(name) == gauges {
                let column = per_shard.iter().map(|values| values[i]);
                family_member(&mut out, &mut first, name, column);
            }
        }
        out.push('}');
    }
    let closed = labels(CloseKind::ALL, CloseKind::label);
    family(&mut out, "closed", &closed, metrics, |m| &m.closed);
    let dropped = labels(DropReason::ALL, DropReason::label);
    family(&mut out, "dropped", &dropped, metrics, |m| &m.dropped);
    let refused = labels(UpgradeRefusal::ALL, UpgradeRefusal::label);
    family(&mut out, "upgrades_refused", &refused, metrics, |m| {
        &m.upgrades_refused
    });
    let pushed = labels(PushStatus::ALL, PushStatus::label);
    family(&mut out, "push_requests", &pushed, metrics, |m| {
        &m.push_requests
    });
    out.push('}');
    out
}

/// `,"name":{"label":[shard 0, shard 1, ..],..}` for a labelled family.
fn family<L: Display>(
    out: &mut String,
    name: &str,
    labels: &[L],
    metrics: &[ShardCounters],
    counters: impl Fn(&ShardCounters) -> &[crate::metrics::Counter],
) {
    let _ = write!(out, ",\"{name}\":{{");
    let mut first = true;
    for (i, label) in labels.iter().enumerate() {
        let column = metrics.iter().map(|m| counters(m)[i].get());
        family_member(out, &mut first, label, column);
    }
    out.push('}');
}

/// `"name":[v0,v1,..]`, preceded by a comma unless it is the first.
fn family_member(
    out: &mut String,
    first: &mut bool,
    name: impl Display,
    values: impl Iterator<Item = u64>,
) {
    if !std::mem::take(first) {
        out.push(',');
    }
    let _ = write!(out, "\"{name}\":[");
    for (i, value) in values.enumerate() {
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(out, "{comma}{value}");
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CloseReason;
    use crate::metrics;

    fn snapshot(metrics: &[ShardCounters]) -> serde_json::Value {
        let process = Process {
            time_ms: 1_700_000_000_000,
            uptime_ms: 5_000,
            rss_bytes: 123,
        };
        let text = render(metrics, &Config::default(), process);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    #[test]
    fn every_counter_of_every_shard_is_in_the_snapshot() {
        let m = metrics::new(2);
        m[0].connections_open.add(3);
        m[1].deliveries.add(7);
        m[1].count_close(CloseReason::SlowConsumer);
        m[0].count_drop(DropReason::ForwardBacklogFull);
        m[1].count_upgrade_refused(UpgradeRefusal::Banned);
        m[1].count_push(PushStatus::ContentTooLarge);
        let s = snapshot(&m);
        assert_eq!(s["shards"], 2);
        assert_eq!(s["uptime_ms"], 5000);
        assert_eq!(s["rss_bytes"], 123);
        assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(s["gauges"]["connections_open"], serde_json::json!([3, 0]));
        assert_eq!(s["counters"]["deliveries"], serde_json::json!([0, 7]));
        assert_eq!(s["closed"]["slow_consumer"], serde_json::json!([0, 1]));
        assert_eq!(
            s["dropped"]["forward_backlog_full"],
            serde_json::json!([1, 0])
        );
        assert_eq!(s["upgrades_refused"]["banned"], serde_json::json!([0, 1]));
        assert_eq!(s["push_requests"]["413"], serde_json::json!([0, 1]));
        assert_eq!(s["limits"]["messages_per_conn_per_sec"], 40);
        let counted =
            s["gauges"].as_object().unwrap().len() + s["counters"].as_object().unwrap().len();
        assert_eq!(counted, COUNTER_NAMES.len());
        assert_eq!(s["closed"].as_object().unwrap().len(), CloseKind::COUNT);
        assert_eq!(s["dropped"].as_object().unwrap().len(), DropReason::COUNT);
        assert_eq!(
            s["push_requests"].as_object().unwrap().len(),
            PushStatus::COUNT
        );
    }

    #[test]
    fn a_gauge_is_never_listed_as_a_counter() {
        let s = snapshot(&metrics::new(1));
        for name in ["connections_open", "channels"] {
            assert!(s["gauges"].get(name).is_some(), "{name}");
            assert!(s["counters"].get(name).is_none(), "{name}");
        }
    }

    #[test]
    fn limits_name_no_namespace_and_no_proxy() {
        let config = Config {
            namespace: vec![crate::access::NamespaceConfig {
                prefix: "secret-prefix".into(),
                join_key: Some("jk".into()),
                send_key: None,
            }],
            ..Config::default()
        };
        let process = Process {
            time_ms: 0,
            uptime_ms: 0,
            rss_bytes: 0,
        };
        let text = render(&metrics::new(1), &config, process);
        assert!(
            !text.contains("secret-prefix") && !text.contains("jk"),
            "{text}"
        );
        assert!(!text.contains("proxies"), "{text}");
    }

    #[test]
    fn rss_is_read_on_linux() {
        assert!(rss_bytes() > 0);
    }
}
