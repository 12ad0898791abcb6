//! A run from the main thread: the executors started with the shared
//! state, the setup followed until every connection joined or failed, then
//! publishing measured (`measure.rs`) and the executors stopped and joined.

use super::config::Config;
use super::exec::{join_all, start_executors};
use super::measure;
use super::outcome::{format_failures, Outcome, Setup};
use super::state::{ExecStats, Padded, Plan, Shared, Tick, NS};
use crate::sys;
use glommio::ExecutorJoinHandle;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// A plan whose connections are open and joined, before publishing.
pub struct Running {
    pub cfg: Config,
    shared: Arc<Shared>,
    handles: Vec<ExecutorJoinHandle<ExecStats>>,
    ticks: mpsc::Receiver<Tick>,
    pub setup: Setup,
}

/// What the executors and the main thread share for a run of `plan`.
fn shared(cfg: &Config, plan: Plan) -> Shared {
    let n_exec = cfg.cpus.len();
    let n_channels = plan.channels.len();
    Shared {
        wire: cfg.wire,
        target: cfg.target.clone(),
        tls: cfg.tls.clone(),
        addrs: cfg.addrs.clone(),
        sources: cfg.sources.clone(),
        recv: cfg.recv,
        plan,
        rate: cfg.rate,
        payload_bytes: cfg.payload_bytes,
        payload_fill: cfg.payload_fill,
        deflate: cfg.deflate,
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
    }
}

/// Opens and joins every connection of `plan`. Progress on stderr.
pub fn start(cfg: &Config, plan: Plan) -> anyhow::Result<Running> {
    sys::pin_current_thread(&cfg.cpus)?;
    sys::init_clock();
    let load_before = sys::loadavg();
    let n_exec = cfg.cpus.len();
    let shared = Arc::new(shared(cfg, plan));
    let (tick_tx, tick_rx) = mpsc::channel::<Tick>();
    let handles = start_executors(&shared, &cfg.cpus, cfg.connect_concurrency, &tick_tx)?;
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
