//! Rate limits: a `RateLimiter` trait (in memory here; Redis for several instances,
//! `cluster/ratelimit.rs`) and the rule of a configured limit. Every transport checks its
//! budgets through these; HTTP's per-route classes and headers are `api/ratelimit.rs`.

use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;
use concord_proto::ratelimit::{Decision, Rule, WindowLimiter};

use crate::config::Limit;

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    async fn check(&self, key: &str, rule: Rule) -> Decision;
}

/// Counters in this process; bounded by `max_keys`.
pub struct MemoryLimiter {
    inner: Mutex<WindowLimiter>,
    epoch: Instant,
}

impl MemoryLimiter {
    pub fn new(max_keys: usize) -> MemoryLimiter {
        MemoryLimiter {
            inner: Mutex::new(WindowLimiter::new(max_keys)),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn purge(&self) {
        let now = self.now_ms();
        self.inner.lock().expect("limiter lock").purge(now);
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn check(&self, key: &str, rule: Rule) -> Decision {
        let now = self.now_ms();
        self.inner
            .lock()
            .expect("limiter lock")
            .check(key, rule, now)
    }
}

pub fn rule(limit: Limit) -> Rule {
    Rule {
        limit: limit.requests,
        window_ms: limit.window_secs * 1000,
    }
}
