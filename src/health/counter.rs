//! Healthy/unhealthy thresholds: an endpoint changes state only after `healthy_threshold`
//! passing or `unhealthy_threshold` failing probes in a row. Pure, so it is tested directly.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    BecameHealthy,
    BecameUnhealthy,
}

#[derive(Debug, Clone)]
pub struct HealthCounter {
    healthy: bool,
    /// A newly discovered endpoint: its first passing probe makes it healthy.
    awaiting_first: bool,
    streak: u32,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
}

impl HealthCounter {
    pub fn new(healthy: bool, healthy_threshold: u32, unhealthy_threshold: u32) -> HealthCounter {
        HealthCounter {
            healthy,
            awaiting_first: false,
            streak: 0,
            healthy_threshold: healthy_threshold.max(1),
            unhealthy_threshold: unhealthy_threshold.max(1),
        }
    }

    /// An endpoint that starts unhealthy and needs one passing probe (not `healthy_threshold`)
    /// to get traffic: it is new, not recovering.
    pub fn awaiting_first(healthy_threshold: u32, unhealthy_threshold: u32) -> HealthCounter {
        HealthCounter {
            awaiting_first: true,
            ..HealthCounter::new(false, healthy_threshold, unhealthy_threshold)
        }
    }

    /// Records one probe result; returns the transition it completes, if any.
    pub fn record(&mut self, ok: bool) -> Option<Transition> {
        if ok == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if ok && self.awaiting_first {
            1
        } else if ok {
            self.healthy_threshold
        } else {
            self.unhealthy_threshold
        };
        if self.streak < needed {
            return None;
        }
        self.healthy = ok;
        self.awaiting_first = false;
        self.streak = 0;
        Some(if ok {
            Transition::BecameHealthy
        } else {
            Transition::BecameUnhealthy
        })
    }

    #[cfg(test)]
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_streak_resets() {
        let mut c = HealthCounter::new(true, 2, 3);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), None, "a pass resets the failure streak");
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), Some(Transition::BecameUnhealthy));
        assert!(!c.is_healthy());
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(true), Some(Transition::BecameHealthy));
        assert_eq!(c.record(true), None);
    }
}
