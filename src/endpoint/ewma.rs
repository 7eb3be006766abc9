//! Peak EWMA of latency (Finagle's `PeakEwma`, also linkerd2-proxy's): a sample above the
//! current value replaces it at once (react to a slowdown immediately), a sample below decays
//! towards it with weight `exp(-elapsed / decay)` (recover gradually). Pure maths on nanosecond
//! timestamps, so tests and the simulator control time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// No sample yet.
const UNSET: u64 = u64::MAX;

pub struct PeakEwma {
    /// f64 seconds as bits, or `UNSET`.
    value: AtomicU64,
    /// Timestamp (ns, caller's clock) of the last update.
    stamp: AtomicU64,
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma {
            value: AtomicU64::new(UNSET),
            stamp: AtomicU64::new(0),
        }
    }
}

/// The next EWMA value after observing `sample` seconds `elapsed` after the last update.
pub fn next(prev: Option<f64>, sample: f64, elapsed: Duration, decay: Duration) -> f64 {
    match prev {
        None => sample,
        Some(p) if sample > p => sample,
        Some(p) => {
            let w = (-(elapsed.as_secs_f64()) / decay.as_secs_f64().max(1e-9)).exp();
            p * w + sample * (1.0 - w)
        }
    }
}

impl PeakEwma {
    pub fn get(&self) -> Option<f64> {
        let v = self.value.load(Ordering::Relaxed);
        (v != UNSET).then(|| f64::from_bits(v))
    }

    /// Records one latency sample at `now_ns`. Two concurrent updates may interleave their
    /// load and store; one sample is then lost, which an average tolerates (and it keeps the
    /// request path free of locks and CAS loops).
    pub fn observe(&self, sample: Duration, now_ns: u64, decay: Duration) {
        let prev = self.get();
        let last = self.stamp.swap(now_ns, Ordering::Relaxed);
        let elapsed = Duration::from_nanos(now_ns.saturating_sub(last));
        let v = next(prev, sample.as_secs_f64(), elapsed, decay);
        self.value.store(v.to_bits(), Ordering::Relaxed);
    }

    pub fn reset(&self) {
        self.value.store(UNSET, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_jump_and_lows_decay() {
        let d = Duration::from_secs(10);
        assert_eq!(next(None, 0.1, Duration::ZERO, d), 0.1);
        assert_eq!(next(Some(0.1), 0.5, Duration::from_secs(1), d), 0.5);
        let after = next(Some(0.5), 0.1, Duration::from_secs(10), d);
        let w = (-1.0f64).exp();
        assert!((after - (0.5 * w + 0.1 * (1.0 - w))).abs() < 1e-12);
        // Long after, the old peak is nearly forgotten.
        assert!(next(Some(0.5), 0.1, Duration::from_secs(100), d) < 0.1001);
    }
}
