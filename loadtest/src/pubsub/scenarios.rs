//! The publishing scenarios as plans for the engine: `fanout`, `rooms`,
//! `spread` and `push`, and the driver that runs one (or a `--sweep` of
//! them), prints the summary and writes the plot.

use super::config::{check_channel_name, fresh_channel_prefix, Common, Config, Traffic};
use super::outcome::Second;
use super::run::start;
use super::state::{Channel, ConnSpec, Plan, PushSpec};
use super::summary::{self, Summary};
use crate::plot;
use crate::report::Report;
use crate::sweep::{self, Step, SweepArgs};

/// The relay's default per-connection message limit (PROTOCOL.md 8).
const RELAY_MSGS_PER_CONN_PER_S: f64 = 40.0;

#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Members of the channel (receivers), spread over the executors.
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Publishers: separate connections on the same channel, no echo.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Messages per second in total, spread evenly over the publishers.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Channel name (default: a fresh `loadtest-fanout-<pid>-<time>`).
    #[arg(long)]
    pub channel: Option<String>,
    #[command(flatten)]
    pub traffic: Traffic,
    #[command(flatten)]
    pub sweep: SweepArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RoomsArgs {
    /// Rooms (channels).
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Members per room; every member publishes and receives the others.
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,
    /// Messages per second each member publishes (the relay's default
    /// per-connection limit is 40/s).
    #[arg(long, default_value_t = 1.0)]
    pub rate_per_member: f64,
    #[command(flatten)]
    pub traffic: Traffic,
    #[command(flatten)]
    pub sweep: SweepArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SpreadArgs {
    /// Channels; with SO_REUSEPORT each connection lands on a shard by
    /// chance, so most deliveries cross shards on a multi-shard relay.
    #[arg(long, default_value_t = 256)]
    pub channels: usize,
    /// Receiving members per channel.
    #[arg(long, default_value_t = 16)]
    pub members_per_channel: usize,
    /// Publishing connections per channel (they do not count as members).
    #[arg(long, default_value_t = 1)]
    pub publishers_per_channel: usize,
    /// Messages per second in total, over every publisher.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    #[command(flatten)]
    pub traffic: Traffic,
    #[command(flatten)]
    pub sweep: SweepArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PushArgs {
    /// The `x-send-key` of the namespace that covers the channels.
    #[arg(long)]
    pub send_key: String,
    /// Channel names are `<prefix>-<n>`; the prefix must lie in a namespace
    /// that has a send key, e.g. `bench:push` for namespace `bench`.
    #[arg(long)]
    pub channel_prefix: String,
    /// Channels pushed to.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Receiving members per channel.
    #[arg(long, default_value_t = 1000)]
    pub members_per_channel: usize,
    /// Keep-alive HTTP connections that push (each one a publisher, in
    /// contiguous blocks over the channels); at least `--channels`.
    #[arg(long, default_value_t = 4)]
    pub http_connections: usize,
    /// Requests in flight per HTTP connection: 1 waits for each response,
    /// more pipelines.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Push requests per second in total.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    #[command(flatten)]
    pub traffic: Traffic,
    #[command(flatten)]
    pub sweep: SweepArgs,
    #[command(flatten)]
    pub common: Common,
}

fn channel(name: String, request: Vec<u8>, pub_base: usize, pub_count: usize) -> Channel {
    Channel {
        name,
        request,
        pub_base: pub_base as u32,
        pub_count: pub_count as u32,
    }
}

impl FanoutArgs {
    fn plan(&self, cfg: &Config, prefix: &str) -> Plan {
        let name = self.channel.clone().unwrap_or_else(|| prefix.to_owned());
        let request = cfg.upgrade_request(&name);
        let mut conns = vec![
            ConnSpec {
                channel: 0,
                receives: true,
                publisher: None,
            };
            self.members
        ];
        conns.extend((0..self.publishers).map(|p| ConnSpec {
            channel: 0,
            receives: false,
            publisher: Some(p as u32),
        }));
        Plan {
            channels: vec![channel(name, request, 0, self.publishers)],
            conns,
            pub_channel: vec![0; self.publishers],
            push: None,
            external_source: false,
        }
    }
}

impl RoomsArgs {
    fn plan(&self, cfg: &Config, prefix: &str) -> Plan {
        let k = self.room_size;
        let channels = (0..self.rooms)
            .map(|r| {
                let name = format!("{prefix}-r{r}");
                let request = cfg.upgrade_request(&name);
                channel(name, request, r * k, k)
            })
            .collect();
        let conns = (0..self.rooms * k)
            .map(|i| ConnSpec {
                channel: (i / k) as u32,
                receives: true,
                publisher: Some(i as u32),
            })
            .collect();
        Plan {
            channels,
            conns,
            pub_channel: (0..self.rooms * k).map(|i| (i / k) as u32).collect(),
            push: None,
            external_source: false,
        }
    }
}

impl SpreadArgs {
    fn plan(&self, cfg: &Config, prefix: &str) -> Plan {
        let (m, p) = (self.members_per_channel, self.publishers_per_channel);
        let channels = (0..self.channels)
            .map(|c| {
                let name = format!("{prefix}-c{c}");
                let request = cfg.upgrade_request(&name);
                channel(name, request, c * p, p)
            })
            .collect();
        let mut conns: Vec<ConnSpec> = (0..self.channels * m)
            .map(|i| ConnSpec {
                channel: (i / m) as u32,
                receives: true,
                publisher: None,
            })
            .collect();
        conns.extend((0..self.channels * p).map(|i| ConnSpec {
            channel: (i / p) as u32,
            receives: false,
            publisher: Some(i as u32),
        }));
        Plan {
            channels,
            conns,
            pub_channel: (0..self.channels * p).map(|i| (i / p) as u32).collect(),
            push: None,
            external_source: false,
        }
    }
}

/// Publisher p of `h` pushes to channel `p * c / h`: contiguous blocks.
pub fn push_channel_of(p: usize, h: usize, c: usize) -> usize {
    p * c / h
}

impl PushArgs {
    fn plan(&self, cfg: &Config, _prefix: &str) -> Plan {
        let (c, h, m) = (
            self.channels,
            self.http_connections,
            self.members_per_channel,
        );
        let pub_channel: Vec<u32> = (0..h).map(|p| push_channel_of(p, h, c) as u32).collect();
        let channels = (0..c)
            .map(|ch| {
                let name = format!("{}-{ch}", self.channel_prefix);
                let request = cfg.upgrade_request(&name);
                let base = pub_channel
                    .iter()
                    .position(|&x| x as usize == ch)
                    .unwrap_or(0);
                let count = pub_channel.iter().filter(|&&x| x as usize == ch).count();
                channel(name, request, base, count)
            })
            .collect();
        let conns = (0..c * m)
            .map(|i| ConnSpec {
                channel: (i / m) as u32,
                receives: true,
                publisher: None,
            })
            .collect();
        Plan {
            channels,
            conns,
            pub_channel,
            push: Some(PushSpec {
                send_key: self.send_key.clone(),
                pipeline: self.pipeline,
            }),
            external_source: false,
        }
    }
}

/// One publishing scenario, ready to drive.
struct Scenario<'a> {
    name: &'static str,
    common: &'a Common,
    traffic: &'a Traffic,
    sweep: &'a SweepArgs,
    /// The rate knob's starting value, and its name in the sweep table.
    rate: f64,
    rate_name: &'static str,
    /// Total messages per second for a knob value.
    total_rate: &'a dyn Fn(f64) -> f64,
    /// Publishers (for the per-connection limit note).
    publishers: usize,
    connections: usize,
    params: &'a dyn Fn(&mut Report, f64),
    plan: &'a dyn Fn(&Config, &str) -> Plan,
}

pub fn fanout(a: FanoutArgs) -> anyhow::Result<()> {
    if a.members == 0 || a.publishers == 0 {
        anyhow::bail!("--members and --publishers must be at least 1");
    }
    if let Some(c) = &a.channel {
        check_channel_name(c)?;
        if a.sweep.sweep {
            anyhow::bail!(
                "--channel and --sweep do not go together (each step needs a fresh channel)"
            );
        }
    }
    drive(Scenario {
        name: "fanout",
        common: &a.common,
        traffic: &a.traffic,
        sweep: &a.sweep,
        rate: a.rate,
        rate_name: "rate msg/s",
        total_rate: &|r| r,
        publishers: a.publishers,
        connections: a.members + a.publishers,
        params: &|r, _| {
            r.add("members", a.members);
            r.add("publishers", a.publishers);
        },
        plan: &|cfg, prefix| a.plan(cfg, prefix),
    })
}

pub fn rooms(a: RoomsArgs) -> anyhow::Result<()> {
    if a.rooms == 0 || a.room_size < 2 {
        anyhow::bail!("--rooms must be at least 1 and --room-size at least 2");
    }
    let members = a.rooms * a.room_size;
    drive(Scenario {
        name: "rooms",
        common: &a.common,
        traffic: &a.traffic,
        sweep: &a.sweep,
        rate: a.rate_per_member,
        rate_name: "msg/s per member",
        total_rate: &|r| r * members as f64,
        publishers: members,
        connections: members,
        params: &|r, knob| {
            r.add("rooms", a.rooms);
            r.add("room_size", a.room_size);
            r.add("rate_per_member_msgs_per_s", knob);
        },
        plan: &|cfg, prefix| a.plan(cfg, prefix),
    })
}

pub fn spread(a: SpreadArgs) -> anyhow::Result<()> {
    if a.channels == 0 || a.members_per_channel == 0 || a.publishers_per_channel == 0 {
        anyhow::bail!(
            "--channels, --members-per-channel and --publishers-per-channel must be at least 1"
        );
    }
    let publishers = a.channels * a.publishers_per_channel;
    drive(Scenario {
        name: "spread",
        common: &a.common,
        traffic: &a.traffic,
        sweep: &a.sweep,
        rate: a.rate,
        rate_name: "rate msg/s",
        total_rate: &|r| r,
        publishers,
        connections: a.channels * a.members_per_channel + publishers,
        params: &|r, _| {
            r.add("channels", a.channels);
            r.add("members_per_channel", a.members_per_channel);
            r.add("publishers_per_channel", a.publishers_per_channel);
        },
        plan: &|cfg, prefix| a.plan(cfg, prefix),
    })
}

pub fn push(a: PushArgs) -> anyhow::Result<()> {
    a.common.proto.require_itty("push")?;
    if a.channels == 0 || a.http_connections < a.channels || a.pipeline == 0 {
        anyhow::bail!(
            "--channels and --pipeline must be at least 1, --http-connections at least --channels"
        );
    }
    check_channel_name(&a.channel_prefix)?;
    drive(Scenario {
        name: "push",
        common: &a.common,
        traffic: &a.traffic,
        sweep: &a.sweep,
        rate: a.rate,
        rate_name: "push req/s",
        total_rate: &|r| r,
        publishers: 0,
        connections: a.channels * a.members_per_channel + a.http_connections,
        params: &|r, _| {
            r.add("channel_prefix", a.channel_prefix.clone());
            r.add("channels", a.channels);
            r.add("members_per_channel", a.members_per_channel);
            r.add("http_connections", a.http_connections);
            r.add("pipeline", a.pipeline);
        },
        plan: &|cfg, prefix| a.plan(cfg, prefix),
    })
}

/// One run of the scenario at knob value `knob`.
fn run_once(s: &Scenario, knob: f64, prefix: &str) -> anyhow::Result<(Summary, Vec<Second>)> {
    let total = (s.total_rate)(knob);
    let cfg = Config::new(s.common, s.traffic, total, s.connections)?;
    let plan = (s.plan)(&cfg, prefix);
    let running = start(&cfg, plan)?;
    let outcome = running.run();
    let mut r = Report::new();
    r.add("scenario", s.name);
    (s.params)(&mut r, knob);
    let mut summary = summary::summarize(r, &cfg, &outcome);
    if cfg.wire.name() == "itty"
        && s.publishers > 0
        && total / s.publishers as f64 > RELAY_MSGS_PER_CONN_PER_S
    {
        summary.notes.push(format!(
            "each publisher sends {:.0} msg/s; itty-relay limits a connection to {} msg/s by \
             default (burst 100, then error events and a 1008 kick): raise the relay's \
             per-connection message limit or add publishers.",
            total / s.publishers as f64,
            RELAY_MSGS_PER_CONN_PER_S
        ));
    }
    Ok((summary, outcome.measured.seconds))
}

/// Runs the scenario once and prints its summary, or `--sweep`s its knob.
fn drive(s: Scenario) -> anyhow::Result<()> {
    s.sweep.validate()?;
    let prefix = fresh_channel_prefix(s.name);
    if !s.sweep.sweep {
        let (summary, seconds) = run_once(&s, s.rate, &prefix)?;
        summary::print(&summary, s.common.json);
        if let Some(path) = &s.common.plot {
            let title = format!("itty-loadtest {} at {} {}", s.name, s.rate, s.rate_name);
            plot::write(
                path,
                &summary::pubsub_chart(title, &[(0.0, String::new(), seconds)]),
            );
        }
        return Ok(());
    }
    let swept = sweep_steps(&s, &prefix)?;
    print_sweep(&s, &swept);
    Ok(())
}

/// What a sweep's steps saw.
struct Swept {
    steps: Vec<Step>,
    /// Each step's seconds, at its offset on the plot's time axis, with
    /// its knob value as the label.
    series: Vec<(f64, String, Vec<Second>)>,
    /// Each step's notes, printed once at the end.
    notes: std::collections::BTreeSet<String>,
    last_report: Option<Report>,
}

/// Runs a sweep's steps, each at the knob value `sweep::next_rate` picks
/// after the steps before it, until it picks none.
fn sweep_steps(s: &Scenario, prefix: &str) -> anyhow::Result<Swept> {
    let mut swept = Swept {
        steps: Vec::new(),
        series: Vec::new(),
        notes: std::collections::BTreeSet::new(),
        last_report: None,
    };
    let mut offset = 0.0;
    let mut knob = s.rate;
    loop {
        let n = swept.steps.len() + 1;
        let mut retried = Vec::new();
        let (summary, held, why) = loop {
            let run = retried.len() + 1;
            eprintln!("--- sweep step {n}, run {run}: {knob} {}", s.rate_name);
            let step_prefix = format!("{prefix}-s{n}r{run}");
            let (summary, seconds) = run_once(s, knob, &step_prefix)?;
            let (held, why) = sweep::verdict(&summary.key, s.sweep.p99_max_ms);
            eprintln!(
                "--- step {n}, run {run}: {knob} {} -> deliveries/s {}, p99 {} ms: {}",
                s.rate_name,
                summary
                    .key
                    .deliveries_per_s
                    .map_or("-".into(), |d| format!("{d:.0}")),
                summary.key.p99_ms.map_or("-".into(), |p| format!("{p:.2}")),
                if held {
                    "held".to_owned()
                } else {
                    format!("failed ({why})")
                }
            );
            let len = seconds.last().map_or(0.0, |x| x.sec as f64);
            let label = format!("{}", crate::report::round3(knob));
            swept.series.push((offset, label, seconds));
            offset += len + 1.0;
            swept.notes.extend(summary.notes.iter().cloned());
            if sweep::step_done(held, retried.len(), s.sweep) {
                break (summary, held, why);
            }
            retried.push(why);
            // Let the relay close the failed run's connections.
            std::thread::sleep(std::time::Duration::from_secs(1));
        };
        swept.steps.push(Step {
            rate: knob,
            key: summary.key.clone(),
            held,
            why,
            retried,
        });
        swept.last_report = Some(summary.report);
        match sweep::next_rate(&swept.steps, s.sweep) {
            Some(next) => knob = next,
            None => break,
        }
        // Let the relay close the previous step's connections.
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    Ok(swept)
}

/// Prints a sweep: the steps and the best rate (a table, or one JSON
/// object with the last step's whole summary), its notes, and the plot.
fn print_sweep(s: &Scenario, swept: &Swept) {
    let steps = &swept.steps;
    let best = sweep::best(steps);
    let mut r = Report::new();
    r.add("scenario", s.name);
    r.add("sweep_p99_max_ms", s.sweep.p99_max_ms);
    r.add("sweep_factor", s.sweep.sweep_factor);
    r.add("rate_knob", s.rate_name);
    r.add("steps", steps.len());
    r.add("best_rate", summary::opt(best.map(|b| b.rate)));
    r.add(
        "best_total_msgs_per_s",
        summary::opt(best.map(|b| (s.total_rate)(b.rate))),
    );
    r.add(
        "best_deliveries_per_s",
        summary::opt(best.and_then(|b| b.key.deliveries_per_s)),
    );
    r.add(
        "best_latency_ms_p99",
        summary::opt(best.and_then(|b| b.key.p99_ms)),
    );
    if s.common.json {
        let mut json: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&r.to_json()).unwrap_or_default();
        json.insert("steps_detail".into(), sweep::steps_json(steps));
        if let Some(last) = &swept.last_report {
            json.insert(
                "last_step".into(),
                serde_json::from_str(&last.to_json()).unwrap_or_default(),
            );
        }
        println!("{}", serde_json::Value::Object(json));
    } else {
        print!("{}", sweep::table(steps, s.rate_name));
        println!();
        print!("{}", r.to_text());
    }
    for note in &swept.notes {
        eprintln!("NOTE (some step): {note}");
    }
    match best {
        Some(b) if b.key.saturated => eprintln!(
            "NOTE: at the best rate the generator was saturated: the relay may sustain more."
        ),
        None => eprintln!(
            "NOTE: no step held; start lower (the first rate was {} {}).",
            s.rate, s.rate_name
        ),
        _ => {}
    }
    if let Some(path) = &s.common.plot {
        let title = format!(
            "itty-loadtest {} --sweep (p99 bound {} ms)",
            s.name, s.sweep.p99_max_ms
        );
        plot::write(path, &summary::pubsub_chart(title, &swept.series));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_publishers_cover_every_channel_in_blocks() {
        let chans: Vec<usize> = (0..5).map(|p| push_channel_of(p, 5, 2)).collect();
        assert_eq!(chans, vec![0, 0, 0, 1, 1]);
        let chans: Vec<usize> = (0..3).map(|p| push_channel_of(p, 3, 3)).collect();
        assert_eq!(chans, vec![0, 1, 2]);
    }
}
