//! With read replicas, HTTP reads go to them, but a client must still see its own writes: a
//! request that writes runs on the primary, and so do that client's reads for a while after
//! (longer than replica lag ever should be). Clients are told apart by a hash of their
//! Authorization header (an access token). Catch-up reads (`after=`) stay on the primary too:
//! they resume a live stream, and a lagging replica would leave a gap. Only installed when
//! replicas exist.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::App;
use crate::store::consistency::on_replica;

/// Clients that wrote recently, bounded: when full, the oldest half is forgotten (their
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

    fn key(&self, token: &[u8]) -> u64 {
        self.hasher.hash_one(token)
    }

    fn wrote_recently(&self, key: u64, now: Instant) -> bool {
        let writers = self.writers.lock().expect("recent writers");
        writers
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < self.window)
    }

    fn mark(&self, key: u64, now: Instant) {
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

pub async fn route(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| app.recent_writers.key(v.as_bytes()));
    let now = Instant::now();
    let catch_up = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p.starts_with("after=")));
    let primary =
        writes || catch_up || key.is_some_and(|k| app.recent_writers.wrote_recently(k, now));
    if !primary {
        return on_replica(next.run(req)).await;
    }
    let response = next.run(req).await;
    if writes
        && response.status().is_success()
        && let Some(key) = key
    {
        app.recent_writers.mark(key, Instant::now());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

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
