//! Local rate limit of a route: a token bucket refilled at `requests_per_second` up to `burst`.
//! The lock is held for a few arithmetic operations per request, only on routes that set a limit.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// A token bucket shared by every request of a route.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A full bucket of `burst` tokens refilled at `requests_per_second`.
    pub fn new(requests_per_second: u32, burst: u32) -> RateLimiter {
        let burst = burst.max(1) as f64;
        RateLimiter {
            rate: requests_per_second.max(1) as f64,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token; on refusal, how long until one is available.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(st.1).as_secs_f64() * self.rate;
        st.0 = (st.0 + refill).min(self.burst);
        st.1 = now;
        if st.0 >= 1.0 {
            st.0 -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - st.0) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_rate() {
        let rl = RateLimiter::new(10, 5);
        assert_eq!((0..20).filter(|_| rl.try_acquire().is_ok()).count(), 5);
        let wait = rl.try_acquire().unwrap_err();
        assert!(wait <= Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!((0..20).filter(|_| rl.try_acquire().is_ok()).count(), 5);
    }
}
