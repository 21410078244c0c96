use async_trait::async_trait;

use super::rows::{int, text};
use super::{QueryTimer, SqlStore};
use crate::store::{Backend, PoolStats, ServerStore, SigningKeyRecord, StoreError, StoreResult};

/// Longer than any healthy `SELECT 1`, shorter than the probe period.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1_500);

const MAX_WORKERS: i64 = concord_proto::id::MAX_WORKER_ID as i64 + 1;

#[async_trait]
impl ServerStore for SqlStore {
    fn backend(&self) -> Backend {
        self.backend
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            write_size: self.write.size(),
            write_idle: self.write.num_idle() as u32,
            read_size: self.read.primary().size(),
            read_idle: self.read.primary().num_idle() as u32,
        }
    }

    /// The breaker's probe: never gated by it, always feeds it.
    async fn ping(&self) -> StoreResult<()> {
        let _t = QueryTimer::new("ping");
        let check = async {
            sqlx::query("SELECT 1").execute(&self.write).await?;
            sqlx::query("SELECT 1").execute(self.read.primary()).await?;
            Ok(())
        };
        let result = match tokio::time::timeout(PING_TIMEOUT, check).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable),
        };
        self.record_probe(result.is_ok());
        result
    }

    async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "lease_worker_id"))]
    async fn lease_worker_id(&self, holder: &str, now: i64, ttl_ms: i64) -> StoreResult<u16> {
        let _t = self.begin("lease_worker_id")?;
        let taken: Vec<i64> = sqlx::query(
            "SELECT worker_id FROM worker_leases WHERE expires_at > $1 ORDER BY worker_id",
        )
        .bind(now)
        .fetch_all(&self.write)
        .await?
        .iter()
        .map(|r| int(r, "worker_id"))
        .collect::<StoreResult<_>>()?;
        for candidate in (0..MAX_WORKERS).filter(|w| taken.binary_search(w).is_err()) {
            // The conditional upsert wins only if nobody took the id since we looked.
            let won = sqlx::query(
                "INSERT INTO worker_leases (worker_id, holder, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (worker_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                 WHERE worker_leases.expires_at <= $4",
            )
            .bind(candidate)
            .bind(holder)
            .bind(now + ttl_ms)
            .bind(now)
            .execute(&self.write)
            .await?
            .rows_affected();
            if won == 1 {
                return Ok(candidate as u16);
            }
        }
        Err(StoreError::Conflict("no_free_worker_id"))
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "renew_worker_id"))]
    async fn renew_worker_id(
        &self,
        worker_id: u16,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> StoreResult<bool> {
        let _t = self.begin("renew_worker_id")?;
        let n = sqlx::query(
            "UPDATE worker_leases SET expires_at = $1 WHERE worker_id = $2 AND holder = $3",
        )
        .bind(now + ttl_ms)
        .bind(i64::from(worker_id))
        .bind(holder)
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "release_worker_id"))]
    async fn release_worker_id(&self, worker_id: u16, holder: &str) -> StoreResult<()> {
        let _t = self.begin("release_worker_id")?;
        sqlx::query("DELETE FROM worker_leases WHERE worker_id = $1 AND holder = $2")
            .bind(i64::from(worker_id))
            .bind(holder)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "signing_keys"))]
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        let _t = self.begin("signing_keys")?;
        sqlx::query("SELECT kid, secret, created_at FROM signing_keys ORDER BY created_at DESC")
            .fetch_all(&self.write)
            .await?
            .iter()
            .map(|r| {
                Ok(SigningKeyRecord {
                    kid: text(r, "kid")?,
                    secret: text(r, "secret")?,
                    created_at: int(r, "created_at")?,
                })
            })
            .collect()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "insert_signing_key"))]
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()> {
        let _t = self.begin("insert_signing_key")?;
        sqlx::query("INSERT INTO signing_keys (kid, secret, created_at) VALUES ($1, $2, $3)")
            .bind(&key.kid)
            .bind(&key.secret)
            .bind(key.created_at)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "secret_or_insert"))]
    async fn secret_or_insert(&self, name: &str, generated: &str) -> StoreResult<String> {
        let _t = self.begin("secret_or_insert")?;
        sqlx::query("INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(generated)
            .execute(&self.write)
            .await?;
        let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.write)
            .await?;
        text(&row, "value")
    }
}
