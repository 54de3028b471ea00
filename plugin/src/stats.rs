//! Calls, errors and latency of one plugin, counted without locks: the
//! worker pool records every call, `GET /v1/plugins` reads a snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use troupe_protocol::plugins::{LatencyMs, PluginMetrics};

/// Latency buckets: bucket `i` holds calls of under 2^i microseconds.
const BUCKETS: usize = 40;

/// Counters for one plugin.
#[derive(Debug)]
pub struct CallStats {
    calls: AtomicU64,
    errors: AtomicU64,
    total_us: AtomicU64,
    max_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Default for CallStats {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            total_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl CallStats {
    /// Counts one call that took `elapsed`.
    pub fn record(&self, elapsed: Duration, failed: bool) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.total_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        let bucket = (u64::BITS - us.leading_zeros()) as usize;
        self.buckets[bucket.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// Upper bound, in ms, of the bucket holding quantile `q`.
    fn quantile_ms(&self, q: f64, calls: u64) -> f64 {
        let rank = ((calls as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return (1u64 << i) as f64 / 1000.0;
            }
        }
        self.max_us.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// The figures so far.
    pub fn snapshot(&self) -> PluginMetrics {
        let calls = self.calls.load(Ordering::Relaxed);
        let max = self.max_us.load(Ordering::Relaxed) as f64 / 1000.0;
        let latency_ms = if calls == 0 {
            LatencyMs::default()
        } else {
            LatencyMs {
                mean: self.total_us.load(Ordering::Relaxed) as f64 / calls as f64 / 1000.0,
                p50: self.quantile_ms(0.5, calls).min(max),
                p99: self.quantile_ms(0.99, calls).min(max),
                max,
            }
        };
        PluginMetrics {
            calls,
            errors: self.errors.load(Ordering::Relaxed),
            latency_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_calls_errors_and_latency_quantiles() {
        let stats = CallStats::default();
        assert_eq!(stats.snapshot(), PluginMetrics::default());
        for _ in 0..98 {
            stats.record(Duration::from_micros(900), false);
        }
        stats.record(Duration::from_millis(40), true);
        stats.record(Duration::from_millis(50), true);
        let m = stats.snapshot();
        assert_eq!((m.calls, m.errors), (100, 2));
        assert_eq!(m.latency_ms.max, 50.0);
        assert!((0.9..=1.024).contains(&m.latency_ms.p50), "{m:?}");
        assert!((40.0..=50.0).contains(&m.latency_ms.p99), "{m:?}");
        assert!((1.7..1.8).contains(&m.latency_ms.mean), "{m:?}");
    }
}
