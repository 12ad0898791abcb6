//! Scenario `connect`: connections opened and joined per second. Open loop
//! by default (attempt k is due at `t0 + k / rate`, and its latency counts
//! from then, so a relay that stalls accepting cannot hide it), or closed
//! loop with `--concurrency` workers that each connect, join and close in
//! turn. Every attempt ends joined or failed by reason; once joined a
//! connection is closed (or kept with `--hold-open`).
//!
//! Joined means what it means for the protocol's wire (`proto/`): itty, its
//! own join event (the first message it receives); NATS, the `PONG` after
//! its `CONNECT`/`SUB`/`PING`; nchan (and `uws-raw`), the `101`. From then
//! on a message published to the channel reaches it, so `join ms` is the
//! time to the first message it can receive, for every protocol alike.

mod seconds;

use crate::net;
use crate::plot;
use crate::proto::{Framing, Incoming, NatsOp, NatsStream};
use crate::pubsub::state::{histogram, LATENCY_MAX_US, NS};
use crate::pubsub::summary::{add_common_params, opt};
use crate::pubsub::{join_all, Common, Config};
use crate::report::{round3, Report};
use crate::sys;
use crate::tls::Conn;
use crate::ws::{self, SetupError};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::timer::sleep;
use glommio::{spawn_local, LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Connection attempts per second (open loop).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Closed loop instead: this many workers, each connecting, joining and
    /// closing in turn, as fast as the relay answers (`--rate` is ignored).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Seconds of attempts.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Channels the attempts join (round-robin).
    #[arg(long, default_value_t = 100)]
    pub channels: usize,
    /// Keep joined connections open until the end instead of closing each
    /// after its join (a ramp of open connections; needs file descriptors).
    #[arg(long)]
    pub hold_open: bool,
    /// Seconds an attempt may take before it fails as a timeout.
    #[arg(long, default_value_t = 10)]
    pub attempt_timeout: u64,
    #[command(flatten)]
    pub common: Common,
}

/// What the executors share with the main thread.
struct Shared {
    cfg: Config,
    /// Channel c's name, and its upgrade request.
    channels: Vec<String>,
    requests: Vec<Vec<u8>>,
    rate: f64,
    concurrency: Option<usize>,
    hold_open: bool,
    attempt_timeout: Duration,
    t0: u64,
    end: u64,
    stop: AtomicBool,
    in_flight: AtomicU64,
    max_in_flight: u64,
}

/// One executor's counts.
struct Stats {
    attempts: u64,
    joined: u64,
    failures: BTreeMap<String, u64>,
    /// From the due time (open loop) or the start (closed loop) to `101`.
    handshake: Histogram<u64>,
    /// ... to joined (the own join event, NATS's `PONG`, nchan's `101`).
    join: Histogram<u64>,
    tick: Histogram<u64>,
    held: Vec<Conn>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            attempts: 0,
            joined: 0,
            failures: BTreeMap::new(),
            handshake: histogram(),
            join: histogram(),
            tick: histogram(),
            held: Vec::new(),
        }
    }
}

struct Tick {
    exec: usize,
    sec: u64,
    attempts: u64,
    joined: u64,
    failed: u64,
    tick: Histogram<u64>,
    cpu_ns: u64,
}

/// What an executor returns (the held streams stay behind).
struct Counts {
    attempts: u64,
    joined: u64,
    failures: BTreeMap<String, u64>,
    handshake: Histogram<u64>,
    join: Histogram<u64>,
}

