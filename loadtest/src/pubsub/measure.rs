//! Following a run from the main thread: start publishing, merge the
//! executors' ticks into one progress line a second, and wait out the
//! grace period.

use super::config::Config;
use super::outcome::{Measured, Second, Setup};
use super::state::{self, Shared, Tick, NS};
use crate::sys;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::Duration;

/// Starts publishing and follows the run: merges the executors' ticks into
/// one progress line a second, then waits out the grace period (or until
/// every expected delivery arrived).
pub(super) fn measure(
    shared: &Shared,
    cfg: &Config,
    setup: &Setup,
    ticks: mpsc::Receiver<Tick>,
) -> Measured {
    // Every node of a cluster, added up.
    let relay_cpu = || {
        (!cfg.relay_pids.is_empty())
            .then(|| {
                cfg.relay_pids
                    .iter()
                    .map(|&p| sys::pid_cpu_ns(p).ok())
                    .sum()
            })
            .flatten()
    };
    let engine_cpu = || cfg.engine_pid.and_then(|p| sys::pid_cpu_ns(p).ok());
    let mut m = Measured {
        delivered_at: BTreeMap::new(),
        cpu_at: BTreeMap::new(),
        seconds: Vec::new(),
        relay_cpu_start: relay_cpu(),
        relay_cpu_end_publishing: None,
        relay_cpu_end: None,
        engine_cpu_start: engine_cpu(),
        engine_cpu_end_publishing: None,
        proc_cpu_start: sys::process_cpu_ns(),
        proc_cpu_end_publishing: None,
        proc_cpu_end: 0,
        stalled: false,
        finished_s: 0.0,
        metrics_end: None,
    };
    // t0 a little ahead, so that every executor sees it in time.
    let t0 = sys::now_ns() + 100_000_000;
    shared.t0.store(t0, Relaxed);
    let end = t0 + cfg.duration * NS;
    let grace_end = end + shared.grace_ns;
    let mut seconds = Seconds {
        cfg,
        setup,
        pending: BTreeMap::new(),
        relay_prev: m.relay_cpu_start,
        opened: (setup.members_joined + setup.publishers_joined) as u64,
    };
    loop {
        if let Ok(tick) = ticks.recv_timeout(Duration::from_millis(20)) {
            seconds.add(&mut m, tick, relay_cpu);
            if m.relay_cpu_end_publishing.is_some() && m.engine_cpu_end_publishing.is_none() {
                m.engine_cpu_end_publishing = engine_cpu();
            }
        }
        let now = sys::now_ns();
        let next_sec = m.delivered_at.keys().next_back().map_or(0, |s| s + 1);
        if !m.stalled && next_sec <= cfg.duration && now > t0 + next_sec * NS + 1_500_000_000 {
            m.stalled = true;
            eprintln!(
                "WARNING: second {next_sec} is over 1.5 s late: an executor is stalled \
                 (generator-side; figures from here on are suspect)"
            );
        }
        if now >= end
            && m.delivered_at.contains_key(&cfg.duration)
            && (all_delivered(shared, setup) || now >= grace_end)
        {
            break;
        }
        if now >= grace_end + 2 * NS {
            // A tick never came (an executor is stuck): end anyway.
            m.stalled = true;
            break;
        }
    }
    m.relay_cpu_end = relay_cpu();
    m.proc_cpu_end = sys::process_cpu_ns();
    m.finished_s = sys::now_ns().saturating_sub(t0) as f64 / 1e9;
    m
}

/// Every publisher is done and every delivery it owed arrived (always
/// true of deliveries from an external source: none are owed).
fn all_delivered(shared: &Shared, setup: &Setup) -> bool {
    let publishing_over = shared.publishers_done.load(Relaxed) >= setup.publishers_joined;
    let expected = shared.expected.load(Relaxed);
    let received: u64 = shared.delivered.iter().map(|d| d.0.load(Relaxed)).sum();
    let all_in = shared.plan.external_source || received >= expected;
    publishing_over && all_in
}

