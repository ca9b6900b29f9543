//! Latency histograms and the figures reported from them.
//!
//! Latencies are recorded in microseconds into an HDR histogram (three significant digits,
//! up to ten minutes), so merging rounds and builds is exact and percentiles are read
//! the same way everywhere.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The longest latency recorded; anything slower is clamped to it (and shows as the max).
const MAX_US: u64 = 600_000_000;

/// A latency distribution.
#[derive(Clone, Debug)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        // 1 µs to 10 min, 3 digits: cannot fail for these bounds.
        Self(Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds"))
    }

    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, MAX_US);
        // Within bounds by the clamp.
        let _ = self.0.record(us);
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides: cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at quantile `q` (0..=1), in milliseconds; 0 when nothing was recorded.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.count(),
            p50_ms: self.quantile_ms(0.5),
            p90_ms: self.quantile_ms(0.9),
            p99_ms: self.quantile_ms(0.99),
            max_ms: if self.0.is_empty() {
                0.0
            } else {
                self.0.max() as f64 / 1000.0
            },
        }
    }
}

/// What a report shows of a distribution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Events per second over `span`; 0 for an empty span.
pub fn per_second(events: u64, span: Duration) -> f64 {
    let s = span.as_secs_f64();
    if s > 0.0 {
        events as f64 / s
    } else {
        0.0
    }
}

/// `new / old`, or `None` when either side is missing (zero): a ratio to a failed run
/// would be meaningless.
pub fn ratio(new: f64, old: f64) -> Option<f64> {
    (new > 0.0 && old > 0.0).then(|| new / old)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_of_one_to_a_hundred_milliseconds() {
        let mut l = Latencies::new();
        for i in 1..=100 {
            l.record(ms(i));
        }
        let s = l.summary();
        assert_eq!(s.count, 100);
        // Three significant digits: within 0.1 % of the exact order statistic.
        assert!((s.p50_ms - 50.0).abs() <= 0.05, "{s:?}");
        assert!((s.p90_ms - 90.0).abs() <= 0.09, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() <= 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() <= 0.1, "{s:?}");
    }

    #[test]
    fn one_slow_outlier_moves_p99_not_p50() {
        let mut l = Latencies::new();
        for _ in 0..99 {
            l.record(ms(2));
        }
        l.record(Duration::from_secs(3));
        let s = l.summary();
        assert!((s.p50_ms - 2.0).abs() < 0.01, "{s:?}");
        assert!(s.p99_ms < 2.01, "the 99th of 100 is still fast: {s:?}");
        assert!(s.max_ms > 2990.0, "{s:?}");
    }

    #[test]
    fn merged_rounds_are_one_distribution() {
        let (mut a, mut b) = (Latencies::new(), Latencies::new());
        for _ in 0..50 {
            a.record(ms(10));
            b.record(ms(30));
        }
        a.merge(&b);
        assert_eq!(a.count(), 100);
        assert!((a.quantile_ms(0.25) - 10.0).abs() < 0.02);
        assert!((a.quantile_ms(0.75) - 30.0).abs() < 0.05);
    }

    #[test]
    fn empty_and_extreme_inputs_do_not_panic() {
        let mut l = Latencies::new();
        assert_eq!(l.summary(), LatencySummary::default());
        l.record(Duration::ZERO);
        l.record(Duration::from_secs(3600));
        assert_eq!(l.count(), 2);
        assert!(l.summary().max_ms >= 599_000.0);
    }

    #[test]
    fn rates_and_ratios() {
        assert_eq!(per_second(300, ms(1500)), 200.0);
        assert_eq!(per_second(5, Duration::ZERO), 0.0);
        assert_eq!(ratio(30.0, 10.0), Some(3.0));
        assert_eq!(ratio(30.0, 0.0), None);
        assert_eq!(ratio(0.0, 10.0), None);
    }
}