pub fn run(a: ConnectArgs) -> anyhow::Result<()> {
    if !(a.rate > 0.0 && a.rate.is_finite()) || a.duration == 0 || a.channels == 0 {
        anyhow::bail!("--rate, --duration and --channels must be positive");
    }
    if a.concurrency == Some(0) {
        anyhow::bail!("--concurrency must be at least 1");
    }
    let expected_attempts = match a.concurrency {
        Some(c) => c,
        None => (a.rate * a.duration as f64) as usize,
    };
    let fds = if a.hold_open {
        expected_attempts
    } else {
        (a.rate as usize).max(a.concurrency.unwrap_or(0)) * 2
    };
    let mut common = a.common.clone();
    // Per-IP upgrade limits: by default spread over all of 127.0.0.1-254.
    if common.source_ips == net::SourceSpec::Auto {
        common.source_ips = net::SourceSpec::Ips(net::SourceIps::auto(254, 1, 1));
    }
    let cfg = Config::base(&common, fds)?;
    sys::pin_current_thread(&cfg.cpus)?;
    sys::init_clock();
    let load_before = sys::loadavg();
    let prefix = crate::pubsub::fresh_channel_prefix("connect");
    let channels: Vec<String> = (0..a.channels).map(|c| format!("{prefix}-c{c}")).collect();
    let requests = channels.iter().map(|c| cfg.upgrade_request(c)).collect();
    let t0 = sys::now_ns() + 200_000_000;
    let shared = Arc::new(Shared {
        max_in_flight: cfg.nofile.saturating_sub(128).max(1),
        cfg: cfg.clone(),
        channels,
        requests,
        rate: a.rate,
        concurrency: a.concurrency,
        hold_open: a.hold_open,
        attempt_timeout: Duration::from_secs(a.attempt_timeout.max(1)),
        t0,
        end: t0 + a.duration * NS,
        stop: AtomicBool::new(false),
        in_flight: AtomicU64::new(0),
    });
    let n_exec = cfg.cpus.len();
    let (tx, rx) = mpsc::channel::<Tick>();
    let mut handles = Vec::new();
    for (exec, &cpu) in cfg.cpus.iter().enumerate() {
        let shared = shared.clone();
        let tx = tx.clone();
        handles.push(
            LocalExecutorBuilder::new(Placement::Fixed(cpu))
                .name(&format!("connect{cpu}"))
                .io_memory(crate::pubsub::state::IO_MEMORY)
                .spawn(move || executor(shared, exec, n_exec, tx))
                .map_err(|e| anyhow::anyhow!("starting the executor on cpu {cpu}: {e}"))?,
        );
    }
    drop(tx);
    let relay_cpu = || cfg.relay_pid.and_then(|p| sys::pid_cpu_ns(p).ok());
    let relay_start = relay_cpu();
    let seconds = seconds::follow(&shared, &a, n_exec, rx, relay_cpu);
    let relay_end = relay_cpu();
    shared.stop.store(true, Relaxed);
    let counts = join_all(handles);
    let mut total = Counts {
        attempts: 0,
        joined: 0,
        failures: BTreeMap::new(),
        handshake: histogram(),
        join: histogram(),
    };
    for c in &counts {
        total.attempts += c.attempts;
        total.joined += c.joined;
        for (k, v) in &c.failures {
            *total.failures.entry(k.clone()).or_default() += v;
        }
        let _ = total.handshake.add(&c.handshake);
        let _ = total.join.add(&c.join);
    }
    let failed: u64 = total.failures.values().sum();

    let mut r = Report::new();
    r.add("scenario", "connect");
    match a.concurrency {
        Some(c) => {
            r.add("mode", "closed loop");
            r.add("concurrency", c);
        }
        None => {
            r.add("mode", "open loop");
            r.add("rate_attempts_per_s", a.rate);
        }
    }
    r.add("duration_s", a.duration);
    r.add("channels", a.channels);
    r.add("hold_open", a.hold_open);
    r.add("attempt_timeout_s", a.attempt_timeout);
    add_common_params(&mut r, &cfg);
    r.add("load_avg_before", opt(load_before));
    r.add("attempts", total.attempts);
    r.add("joined", total.joined);
    let parts: Vec<String> = total
        .failures
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    r.add_with_text(
        "failed",
        serde_json::json!(total.failures),
        if failed == 0 {
            "0".to_owned()
        } else {
            format!("{failed} ({})", parts.join("; "))
        },
    );
    r.add(
        "joined_per_s",
        round3(total.joined as f64 / a.duration as f64),
    );
    let q = |h: &Histogram<u64>, q: f64| {
        opt((!h.is_empty()).then(|| round3(h.value_at_quantile(q) as f64 / 1000.0)))
    };
    for (name, h) in [("handshake", &total.handshake), ("join", &total.join)] {
        for (label, qq) in [
            ("p50", 0.5),
            ("p90", 0.9),
            ("p99", 0.99),
            ("p999", 0.999),
            ("max", 1.0),
        ] {
            r.add(&format!("{name}_ms_{label}"), q(h, qq));
        }
    }
    let gen_util: Option<f64> = (!seconds.is_empty())
        .then(|| seconds.iter().map(|s| s.gen_util).sum::<f64>() / seconds.len() as f64);
    r.add_with_text(
        "generator_util_avg",
        opt(gen_util.map(round3)),
        gen_util.map_or("?".into(), |u| format!("{:.1}%", u * 100.0)),
    );
    r.add("generator_saturated", gen_util.is_some_and(|u| u > 0.9));
    if cfg.tls.is_some() {
        crate::pubsub::summary::add_generator_tls(&mut r, None);
    }
    match (relay_start, relay_end) {
        (Some(s), Some(e)) => {
            let cpu_s = (e - s) as f64 / 1e9;
            r.add("relay_cpu_s", round3(cpu_s));
            r.add(
                "relay_cpu_ms_per_join",
                opt((total.joined > 0).then(|| round3(cpu_s * 1e3 / total.joined as f64))),
            );
        }
        _ => {
            r.add("relay_cpu_s", serde_json::Value::Null);
            r.add("relay_cpu_ms_per_join", serde_json::Value::Null);
        }
    }
    r.add("load_avg_after", opt(sys::loadavg()));
    if a.common.json {
        println!("{}", r.to_json());
    } else {
        print!("{}", r.to_text());
    }
    if total.failures.keys().any(|k| k.contains("429")) {
        eprintln!(
            "NOTE: the relay refused upgrades with 429: its per-IP upgrade limit (10/s, burst \
             20, per shard by default) was reached. Raise the relay's per-IP upgrade limit, or \
             spread over more --source-ips."
        );
    }
    if gen_util.is_some_and(|u| u > 0.9) {
        eprintln!("NOTE: the generator was saturated: the rate it reached is a floor.");
    }
    if let Some(path) = &a.common.plot {
        plot::write(path, &seconds::chart(&seconds, &a));
    }
    Ok(())
}

