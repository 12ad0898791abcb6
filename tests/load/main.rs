//! Twenty thousand connections at once, in a test binary of its own.
//!
//! Cargo runs each test binary as its own process, one after another, so
//! this one has the process's whole open-files limit for its clients; the
//! relay runs as its own process (`spawn_relay`) with its own limit. Both
//! limits are the machine's hard `nofile` (raised to it here and by the
//! relay itself at start).

#[path = "../relay/run_log.rs"]
mod run_log;
#[path = "../relay/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::*;

/// The connections the test opens: 20,000, or what the hard open-files
/// limit leaves once each process keeps `FD_RESERVE` for everything else
/// (on a host whose hard limit is exactly 20,000, 19,900).
const CONNECTIONS_WANTED: u64 = 20_000;
const FD_RESERVE: u64 = 100;
/// Members per channel: 1 in 20 connections publishes in each round.
const CHANNEL_MEMBERS: usize = 20;

#[test]
fn twenty_thousand_connections_talk_then_leave_and_memory_returns_to_baseline() {
    let hard = raise_nofile_to_hard();
    let n = CONNECTIONS_WANTED.min(hard.saturating_sub(FD_RESERVE)) as usize;
    let process = spawn_relay(&[
        "--upgrades-per-ip-per-sec",
        "1000000",
        "--upgrades-per-ip-burst",
        "1000000",
        // Liveness is tested elsewhere; here no client is dropped for
        // silence however long the cycle takes on a busy machine.
        "--ping-interval-ms",
        "600000",
        "--idle-timeout-ms",
        "1200000",
    ]);
    let channels = n.div_ceil(CHANNEL_MEMBERS);
    let prefix = unique("crowd");

    // Warm-up: one cycle at a tenth of the size, so allocator arenas and
    // per-shard tables exist before the baseline is read.
    cycle(&process, &format!("{prefix}-warm"), n / 10, channels / 10);
    let baseline = process.rss_kib();

    let started = Instant::now();
    let (peak, deliveries) = cycle(&process, &prefix, n, channels);
    let after = wait_for_rss_back(&process, baseline + peak.saturating_sub(baseline) / 10);
    eprintln!(
        "{n} connections in {channels} channels over 2 shards (hard nofile {hard}): \
         {deliveries} deliveries, cycle {:.1} s; relay RSS baseline {baseline} KiB, \
         with everyone connected {peak} KiB ({:.2} KiB per connection), after all left {after} KiB",
        started.elapsed().as_secs_f64(),
        (peak - baseline) as f64 / n as f64,
    );
    assert!(
        peak > baseline + n as u64 / 2,
        "the relay held the connections ({peak} KiB at peak)"
    );
    // Back to baseline: at least 90% of what the crowd took is given back
    // (the rest is the shards' tables, sized for the peak, and allocator
    // slack).
    assert!(
        after.saturating_sub(baseline) * 10 <= peak - baseline,
        "memory did not return to baseline: {baseline} KiB before, {peak} KiB at the peak, \
         {after} KiB after"
    );
}

/// Opens `n` connections over `channels` channels, has every member of a
/// channel publish once and read every message of its channel, checks the
/// counts in `/metrics`, closes everything and waits for the relay to
/// count zero connections and channels. Returns the relay's RSS while all
/// were connected, and the deliveries read.
fn cycle(process: &RelayProcess, prefix: &str, n: usize, channels: usize) -> (u64, u64) {
    let relay = &process.relay;
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let raw = Raw::upgrade(
            relay.addr,
            &format!("/c/{prefix}-{}?echo=true", i % channels),
        );
        raw.stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        clients.push(raw);
    }
    let open = (0..2).map(|s| relay.metric("connections_open", s));
    let per_shard: Vec<u64> = open.collect();
    assert_eq!(per_shard.iter().sum::<u64>(), n as u64, "{per_shard:?}");
    assert!(
        per_shard.iter().all(|&c| c > 0),
        "both shards hold connections: {per_shard:?}"
    );
    assert_eq!(relay.metric_sum("itty_channels"), channels as u64);

    for (i, c) in clients.iter_mut().enumerate() {
        c.send_text(&format!("{{\"from\":{i}}}"));
    }
    let mut deliveries = 0u64;
    for (i, c) in clients.iter_mut().enumerate() {
        let members = (0..n).filter(|j| j % channels == i % channels).count();
        let mut seen = 0;
        while seen < members {
            let v = c.read_json();
            if v.get("message").is_some() {
                seen += 1;
            }
        }
        deliveries += seen as u64;
    }
    let peak = process.rss_kib();
    drop(clients);
    relay.wait_until_empty(Duration::from_secs(30));
    (peak, deliveries)
}

/// The relay's lowest RSS until it is back within `target` KiB, or over
/// 10 s: a socket is released after its close handshake (up to the close
/// timeout, 2 s), and the sweep (once a second) hands the memory back.
fn wait_for_rss_back(process: &RelayProcess, target: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lowest = process.rss_kib();
    while lowest > target && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        lowest = lowest.min(process.rss_kib());
    }
    lowest
}
