//! The final summary of a pub/sub run: the scenario's parameters, the
//! shared ones, then what was measured, and notes when the generator itself
//! may have been the limit; and its plot (`--plot`).

use super::config::{Config, InflateMode, PayloadFill};
use super::outcome::{format_failures, Outcome, Second};
use super::state::{ExecStats, RecvMode, SATURATED};
use crate::plot::{Chart, Panel, Series, COLORS};
use crate::report::{round3, Report};
use crate::sys;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

pub struct Summary {
    pub report: Report,
    /// Printed on stderr after the summary.
    pub notes: Vec<String>,
    /// The figures a sweep step is judged by.
    pub key: KeyFigures,
}

/// What decides whether a rate was sustained.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyFigures {
    pub deliveries_per_s: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub lost: i64,
    /// Deliveries the published messages owed.
    pub expected: u64,
    /// Sequence numbers skipped / gone backwards at members.
    pub gaps: u64,
    pub reorders: u64,
    pub unsent: u64,
    pub disconnects: u64,
    pub failed: usize,
    pub gen_util: Option<f64>,
    pub saturated: bool,
    pub stalled: bool,
    pub relay_cpu_s_per_million: Option<f64>,
    /// The relay's cpu over the publishing window, in cores.
    pub relay_util: Option<f64>,
    /// Bytes members read per delivery (frames with headers, events too).
    pub wire_bytes_per_delivery: Option<f64>,
    /// Messages the relay compressed (its counter) per message published.
    pub compressions_per_message: Option<f64>,
}

pub fn opt<T: Into<Value>>(v: Option<T>) -> Value {
    v.map_or(Value::Null, Into::into)
}

pub fn ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| round3(h.value_at_quantile(q) as f64 / 1000.0))
}

/// The parameters every scenario shares, after the scenario's own.
pub fn add_common_params(r: &mut Report, cfg: &Config) {
    r.add("url", cfg.url.clone());
    r.add("tls", cfg.tls.is_some());
    r.add("proto", cfg.wire.name());
    let cpu_list: Vec<String> = cfg.cpus.iter().map(|c| c.to_string()).collect();
    r.add_with_text("cpus", json!(cfg.cpus), cpu_list.join(","));
    r.add("connect_concurrency", cfg.connect_concurrency);
    r.add("source_ips", cfg.sources.describe());
    r.add("open_files_limit", cfg.nofile);
    r.add("relay_pid", opt(cfg.relay_pid));
    r.add(
        "deflate",
        match cfg.deflate {
            None => "off",
            Some(InflateMode::Full) => "full",
            Some(InflateMode::Head) => "head",
        },
    );
}

/// Builds the summary; `r` already holds the scenario's parameters.
pub fn summarize(mut r: Report, cfg: &Config, o: &Outcome) -> Summary {
    let (setup, m, total) = (&o.setup, &o.measured, &o.total);
    add_run_params(&mut r, cfg, o);
    let (lost, disconnects) = add_counts(&mut r, o);
    if o.push {
        add_push(&mut r, total);
    }
    let per_s = add_throughput_and_latency(&mut r, cfg, o);
    let compressions_per_message = add_relay_metrics(&mut r, o);
    let gen = add_generator_cpu(&mut r, cfg, o);
    let stalled = m.stalled || !o.complete;
    r.add("generator_stalled", stalled);
    let relay = add_relay_cpu(&mut r, cfg, o);
    add_engine_cpu(&mut r, cfg, o);
    r.add("finished_after_s", round3(m.finished_s));
    r.add(
        "generator_cpu_s_total",
        round3((m.proc_cpu_end - m.proc_cpu_start) as f64 / 1e9),
    );
    r.add("load_avg_after", opt(sys::loadavg()));
    let key = KeyFigures {
        deliveries_per_s: per_s,
        p50_ms: ms(&total.latency, 0.5),
        p99_ms: ms(&total.latency, 0.99),
        lost: if o.external_source { 0 } else { lost },
        expected: total.expected,
        gaps: total.gaps,
        reorders: total.reorders,
        unsent: total.unsent,
        disconnects,
        failed: setup.failed,
        gen_util: gen.util_avg,
        saturated: gen.saturated,
        stalled,
        relay_cpu_s_per_million: relay.per_million,
        relay_util: relay.util.map(round3),
        wire_bytes_per_delivery: wire_bytes_per_delivery(total),
        compressions_per_message,
    };
    Summary {
        report: r,
        notes: notes(o, &key),
        key,
    }
}