async fn executor(
    shared: Arc<Shared>,
    exec: usize,
    n_exec: usize,
    ticks: mpsc::Sender<Tick>,
) -> Counts {
    let stats = Rc::new(RefCell::new(Stats::new()));
    match shared.concurrency {
        Some(c) => {
            for w in (exec..c).step_by(n_exec) {
                spawn_local(worker(shared.clone(), stats.clone(), w)).detach();
            }
        }
        None => {
            spawn_local(open_loop(shared.clone(), stats.clone(), exec, n_exec)).detach();
        }
    }
    let mut sec = 0u64;
    loop {
        let at = shared.t0 + sec * NS;
        let now = sys::now_ns();
        if now < at {
            sleep(Duration::from_nanos(at - now)).await;
        }
        if shared.stop.load(Relaxed) {
            break;
        }
        let tick = {
            let mut st = stats.borrow_mut();
            let h = st.tick.clone();
            st.tick.reset();
            Tick {
                exec,
                sec,
                attempts: st.attempts,
                joined: st.joined,
                failed: st.failures.values().sum(),
                tick: h,
                cpu_ns: sys::thread_cpu_ns(),
            }
        };
        if ticks.send(tick).is_err() {
            break;
        }
        sec += 1;
    }
    let mut st = stats.borrow_mut();
    st.held.clear();
    crate::tls::flush_thread_cpu();
    Counts {
        attempts: st.attempts,
        joined: st.joined,
        failures: std::mem::take(&mut st.failures),
        handshake: st.handshake.clone(),
        join: st.join.clone(),
    }
}

/// Attempt k (of all executors) is due at `t0 + k / rate`; this executor
/// takes every `n_exec`-th.
async fn open_loop(shared: Arc<Shared>, stats: Rc<RefCell<Stats>>, exec: usize, n_exec: usize) {
    let ns_per = 1e9 / shared.rate;
    let mut k = exec as u64;
    loop {
        let due = shared.t0 + (k as f64 * ns_per) as u64;
        if due >= shared.end || shared.stop.load(Relaxed) {
            break;
        }
        let now = sys::now_ns();
        if now < due {
            sleep(Duration::from_nanos(due - now)).await;
        }
        if shared.in_flight.load(Relaxed) >= shared.max_in_flight {
            let mut st = stats.borrow_mut();
            st.attempts += 1;
            *st.failures
                .entry("skipped: too many in flight for the open-file limit".into())
                .or_default() += 1;
        } else {
            spawn_local(attempt(shared.clone(), stats.clone(), k, due)).detach();
        }
        k += n_exec as u64;
    }
}

