//! The pub/sub engine behind `fanout`, `rooms`, `spread`, `push`, `idle`
//! and `ceiling`: a scenario builds a `Plan` (channels, connections, who
//! publishes where), the engine runs it and returns what it saw.
//!
//! - Connections join with bounded concurrency, spread round-robin over the
//!   executors (and over `--source-ips`), receivers first; each waits for its
//!   own join event. Publishing starts when every connection has joined.
//! - Open loop: message k of publisher p (of P) is due at
//!   `t0 + (k*P + p) / rate`, sent late if the publisher is behind (never
//!   skipped before the end), and its latency is measured from the due
//!   time, not from the write (no coordinated omission).
//! - Every published message owes one delivery to each receiver joined on
//!   its channel except its sender: `expected`. What did not arrive by the
//!   end of the grace period is `lost`.
//! - Payload: `[<publisher>,<seq>,<scheduled_ns>,"<padding>"]`, padded to
//!   `--payload-bytes`; the protocol (`proto::Wire`) says where a received
//!   frame carries it. Nothing else of a frame is parsed.
//! - Receiving (`--recv`): after the join, by default (`epoll`), sockets
//!   are read by one pump per executor that polls an epoll set without ever
//!   sleeping on a socket while traffic flows; with `uring` they stay on
//!   glommio (io_uring poll, then recv). On loopback the relay's `send`
//!   runs the receiver's wake-up; glommio's rings (no
//!   `IORING_SETUP_COOP_TASKRUN`) turn each into an inter-processor
//!   interrupt, which here cost the relay ~40% more cpu per delivery and
//!   saturated the generator (README, "Why epoll").

mod exec;
mod measure;
mod push;
mod recv;
pub mod scenarios;
pub mod state;
pub mod summary;

use crate::net::{self, SourceIps};
use crate::proto::{Proto, Wire};
use crate::sys;
use crate::ws::Target;
pub use exec::timed as exec_timed;
use glommio::{LocalExecutorBuilder, Placement};
pub use state::{ConnSpec, Plan, PushSpec};
use state::{ExecStats, Padded, Shared, Tick, IO_MEMORY, NS};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Options every scenario shares: where, how, and what to print.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// The relay: ws://host:port (traffic goes only there).
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    /// The relay's protocol.
    #[arg(long, value_enum, default_value_t = Proto::Itty)]
    pub proto: Proto,
    /// Cpus for the generator's executors, e.g. `1` or `0,1` or `2-3`; one
    /// pinned executor each. Default: the last cpu this process may use.
    #[arg(long, value_parser = sys::parse_cpu_list)]
    pub cpus: Option<sys::CpuList>,
    /// Connection handshakes in flight at once, over all executors.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Seconds for every connection to join before the run is abandoned.
    #[arg(long, default_value_t = 60)]
    pub setup_timeout: u64,
    /// Source addresses to connect from, round-robin: `auto` (one loopback
    /// address per 20,000 connections, at least 8, when the relay is on
    /// 127.0.0.0/8), a count N (127.0.0.1 to 127.0.0.N), an address, or a
    /// range `127.0.0.2-127.0.0.40`. Spreads per-IP limits and ports.
    #[arg(long, default_value = "auto", value_parser = net::parse_source_ips)]
    pub source_ips: net::SourceSpec,
    /// The relay's pid: its cpu (and for `idle`, memory) from /proc/PID.
    #[arg(long)]
    pub relay_pid: Option<u32>,
    /// Print the summary as one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Write a plot of throughput and latency over time to this SVG file.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
}

