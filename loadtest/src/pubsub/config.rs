//! The options every scenario shares (`Common`, and `Traffic` for those
//! that publish) and the engine's checked `Config` built from them.

use super::state::{RecvMode, READ_BUF};
use crate::net::{self, SourceIps};
use crate::proto::{Proto, Wire};
use crate::sys;
use crate::ws::Target;

/// Options every scenario shares: where, how, and what to print.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// The relay: ws://host:port. Repeat it for the nodes of a cluster:
    /// connection i goes to the (i mod n)-th URL, so members and publishers
    /// spread over the nodes; requests are built from the first.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub url: Vec<String>,
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
    /// Repeat it for the nodes of a cluster: their cpu is added up.
    #[arg(long)]
    pub relay_pid: Vec<u32>,
    /// A cluster's engine (e.g. redis-server): its cpu over the publishing
    /// window, apart from the relays'.
    #[arg(long)]
    pub engine_pid: Option<u32>,
    /// Offer permessage-deflate (no context takeover) on every connection
    /// and inflate compressed frames: the bytes on the wire then show what
    /// compression saves (the relay compresses with `--compression on`).
    /// `--deflate` or `--deflate full` inflates every message whole, as a
    /// browser does (about 4 us per 1 KiB message: the generator, not the
    /// relay, then sets the ceiling); `--deflate head` inflates only a
    /// message's first 512 bytes (its envelope head and stamp), so the
    /// generator costs about what it does on plain frames and the relay is
    /// what is measured.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "full")]
    pub deflate: Option<InflateMode>,
    /// For `wss://` URLs: the PEM certificates to trust (the relay's CA).
    /// Default: the file in SSL_CERT_FILE. Verification is never skipped.
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
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
    /// What pads a payload to `--payload-bytes` after its stamp: `x` (one
    /// string of x's: compresses to almost nothing) or `json` (records of
    /// varied numbers and words, as a dashboard or game state would send:
    /// what compression figures should use).
    #[arg(long, value_enum, default_value_t = PayloadFill::X)]
    pub payload_fill: PayloadFill,
}

/// `--deflate`: how much of each compressed message is inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InflateMode {
    /// Every message whole.
    Full,
    /// The first 512 bytes: the envelope head and the stamp.
    Head,
}

/// `--payload-fill`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PayloadFill {
    X,
    Json,
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
    /// `wss://`: the TLS client every connection uses.
    pub tls: Option<crate::tls::ClientTls>,
    /// Every URL's address (connection i uses `addrs[i % len]`).
    pub addrs: Vec<std::net::SocketAddr>,
    pub wire: &'static dyn Wire,
    pub cpus: Vec<usize>,
    pub sources: SourceIps,
    pub connect_concurrency: usize,
    pub setup_timeout: u64,
    pub relay_pid: Option<u32>,
    /// Every relay pid given (the first is `relay_pid`).
    pub relay_pids: Vec<u32>,
    pub engine_pid: Option<u32>,
    pub recv: RecvMode,
    pub rate: f64,
    pub payload_bytes: usize,
    pub payload_fill: PayloadFill,
    /// `--deflate`: requests offer permessage-deflate, and how much of
    /// each compressed message is inflated.
    pub deflate: Option<InflateMode>,
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
        cfg.payload_fill = traffic.payload_fill;
        cfg.duration = traffic.duration;
        cfg.warmup = traffic.warmup;
        cfg.grace = traffic.grace;
        cfg.recv = traffic.recv;
        if cfg.tls.is_some() && cfg.recv == RecvMode::Epoll {
            // The epoll pump reads raw sockets; TLS needs its session.
            eprintln!("NOTE: over wss:// receivers read through io_uring (--recv uring)");
            cfg.recv = RecvMode::Uring;
        }
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
        let first = common.url.first().map_or("", String::as_str);
        let target = Target::parse(first)?;
        let addrs = common
            .url
            .iter()
            .map(|u| Target::parse(u).map(|t| t.addr))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let sources = match &common.source_ips {
            net::SourceSpec::Ips(s) => s.clone(),
            net::SourceSpec::Auto if target.addr.ip().is_loopback() && target.addr.is_ipv4() => {
                SourceIps::auto(connections, AUTO_CONNS_PER_SOURCE_IP, 8)
            }
            net::SourceSpec::Auto => SourceIps::default(),
        };
        for &pid in common.relay_pid.iter().chain(&common.engine_pid) {
            sys::pid_cpu_ns(pid)?;
        }
        let nofile = net::ensure_fd_limit(connections as u64 + 256);
        let tls = match target.tls {
            true => Some(crate::tls::ClientTls::new(
                common.ca.as_deref(),
                &target.server_name,
            )?),
            false => None,
        };
        Ok(Config {
            url: common.url.join(","),
            target,
            tls,
            addrs,
            wire: common.proto.wire(),
            cpus,
            sources,
            connect_concurrency: common.connect_concurrency,
            setup_timeout: common.setup_timeout,
            relay_pid: common.relay_pid.first().copied(),
            relay_pids: common.relay_pid.clone(),
            engine_pid: common.engine_pid,
            recv: RecvMode::Epoll,
            rate: 1.0,
            payload_bytes: 64,
            payload_fill: PayloadFill::X,
            deflate: common.deflate,
            buf_bytes: READ_BUF,
            duration: 10,
            warmup: 0,
            grace: 0.0,
            nofile,
        })
    }
}

impl Config {
    /// The upgrade request that opens a connection on `channel`, with the
    /// deflate offer under `--deflate`.
    pub fn upgrade_request(&self, channel: &str) -> Vec<u8> {
        let mut request = self.wire.upgrade_request(&self.target, channel);
        if self.deflate.is_some() {
            crate::deflate::offer(&mut request);
        }
        request
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
