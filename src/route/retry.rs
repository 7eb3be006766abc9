//! Retry policy of a route: which outcomes are retried, for which methods, how long to back off,
//! and the budget that keeps retries from multiplying load in an outage (tower's `TpsBudget`, a
//! token bucket over 10 s: linkerd's and Finagle's design). Built once per snapshot.

use crate::config::{RetryConfig, RetryOn};
use http::{Method, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use tower::retry::budget::{Budget, TpsBudget};

/// What an attempt ended with, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing reached the endpoint (refused, unreachable, connect timeout).
    ConnectFailure,
    /// The connection broke before a response.
    Reset,
    /// The per-try timeout passed (retried by reset, 5xx and gateway-error: it ends as a 504).
    Timeout,
    /// The upstream answered with this status.
    Status(StatusCode),
}

/// A route's retry policy, as the request path uses it.
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    on: Vec<RetryOn>,
    /// The deadline of each attempt, when set.
    pub per_try_timeout: Option<Duration>,
    non_idempotent: bool,
    /// The largest request body buffered so it can be sent again.
    pub max_body: usize,
    base: Duration,
    max: Duration,
    budget: Option<Arc<TpsBudget>>,
}

impl RetryPolicy {
    /// The policy of `cfg`.
    pub fn new(cfg: &RetryConfig) -> RetryPolicy {
        RetryPolicy {
            attempts: cfg.attempts,
            on: cfg.on.clone(),
            per_try_timeout: cfg.per_try_timeout.map(|t| t.get()),
            non_idempotent: cfg.retry_non_idempotent,
            max_body: cfg.max_body_kb * 1024,
            base: cfg.backoff_base.get(),
            max: cfg.backoff_max.get(),
            // Validation keeps budget_percent within TpsBudget's 0..=1000% range.
            budget: cfg.budget_percent.map(|pct| {
                Arc::new(TpsBudget::new(
                    Duration::from_secs(10),
                    cfg.min_retries_per_second.min(i32::MAX as u32 - 1),
                    pct.min(1000) as f32 / 100.0,
                ))
            }),
        }
    }

    /// Whether `method` may be retried after `outcome` (the budget is asked separately).
    pub fn retriable(&self, method: &Method, outcome: Outcome) -> bool {
        let idempotent = matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        let wanted = self.on.iter().any(|on| match (on, outcome) {
            (RetryOn::ConnectFailure, Outcome::ConnectFailure) => true,
            (RetryOn::Reset | RetryOn::RefusedStream, Outcome::Reset) => true,
            (RetryOn::Reset | RetryOn::Status5xx | RetryOn::GatewayError, Outcome::Timeout) => true,
            (RetryOn::Status5xx, Outcome::Status(s)) => s.is_server_error(),
            (RetryOn::GatewayError, Outcome::Status(s)) => matches!(s.as_u16(), 502..=504),
            (RetryOn::GatewayError, Outcome::ConnectFailure | Outcome::Reset) => true,
            (RetryOn::Retriable4xx, Outcome::Status(s)) => s == StatusCode::CONFLICT,
            _ => false,
        });
        // A request that never left is safe to send again whatever its method.
        wanted && (idempotent || self.non_idempotent || outcome == Outcome::ConnectFailure)
    }

    /// Counts an original request towards the budget.
    pub fn deposit(&self) {
        if let Some(b) = &self.budget {
            b.deposit();
        }
    }

    /// Takes one retry from the budget, if it allows (always, without a budget).
    pub fn withdraw(&self) -> bool {
        self.budget.as_ref().is_none_or(|b| b.withdraw())
    }

    /// Full-jitter exponential backoff before retry number `n` (1-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(self.max);
        cap.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> RetryPolicy {
        RetryPolicy::new(&serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn conditions_and_methods() {
        let p = policy("{attempts: 2, on: [5xx, connect-failure]}");
        let s503 = Outcome::Status(StatusCode::SERVICE_UNAVAILABLE);
        assert!(p.retriable(&Method::GET, s503));
        assert!(!p.retriable(&Method::POST, s503), "POST is not idempotent");
        assert!(
            p.retriable(&Method::POST, Outcome::ConnectFailure),
            "nothing was sent"
        );
        assert!(!p.retriable(&Method::GET, Outcome::Status(StatusCode::CONFLICT)));
        assert!(!p.retriable(&Method::GET, Outcome::Reset));
        let p =
            policy("{attempts: 2, on: [gateway-error, retriable-4xx], retry_non_idempotent: true}");
        assert!(p.retriable(&Method::POST, Outcome::Status(StatusCode::BAD_GATEWAY)));
        assert!(!p.retriable(
            &Method::GET,
            Outcome::Status(StatusCode::INTERNAL_SERVER_ERROR)
        ));
        assert!(p.retriable(&Method::GET, Outcome::Status(StatusCode::CONFLICT)));
    }

    #[test]
    fn backoff_is_capped_full_jitter() {
        let p = policy("{attempts: 5, backoff_base: 25ms, backoff_max: 250ms}");
        for n in 1..8 {
            let cap = Duration::from_millis((25u64 << (n - 1)).min(250));
            for _ in 0..100 {
                assert!(p.backoff(n) <= cap);
            }
        }
    }
}
