//! Scenario `fanout`: P publishers send to one channel of N members; how
//! many deliveries per second the relay sustains, and the latency of each.
//!
//! - Members connect with bounded concurrency, spread over the executors,
//!   and each waits for its own join event. Publishers are separate
//!   connections that also join the channel (no echo), so every published
//!   message is expected at every member: expected = published x members.
//! - Publishing starts when every connection has joined, open loop: message
//!   k of publisher p is scheduled at `t0 + (k*P + p) / rate`, sent late if
//!   the publisher is behind (never skipped before the end), and its latency
//!   is measured from the scheduled time, not from the write (no coordinated
//!   omission).
//! - Payload: `[<publisher>,<seq>,<scheduled_ns>,"<padding>"]`, padded to
//!   `--payload-bytes`. The relay embeds it verbatim at the end of its
//!   envelope, so a receiver reads the three integers after the last
//!   `"message":[` and parses nothing else.
//! - Receiving (`--recv`): members connect, handshake and join through
//!   glommio's `TcpStream`. Then, by default (`epoll`), their sockets are
//!   read by one pump per executor that polls an epoll set without ever
//!   sleeping on a socket while traffic flows; with `uring` they stay on
//!   glommio (io_uring poll, then recv). On loopback the relay's `send`
//!   runs the receiver's wake-up; glommio's rings (no
//!   `IORING_SETUP_COOP_TASKRUN`) turn each into an inter-processor
//!   interrupt, which here cost the relay ~40% more cpu per delivery and
//!   saturated the generator (README, "Why epoll").

mod exec;
mod recv;
mod state;
mod summary;

use crate::sys;
use crate::ws::Target;
use glommio::{LocalExecutorBuilder, Placement};
use state::{ExecStats, Padded, Shared, Tick, IO_MEMORY, NS};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The relay: ws://host:port (traffic goes only there).
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    /// Members of the channel (receivers), spread over the executors.
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Publishers: separate connections on the same channel, no echo.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Messages per second in total, spread evenly over the publishers.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
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
    /// Channel name (default: a fresh `loadtest-fanout-<pid>-<time>`).
    #[arg(long)]
    pub channel: Option<String>,
    /// The relay's pid, to report its cpu use (from /proc/PID/stat).
    #[arg(long)]
    pub relay_pid: Option<u32>,
    /// How members read: `uring` (glommio's TcpStream: io_uring poll, then
    /// recv) or `epoll` (after the join, one pump per executor polls an
    /// epoll set with timeout 0 and sleeps 50 us when idle; the relay's
    /// sends then wake no sleeper, see README).
    #[arg(long, value_enum, default_value_t = RecvMode::Epoll)]
    pub recv: RecvMode,
    /// Print the summary as one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecvMode {
    Uring,
    Epoll,
}

/// Everything known before the run, for the summary.
pub(super) struct Setup {
    pub channel: String,
    pub cpus: Vec<usize>,
    pub load_before: Option<String>,
    pub members_joined: usize,
    pub publishers_joined: usize,
    pub failed: usize,
    pub setup_s: f64,
}

/// What the main thread saw while publishing.
pub(super) struct Measured {
    /// Per completed second (all executors ticked): deliveries so far.
    pub delivered_at: BTreeMap<u64, u64>,
    /// Per completed second: each executor thread's cpu time so far (ns).
    pub cpu_at: BTreeMap<u64, Vec<u64>>,
    pub relay_cpu_start: Option<u64>,
    pub relay_cpu_end_publishing: Option<u64>,
    pub relay_cpu_end: Option<u64>,
    pub proc_cpu_start: u64,
    pub proc_cpu_end_publishing: Option<u64>,
    pub proc_cpu_end: u64,
    pub stalled: bool,
    pub finished_s: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cpus = validate(&args)?;
    let connections = args.members + args.publishers;
    ensure_fd_limit(connections as u64 + 64)?;
    let target = Target::parse(&args.url)?;
    sys::pin_current_thread(&cpus)?;
    sys::init_clock();
    let channel = args.channel.clone().unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("loadtest-fanout-{}-{t}", std::process::id())
    });
    if channel.is_empty()
        || !channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        anyhow::bail!("--channel may hold only ASCII letters, digits and - _ . :");
    }
    if let Some(pid) = args.relay_pid {
        sys::pid_cpu_ns(pid)?;
    }
    let load_before = sys::loadavg();

    let n_exec = cpus.len();
    let shared = Arc::new(Shared {
        request: target.upgrade_request(&channel, ""),
        target,
        recv: args.recv,
        members: args.members,
        publishers: args.publishers,
        rate: args.rate,
        payload_bytes: args.payload_bytes,
        duration_ns: args.duration * NS,
        warmup_ns: args.warmup * NS,
        grace_ns: (args.grace * 1e9) as u64,
        join_timeout: Duration::from_secs(10),
        members_joined: AtomicUsize::new(0),
        publishers_joined: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        failures: Mutex::new(BTreeMap::new()),
        setup_done: AtomicUsize::new(0),
        t0: AtomicU64::new(0),
        abort: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        published: AtomicU64::new(0),
        publishers_done: AtomicUsize::new(0),
        delivered: (0..n_exec).map(|_| Padded::default()).collect(),
    });

    let (tick_tx, tick_rx) = mpsc::channel::<Tick>();
    let per_exec_concurrency = args.connect_concurrency.div_ceil(n_exec).max(1);
    let mut handles = Vec::new();
    for (exec, &cpu) in cpus.iter().enumerate() {
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

    let setup_s = match wait_for_setup(&shared, &args, n_exec) {
        Ok(s) => s,
        Err(e) => {
            shared.abort.store(true, Relaxed);
            shared.stop.store(true, Relaxed);
            join_all(handles);
            return Err(e);
        }
    };
    let setup = Setup {
        channel,
        cpus,
        load_before,
        members_joined: shared.members_joined.load(Relaxed),
        publishers_joined: shared.publishers_joined.load(Relaxed),
        failed: shared.failed.load(Relaxed),
        setup_s,
    };
    let measured = measure(&shared, &args, &setup, tick_rx);
    shared.stop.store(true, Relaxed);
    let stats = join_all(handles);
    let complete = stats.len() == n_exec;
    let mut total = ExecStats::new();
    for s in &stats {
        total.merge(s);
    }
    let summary = summary::Summary::new(&args, &setup, &measured, &total, complete);
    if args.json {
        println!("{}", summary.report.to_json());
    } else {
        print!("{}", summary.report.to_text());
    }
    for note in &summary.notes {
        eprintln!("NOTE: {note}");
    }
    Ok(())
}