/// Options of the scenarios that publish.
#[derive(Debug, Clone, clap::Args)]
pub struct Traffic {
    /// Size of each published JSON payload, in bytes (at least ~40 are
    /// needed for the stamp; smaller values give unpadded payloads).
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Publishing time, in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// First seconds left out of deliveries/s and latency.
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Seconds to wait after publishing for the last deliveries; whatever
    /// has not arrived then is lost.
    #[arg(long, default_value_t = 2.0)]
    pub grace: f64,
    /// How receivers read: `uring` (glommio's TcpStream: io_uring poll, then
    /// recv) or `epoll` (after the join, one pump per executor polls an
    /// epoll set with timeout 0 and sleeps 50 us when idle; the relay's
    /// sends then wake no sleeper, see README).
    #[arg(long, value_enum, default_value_t = RecvMode::Epoll)]
    pub recv: RecvMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecvMode {
    Uring,
    Epoll,
}

/// `--source-ips auto`: one loopback address per this many connections (at
/// least 8, at most 254): the relay's default per-IP upgrade burst is 20,
/// so a setup of up to 5,080 connections passes without a 429, and one
/// address stays far below the ~28,000 ports it has per destination.
pub const AUTO_CONNS_PER_SOURCE_IP: usize = 20;

/// Everything the engine needs besides the plan.
#[derive(Clone)]
pub struct Config {
    pub url: String,
    pub target: Target,
    pub wire: &'static dyn Wire,
    pub cpus: Vec<usize>,
    pub sources: SourceIps,
    pub connect_concurrency: usize,
    pub setup_timeout: u64,
    pub relay_pid: Option<u32>,
    pub recv: RecvMode,
    pub rate: f64,
    pub payload_bytes: usize,
    pub buf_bytes: usize,
    pub duration: u64,
    pub warmup: u64,
    pub grace: f64,
    /// The open-file limit in force.
    pub nofile: u64,
}

impl Config {
    /// Checks the shared options; `connections` is what the plan will open.
    pub fn new(
        common: &Common,
        traffic: &Traffic,
        rate: f64,
        connections: usize,
    ) -> anyhow::Result<Config> {
        if !(rate > 0.0 && rate.is_finite()) {
            anyhow::bail!("the rate must be a positive number of messages per second");
        }
        if traffic.duration <= traffic.warmup {
            anyhow::bail!("--duration must exceed --warmup ({} s)", traffic.warmup);
        }
        if !(0.0..=60.0).contains(&traffic.grace) {
            anyhow::bail!("--grace must be between 0 and 60 seconds");
        }
        if traffic.payload_bytes > 60 * 1024 {
            anyhow::bail!(
                "--payload-bytes above 61440 is not supported (frames must fit one read buffer)"
            );
        }
        let mut cfg = Config::base(common, connections)?;
        cfg.rate = rate;
        cfg.payload_bytes = traffic.payload_bytes;
        cfg.duration = traffic.duration;
        cfg.warmup = traffic.warmup;
        cfg.grace = traffic.grace;
        cfg.recv = traffic.recv;
        Ok(cfg)
    }

    /// The connection options alone (scenarios that do not publish).
    pub fn base(common: &Common, connections: usize) -> anyhow::Result<Config> {
        if common.connect_concurrency == 0 {
            anyhow::bail!("--connect-concurrency must be at least 1");
        }
        let allowed = sys::allowed_cpus();
        let cpus = common
            .cpus
            .clone()
            .map(|c| c.0)
            .unwrap_or_else(|| vec![*allowed.last().unwrap_or(&0)]);
        if let Some(c) = cpus.iter().find(|c| !allowed.contains(c)) {
            anyhow::bail!("cpu {c} is not available to this process (allowed: {allowed:?})");
        }
        let target = Target::parse(&common.url)?;
        let sources = match &common.source_ips {
            net::SourceSpec::Ips(s) => s.clone(),
            net::SourceSpec::Auto if target.addr.ip().is_loopback() && target.addr.is_ipv4() => {
                SourceIps::auto(connections, AUTO_CONNS_PER_SOURCE_IP, 8)
            }
            net::SourceSpec::Auto => SourceIps::default(),
        };
        if let Some(pid) = common.relay_pid {
            sys::pid_cpu_ns(pid)?;
        }
        let nofile = net::ensure_fd_limit(connections as u64 + 256);
        Ok(Config {
            url: common.url.clone(),
            target,
            wire: common.proto.wire(),
            cpus,
            sources,
            connect_concurrency: common.connect_concurrency,
            setup_timeout: common.setup_timeout,
            relay_pid: common.relay_pid,
            recv: RecvMode::Epoll,
            rate: 1.0,
            payload_bytes: 64,
            buf_bytes: state::READ_BUF,
            duration: 10,
            warmup: 0,
            grace: 0.0,
            nofile,
        })
    }
}

/// A fresh channel name: `loadtest-<scenario>-<pid>-<ms>-<suffix>`.
pub fn fresh_channel_prefix(scenario: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("loadtest-{scenario}-{}-{t}", std::process::id())
}

/// Checks a channel name given on the command line.
pub fn check_channel_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
    {
        anyhow::bail!("channel names may hold only ASCII letters, digits and - _ . : /");
    }
    Ok(())
}

/// Everything known before the run, for the summary.
pub struct Setup {
    pub cpus: Vec<usize>,
    pub load_before: Option<String>,
    pub members_joined: usize,
    pub publishers_joined: usize,
    pub failed: usize,
    pub failures: BTreeMap<String, usize>,
    /// Upgrades refused with 429 and retried.
    pub retried_429: u64,
    pub setup_s: f64,
    /// The relay's /metrics right after the setup.
    pub metrics_after_setup: Option<String>,
}