/// A closed-loop worker: one attempt after another until the end.
async fn worker(shared: Arc<Shared>, stats: Rc<RefCell<Stats>>, w: usize) {
    let mut k = w as u64;
    let step = shared.concurrency.unwrap_or(1) as u64;
    while sys::now_ns() < shared.t0 {
        sleep(Duration::from_millis(1)).await;
    }
    while sys::now_ns() < shared.end && !shared.stop.load(Relaxed) {
        attempt(shared.clone(), stats.clone(), k, sys::now_ns()).await;
        k += step;
    }
}

async fn attempt(shared: Arc<Shared>, stats: Rc<RefCell<Stats>>, k: u64, due: u64) {
    shared.in_flight.fetch_add(1, Relaxed);
    stats.borrow_mut().attempts += 1;
    let result = crate::pubsub::timed(shared.attempt_timeout, connect_and_join(&shared, k, due))
        .await
        .unwrap_or(Err(SetupError::Timeout("attempt")));
    let mut st = stats.borrow_mut();
    match result {
        Ok((stream, handshake_us)) => {
            let join_us = sys::now_ns().saturating_sub(due) / 1000;
            st.joined += 1;
            st.handshake
                .saturating_record(handshake_us.min(LATENCY_MAX_US));
            st.join.saturating_record(join_us.min(LATENCY_MAX_US));
            st.tick.saturating_record(join_us.min(LATENCY_MAX_US));
            if shared.hold_open {
                st.held.push(stream);
            }
        }
        Err(e) => *st.failures.entry(e.label()).or_default() += 1,
    }
    shared.in_flight.fetch_sub(1, Relaxed);
}

/// Connects (over TLS for `wss://`), upgrades, sends the protocol's join
/// frames and reads until joined; returns the stream and the time to `101`
/// (us from `due`).
async fn connect_and_join(shared: &Shared, k: u64, due: u64) -> Result<(Conn, u64), SetupError> {
    let cfg = &shared.cfg;
    let wire = cfg.wire;
    let from = cfg.sources.for_conn(k as usize);
    let tcp = net::connect(cfg.target.addr, from, shared.attempt_timeout).await?;
    let mut stream = match &cfg.tls {
        None => Conn::Plain(tcp),
        Some(tls) => tls.connect(tcp).await?,
    };
    let channel = k as usize % shared.requests.len();
    let mut buf = vec![0u8; 4096];
    let (mut start, mut filled) =
        ws::handshake(&mut stream, &shared.requests[channel], &mut buf).await?;
    let handshake_us = sys::now_ns().saturating_sub(due) / 1000;
    if wire.joined_on_upgrade() {
        return Ok((stream, handshake_us));
    }
    // NATS: CONNECT, SUB, PING in one frame; joined at the PONG.
    let mut join_frames = Vec::new();
    wire.join_frames(&shared.channels[channel], true, &mut join_frames);
    if !join_frames.is_empty() {
        stream
            .write_all(&join_frames)
            .await
            .map_err(|e| SetupError::Io(e.to_string()))?;
    }
    let mut nats = (wire.framing() == Framing::NatsStream).then(NatsStream::default);
    loop {
        while let Some(h) = ws::parse_header(&buf[start..filled]) {
            let total = h.header_len + h.payload_len;
            if total > filled - start {
                break;
            }
            let payload = &buf[start + h.header_len..start + total];
            let joined = match (&mut nats, h.opcode) {
                (Some(nats), ws::OP_BINARY | ws::OP_TEXT | 0) => {
                    // A PING before our PONG is left unanswered: the
                    // connection closes (or is held) right after joining.
                    let mut pong = false;
                    nats.feed(payload, &mut |op| pong |= op == NatsOp::Pong);
                    pong
                }
                (None, ws::OP_TEXT) => {
                    wire.classify(payload) == (Incoming::Event { own_join: true })
                }
                _ => false,
            };
            if joined {
                return Ok((stream, handshake_us));
            }
            if h.opcode == ws::OP_CLOSE {
                return Err(SetupError::ClosedBeforeJoin("close frame".into()));
            }
            start += total;
        }
        ws::compact(&mut buf, &mut start, &mut filled);
        if filled == buf.len() {
            return Err(SetupError::BadHandshake(
                "frame before own join too large".into(),
            ));
        }
        match stream.read(&mut buf[filled..]).await {
            Ok(0) => return Err(SetupError::ClosedBeforeJoin("eof".into())),
            Ok(n) => filled += n,
            Err(e) => return Err(SetupError::ClosedBeforeJoin(e.to_string())),
        }
    }
}
