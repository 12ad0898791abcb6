//! `--sweep`: raise the rate step by step (each step a fresh run on fresh
//! connections and channels) until p99 passes `--p99-max-ms` or anything is
//! lost, then bisect between the last rate that held and the first that did
//! not; the highest rate that held is the sustainable one.

use crate::pubsub::summary::KeyFigures;
use crate::report::round3;
use serde_json::{json, Value};

#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    /// Sweep the rate: start at the scenario's rate, multiply it by
    /// `--sweep-factor` while each step holds, then bisect.
    #[arg(long)]
    pub sweep: bool,
    /// A step holds while its p99 latency stays at or under this (ms), and
    /// nothing is lost, unsent or disconnected.
    #[arg(long, default_value_t = 50.0)]
    pub p99_max_ms: f64,
    /// Rate multiplier between steps while they hold.
    #[arg(long, default_value_t = 2.0)]
    pub sweep_factor: f64,
    /// Bisection steps between the last rate that held and the first that
    /// did not.
    #[arg(long, default_value_t = 2)]
    pub sweep_refine: usize,
    /// Most steps in all.
    #[arg(long, default_value_t = 12)]
    pub sweep_steps: usize,
    /// Runs a step that failed this many times more at the same rate; it
    /// holds if any run held. On a shared host a stall of a few seconds
    /// fails a step a server sustains; every server gets the same retries.
    #[arg(long, default_value_t = 0)]
    pub sweep_retries: usize,
}

impl SweepArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.sweep && !(self.sweep_factor > 1.0 && self.sweep_factor.is_finite()) {
            anyhow::bail!("--sweep-factor must be above 1");
        }
        if self.sweep && (self.p99_max_ms.is_nan() || self.p99_max_ms <= 0.0) {
            anyhow::bail!("--p99-max-ms must be positive");
        }
        Ok(())
    }
}

/// One step of a sweep.
#[derive(Debug, Clone)]
pub struct Step {
    /// The scenario's rate knob (per member for `rooms`).
    pub rate: f64,
    pub key: KeyFigures,
    pub held: bool,
    /// Why it did not hold ("" when it did).
    pub why: String,
    /// Why each earlier run at this rate failed (`--sweep-retries`); `key`
    /// is the last run's.
    pub retried: Vec<String>,
}

/// Whether a step's figures held.
pub fn verdict(key: &KeyFigures, p99_max_ms: f64) -> (bool, String) {
    let mut why = Vec::new();
    if key.lost > 0 {
        why.push(format!("lost {}", key.lost));
    }
    if key.unsent > 0 {
        why.push(format!("unsent {}", key.unsent));
    }
    if key.disconnects > 0 {
        why.push(format!("{} disconnects", key.disconnects));
    }
    if key.failed > 0 {
        why.push(format!("{} failed to join", key.failed));
    }
    match key.p99_ms {
        Some(p) if p > p99_max_ms => why.push(format!("p99 {p:.1} ms > {p99_max_ms} ms")),
        Some(_) => {}
        None => why.push("no latency samples".to_owned()),
    }
    if key.stalled {
        why.push("generator stalled".to_owned());
    }
    (why.is_empty(), why.join(", "))
}

/// Whether a step's runs are over: its last run held, or the `retried`
/// runs before it used up `--sweep-retries`.
pub fn step_done(held: bool, retried: usize, args: &SweepArgs) -> bool {
    held || retried >= args.sweep_retries
}

/// The next rate to try, or `None` when the sweep is over.
pub fn next_rate(steps: &[Step], args: &SweepArgs) -> Option<f64> {
    let last = steps.last()?;
    if steps.len() >= args.sweep_steps {
        return None;
    }
    let Some(first_fail) = steps.iter().position(|s| !s.held) else {
        return Some(last.rate * args.sweep_factor);
    };
    let refined = steps.len() - 1 - first_fail;
    if refined >= args.sweep_refine {
        return None;
    }
    let best = best(steps)?;
    let lowest_fail = steps
        .iter()
        .filter(|s| !s.held && s.rate > best.rate)
        .map(|s| s.rate)
        .fold(f64::INFINITY, f64::min);
    if !lowest_fail.is_finite() {
        return None;
    }
    let mid = (best.rate + lowest_fail) / 2.0;
    // Not worth a step when the bracket is already within 5%.
    (lowest_fail / best.rate > 1.05).then_some(mid)
}

/// The highest rate that held.
pub fn best(steps: &[Step]) -> Option<&Step> {
    steps
        .iter()
        .filter(|s| s.held)
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.digits$}"))
}

