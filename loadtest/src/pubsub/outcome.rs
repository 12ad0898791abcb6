//! What a run saw, as plain data for the summary: the setup, each
//! second, the main thread's measurements, and the executors' counters.

use super::state::ExecStats;
use std::collections::BTreeMap;

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
    /// The engine's cpu (`--engine-pid`) at the start and the end of
    /// publishing.
    pub engine_cpu_start: Option<u64>,
    pub engine_cpu_end_publishing: Option<u64>,
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

/// The failures by reason, one indented line each (empty when none).
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
