//! Scenario `idle`: open C connections joined to many channels, hold them,
//! and report what they cost the relay: its resident memory per connection
//! (with `--relay-pid`) and the host's TCP socket memory from
//! /proc/net/sockstat. Connections are read by the epoll pump with a 2 KiB
//! buffer each (join events only; pings answered), so 100,000 of them cost
//! the generator little.

use crate::plot::{self, Chart, Panel, Series, COLORS};
use crate::pubsub::state::{Channel, SMALL_READ_BUF};
use crate::pubsub::summary::{add_common_params, opt};
use crate::pubsub::{self, fresh_channel_prefix, Common, Config, ConnSpec, Plan, Second};
use crate::report::{round3, Report};
use crate::sys::{self, SockStat};
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Channels they join (round-robin).
    #[arg(long, default_value_t = 1000)]
    pub channels: usize,
    /// Seconds to hold them once all have joined (the relay pings after 30 s
    /// of silence; the pump answers).
    #[arg(long, default_value_t = 10)]
    pub hold: u64,
    #[command(flatten)]
    pub common: Common,
}

/// Memory figures at one moment.
#[derive(Debug, Clone, Copy)]
struct Memory {
    relay_rss: Option<u64>,
    own_rss: Option<u64>,
    sockstat: Option<SockStat>,
}

fn memory(relay_pid: Option<u32>) -> Memory {
    Memory {
        relay_rss: relay_pid.and_then(sys::rss_bytes),
        own_rss: sys::rss_bytes(std::process::id()),
        sockstat: sys::sockstat(),
    }
}

pub fn run(a: IdleArgs) -> anyhow::Result<()> {
    if a.connections == 0 || a.channels == 0 || a.hold == 0 {
        anyhow::bail!("--connections, --channels and --hold must be at least 1");
    }
    let mut cfg = Config::base(&a.common, a.connections)?;
    cfg.buf_bytes = SMALL_READ_BUF;
    cfg.duration = a.hold;
    let prefix = fresh_channel_prefix("idle");
    let channels: Vec<Channel> = (0..a.channels)
        .map(|c| {
            let name = format!("{prefix}-c{c}");
            Channel {
                request: cfg.upgrade_request(&name),
                name,
                pub_base: 0,
                pub_count: 0,
            }
        })
        .collect();
    let plan = Plan {
        channels,
        conns: (0..a.connections)
            .map(|i| ConnSpec {
                channel: (i % a.channels) as u32,
                receives: true,
                publisher: None,
            })
            .collect(),
        pub_channel: Vec::new(),
        push: None,
        external_source: false,
    };
    let before = memory(cfg.relay_pid);
    let running = pubsub::start(&cfg, plan)?;
    // Let the relay finish what the joins queued (join events to members).
    std::thread::sleep(Duration::from_secs(1));
    let after = memory(cfg.relay_pid);
    let joined = running.setup.members_joined;
    eprintln!(
        "{joined} connections joined; holding them for {} s{}",
        a.hold,
        match (before.relay_rss, after.relay_rss) {
            (Some(b), Some(x)) => format!(
                " (relay RSS {:.1} -> {:.1} MiB)",
                b as f64 / 1048576.0,
                x as f64 / 1048576.0
            ),
            _ => String::new(),
        }
    );
    let outcome = running.run();
    let end = memory(cfg.relay_pid);

    let mut r = Report::new();
    r.add("scenario", "idle");
    r.add("connections", a.connections);
    r.add("channels", a.channels);
    r.add("hold_s", a.hold);
    add_common_params(&mut r, &cfg);
    r.add("load_avg_before", opt(outcome.setup.load_before.clone()));
    let setup = &outcome.setup;
    r.add("joined", joined);
    r.add_with_text(
        "handshake_failures",
        serde_json::json!(setup.failures),
        format!(
            "{}{}",
            setup.failed,
            pubsub::format_failures(&setup.failures).replace("\n ", "")
        ),
    );
    r.add("upgrade_429_retries", setup.retried_429);
    r.add("setup_s", round3(setup.setup_s));
    r.add(
        "joins_per_s",
        round3(joined as f64 / setup.setup_s.max(1e-9)),
    );
    let disconnects = outcome.total.disconnected();
    r.add("disconnects_while_held", disconnects);
    r.add(
        "open_at_end",
        joined as u64 - disconnects.min(joined as u64),
    );
    if let Some(text) = &setup.metrics_after_setup {
        let open = sys::metric_values(text, "itty_connections_open");
        r.add_with_text(
            "relay_connections_per_shard",
            serde_json::json!(open),
            format!("{open:?}"),
        );
    }
    let per_conn = |a: Option<u64>, b: Option<u64>| -> Value {
        match (a, b) {
            (Some(a), Some(b)) if joined > 0 => {
                Value::from(((b as f64 - a as f64) / joined as f64).round() as i64)
            }
            _ => Value::Null,
        }
    };
    let mib = |v: Option<u64>| opt(v.map(|v| round3(v as f64 / 1048576.0)));
    r.add("relay_rss_mib_before", mib(before.relay_rss));
    r.add("relay_rss_mib_joined", mib(after.relay_rss));
    r.add("relay_rss_mib_end", mib(end.relay_rss));
    r.add(
        "relay_rss_bytes_per_connection",
        per_conn(before.relay_rss, after.relay_rss),
    );
    let page = sys::page_bytes();
    let ss = |m: &Memory| m.sockstat.map(|s| s.tcp_mem_pages * page);
    r.add(
        "tcp_sockets_in_use_before_joined",
        opt(before
            .sockstat
            .zip(after.sockstat)
            .map(|(b, a)| format!("{} -> {}", b.tcp_inuse, a.tcp_inuse))),
    );
    r.add("tcp_mem_kib_before", opt(ss(&before).map(|b| b / 1024)));
    r.add("tcp_mem_kib_joined", opt(ss(&after).map(|b| b / 1024)));
    r.add(
        "tcp_mem_bytes_per_connection",
        per_conn(ss(&before), ss(&after)),
    );
    r.add(
        "generator_rss_bytes_per_connection",
        per_conn(before.own_rss, after.own_rss),
    );
    r.add("finished_after_s", round3(outcome.measured.finished_s));
    r.add("load_avg_after", opt(sys::loadavg()));
    if a.common.json {
        println!("{}", r.to_json());
    } else {
        print!("{}", r.to_text());
    }
    eprintln!(
        "NOTE: tcp mem (from /proc/net/sockstat) is the whole host's, both ends of every \
         loopback connection, in pages of buffers actually allocated: idle sockets hold \
         almost none. Relay RSS per connection includes its share of join events queued."
    );
    if setup.failed > 0 {
        eprintln!(
            "NOTE: {} connections failed: check the open-file limits of both processes \
             (this run had {}), the relay's per-IP upgrade limit (raise it, or add \
             --source-ips), and `net.ipv4.ip_local_port_range`.",
            setup.failed, cfg.nofile
        );
    }
    if let Some(path) = &a.common.plot {
        plot::write(path, &idle_chart(&outcome.measured.seconds, a.connections));
    }
    Ok(())
}

fn idle_chart(seconds: &[Second], connections: usize) -> Chart {
    Chart {
        title: format!("itty-loadtest idle: {connections} connections held"),
        x_label: "seconds since all joined".into(),
        panels: vec![Panel {
            y_label: "connections open".into(),
            series: vec![Series {
                name: "open".into(),
                color: COLORS[0],
                points: seconds
                    .iter()
                    .map(|s| (s.sec as f64, s.open as f64))
                    .collect(),
            }],
        }],
        markers: Vec::new(),
    }
}
