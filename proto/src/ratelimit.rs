//! Fixed-window rate limiting as a sans-IO state machine: the caller passes `now`. The relay
//! wraps it behind its limiter trait; a Redis implementation keeps the same decisions.
//! The number of keys it tracks is bounded.

use std::collections::HashMap;

/// `limit` requests per `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub limit: u32,
    pub window_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Milliseconds until the current window ends.
    pub reset_after_ms: u64,
}

impl Decision {
    /// Whole seconds until reset, rounded up (what `X-RateLimit-Reset` and `Retry-After` carry).
    pub fn reset_secs(&self) -> u64 {
        self.reset_after_ms.div_ceil(1000).max(1)
    }
}

#[derive(Debug)]
struct Window {
    start_ms: u64,
    window_ms: u64,
    count: u32,
}

/// Counters per key, bounded to `max_keys`: when full and nothing has expired, new keys are
/// refused rather than letting memory grow.
#[derive(Debug)]
pub struct WindowLimiter {
    windows: HashMap<String, Window>,
    max_keys: usize,
}

impl WindowLimiter {
    pub fn new(max_keys: usize) -> WindowLimiter {
        WindowLimiter {
            windows: HashMap::new(),
            max_keys,
        }
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    pub fn check(&mut self, key: &str, rule: Rule, now_ms: u64) -> Decision {
        if !self.windows.contains_key(key) && self.windows.len() >= self.max_keys {
            self.purge(now_ms);
            if self.windows.len() >= self.max_keys {
                return Decision {
                    allowed: false,
                    limit: rule.limit,
                    remaining: 0,
                    reset_after_ms: rule.window_ms,
                };
            }
        }
        let window = self.windows.entry(key.to_owned()).or_insert(Window {
            start_ms: now_ms,
            window_ms: rule.window_ms,
            count: 0,
        });
        if now_ms >= window.start_ms + window.window_ms || window.window_ms != rule.window_ms {
            *window = Window {
                start_ms: now_ms,
                window_ms: rule.window_ms,
                count: 0,
            };
        }
        let reset_after_ms = window.start_ms + window.window_ms - now_ms;
        if window.count >= rule.limit {
            return Decision {
                allowed: false,
                limit: rule.limit,
                remaining: 0,
                reset_after_ms,
            };
        }
        window.count += 1;
        Decision {
            allowed: true,
            limit: rule.limit,
            remaining: rule.limit - window.count,
            reset_after_ms,
        }
    }

    /// Drops windows that have ended; call it periodically.
    pub fn purge(&mut self, now_ms: u64) {
        self.windows
            .retain(|_, w| now_ms < w.start_ms + w.window_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Rule = Rule {
        limit: 3,
        window_ms: 10_000,
    };

    #[test]
    fn counts_and_resets() {
        let mut l = WindowLimiter::new(10);
        let d: Vec<_> = (0..4).map(|i| l.check("a", RULE, 1_000 + i)).collect();
        assert_eq!(
            d.iter().map(|d| d.allowed).collect::<Vec<_>>(),
            [true, true, true, false]
        );
        assert_eq!(d[0].remaining, 2);
        assert_eq!(d[3].remaining, 0);
        assert_eq!(d[3].reset_after_ms, 9_997);
        assert_eq!(d[3].reset_secs(), 10);
        // other keys are independent
        assert!(l.check("b", RULE, 1_000).allowed);
        // the window ends
        assert!(l.check("a", RULE, 11_000).allowed);
    }

    #[test]
    fn bounded_keys() {
        let mut l = WindowLimiter::new(2);
        assert!(l.check("a", RULE, 0).allowed);
        assert!(l.check("b", RULE, 0).allowed);
        assert!(!l.check("c", RULE, 1).allowed);
        assert_eq!(l.len(), 2);
        // once the old windows end, new keys fit again
        assert!(l.check("c", RULE, 20_000).allowed);
        assert_eq!(l.len(), 1);
    }
}