/// Checks the arguments; returns the generator's cpus.
fn validate(args: &Args) -> anyhow::Result<Vec<usize>> {
    if args.members == 0 || args.publishers == 0 {
        anyhow::bail!("--members and --publishers must be at least 1");
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        anyhow::bail!("--rate must be a positive number of messages per second");
    }
    if args.duration <= args.warmup {
        anyhow::bail!("--duration must exceed --warmup ({} s)", args.warmup);
    }
    if !(0.0..=60.0).contains(&args.grace) {
        anyhow::bail!("--grace must be between 0 and 60 seconds");
    }
    if args.payload_bytes > 60 * 1024 {
        anyhow::bail!(
            "--payload-bytes above 61440 is not supported (frames must fit one read buffer)"
        );
    }
    if args.connect_concurrency == 0 {
        anyhow::bail!("--connect-concurrency must be at least 1");
    }
    let allowed = sys::allowed_cpus();
    let cpus = args
        .cpus
        .clone()
        .map(|c| c.0)
        .unwrap_or_else(|| vec![*allowed.last().unwrap_or(&0)]);
    if let Some(c) = cpus.iter().find(|c| !allowed.contains(c)) {
        anyhow::bail!("cpu {c} is not available to this process (allowed: {allowed:?})");
    }
    Ok(cpus)
}

/// Waits until every executor has every connection joined or failed;
/// returns the setup time in seconds. Progress once a second on stderr.
fn wait_for_setup(shared: &Shared, args: &Args, n_exec: usize) -> anyhow::Result<f64> {
    let start = sys::now_ns();
    let mut last_print = start;
    let deadline = start + args.setup_timeout * NS;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = sys::now_ns();
        let done = shared.setup_done.load(Relaxed) == n_exec;
        if done || now - last_print >= NS {
            last_print = now;
            eprintln!(
                "setup {:5.1}s: members joined {}/{}, publishers joined {}/{}, failed {}",
                (now - start) as f64 / 1e9,
                shared.members_joined.load(Relaxed),
                args.members,
                shared.publishers_joined.load(Relaxed),
                args.publishers,
                shared.failed.load(Relaxed),
            );
        }
        if done {
            break;
        }
        if now >= deadline {
            anyhow::bail!(
                "setup did not finish within {} s (--setup-timeout){}",
                args.setup_timeout,
                format_failures(shared)
            );
        }
    }
    let members_joined = shared.members_joined.load(Relaxed);
    let publishers_joined = shared.publishers_joined.load(Relaxed);
    let failed = shared.failed.load(Relaxed);
    if members_joined == 0 || publishers_joined == 0 {
        anyhow::bail!(
            "{members_joined} members and {publishers_joined} publishers joined: nothing to \
             measure{}",
            format_failures(shared)
        );
    }
    if failed > 0 {
        eprintln!(
            "WARNING: {failed} of {} connections failed to join; the run goes on with \
             {members_joined} members and {publishers_joined} publishers{}",
            args.members + args.publishers,
            format_failures(shared)
        );
    }
    Ok((sys::now_ns() - start) as f64 / 1e9)
}

