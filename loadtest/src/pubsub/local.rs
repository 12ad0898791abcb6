//! One executor's state, shared by its tasks (single-threaded), and the
//! waits they share. `Local` owns no connection: the epoll set belongs to
//! the executor (`exec.rs`) and each receive side holds only the counters
//! it adds to, so dropping `Local` frees everything it holds and no
//! reference cycle can keep it alive.

use super::config::InflateMode;
use super::state::{ExecStats, Shared};
use crate::deflate::Inflater;
use crate::sys;
use glommio::sync::Semaphore;
use glommio::timer::sleep;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Per-executor state shared by its tasks.
pub struct Local {
    pub shared: Arc<Shared>,
    pub exec: usize,
    /// This executor's counters. An `Rc` of its own so that receive sides
    /// hold the counters without holding `Local`.
    pub stats: Rc<RefCell<ExecStats>>,
    /// Handshakes in flight on this executor (its share of
    /// `--connect-concurrency`).
    pub connect: Rc<Semaphore>,
    /// Connections (and push clients) that joined or failed.
    pub settled: Cell<usize>,
    /// Inflates compressed frames for every receive side (`--deflate`).
    pub inflater: Rc<RefCell<Inflater>>,
}

impl Local {
    pub fn new(shared: Arc<Shared>, exec: usize, concurrency: usize) -> Local {
        let head_only = shared.deflate == Some(InflateMode::Head);
        Local {
            shared,
            exec,
            stats: Rc::new(RefCell::new(ExecStats::new())),
            connect: Rc::new(Semaphore::new(concurrency as u64)),
            settled: Cell::new(0),
            inflater: Rc::new(RefCell::new(Inflater::new(head_only))),
        }
    }

    /// The counters so far, for the main thread (fresh ones stay behind).
    pub fn take_stats(&self) -> ExecStats {
        self.stats.replace(ExecStats::new())
    }

    /// Counts one message written (due at `at`) that owes `owed` deliveries.
    pub fn published(&self, at: u64, owed: u64) {
        let now = sys::now_ns();
        {
            let mut st = self.stats.borrow_mut();
            st.published += 1;
            st.expected += owed;
            st.lag.saturating_record(now.saturating_sub(at) / 1000);
        }
        self.shared.published.fetch_add(1, Relaxed);
        self.shared.expected.fetch_add(owed, Relaxed);
    }
}

/// Publishing start (`t0`), once the main thread has set it; `None` when
/// the run was abandoned or stopped first.
pub async fn wait_for_t0(shared: &Shared) -> Option<u64> {
    loop {
        if shared.abort.load(Relaxed) || shared.stop.load(Relaxed) {
            return None;
        }
        let t0 = shared.t0.load(Relaxed);
        if t0 != 0 {
            return Some(t0);
        }
        sleep(Duration::from_millis(1)).await;
    }
}

/// `f`, or `None` after `d`.
pub async fn timed<T>(d: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        sleep(d).await;
        None
    })
    .await
}
