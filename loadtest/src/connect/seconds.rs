//! The `connect` scenario's seconds: the executors' ticks merged into one
//! progress line a second, and the plot drawn from them.

use super::{ConnectArgs, Shared, Tick};
use crate::plot::{Chart, Panel, Series, COLORS};
use crate::pubsub::state::{histogram, NS};
use crate::sys;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::Duration;

/// One second of the run.
pub(super) struct Second {
    sec: u64,
    attempts: u64,
    joined: u64,
    failed: u64,
    p99_ms: f64,
    pub(super) gen_util: f64,
}

/// Merges the executors' ticks into a progress line a second.
pub(super) fn follow(
    shared: &Shared,
    a: &ConnectArgs,
    n_exec: usize,
    rx: mpsc::Receiver<Tick>,
    relay_cpu: impl Fn() -> Option<u64>,
) -> Vec<Second> {
    let mut pending: BTreeMap<u64, Vec<Tick>> = BTreeMap::new();
    let mut prev: Option<(u64, u64, u64, Vec<u64>)> = None;
    let mut relay_prev = relay_cpu();
    let mut out = Vec::new();
    let hard_end = shared.end + shared.attempt_timeout.as_nanos() as u64 + 2 * NS;
    loop {
        if sys::now_ns() > hard_end {
            break;
        }
        let Ok(t) = rx.recv_timeout(Duration::from_millis(50)) else {
            continue;
        };
        let sec = t.sec;
        let group = pending.entry(sec).or_default();
        group.push(t);
        if group.len() < n_exec {
            continue;
        }
        let mut group = pending.remove(&sec).unwrap_or_default();
        group.sort_by_key(|t| t.exec);
        let attempts: u64 = group.iter().map(|t| t.attempts).sum();
        let joined: u64 = group.iter().map(|t| t.joined).sum();
        let failed: u64 = group.iter().map(|t| t.failed).sum();
        let cpus: Vec<u64> = group.iter().map(|t| t.cpu_ns).collect();
        let mut h = histogram();
        for t in &group {
            let _ = h.add(&t.tick);
        }
        let relay_now = relay_cpu();
        if let Some((pa, pj, pf, pc)) = &prev {
            let util: f64 = cpus
                .iter()
                .zip(pc)
                .map(|(c, p)| (c - p) as f64 / 1e9)
                .sum::<f64>()
                / n_exec as f64;
            let p99 = if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(0.99) as f64 / 1000.0
            };
            let relay = match (relay_now, relay_prev) {
                (Some(n), Some(p)) => format!(" relay {:3.0}%", (n - p) as f64 / 1e7),
                _ => String::new(),
            };
            eprintln!(
                "{sec:4}s attempts/s {:>7} joined/s {:>7} failed {:>6} join p99 {:8.3} ms | gen {:3.0}%{relay}",
                attempts - pa,
                joined - pj,
                failed - pf,
                p99,
                util * 100.0
            );
            out.push(Second {
                sec,
                attempts: attempts - pa,
                joined: joined - pj,
                failed: failed - pf,
                p99_ms: p99,
                gen_util: util,
            });
        }
        relay_prev = relay_now;
        prev = Some((attempts, joined, failed, cpus));
        if sec >= a.duration && shared.in_flight.load(Relaxed) == 0 {
            break;
        }
    }
    out
}

pub(super) fn chart(seconds: &[Second], a: &ConnectArgs) -> Chart {
    let pts = |f: &dyn Fn(&Second) -> f64| -> Vec<(f64, f64)> {
        seconds.iter().map(|s| (s.sec as f64, f(s))).collect()
    };
    let title = match a.concurrency {
        Some(c) => format!("itty-loadtest connect, closed loop x{c}"),
        None => format!("itty-loadtest connect at {} attempts/s", a.rate),
    };
    Chart {
        title,
        x_label: "seconds".into(),
        panels: vec![
            Panel {
                y_label: "per second".into(),
                series: vec![
                    Series {
                        name: "attempts".into(),
                        color: COLORS[3],
                        points: pts(&|s| s.attempts as f64),
                    },
                    Series {
                        name: "joined".into(),
                        color: COLORS[0],
                        points: pts(&|s| s.joined as f64),
                    },
                    Series {
                        name: "failed".into(),
                        color: COLORS[1],
                        points: pts(&|s| s.failed as f64),
                    },
                ],
            },
            Panel {
                y_label: "join latency p99 ms".into(),
                series: vec![Series {
                    name: "p99".into(),
                    color: COLORS[0],
                    points: pts(&|s| s.p99_ms),
                }],
            },
        ],
        markers: Vec::new(),
    }
}
