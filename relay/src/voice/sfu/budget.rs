//! The upstream bitrate cap of one SFU participant: a token bucket (sans-IO, the clock passed
//! in). A participant sending more than the cap has the excess dropped before the forwarder,
//! so one client cannot make the relay forward more than it allows.

use std::time::{Duration, Instant};

/// Bytes per second allowed, with a burst of one second's worth.
#[derive(Debug)]
pub struct UpstreamBudget {
    rate: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl UpstreamBudget {
    pub fn new(kbps: u32) -> UpstreamBudget {
        let rate = f64::from(kbps) * 1000.0 / 8.0;
        UpstreamBudget {
            rate,
            tokens: rate,
            last: None,
        }
    }

    /// Whether a packet of `bytes` may pass at `now` (it is spent if so).
    pub fn allow(&mut self, bytes: usize, now: Instant) -> bool {
        let elapsed = self
            .last
            .map_or(Duration::ZERO, |last| now.saturating_duration_since(last));
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.rate);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opus at 50 packets/s of `size` bytes for `secs` seconds: how many pass.
    fn passed(kbps: u32, size: usize, secs: u64) -> usize {
        let mut budget = UpstreamBudget::new(kbps);
        let start = Instant::now();
        (0..secs * 50)
            .filter(|i| budget.allow(size, start + Duration::from_millis(i * 20)))
            .count()
    }

    #[test]
    fn voice_under_the_cap_passes_whole() {
        // 160-byte packets at 50/s: 64 kb/s, under a 128 kb/s cap.
        assert_eq!(passed(128, 160, 10), 500);
    }

    #[test]
    fn a_sender_over_the_cap_gets_the_cap() {
        // 1,000-byte packets at 50/s (400 kb/s) against 100 kb/s = 12.5 packets/s: a
        // one-second burst (12) plus 10 s of refill (125), not the 500 sent.
        let got = passed(100, 1_000, 10);
        assert!((130..=140).contains(&got), "{got}");
    }
}