/// The seconds of the run as the executors' ticks come in.
struct Seconds<'a> {
    cfg: &'a Config,
    setup: &'a Setup,
    /// Ticks of seconds that not every executor has reported yet.
    pending: BTreeMap<u64, Vec<Tick>>,
    /// The relay's cpu at the previous complete second.
    relay_prev: Option<u64>,
    /// Connections open at the start.
    opened: u64,
}

impl Seconds<'_> {
    /// Takes one executor's tick; once every executor's tick of its second
    /// is in, records the second and prints its progress line.
    fn add(&mut self, m: &mut Measured, tick: Tick, relay_cpu: impl Fn() -> Option<u64>) {
        let (cfg, n_exec) = (self.cfg, self.setup.cpus.len());
        let sec = tick.sec;
        let group = self.pending.entry(sec).or_default();
        group.push(tick);
        if group.len() != n_exec {
            return;
        }
        let mut group = self.pending.remove(&sec).unwrap_or_default();
        group.sort_by_key(|t| t.exec);
        let relay_now = relay_cpu();
        if sec == cfg.duration {
            m.relay_cpu_end_publishing = relay_now;
            m.proc_cpu_end_publishing = Some(sys::process_cpu_ns());
        }
        let delivered: u64 = group.iter().map(|t| t.delivered).sum();
        let cpu_now: Vec<u64> = group.iter().map(|t| t.cpu_ns).collect();
        if sec > 0 {
            let s = second(m, &group, relay_now.zip(self.relay_prev), self.opened);
            progress_line(cfg, self.setup, m, &s, &group);
            m.seconds.push(s);
        }
        self.relay_prev = relay_now;
        m.delivered_at.insert(sec, delivered);
        m.cpu_at.insert(sec, cpu_now);
    }
}

/// The figures of one second from every executor's tick.
fn second(m: &Measured, group: &[Tick], relay: Option<(u64, u64)>, opened: u64) -> Second {
    let sec = group[0].sec;
    let mut merged = state::histogram();
    for t in group {
        let _ = merged.add(&t.tick);
    }
    let delivered: u64 = group.iter().map(|t| t.delivered).sum();
    let prev_delivered = m.delivered_at.get(&(sec - 1)).copied().unwrap_or(0);
    let prev_cpu = m.cpu_at.get(&(sec - 1));
    let utils: Vec<f64> = group
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let prev = prev_cpu.map_or(t.cpu_ns, |p| p[i]);
            (t.cpu_ns - prev) as f64 / 1e9
        })
        .collect();
    let q = |q: f64| {
        if merged.is_empty() {
            0.0
        } else {
            merged.value_at_quantile(q) as f64 / 1000.0
        }
    };
    Second {
        sec,
        deliveries: delivered - prev_delivered,
        published: group.iter().map(|t| t.published).sum(),
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: q(1.0),
        gen_util: utils.iter().sum::<f64>() / utils.len().max(1) as f64,
        relay_util: relay.map(|(now, prev)| (now - prev) as f64 / 1e9),
        open: opened.saturating_sub(group.iter().map(|t| t.disconnected).sum()),
    }
}

/// One line on stderr for a second.
fn progress_line(cfg: &Config, setup: &Setup, m: &Measured, s: &Second, group: &[Tick]) {
    let prev_cpu = m.cpu_at.get(&(s.sec - 1));
    let gen: Vec<String> = setup
        .cpus
        .iter()
        .zip(group)
        .enumerate()
        .map(|(i, (c, t))| {
            let prev = prev_cpu.map_or(t.cpu_ns, |p| p[i]);
            format!("cpu{c} {:3.0}%", (t.cpu_ns - prev) as f64 / 1e7)
        })
        .collect();
    let relay = match s.relay_util {
        Some(u) => format!(" relay {:3.0}%", u * 100.0),
        None => String::new(),
    };
    let phase = if s.sec > cfg.duration {
        " (grace)"
    } else if s.sec <= cfg.warmup {
        " (warm-up)"
    } else {
        ""
    };
    eprintln!(
        "{:4}s deliveries/s {:>10} p99 {:8.3} ms published {:>8} open {:>6} | gen {}{relay}{phase}",
        s.sec,
        s.deliveries,
        s.p99_ms,
        s.published,
        s.open,
        gen.join(" "),
    );
}
