//! The final summary: every parameter, then what was measured, and notes
//! when the generator itself may have been the limit.

use super::state::{ExecStats, SATURATED};
use super::{Args, Measured, RecvMode, Setup};
use crate::report::{round3, Report};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

pub struct Summary {
    pub report: Report,
    /// Printed on stderr after the summary.
    pub notes: Vec<String>,
}

fn opt<T: Into<Value>>(v: Option<T>) -> Value {
    v.map_or(Value::Null, Into::into)
}

fn ms(h: &Histogram<u64>, q: f64) -> Value {
    if h.is_empty() {
        Value::Null
    } else {
        json!(round3(h.value_at_quantile(q) as f64 / 1000.0))
    }
}

impl Summary {
    pub fn new(
        args: &Args,
        setup: &Setup,
        m: &Measured,
        total: &ExecStats,
        all_executors: bool,
    ) -> Summary {
        let mut r = Report::new();
        let mut notes = Vec::new();
        let cpus = &setup.cpus;

        // The parameters.
        r.add("scenario", "fanout");
        r.add("url", args.url.clone());
        r.add("channel", setup.channel.clone());
        r.add("members", args.members);
        r.add("publishers", args.publishers);
        r.add("rate_msgs_per_s", args.rate);
        r.add("payload_bytes", args.payload_bytes);
        r.add("duration_s", args.duration);
        r.add("warmup_s", args.warmup);
        r.add("grace_s", args.grace);
        let cpu_list: Vec<String> = cpus.iter().map(|c| c.to_string()).collect();
        r.add_with_text("cpus", json!(cpus), cpu_list.join(","));
        r.add("connect_concurrency", args.connect_concurrency);
        r.add(
            "recv",
            match args.recv {
                RecvMode::Uring => "uring",
                RecvMode::Epoll => "epoll",
            },
        );
        r.add("relay_pid", opt(args.relay_pid));
        r.add("load_avg_before", opt(setup.load_before.clone()));

        // Setup and counts.
        r.add("members_joined", setup.members_joined);
        r.add("publishers_joined", setup.publishers_joined);
        r.add("handshake_failures", setup.failed);
        r.add("setup_s", round3(setup.setup_s));
        let expected = total.published * setup.members_joined as u64;
        r.add("published", total.published);
        r.add("unsent", total.unsent);
        r.add("expected", expected);
        r.add("received", total.delivered);
        r.add("lost", expected as i64 - total.delivered as i64);
        r.add("gaps", total.gaps);
        r.add("reorders", total.reorders);
        r.add("unstamped", total.unstamped);
        let disconnects: u64 = total.disconnects.values().sum();
        let parts: Vec<String> = total
            .disconnects
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        r.add_with_text(
            "disconnects",
            json!(total.disconnects),
            if disconnects == 0 {
                "0".to_owned()
            } else {
                format!("{disconnects} ({})", parts.join("; "))
            },
        );
        r.add("events_skipped", total.events);
        r.add(
            "deliveries_per_read",
            opt((total.reads > 0).then(|| round3(total.delivered as f64 / total.reads as f64))),
        );

        // Throughput over the measured window, latency after the warm-up.
        let window_s = (args.duration - args.warmup) as f64;
        let per_s = match (
            m.delivered_at.get(&args.warmup),
            m.delivered_at.get(&args.duration),
        ) {
            (Some(a), Some(b)) => Some(((b - a) as f64 / window_s).round()),
            _ => None,
        };
        r.add("deliveries_per_s", opt(per_s));
        r.add("latency_samples", total.latency.len());
        r.add("latency_ms_p50", ms(&total.latency, 0.50));
        r.add("latency_ms_p90", ms(&total.latency, 0.90));
        r.add("latency_ms_p99", ms(&total.latency, 0.99));
        r.add("latency_ms_p999", ms(&total.latency, 0.999));
        r.add("latency_ms_max", ms(&total.latency, 1.0));
        r.add("publisher_lag_ms_p99", ms(&total.lag, 0.99));
        r.add("publisher_lag_ms_max", ms(&total.lag, 1.0));

        // The generator's own cpu: per executor thread over the publishing
        // window (ticks 0 and `duration`), and the whole process.
        let duration_s = args.duration as f64;
        let gen_cpu: Vec<Option<f64>> = (0..cpus.len())
            .map(|i| {
                let a = m.cpu_at.get(&0)?.get(i)?;
                let b = m.cpu_at.get(&args.duration)?.get(i)?;
                Some((b - a) as f64 / 1e9)
            })
            .collect();
        let gen_util: Vec<Option<f64>> =
            gen_cpu.iter().map(|c| c.map(|c| c / duration_s)).collect();
        let known: Vec<f64> = gen_util.iter().flatten().copied().collect();
        let util_avg = (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64);
        let saturated = util_avg.is_some_and(|u| u > SATURATED);
        r.add(
            "generator_cpu_s",
            opt(m
                .proc_cpu_end_publishing
                .map(|e| round3((e - m.proc_cpu_start) as f64 / 1e9))),
        );
        let per_core_json: serde_json::Map<String, Value> = cpus
            .iter()
            .zip(&gen_util)
            .map(|(c, u)| (c.to_string(), opt(u.map(round3))))
            .collect();
        let per_core_text: Vec<String> = cpus
            .iter()
            .zip(gen_cpu.iter().zip(&gen_util))
            .map(|(c, (s, u))| match (s, u) {
                (Some(s), Some(u)) => format!("cpu{c} {:.1}% ({s:.2} s)", u * 100.0),
                _ => format!("cpu{c} ?"),
            })
            .collect();
        r.add_with_text(
            "generator_util_per_core",
            Value::Object(per_core_json),
            per_core_text.join(", "),
        );
        r.add_with_text(
            "generator_util_avg",
            opt(util_avg.map(round3)),
            util_avg.map_or("?".to_owned(), |u| format!("{:.1}%", u * 100.0)),
        );
        r.add("generator_saturated", saturated);
        let stalled = m.stalled || !all_executors;
        r.add("generator_stalled", stalled);

        // The relay's cpu, when its pid was given.
        match (m.relay_cpu_start, m.relay_cpu_end) {
            (Some(a), Some(b)) => {
                let cpu_s = (b - a) as f64 / 1e9;
                let util = m
                    .relay_cpu_end_publishing
                    .map(|p| (p - a) as f64 / 1e9 / duration_s);
                r.add("relay_cpu_s", round3(cpu_s));
                r.add_with_text(
                    "relay_util",
                    opt(util.map(round3)),
                    util.map_or("?".to_owned(), |u| format!("{:.1}%", u * 100.0)),
                );
                r.add(
                    "relay_cpu_s_per_million_deliveries",
                    opt((total.delivered > 0)
                        .then(|| round3(cpu_s / total.delivered as f64 * 1e6))),
                );
            }
            _ => {
                r.add("relay_cpu_s", Value::Null);
                r.add("relay_util", Value::Null);
                r.add("relay_cpu_s_per_million_deliveries", Value::Null);
            }
        }
        r.add("finished_after_s", round3(m.finished_s));
        r.add(
            "generator_cpu_s_total",
            round3((m.proc_cpu_end - m.proc_cpu_start) as f64 / 1e9),
        );
        r.add("load_avg_after", opt(crate::sys::loadavg()));

        if saturated {
            notes.push(format!(
                "the generator's cores were over {:.0}% busy: deliveries/s is a floor and \
                 latency includes generator queueing; give the generator more cpus (--cpus).",
                SATURATED * 100.0
            ));
        }
        let lag_p99_ms = total.lag.value_at_quantile(0.99) as f64 / 1000.0;
        if total.unsent > 0 || lag_p99_ms > 10.0 {
            notes.push(format!(
                "publishers fell behind schedule (unsent {}, lag p99 {lag_p99_ms:.1} ms): the \
                 relay pushed back or the generator was busy; latencies still count from the \
                 schedule.",
                total.unsent
            ));
        }
        if stalled {
            notes.push(
                "an executor of the generator stalled or did not stop: its figures are missing \
                 or suspect."
                    .to_owned(),
            );
        }
        Summary { report: r, notes }
    }
}