/// The steps as a text table (`rate_name`: the knob's name and unit).
pub fn table(steps: &[Step], rate_name: &str) -> String {
    let header = [
        "step",
        rate_name,
        "deliveries/s",
        "p50 ms",
        "p99 ms",
        "lost",
        "unsent",
        "gen busy",
        "relay cpu-s/M",
        "verdict",
    ];
    let rows: Vec<Vec<String>> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let busy = fmt_opt(s.key.gen_util.map(|u| u * 100.0), 0) + "%";
            vec![
                (i + 1).to_string(),
                format!("{}", round3(s.rate)),
                fmt_opt(s.key.deliveries_per_s, 0),
                fmt_opt(s.key.p50_ms, 2),
                fmt_opt(s.key.p99_ms, 2),
                s.key.lost.to_string(),
                s.key.unsent.to_string(),
                if s.key.saturated {
                    busy + " (sat)"
                } else {
                    busy
                },
                fmt_opt(s.key.relay_cpu_s_per_million, 2),
                match (s.held, s.retried.len()) {
                    (true, 0) => "held".to_owned(),
                    (true, n) => format!("held at run {}", n + 1),
                    (false, 0) => format!("failed: {}", s.why),
                    (false, n) => format!("failed {} runs, last: {}", n + 1, s.why),
                },
            ]
        })
        .collect();
    crate::report::table(&header, &rows)
}

pub fn steps_json(steps: &[Step]) -> Value {
    Value::Array(
        steps
            .iter()
            .map(|s| {
                json!({
                    "rate": round3(s.rate),
                    "deliveries_per_s": s.key.deliveries_per_s,
                    "latency_ms_p50": s.key.p50_ms,
                    "latency_ms_p99": s.key.p99_ms,
                    "lost": s.key.lost,
                    "expected": s.key.expected,
                    "gaps": s.key.gaps,
                    "reorders": s.key.reorders,
                    "unsent": s.key.unsent,
                    "disconnects": s.key.disconnects,
                    "generator_util_avg": s.key.gen_util.map(round3),
                    "generator_saturated": s.key.saturated,
                    "relay_cpu_s_per_million_deliveries": s.key.relay_cpu_s_per_million,
                    "relay_util": s.key.relay_util,
                    "wire_bytes_per_delivery": s.key.wire_bytes_per_delivery,
                    "relay_compressions_per_message": s.key.compressions_per_message,
                    "held": s.held,
                    "why": s.why,
                    "runs": s.retried.len() + 1,
                    "retried_why": s.retried,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> SweepArgs {
        SweepArgs {
            sweep: true,
            p99_max_ms: 50.0,
            sweep_factor: 2.0,
            sweep_refine: 2,
            sweep_steps: 12,
            sweep_retries: 0,
        }
    }

    fn step(rate: f64, held: bool) -> Step {
        Step {
            rate,
            key: KeyFigures::default(),
            held,
            why: String::new(),
            retried: Vec::new(),
        }
    }

    #[test]
    fn doubles_while_steps_hold_then_bisects() {
        let a = args();
        let mut steps = vec![step(100.0, true)];
        assert_eq!(next_rate(&steps, &a), Some(200.0));
        steps.push(step(200.0, true));
        steps.push(step(400.0, false));
        assert_eq!(next_rate(&steps, &a), Some(300.0));
        steps.push(step(300.0, true));
        assert_eq!(next_rate(&steps, &a), Some(350.0));
        steps.push(step(350.0, false));
        assert_eq!(next_rate(&steps, &a), None, "two refinements done");
        assert_eq!(best(&steps).unwrap().rate, 300.0);
    }

    #[test]
    fn stops_at_the_step_limit_and_when_nothing_held() {
        let mut a = args();
        a.sweep_steps = 2;
        let steps = vec![step(100.0, true), step(200.0, true)];
        assert_eq!(next_rate(&steps, &a), None);
        let failed_first = vec![step(100.0, false)];
        assert_eq!(next_rate(&failed_first, &args()), None);
        assert!(best(&failed_first).is_none());
    }

    #[test]
    fn a_failed_step_runs_again_as_often_as_asked() {
        let mut a = args();
        assert!(step_done(false, 0, &a), "no retries by default");
        a.sweep_retries = 1;
        assert!(!step_done(false, 0, &a));
        assert!(step_done(false, 1, &a));
        assert!(step_done(true, 0, &a));
    }

    #[test]
    fn a_narrow_bracket_ends_the_sweep() {
        let steps = vec![step(100.0, true), step(104.0, false)];
        assert_eq!(next_rate(&steps, &args()), None);
    }

    #[test]
    fn verdict_names_every_reason() {
        let mut k = KeyFigures {
            p99_ms: Some(10.0),
            ..Default::default()
        };
        assert_eq!(verdict(&k, 50.0), (true, String::new()));
        k.p99_ms = Some(80.0);
        k.lost = 3;
        let (held, why) = verdict(&k, 50.0);
        assert!(!held);
        assert_eq!(why, "lost 3, p99 80.0 ms > 50 ms");
        k.p99_ms = None;
        k.lost = 0;
        assert_eq!(verdict(&k, 50.0).1, "no latency samples");
    }

    #[test]
    fn table_has_a_row_per_step() {
        let mut s = step(100.0, false);
        s.why = "lost 1".into();
        let t = table(&[step(50.0, true), s], "rate msg/s");
        assert_eq!(t.lines().count(), 4);
        assert!(t.contains("failed: lost 1"));
        let mut retried = step(200.0, true);
        retried.retried = vec!["p99 90.0 ms > 50 ms".into()];
        assert!(table(&[retried], "rate msg/s").contains("held at run 2"));
    }
}