/// The run's own parameters, then the shared ones.
fn add_run_params(r: &mut Report, cfg: &Config, o: &Outcome) {
    r.add("rate_msgs_per_s", cfg.rate);
    r.add("payload_bytes", cfg.payload_bytes);
    r.add(
        "payload_fill",
        match cfg.payload_fill {
            PayloadFill::X => "x",
            PayloadFill::Json => "json",
        },
    );
    r.add("duration_s", cfg.duration);
    r.add("warmup_s", cfg.warmup);
    r.add("grace_s", cfg.grace);
    add_common_params(r, cfg);
    r.add(
        "recv",
        match cfg.recv {
            RecvMode::Uring => "uring",
            RecvMode::Epoll => "epoll",
        },
    );
    r.add("load_avg_before", opt(o.setup.load_before.clone()));
}

/// The setup and the counts; returns (lost, disconnects).
fn add_counts(r: &mut Report, o: &Outcome) -> (i64, u64) {
    let (setup, total) = (&o.setup, &o.total);
    r.add("members_joined", setup.members_joined);
    r.add("publishers_joined", setup.publishers_joined);
    r.add_with_text(
        "handshake_failures",
        json!(setup.failures),
        format!(
            "{}{}",
            setup.failed,
            format_failures(&setup.failures).replace("\n ", "")
        ),
    );
    r.add("upgrade_429_retries", setup.retried_429);
    r.add("setup_s", round3(setup.setup_s));
    let lost = total.expected as i64 - total.delivered as i64;
    r.add("published", total.published);
    r.add("unsent", total.unsent);
    if o.external_source {
        r.add("expected", Value::Null);
        r.add("received", total.delivered);
        r.add("lost", Value::Null);
    } else {
        r.add("expected", total.expected);
        r.add("received", total.delivered);
        r.add("lost", lost);
    }
    r.add("gaps", total.gaps);
    r.add("reorders", total.reorders);
    r.add("unstamped", total.unstamped);
    let disconnects = total.disconnected();
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
    r.add("own_echoes_skipped", total.own_echoes);
    if !total.server_errors.is_empty() {
        let parts: Vec<String> = total
            .server_errors
            .iter()
            .map(|(k, v)| format!("{v} x {k}"))
            .collect();
        r.add_with_text(
            "server_errors",
            json!(total.server_errors),
            parts.join("; "),
        );
    }
    r.add(
        "deliveries_per_read",
        opt((total.reads > 0).then(|| round3(total.delivered as f64 / total.reads as f64))),
    );
    // Every byte members read after their join (frames with their headers,
    // events included), per delivery: what one delivery costs on the wire.
    r.add(
        "wire_bytes_per_delivery",
        opt(wire_bytes_per_delivery(total)),
    );
    r.add("compressed_messages_received", total.compressed);
    (lost, disconnects)
}

/// Every byte members read after their join, per delivery.
fn wire_bytes_per_delivery(total: &ExecStats) -> Option<f64> {
    (total.delivered > 0).then(|| (total.bytes_received as f64 / total.delivered as f64).round())
}

/// `push`: responses by status, recipients reported, response latency.
fn add_push(r: &mut Report, total: &ExecStats) {
    let statuses: Vec<String> = total
        .push_status
        .iter()
        .map(|(k, v)| format!("{v} x {k}"))
        .collect();
    let json_status: serde_json::Map<String, Value> = total
        .push_status
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    r.add_with_text(
        "push_responses",
        Value::Object(json_status),
        if statuses.is_empty() {
            "none".to_owned()
        } else {
            statuses.join(", ")
        },
    );
    r.add("push_recipients_reported", total.push_recipients);
    r.add("push_response_ms_p50", opt(ms(&total.push_latency, 0.5)));
    r.add("push_response_ms_p99", opt(ms(&total.push_latency, 0.99)));
    r.add("push_response_ms_max", opt(ms(&total.push_latency, 1.0)));
}

/// Throughput over the measured window, latency after the warm-up;
/// returns deliveries/s.
fn add_throughput_and_latency(r: &mut Report, cfg: &Config, o: &Outcome) -> Option<f64> {
    let (m, total) = (&o.measured, &o.total);
    let window_s = (cfg.duration - cfg.warmup) as f64;
    let per_s = match (
        m.delivered_at.get(&cfg.warmup),
        m.delivered_at.get(&cfg.duration),
    ) {
        (Some(a), Some(b)) => Some(((b - a) as f64 / window_s).round()),
        _ => None,
    };
    r.add("deliveries_per_s", opt(per_s));
    r.add("latency_samples", total.latency.len());
    r.add("latency_ms_p50", opt(ms(&total.latency, 0.50)));
    r.add("latency_ms_p90", opt(ms(&total.latency, 0.90)));
    r.add("latency_ms_p99", opt(ms(&total.latency, 0.99)));
    r.add("latency_ms_p999", opt(ms(&total.latency, 0.999)));
    r.add("latency_ms_max", opt(ms(&total.latency, 1.0)));
    r.add("publisher_lag_ms_p99", opt(ms(&total.lag, 0.99)));
    r.add("publisher_lag_ms_max", opt(ms(&total.lag, 1.0)));
    per_s
}