/// Starts publishing and follows the run: merges the executors' ticks into
/// one progress line a second, then waits out the grace period (or until
/// every expected delivery arrived).
fn measure(shared: &Shared, args: &Args, setup: &Setup, ticks: mpsc::Receiver<Tick>) -> Measured {
    let n_exec = setup.cpus.len();
    let relay_cpu = || args.relay_pid.and_then(|p| sys::pid_cpu_ns(p).ok());
    let mut m = Measured {
        delivered_at: BTreeMap::new(),
        cpu_at: BTreeMap::new(),
        relay_cpu_start: relay_cpu(),
        relay_cpu_end_publishing: None,
        relay_cpu_end: None,
        proc_cpu_start: sys::process_cpu_ns(),
        proc_cpu_end_publishing: None,
        proc_cpu_end: 0,
        stalled: false,
        finished_s: 0.0,
    };
    // t0 a little ahead, so that every executor sees it in time.
    let t0 = sys::now_ns() + 100_000_000;
    shared.t0.store(t0, Relaxed);
    let end = t0 + args.duration * NS;
    let grace_end = end + shared.grace_ns;
    let mut pending: BTreeMap<u64, Vec<Tick>> = BTreeMap::new();
    let mut relay_prev = m.relay_cpu_start;
    loop {
        if let Ok(tick) = ticks.recv_timeout(Duration::from_millis(20)) {
            let sec = tick.sec;
            let group = pending.entry(sec).or_default();
            group.push(tick);
            if group.len() == n_exec {
                let mut group = pending.remove(&sec).unwrap_or_default();
                group.sort_by_key(|t| t.exec);
                let relay_now = relay_cpu();
                if sec == args.duration {
                    m.relay_cpu_end_publishing = relay_now;
                    m.proc_cpu_end_publishing = Some(sys::process_cpu_ns());
                }
                let delivered: u64 = group.iter().map(|t| t.delivered).sum();
                let cpu_now: Vec<u64> = group.iter().map(|t| t.cpu_ns).collect();
                if sec > 0 {
                    progress_line(args, setup, &m, &group, relay_now.zip(relay_prev));
                }
                relay_prev = relay_now;
                m.delivered_at.insert(sec, delivered);
                m.cpu_at.insert(sec, cpu_now);
            }
        }
        let now = sys::now_ns();
        let next_sec = m.delivered_at.keys().next_back().map_or(0, |s| s + 1);
        if !m.stalled && next_sec <= args.duration && now > t0 + next_sec * NS + 1_500_000_000 {
            m.stalled = true;
            eprintln!(
                "WARNING: second {next_sec} is over 1.5 s late: an executor is stalled \
                 (generator-side; figures from here on are suspect)"
            );
        }
        if now >= end && m.delivered_at.contains_key(&args.duration) {
            let publishing_over = shared.publishers_done.load(Relaxed) >= setup.publishers_joined;
            let expected = shared.published.load(Relaxed) * setup.members_joined as u64;
            let received: u64 = shared.delivered.iter().map(|d| d.0.load(Relaxed)).sum();
            if (publishing_over && received >= expected) || now >= grace_end {
                break;
            }
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

/// One line on stderr for second `sec` (the ticks of every executor).
fn progress_line(
    args: &Args,
    setup: &Setup,
    m: &Measured,
    group: &[Tick],
    relay: Option<(u64, u64)>,
) {
    let sec = group[0].sec;
    let mut merged = state::histogram();
    for t in group {
        let _ = merged.add(&t.tick);
    }
    let delivered: u64 = group.iter().map(|t| t.delivered).sum();
    let published: u64 = group.iter().map(|t| t.published).sum();
    let prev_delivered = m.delivered_at.get(&(sec - 1)).copied().unwrap_or(0);
    let prev_cpu = m.cpu_at.get(&(sec - 1));
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
    let relay = match relay {
        Some((now, prev)) => format!(" relay {:3.0}%", (now - prev) as f64 / 1e7),
        None => String::new(),
    };
    let phase = if sec > args.duration {
        " (grace)"
    } else if sec <= args.warmup {
        " (warm-up)"
    } else {
        ""
    };
    eprintln!(
        "{sec:4}s deliveries/s {:>10} p99 {:8.3} ms published {:>8} | gen {}{relay}{phase}",
        delivered - prev_delivered,
        merged.value_at_quantile(0.99) as f64 / 1000.0,
        published,
        gen.join(" "),
    );
}

fn format_failures(shared: &Shared) -> String {
    let failures = shared.failures.lock().unwrap();
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
fn join_all(handles: Vec<glommio::ExecutorJoinHandle<ExecStats>>) -> Vec<ExecStats> {
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

/// Raises the soft open-file limit to what the run needs, within the hard one.
fn ensure_fd_limit(needed: u64) -> anyhow::Result<()> {
    // SAFETY: rlimit is plain data; get/setrlimit read or write it.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Ok(());
        }
        if lim.rlim_cur >= needed {
            return Ok(());
        }
        if lim.rlim_max < needed {
            anyhow::bail!(
                "{needed} file descriptors needed but the hard limit is {} (ulimit -Hn)",
                lim.rlim_max
            );
        }
        lim.rlim_cur = needed;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            anyhow::bail!("cannot raise the open-file limit to {needed}");
        }
    }
    Ok(())
}
