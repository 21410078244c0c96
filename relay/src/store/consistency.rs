//! Which reads may go to a read replica. By default none do: the gateway, libp2p sync,
//! permission loads and every write path read the primary, because they replay by seq or
//! must see what was just written. Only code run inside [`on_replica`] (plain HTTP reads,
//! see `api/read_your_writes.rs`) spreads its reads over replicas. A task-local, so the
//! store API stays the same and nested calls inherit it.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

tokio::task_local! {
    static REPLICA_OK: ();
}

/// Runs `f` with its store reads allowed on replicas.
pub async fn on_replica<F: Future>(f: F) -> F::Output {
    REPLICA_OK.scope((), f).await
}

/// Whether the current task's reads may go to a replica.
pub fn replica_ok() -> bool {
    REPLICA_OK.try_with(|_| ()).is_ok()
}

/// Clients that wrote recently (their reads stay on the primary for a while; the HTTP
/// middleware is `api/read_your_writes.rs`), bounded: when full, the oldest half is forgotten (their
/// reads go to replicas a little early, which costs staleness, never correctness of writes).
pub struct RecentWriters {
    window: Duration,
    hasher: RandomState,
    writers: Mutex<HashMap<u64, Instant>>,
}

const MAX_TRACKED: usize = 100_000;

impl RecentWriters {
    pub fn new(window: Duration) -> RecentWriters {
        RecentWriters {
            window,
            hasher: RandomState::new(),
            writers: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn key(&self, token: &[u8]) -> u64 {
        self.hasher.hash_one(token)
    }

    pub(crate) fn wrote_recently(&self, key: u64, now: Instant) -> bool {
        let writers = self.writers.lock().expect("recent writers");
        writers
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < self.window)
    }

    pub(crate) fn mark(&self, key: u64, now: Instant) {
        let mut writers = self.writers.lock().expect("recent writers");
        if writers.len() >= MAX_TRACKED {
            let window = self.window;
            writers.retain(|_, at| now.duration_since(*at) < window);
            if writers.len() >= MAX_TRACKED {
                let mut ages: Vec<Instant> = writers.values().copied().collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                writers.retain(|_, at| *at > cut);
            }
        }
        writers.insert(key, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scope_is_seen_inside_only() {
        assert!(!replica_ok());
        assert!(on_replica(async { replica_ok() }).await);
        assert!(!replica_ok());
    }

    #[test]
    fn remembers_writers_for_the_window_only() {
        let rw = RecentWriters::new(Duration::from_secs(5));
        let t = Instant::now();
        let k = rw.key(b"Bearer a");
        assert!(!rw.wrote_recently(k, t));
        rw.mark(k, t);
        assert!(rw.wrote_recently(k, t + Duration::from_secs(4)));
        assert!(!rw.wrote_recently(k, t + Duration::from_secs(5)));
        assert!(!rw.wrote_recently(rw.key(b"Bearer b"), t));
    }

    #[test]
    fn stays_bounded() {
        let rw = RecentWriters::new(Duration::from_secs(60));
        let t = Instant::now();
        for i in 0..(MAX_TRACKED as u64 + 10) {
            rw.mark(i, t + Duration::from_micros(i));
        }
        assert!(rw.writers.lock().unwrap().len() <= MAX_TRACKED);
    }
}
