//! The executors' lifecycle, and the only place that spawns: one pinned
//! glommio executor per generator cpu, started and joined here; on each,
//! its share of the plan's connections join (receivers first), each
//! joined connection's reading goes to the epoll pump or to a task of its
//! own, publishers publish, and a tick goes to the main thread every
//! second. `join.rs` and `publish.rs` return futures; this module decides
//! which run as tasks.

use super::epoll::{self, EpollSet};
use super::join::{self, Joined};
use super::local::{wait_for_t0, Local};
use super::publish::{self, Pipeline};
use super::recv::{Reader, Receiver, Writer};
use super::state::*;
use crate::sys;
use glommio::timer::sleep;
use glommio::{spawn_local, ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Starts one executor per cpu of `cpus`, each with its share of
/// `connect_concurrency`, sending its ticks to `ticks`.
pub fn start_executors(
    shared: &Arc<Shared>,
    cpus: &[usize],
    connect_concurrency: usize,
    ticks: &mpsc::Sender<Tick>,
) -> anyhow::Result<Vec<ExecutorJoinHandle<ExecStats>>> {
    let n_exec = cpus.len();
    let per_exec_concurrency = connect_concurrency.div_ceil(n_exec).max(1);
    let mut handles = Vec::new();
    for (exec, &cpu) in cpus.iter().enumerate() {
        let shared = shared.clone();
        let tx = ticks.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("loadgen{cpu}"))
            .io_memory(IO_MEMORY)
            .spawn(move || executor(shared, exec, n_exec, per_exec_concurrency, tx))
            .map_err(|e| anyhow::anyhow!("starting the executor on cpu {cpu}: {e}"))?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Joins the executors, waiting at most 10 s in all: an executor that does
/// not stop is reported and left behind (the process exits after the report).
pub fn join_all<T: Send + 'static>(handles: Vec<ExecutorJoinHandle<T>>) -> Vec<T> {
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

/// Where a joined connection's reading goes.
#[derive(Clone)]
enum Reading {
    /// A task of its own reads it through glommio (`--recv uring`).
    Task,
    /// Into the executor's epoll set (`--recv epoll`). Connection tasks
    /// hold a `Weak`: the executor (and its pump, which it awaits) own the
    /// set, so the sockets in it close when the executor returns, even if
    /// a detached task is still pending then (glommio never drops those).
    Epoll(Weak<RefCell<EpollSet>>),
}

impl Reading {
    /// Hands a joined connection's reading over; `writer` is a member's,
    /// kept to answer pings (a publisher's writer publishes instead).
    fn hand_over(&self, rx: Receiver, reader: Reader, writer: Option<Writer>) {
        match self {
            Reading::Task => {
                spawn_local(rx.run(reader, writer)).detach();
            }
            Reading::Epoll(set) => {
                // The set outlives every task that can still join.
                if let Some(set) = set.upgrade() {
                    set.borrow_mut().add(rx, reader, writer);
                }
            }
        }
    }
}

/// One executor: its share of connections and publishers, then a tick per
/// second; returns its counters.
async fn executor(
    shared: Arc<Shared>,
    exec: usize,
    n_exec: usize,
    concurrency: usize,
    ticks: mpsc::Sender<Tick>,
) -> ExecStats {
    let local = Rc::new(Local::new(shared.clone(), exec, concurrency));
    let set = match shared.recv {
        RecvMode::Uring => None,
        RecvMode::Epoll => match EpollSet::new() {
            Ok(set) => Some(Rc::new(RefCell::new(set))),
            Err(e) => {
                eprintln!("WARNING: epoll_create1 failed ({e}); reading through io_uring");
                None
            }
        },
    };
    let reading = match &set {
        Some(set) => Reading::Epoll(Rc::downgrade(set)),
        None => Reading::Task,
    };
    let pump = set
        .clone()
        .map(|set| spawn_local(epoll::pump(set, local.clone())));
    let stats = run_executor(&local, reading, n_exec, ticks).await;
    // The pump may be blocked in glommio's helper thread (at most 20 ms):
    // the executor must outlive that call, or the helper thread panics.
    local.shared.stop.store(true, Relaxed);
    if let Some(pump) = pump {
        pump.await;
    }
    crate::tls::flush_thread_cpu();
    // `set` goes here, and with it the members' sockets: a sweep's steps
    // must not add up to the open-file limit.
    stats
}

/// Spawns this executor's connections and push clients, waits for them to
/// settle, then ticks until the run stops.
async fn run_executor(
    local: &Rc<Local>,
    reading: Reading,
    n_exec: usize,
    ticks: mpsc::Sender<Tick>,
) -> ExecStats {
    let shared = local.shared.clone();
    let exec = local.exec;
    let plan = &shared.plan;
    let mine: Vec<usize> = (exec..plan.conns.len()).step_by(n_exec).collect();
    let (receivers, others): (Vec<usize>, Vec<usize>) =
        mine.iter().partition(|&&i| plan.conns[i].receives);
    for &i in &receivers {
        spawn_local(connection(local.clone(), reading.clone(), i)).detach();
    }
    // Publisher-only connections join after the receivers, so that their
    // join events are the last ones the receivers see before the messages.
    if !wait_settled(local, receivers.len()).await {
        return local.take_stats();
    }
    for &i in &others {
        spawn_local(connection(local.clone(), reading.clone(), i)).detach();
    }
    let mut pushers = 0;
    if plan.push.is_some() {
        for p in (exec..plan.pub_channel.len()).step_by(n_exec) {
            spawn_local(push_client(local.clone(), p as u32)).detach();
            pushers += 1;
        }
    }
    if !wait_settled(local, mine.len() + pushers).await {
        return local.take_stats();
    }
    shared.setup_done.fetch_add(1, Relaxed);
    send_ticks(local, ticks).await;
    local.take_stats()
}

/// Sends this executor's tick at `t0 + sec` seconds, every second, until
/// the run stops (or the main thread no longer listens).
async fn send_ticks(local: &Local, ticks: mpsc::Sender<Tick>) {
    let shared = &local.shared;
    let Some(t0) = wait_for_t0(shared).await else {
        return;
    };
    let mut sec = 0u64;
    'ticks: loop {
        let at = t0 + sec * NS;
        loop {
            if shared.stop.load(Relaxed) {
                break 'ticks;
            }
            let now = sys::now_ns();
            if now >= at {
                break;
            }
            sleep(Duration::from_nanos((at - now).min(20_000_000))).await;
        }
        let tick = {
            let mut st = local.stats.borrow_mut();
            let h = st.tick.clone();
            st.tick.reset();
            Tick {
                exec: local.exec,
                sec,
                delivered: st.delivered,
                published: st.published,
                tick: h,
                cpu_ns: sys::thread_cpu_ns(),
                disconnected: st.disconnected(),
            }
        };
        if ticks.send(tick).is_err() {
            break;
        }
        sec += 1;
    }
}

/// Waits until `n` of this executor's connections have joined or failed;
/// false when the run was abandoned.
async fn wait_settled(local: &Local, n: usize) -> bool {
    while local.settled.get() < n {
        if local.shared.abort.load(Relaxed) {
            return false;
        }
        sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Connection `i` of the plan: joins, hands its reading over, and
/// publishes when it is a publisher.
async fn connection(local: Rc<Local>, reading: Reading, i: usize) {
    let spec = local.shared.plan.conns[i];
    let Some(Joined { reader, writer, rx }) = join::join(&local, i).await else {
        return;
    };
    match (spec.publisher, &reading) {
        (Some(p), _) => {
            reading.hand_over(rx, reader, None);
            publish::publish_ws(&local, spec, p, writer).await;
        }
        // A member has nothing else to do: this task reads it.
        (None, Reading::Task) => rx.run(reader, Some(writer)).await,
        (None, Reading::Epoll(_)) => reading.hand_over(rx, reader, Some(writer)),
    }
}

/// HTTP push client `p`: connects, then publishes while a task of its own
/// reads the responses.
async fn push_client(local: Rc<Local>, p: u32) {
    let Some(stream) = join::connect_push(&local, p).await else {
        return;
    };
    let depth = local.shared.plan.push.as_ref().map_or(1, |s| s.pipeline);
    let (reader, writer) = futures_lite::io::split(stream);
    let pipeline = Rc::new(Pipeline::new(depth));
    spawn_local(publish::read_responses(
        local.clone(),
        reader,
        pipeline.clone(),
    ))
    .detach();
    publish::publish_push(&local, p, writer, &pipeline).await;
}