/// The relay's own view, from its metrics endpoint; returns the messages
/// it compressed per message published (when it counts them).
fn add_relay_metrics(r: &mut Report, o: &Outcome) -> Option<f64> {
    let (setup, m) = (&o.setup, &o.measured);
    if let Some(text) = &setup.metrics_after_setup {
        let open = sys::metric_values(text, "itty_connections_open");
        r.add_with_text(
            "relay_connections_per_shard",
            json!(open),
            format!("{open:?}"),
        );
    }
    if let (Some(a), Some(b)) = (&setup.metrics_after_setup, &m.metrics_end) {
        let sum = |t: &str| {
            sys::metric_values(t, "itty_forwards_total")
                .iter()
                .sum::<u64>()
        };
        r.add("relay_forwards", sum(b).saturating_sub(sum(a)));
    }
    // Everything published in this run was published after the setup.
    let compressed = |t: &str| {
        let v = sys::metric_values(t, "itty_messages_compressed_total");
        (!v.is_empty()).then(|| v.iter().sum::<u64>())
    };
    let per_message = match (&setup.metrics_after_setup, &m.metrics_end) {
        (Some(a), Some(b)) => match (compressed(a), compressed(b)) {
            (Some(a), Some(b)) if o.total.published > 0 => {
                let n = b.saturating_sub(a);
                r.add("relay_messages_compressed", n);
                Some(round3(n as f64 / o.total.published as f64))
            }
            _ => None,
        },
        _ => None,
    };
    r.add("relay_compressions_per_message", opt(per_message));
    per_message
}

/// The generator's busy share over the publishing window.
struct GeneratorCpu {
    /// Average over its executor threads, when known.
    util_avg: Option<f64>,
    /// Above `SATURATED`: the generator was the limit.
    saturated: bool,
}

/// The generator's own cpu: per executor thread over the publishing
/// window (ticks 0 and `duration`), and the whole process.
fn add_generator_cpu(r: &mut Report, cfg: &Config, o: &Outcome) -> GeneratorCpu {
    let (cpus, m) = (&o.setup.cpus, &o.measured);
    let duration_s = cfg.duration as f64;
    let gen_cpu: Vec<Option<f64>> = (0..cpus.len())
        .map(|i| {
            let a = m.cpu_at.get(&0)?.get(i)?;
            let b = m.cpu_at.get(&cfg.duration)?.get(i)?;
            Some((b - a) as f64 / 1e9)
        })
        .collect();
    let gen_util: Vec<Option<f64>> = gen_cpu.iter().map(|c| c.map(|c| c / duration_s)).collect();
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
    if cfg.tls.is_some() {
        add_generator_tls(r, Some(gen_cpu.iter().flatten().sum()));
    }
    GeneratorCpu {
        util_avg,
        saturated,
    }
}

/// Over wss://: the generator's own TLS cost, the seconds its executors
/// spent in rustls (handshakes, sealing, reading and decrypting records)
/// over the whole run, setup included; next to its cpu over the window.
pub fn add_generator_tls(r: &mut Report, window_cpu_s: Option<f64>) {
    let tls_s = crate::tls::take_cpu_s();
    let text = match window_cpu_s {
        Some(w) => format!("{tls_s:.3} (whole run; its cpu over the window: {w:.2} s)"),
        None => format!("{tls_s:.3} (whole run)"),
    };
    r.add_with_text("generator_tls_cpu_s", json!(round3(tls_s)), text);
}

/// The relay's cpu over the run, when its pid was given.
#[derive(Default)]
struct RelayCpu {
    /// Over the publishing window, in cores.
    util: Option<f64>,
    /// Cpu seconds per million deliveries (rounded).
    per_million: Option<f64>,
}