/// One second of the run, for the progress line and the plot.
#[derive(Debug, Clone, Default)]
pub struct Second {
    pub sec: u64,
    pub deliveries: u64,
    pub published: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub gen_util: f64,
    pub relay_util: Option<f64>,
    pub open: u64,
}

/// What the main thread saw while publishing.
pub struct Measured {
    /// Per completed second (all executors ticked): deliveries so far.
    pub delivered_at: BTreeMap<u64, u64>,
    /// Per completed second: each executor thread's cpu time so far (ns).
    pub cpu_at: BTreeMap<u64, Vec<u64>>,
    pub seconds: Vec<Second>,
    pub relay_cpu_start: Option<u64>,
    pub relay_cpu_end_publishing: Option<u64>,
    pub relay_cpu_end: Option<u64>,
    pub proc_cpu_start: u64,
    pub proc_cpu_end_publishing: Option<u64>,
    pub proc_cpu_end: u64,
    pub stalled: bool,
    pub finished_s: f64,
    /// The relay's /metrics at the end.
    pub metrics_end: Option<String>,
}

/// The result of one run of a plan.
pub struct Outcome {
    pub setup: Setup,
    pub measured: Measured,
    pub total: ExecStats,
    /// Every executor returned its counts.
    pub complete: bool,
    /// Publishers were HTTP push clients.
    pub push: bool,
    /// Messages came from elsewhere (`ceiling`): no loss accounting.
    pub external_source: bool,
}

/// A plan whose connections are open and joined, before publishing.
pub struct Running {
    pub cfg: Config,
    shared: Arc<Shared>,
    handles: Vec<glommio::ExecutorJoinHandle<ExecStats>>,
    ticks: mpsc::Receiver<Tick>,
    pub setup: Setup,
}

/// Opens and joins every connection of `plan`. Progress on stderr.
pub fn start(cfg: &Config, plan: Plan) -> anyhow::Result<Running> {
    sys::pin_current_thread(&cfg.cpus)?;
    sys::init_clock();
    let load_before = sys::loadavg();
    let n_exec = cfg.cpus.len();
    let n_channels = plan.channels.len();
    let shared = Arc::new(Shared {
        wire: cfg.wire,
        target: cfg.target.clone(),
        sources: cfg.sources.clone(),
        recv: cfg.recv,
        plan,
        rate: cfg.rate,
        payload_bytes: cfg.payload_bytes,
        buf_bytes: cfg.buf_bytes,
        duration_ns: cfg.duration * NS,
        warmup_ns: cfg.warmup * NS,
        grace_ns: (cfg.grace * 1e9) as u64,
        join_timeout: Duration::from_secs(10),
        receivers_on: (0..n_channels).map(|_| AtomicU32::new(0)).collect(),
        members_joined: AtomicUsize::new(0),
        publishers_joined: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        failures: Mutex::new(BTreeMap::new()),
        retried_429: AtomicU64::new(0),
        setup_done: AtomicUsize::new(0),
        t0: AtomicU64::new(0),
        abort: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        published: AtomicU64::new(0),
        expected: AtomicU64::new(0),
        publishers_done: AtomicUsize::new(0),
        delivered: (0..n_exec).map(|_| Padded::default()).collect(),
    });

    let (tick_tx, tick_rx) = mpsc::channel::<Tick>();
    let per_exec_concurrency = cfg.connect_concurrency.div_ceil(n_exec).max(1);
    let mut handles = Vec::new();
    for (exec, &cpu) in cfg.cpus.iter().enumerate() {
        let shared = shared.clone();
        let tx = tick_tx.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("loadgen{cpu}"))
            .io_memory(IO_MEMORY)
            .spawn(move || exec::executor(shared, exec, n_exec, per_exec_concurrency, tx))
            .map_err(|e| anyhow::anyhow!("starting the executor on cpu {cpu}: {e}"))?;
        handles.push(handle);
    }
    drop(tick_tx);

    let setup_s = match wait_for_setup(&shared, cfg, n_exec) {
        Ok(s) => s,
        Err(e) => {
            shared.abort.store(true, Relaxed);
            shared.stop.store(true, Relaxed);
            join_all(handles);
            return Err(e);
        }
    };
    let setup = Setup {
        cpus: cfg.cpus.clone(),
        load_before,
        members_joined: shared.members_joined.load(Relaxed),
        publishers_joined: shared.publishers_joined.load(Relaxed),
        failed: shared.failed.load(Relaxed),
        failures: shared.failures.lock().unwrap().clone(),
        retried_429: shared.retried_429.load(Relaxed),
        setup_s,
        metrics_after_setup: scrape_metrics(cfg),
    };
    Ok(Running {
        cfg: cfg.clone(),
        shared,
        handles,
        ticks: tick_rx,
        setup,
    })
}

