//! A Prometheus summary (upstream's `karpenter_pods_startup_duration_seconds` is one): the
//! quantiles 0, 0.5, 0.9, 0.99 and 1 of the observations of the last ten minutes, plus the
//! running sum and count. `prometheus-client` has no summary type, so this one encodes itself
//! in the text format ([`super::encode`] splices it into the registry's output).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Upstream's objectives (quantiles reported).
pub const QUANTILES: [f64; 5] = [0.0, 0.5, 0.9, 0.99, 1.0];
/// How long an observation counts towards the quantiles (Go client's default `MaxAge`).
pub const MAX_AGE: Duration = Duration::from_secs(600);
/// At most this many observations are kept for the quantiles (oldest dropped first), so a burst
/// of thousands of pods starting cannot grow memory without bound.
pub const MAX_SAMPLES: usize = 10_000;

#[derive(Debug, Default)]
struct Inner {
    window: VecDeque<(Instant, f64)>,
    sum: f64,
    count: u64,
}

/// A summary without labels. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Summary {
    name: &'static str,
    help: &'static str,
    inner: Arc<Mutex<Inner>>,
}

impl Summary {
    /// A summary exposed as `name` (full name, prefix included).
    pub fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            inner: Arc::default(),
        }
    }

    /// Records one value.
    pub fn observe(&self, v: f64) {
        self.observe_at(v, Instant::now());
    }

    fn observe_at(&self, v: f64, now: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.sum += v;
        inner.count += 1;
        inner.window.push_back((now, v));
        while inner.window.len() > MAX_SAMPLES {
            inner.window.pop_front();
        }
    }

    /// How many values were observed in all.
    pub fn count(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .count
    }

    /// The quantiles of the window at `now` (NaN when it is empty, as the Go client reports).
    fn quantiles(&self, now: Instant) -> ([f64; QUANTILES.len()], f64, u64) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        while inner
            .window
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > MAX_AGE)
        {
            inner.window.pop_front();
        }
        let mut values: Vec<f64> = inner.window.iter().map(|(_, v)| *v).collect();
        values.sort_by(f64::total_cmp);
        let mut out = [f64::NAN; QUANTILES.len()];
        if !values.is_empty() {
            for (slot, q) in out.iter_mut().zip(QUANTILES) {
                // Nearest rank: the smallest value with at least q of the values at or below it.
                let rank = (q * values.len() as f64).ceil() as usize;
                *slot = values[rank.clamp(1, values.len()) - 1];
            }
        }
        (out, inner.sum, inner.count)
    }

    /// Appends the summary in the text exposition format.
    pub fn encode(&self, out: &mut String) -> std::fmt::Result {
        let (quantiles, sum, count) = self.quantiles(Instant::now());
        let name = self.name;
        writeln!(out, "# HELP {name} {}", self.help)?;
        writeln!(out, "# TYPE {name} summary")?;
        for (q, v) in QUANTILES.iter().zip(quantiles) {
            writeln!(out, "{name}{{quantile=\"{q}\"}} {v}")?;
        }
        writeln!(out, "{name}_sum {sum}")?;
        writeln!(out, "{name}_count {count}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_the_window() {
        let s = Summary::new("x_seconds", "x");
        let t0 = Instant::now();
        for v in 1..=100 {
            s.observe_at(f64::from(v), t0);
        }
        let (q, sum, count) = s.quantiles(t0);
        assert_eq!(q, [1.0, 50.0, 90.0, 99.0, 100.0]);
        assert_eq!((sum, count), (5050.0, 100));
        // Ten minutes later the window is empty; sum and count keep running.
        let (q, _, count) = s.quantiles(t0 + MAX_AGE + Duration::from_secs(1));
        assert!(q.iter().all(|v| v.is_nan()));
        assert_eq!(count, 100);
    }

    #[test]
    fn encodes_as_a_summary() {
        let s = Summary::new("x_seconds", "x");
        s.observe(2.0);
        let mut out = String::new();
        s.encode(&mut out).unwrap();
        assert!(out.contains("# TYPE x_seconds summary\n"), "{out}");
        assert!(out.contains("x_seconds{quantile=\"0.5\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_count 1\n"), "{out}");
    }
}