/// A cluster engine's cpu over the publishing window (`--engine-pid`):
/// per message published, it is what sizes the engine.
fn add_engine_cpu(r: &mut Report, cfg: &Config, o: &Outcome) {
    let m = &o.measured;
    let (Some(a), Some(b)) = (m.engine_cpu_start, m.engine_cpu_end_publishing) else {
        if cfg.engine_pid.is_some() {
            r.add("engine_cpu_s", Value::Null);
        }
        return;
    };
    let cpu_s = (b - a) as f64 / 1e9;
    let published = o.total.published.max(1) as f64;
    r.add("engine_cpu_s", round3(cpu_s));
    r.add("engine_util", round3(cpu_s / cfg.duration as f64));
    r.add("engine_cpu_us_per_message", round3(cpu_s / published * 1e6));
}

/// The relay's cpu, when its pid was given.
fn add_relay_cpu(r: &mut Report, cfg: &Config, o: &Outcome) -> RelayCpu {
    let (m, total) = (&o.measured, &o.total);
    let (Some(a), Some(b)) = (m.relay_cpu_start, m.relay_cpu_end) else {
        r.add("relay_cpu_s", Value::Null);
        r.add("relay_util", Value::Null);
        r.add("relay_cpu_s_per_million_deliveries", Value::Null);
        return RelayCpu::default();
    };
    let cpu_s = (b - a) as f64 / 1e9;
    let util = m
        .relay_cpu_end_publishing
        .map(|p| (p - a) as f64 / 1e9 / cfg.duration as f64);
    let per_million = (total.delivered > 0).then(|| round3(cpu_s / total.delivered as f64 * 1e6));
    r.add("relay_cpu_s", round3(cpu_s));
    r.add_with_text(
        "relay_util",
        opt(util.map(round3)),
        util.map_or("?".to_owned(), |u| format!("{:.1}%", u * 100.0)),
    );
    r.add("relay_cpu_s_per_million_deliveries", opt(per_million));
    RelayCpu { util, per_million }
}

/// The notes printed after the summary: when the generator may have been
/// the limit, publishers fell behind, or pushes were refused.
fn notes(o: &Outcome, key: &KeyFigures) -> Vec<String> {
    let total = &o.total;
    let mut notes = Vec::new();
    if key.saturated {
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
    if o.push && total.push_status.keys().any(|s| *s != 200) {
        notes.push(
            "some push requests were refused (see push responses): 404 means no namespace \
             with a send key covers the channel, 429 the relay's per-IP push limit."
                .to_owned(),
        );
    }
    if key.stalled {
        notes.push(
            "an executor of the generator stalled or did not stop: its figures are missing \
             or suspect."
                .to_owned(),
        );
    }
    notes
}

/// Prints a summary: the report on stdout (text or JSON), notes on stderr.
pub fn print(summary: &Summary, json: bool) {
    if json {
        println!("{}", summary.report.to_json());
    } else {
        print!("{}", summary.report.to_text());
    }
    for note in &summary.notes {
        eprintln!("NOTE: {note}");
    }
}

/// Deliveries/s and latency per second; runs placed one after the other
/// (`(x offset, marker label, seconds)`).
pub fn pubsub_chart(title: String, runs: &[(f64, String, Vec<Second>)]) -> Chart {
    let pts = |f: &dyn Fn(&Second) -> f64| -> Vec<(f64, f64)> {
        runs.iter()
            .flat_map(|(off, _, secs)| {
                let line = secs.iter().map(move |s| (off + s.sec as f64, f(s)));
                line.chain(std::iter::once((*off, f64::NAN)))
            })
            .collect()
    };
    let series = |name: &str, color, f: &dyn Fn(&Second) -> f64| Series {
        name: name.to_owned(),
        color,
        points: pts(f),
    };
    Chart {
        title,
        x_label: "seconds since publishing started".into(),
        panels: vec![
            Panel {
                y_label: "deliveries per second".into(),
                series: vec![series("deliveries/s", COLORS[0], &|s| s.deliveries as f64)],
            },
            Panel {
                y_label: "latency ms (of deliveries in that second)".into(),
                series: vec![
                    series("p50", COLORS[2], &|s| s.p50_ms),
                    series("p99", COLORS[0], &|s| s.p99_ms),
                    series("max", COLORS[1], &|s| s.max_ms),
                ],
            },
            Panel {
                y_label: "cpu busy % (generator avg, relay)".into(),
                series: vec![
                    series("generator", COLORS[3], &|s| s.gen_util * 100.0),
                    series("relay", COLORS[1], &|s| {
                        s.relay_util.map_or(f64::NAN, |u| u * 100.0)
                    }),
                ],
            },
        ],
        markers: runs
            .iter()
            .filter(|(_, l, _)| !l.is_empty())
            .map(|(off, l, _)| (*off, l.clone()))
            .collect(),
    }
}