impl Running {
    /// Publishes for the configured duration (or holds the connections),
    /// waits out the grace period, stops the executors.
    pub fn run(self) -> Outcome {
        let Running {
            cfg,
            shared,
            handles,
            ticks,
            setup,
        } = self;
        let mut measured = measure::measure(&shared, &cfg, &setup, ticks);
        shared.stop.store(true, Relaxed);
        measured.metrics_end = scrape_metrics(&cfg);
        let stats = join_all(handles);
        let complete = stats.len() == cfg.cpus.len();
        let mut total = ExecStats::new();
        for s in &stats {
            total.merge(s);
        }
        Outcome {
            setup,
            measured,
            total,
            complete,
            push: shared.plan.push.is_some(),
            external_source: shared.plan.external_source,
        }
    }
}

/// The relay's Prometheus text, when the protocol has an endpoint for it.
fn scrape_metrics(cfg: &Config) -> Option<String> {
    let path = cfg.wire.metrics_path()?;
    sys::http_get(
        cfg.target.addr,
        &cfg.target.host,
        &format!("{}{path}", cfg.target.prefix),
    )
}

/// Waits until every executor has every connection joined or failed;
/// returns the setup time in seconds. Progress once a second on stderr.
fn wait_for_setup(shared: &Shared, cfg: &Config, n_exec: usize) -> anyhow::Result<f64> {
    let start = sys::now_ns();
    let mut last_print = start;
    let deadline = start + cfg.setup_timeout * NS;
    let receivers = shared.plan.conns.iter().filter(|c| c.receives).count();
    let publishers = if shared.plan.push.is_some() {
        shared.plan.pub_channel.len()
    } else {
        shared.plan.conns.len() - receivers
    };
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = sys::now_ns();
        let done = shared.setup_done.load(Relaxed) == n_exec;
        if done || now - last_print >= NS {
            last_print = now;
            eprintln!(
                "setup {:5.1}s: members joined {}/{receivers}, publishers joined {}/{publishers}, \
                 failed {}",
                (now - start) as f64 / 1e9,
                shared.members_joined.load(Relaxed),
                shared.publishers_joined.load(Relaxed),
                shared.failed.load(Relaxed),
            );
        }
        if done {
            break;
        }
        if now >= deadline {
            anyhow::bail!(
                "setup did not finish within {} s (--setup-timeout){}",
                cfg.setup_timeout,
                format_failures(&shared.failures.lock().unwrap())
            );
        }
    }
    let members_joined = shared.members_joined.load(Relaxed);
    let publishers_joined = shared.publishers_joined.load(Relaxed);
    let failed = shared.failed.load(Relaxed);
    if members_joined == 0 && receivers > 0 {
        anyhow::bail!(
            "no member joined: nothing to measure{}",
            format_failures(&shared.failures.lock().unwrap())
        );
    }
    if failed > 0 {
        eprintln!(
            "WARNING: {failed} connections failed; the run goes on with {members_joined} members \
             and {publishers_joined} publishers{}",
            format_failures(&shared.failures.lock().unwrap())
        );
    }
    Ok((sys::now_ns() - start) as f64 / 1e9)
}

pub fn format_failures(failures: &BTreeMap<String, usize>) -> String {
    if failures.is_empty() {
        return String::new();
    }
    let lines: Vec<String> = failures
        .iter()
        .map(|(k, v)| format!("\n  {v} x {k}"))
        .collect();
    format!(":{}", lines.concat())
}

/// Joins the executors, waiting at most 10 s in all: an executor that does
/// not stop is reported and left behind (the process exits after the report).
pub fn join_all<T: Send + 'static>(handles: Vec<glommio::ExecutorJoinHandle<T>>) -> Vec<T> {
    let n = handles.len();
    let (tx, rx) = mpsc::channel();
    for (i, h) in handles.into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send((i, h.join()));
        });
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    for _ in 0..n {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((_, Ok(s))) => out.push(s),
            Ok((i, Err(e))) => eprintln!("WARNING: executor {i} failed: {e}"),
            Err(_) => {
                eprintln!(
                    "WARNING: {} executor(s) did not stop within 10 s; their counts are missing",
                    n - out.len()
                );
                break;
            }
        }
    }
    out
}
