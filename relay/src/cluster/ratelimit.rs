//! Rate limits shared by every instance: a sliding-window counter in Redis (two fixed
//! windows, the previous one weighted by how much of it still overlaps), one atomic Lua
//! call per check, Redis's clock for every instance. O(1) memory per key, unlike a log.
//! While Redis is unreachable (breaker open) each instance falls back to its own in-memory
//! limiter, so a Redis outage neither blocks nor unlimits clients.
//!
//! Keys are hash-tagged for Redis Cluster; decisions and headers are the in-memory
//! limiter's (`Decision`). The breaker is `breaker.rs` (half-open probe); the fallback is
//! `crate::ratelimit::MemoryLimiter`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use concord_proto::ratelimit::{Decision, Rule};

use super::breaker::Breaker;
use super::link::{Conn, Redis};
use crate::ratelimit::{MemoryLimiter, RateLimiter};

/// KEYS[1]: the key's hash-tagged base; ARGV: window ms, limit. Returns allowed (0/1),
/// remaining, ms until the current window ends.
const SCRIPT: &str = r"
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local start = now - (now % window)
local cur_key = KEYS[1] .. ':' .. start
local prev_key = KEYS[1] .. ':' .. (start - window)
local cur = tonumber(redis.call('GET', cur_key) or '0')
local prev = tonumber(redis.call('GET', prev_key) or '0')
local overlap = (window - (now - start)) / window
local estimate = math.floor(prev * overlap) + cur
local allowed = 0
if estimate < limit then
  redis.call('INCR', cur_key)
  redis.call('PEXPIRE', cur_key, window * 2)
  estimate = estimate + 1
  allowed = 1
end
local remaining = limit - estimate
if remaining < 0 then remaining = 0 end
return {allowed, remaining, window - (now - start)}
";

pub struct RedisLimiter {
    redis: Redis,
    conn: tokio::sync::Mutex<Option<Conn>>,
    script: redis::Script,
    prefix: String,
    breaker: Mutex<Breaker>,
    fallback: Arc<MemoryLimiter>,
}

/// How long one check may wait for Redis before it counts as a failure.
/// A check normally takes well under a millisecond; one that takes this long opens the
/// breaker at once (threshold 1), so an outage costs the requests in flight this much once,
/// then one probe per cool-down, instead of every request waiting.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);

impl RedisLimiter {
    pub fn new(redis: Redis, prefix: &str, fallback: Arc<MemoryLimiter>) -> RedisLimiter {
        RedisLimiter {
            redis,
            conn: tokio::sync::Mutex::new(None),
            script: redis::Script::new(SCRIPT),
            prefix: prefix.to_owned(),
            breaker: Mutex::new(Breaker::new(1, Duration::from_secs(2))),
            fallback,
        }
    }

    async fn connection(&self) -> Result<Conn, redis::RedisError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let c = self.redis.connect().await?;
        *conn = Some(c.clone());
        Ok(c)
    }

    async fn check_redis(&self, key: &str, rule: Rule) -> Result<Decision, String> {
        let mut conn = self.connection().await.map_err(|e| e.to_string())?;
        // The hash tag keeps both windows of a key in one Redis Cluster slot.
        let base = format!("{{{}:rl:{key}}}", self.prefix);
        let mut invocation = self.script.key(base);
        invocation.arg(rule.window_ms).arg(rule.limit);
        let call = invocation.invoke_async::<(i64, i64, i64)>(&mut conn);
        let (allowed, remaining, reset) = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(Decision {
            allowed: allowed == 1,
            limit: rule.limit,
            remaining: remaining.max(0) as u32,
            reset_after_ms: reset.max(0) as u64,
        })
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, key: &str, rule: Rule) -> Decision {
        let allowed = self
            .breaker
            .lock()
            .expect("breaker lock")
            .allow(Instant::now());
        if allowed {
            match self.check_redis(key, rule).await {
                Ok(d) => {
                    let mut b = self.breaker.lock().expect("breaker lock");
                    b.success();
                    gauge(&b);
                    return d;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Redis rate limiter failed; limiting locally");
                    let mut b = self.breaker.lock().expect("breaker lock");
                    b.failure(Instant::now());
                    gauge(&b);
                }
            }
        }
        self.fallback.check(key, rule).await
    }
}

fn gauge(b: &Breaker) {
    metrics::gauge!("concord_breaker_state", "dependency" => "redis")
        .set(b.state(Instant::now()).as_gauge());
}
