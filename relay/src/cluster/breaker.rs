//! A circuit breaker as a state machine (time is a parameter): after `threshold` failures in
//! a row calls fail fast for `cool_down`; then one probe is let through (half-open); its
//! success closes the breaker, its failure opens it again. Used around Redis calls so a dead
//! Redis costs no timeouts on the request path.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    /// For the metric: 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::Open => 1.0,
            State::HalfOpen => 2.0,
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    failures: u32,
    opened_at: Option<Instant>,
    probing: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cool_down: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cool_down,
            failures: 0,
            opened_at: None,
            probing: false,
        }
    }

    pub fn state(&self, now: Instant) -> State {
        match self.opened_at {
            None => State::Closed,
            Some(at) if now < at + self.cool_down => State::Open,
            Some(_) => State::HalfOpen,
        }
    }

    /// Whether a call may go to the dependency now. In half-open, only one probe at a time.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state(now) {
            State::Closed => true,
            State::Open => false,
            State::HalfOpen if self.probing => false,
            State::HalfOpen => {
                self.probing = true;
                true
            }
        }
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.opened_at = None;
        self.probing = false;
    }

    pub fn failure(&mut self, now: Instant) {
        self.probing = false;
        self.failures = self.failures.saturating_add(1);
        if self.opened_at.is_some() || self.failures >= self.threshold {
            self.opened_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_fails_fast_then_probes_once() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(2));
        for _ in 0..2 {
            assert!(b.allow(t0));
            b.failure(t0);
        }
        assert_eq!(b.state(t0), State::Closed);
        assert!(b.allow(t0));
        b.failure(t0);
        assert_eq!(b.state(t0), State::Open);
        assert!(!b.allow(t0 + Duration::from_millis(1_999)));
        // Half-open: one probe, the next caller still fails fast.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(b.state(t1), State::HalfOpen);
        assert!(b.allow(t1));
        assert!(!b.allow(t1));
        // The probe fails: open again for a full cool-down.
        b.failure(t1);
        assert_eq!(b.state(t1 + Duration::from_secs(1)), State::Open);
        let t2 = t1 + Duration::from_secs(2);
        assert!(b.allow(t2));
        b.success();
        assert_eq!(b.state(t2), State::Closed);
        assert!(b.allow(t2) && b.allow(t2));
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let t = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(1));
        b.failure(t);
        b.success();
        b.failure(t);
        assert_eq!(b.state(t), State::Closed);
    }
}
