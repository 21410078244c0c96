//! Where reads go. With PostgreSQL replicas configured, reads inside
//! [`crate::store::consistency::on_replica`] go to the replicas in turn, skipping one that
//! failed for 5 s (per-replica breaker) and falling back to the primary when none answers.
//! Tested against a real streaming replica in `relay/tests/pg_replica.rs`. Every
//! other read uses the read pool: the primary, or on SQLite the read-only connections beside
//! the writer.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool};

use crate::cluster::breaker::Breaker;
use crate::store::{StoreResult, consistency};

pub(crate) struct Readers {
    primary: AnyPool,
    replicas: Vec<Replica>,
    next: AtomicUsize,
}

pub(crate) struct Replica {
    pub(crate) pool: AnyPool,
    breaker: Mutex<Breaker>,
}

impl Replica {
    pub(crate) fn new(pool: AnyPool) -> Replica {
        Replica {
            pool,
            // One failure skips the replica for five seconds; then one read probes it.
            breaker: Mutex::new(Breaker::new(1, Duration::from_secs(5))),
        }
    }
}

impl Readers {
    pub(crate) fn new(primary: AnyPool, replicas: Vec<Replica>) -> Readers {
        Readers {
            primary,
            replicas,
            next: AtomicUsize::new(0),
        }
    }

    pub(crate) fn primary(&self) -> &AnyPool {
        &self.primary
    }

    pub(crate) fn replica_pools(&self) -> impl Iterator<Item = &AnyPool> {
        self.replicas.iter().map(|r| &r.pool)
    }

    pub(crate) async fn acquire(&self) -> StoreResult<PoolConnection<Any>> {
        if !self.replicas.is_empty() && consistency::replica_ok() {
            let n = self.replicas.len();
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            for i in 0..n {
                let replica = &self.replicas[(start + i) % n];
                if !replica
                    .breaker
                    .lock()
                    .expect("replica breaker")
                    .allow(Instant::now())
                {
                    continue;
                }
                match replica.pool.acquire().await {
                    Ok(conn) => {
                        replica.breaker.lock().expect("replica breaker").success();
                        metrics::counter!("concord_db_reads_total", "target" => "replica")
                            .increment(1);
                        return Ok(conn);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "read replica unavailable; skipping it");
                        replica
                            .breaker
                            .lock()
                            .expect("replica breaker")
                            .failure(Instant::now());
                    }
                }
            }
            metrics::counter!("concord_db_reads_total", "target" => "primary_fallback")
                .increment(1);
        }
        Ok(self.primary.acquire().await?)
    }

    pub(crate) async fn close(&self) {
        for pool in self.replica_pools() {
            pool.close().await;
        }
        self.primary.close().await;
    }
}
