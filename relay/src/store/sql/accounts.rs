use async_trait::async_trait;
use concord_proto::Id;
use sqlx::AssertSqlSafe;

use super::rows::{self, id, int, opt_int};
use super::{SqlStore, is_unique_violation, placeholders};
use crate::store::{
    AccountRecord, AccountStore, ChallengeRecord, DeviceRecord, RefreshOutcome, SessionRecord,
    StoreError, StoreResult,
};

const ACCOUNT_COLS: &str = "id, username, account_key, created_at";
const DEVICE_COLS: &str =
    "device_key, account_id, label, certificate, certified_at, added_at, revoked_at";
const SESSION_COLS: &str = "s.id, s.account_id, s.device_key, s.created_at, s.revoked_at";

fn insert_device_sql() -> &'static str {
    "INSERT INTO devices (device_key, account_id, label, certificate, certified_at, added_at, revoked_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)"
}

fn bind_device<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    d: &DeviceRecord,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q.bind(d.device_key.clone())
        .bind(d.account_id.0)
        .bind(d.label.clone())
        .bind(d.certificate.clone())
        .bind(d.certified_at)
        .bind(d.added_at)
        .bind(d.revoked_at)
}

#[async_trait]
impl AccountStore for SqlStore {
    #[tracing::instrument(name = "db", skip_all, fields(op = "create_account"))]
    async fn create_account(
        &self,
        account: &AccountRecord,
        device: &DeviceRecord,
    ) -> StoreResult<()> {
        let _t = self.begin_write("create_account")?;
        let mut tx = self.write.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO accounts (id, username, account_key, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(account.id.0)
        .bind(&account.username)
        .bind(&account.account_key)
        .bind(account.created_at)
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            if is_unique_violation(&e) {
                // PostgreSQL refuses further statements in a failed transaction.
                tx.rollback().await?;
                let taken = sqlx::query("SELECT 1 FROM accounts WHERE username = $1")
                    .bind(&account.username)
                    .fetch_optional(&self.write)
                    .await?
                    .is_some();
                return Err(StoreError::Conflict(if taken {
                    "username_taken"
                } else {
                    "account_exists"
                }));
            }
            return Err(e.into());
        }
        match bind_device(sqlx::query(insert_device_sql()), device)
            .execute(&mut *tx)
            .await
        {
            Err(e) if is_unique_violation(&e) => return Err(StoreError::Conflict("device_exists")),
            other => other?,
        };
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "account"))]
    async fn account(&self, account_id: Id) -> StoreResult<Option<AccountRecord>> {
        let _t = self.begin("account")?;
        let sql = format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE id = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(account_id.0)
            .fetch_optional(&mut *self.read.acquire().await?)
            .await?
            .map(|r| rows::account(&r))
            .transpose()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "account_by_key"))]
    async fn account_by_key(&self, account_key: &str) -> StoreResult<Option<AccountRecord>> {
        let _t = self.begin("account_by_key")?;
        let sql = format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE account_key = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(account_key)
            .fetch_optional(&self.write)
            .await?
            .map(|r| rows::account(&r))
            .transpose()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "accounts"))]
    async fn accounts(&self, ids: &[Id]) -> StoreResult<Vec<AccountRecord>> {
        let _t = self.begin("accounts")?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {ACCOUNT_COLS} FROM accounts WHERE id IN ({}) ORDER BY id",
            placeholders(1, ids.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for i in ids {
            q = q.bind(i.0);
        }
        q.fetch_all(&mut *self.read.acquire().await?)
            .await?
            .iter()
            .map(rows::account)
            .collect()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "device"))]
    async fn device(&self, device_key: &str) -> StoreResult<Option<DeviceRecord>> {
        let _t = self.begin("device")?;
        let sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE device_key = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(device_key)
            .fetch_optional(&self.write)
            .await?
            .map(|r| rows::device(&r))
            .transpose()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "add_device"))]
    async fn add_device(&self, device: &DeviceRecord) -> StoreResult<()> {
        let _t = self.begin_write("add_device")?;
        match bind_device(sqlx::query(insert_device_sql()), device)
            .execute(&self.write)
            .await
        {
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict("device_exists")),
            Err(e) => Err(e.into()),
            Ok(_) => Ok(()),
        }
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "devices"))]
    async fn devices(&self, account_id: Id) -> StoreResult<Vec<DeviceRecord>> {
        let _t = self.begin("devices")?;
        let sql = format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE account_id = $1 ORDER BY added_at, device_key"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(account_id.0)
            .fetch_all(&self.write)
            .await?
            .iter()
            .map(rows::device)
            .collect()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "revoke_device"))]
    async fn revoke_device(
        &self,
        account_id: Id,
        device_key: &str,
        now: i64,
    ) -> StoreResult<Vec<Id>> {
        let _t = self.begin("revoke_device")?;
        let mut tx = self.write.begin().await?;
        let n = sqlx::query("UPDATE devices SET revoked_at = $1 WHERE device_key = $2 AND account_id = $3 AND revoked_at IS NULL")
            .bind(now)
            .bind(device_key)
            .bind(account_id.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        let revoked = sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE device_key = $2 AND revoked_at IS NULL RETURNING id")
            .bind(now)
            .bind(device_key)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| id(r, "id"))
            .collect::<StoreResult<Vec<_>>>()?;
        tx.commit().await?;
        Ok(revoked)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "put_challenge"))]
    async fn put_challenge(&self, c: &ChallengeRecord) -> StoreResult<()> {
        let _t = self.begin("put_challenge")?;
        sqlx::query("INSERT INTO auth_challenges (challenge, device_key, audience, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(&c.challenge)
            .bind(&c.device_key)
            .bind(&c.audience)
            .bind(c.expires_at)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "take_challenge"))]
    async fn take_challenge(
        &self,
        challenge: &str,
        now: i64,
    ) -> StoreResult<Option<ChallengeRecord>> {
        let _t = self.begin("take_challenge")?;
        // DELETE … RETURNING makes the challenge single-use even under concurrent logins.
        let row = sqlx::query("DELETE FROM auth_challenges WHERE challenge = $1 RETURNING challenge, device_key, audience, expires_at")
            .bind(challenge)
            .fetch_optional(&self.write)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let record = ChallengeRecord {
            challenge: rows::text(&row, "challenge")?,
            device_key: rows::text(&row, "device_key")?,
            audience: rows::text(&row, "audience")?,
            expires_at: int(&row, "expires_at")?,
        };
        Ok((record.expires_at > now).then_some(record))
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "purge_challenges"))]
    async fn purge_challenges(&self, now: i64) -> StoreResult<u64> {
        let _t = self.begin("purge_challenges")?;
        Ok(
            sqlx::query("DELETE FROM auth_challenges WHERE expires_at <= $1")
                .bind(now)
                .execute(&self.write)
                .await?
                .rows_affected(),
        )
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "create_session"))]
    async fn create_session(&self, s: &SessionRecord, refresh_hash: &str) -> StoreResult<()> {
        let _t = self.begin("create_session")?;
        let mut tx = self.write.begin().await?;
        sqlx::query("INSERT INTO sessions (id, account_id, device_key, created_at, refreshed_at) VALUES ($1, $2, $3, $4, $4)")
            .bind(s.id.0)
            .bind(s.account_id.0)
            .bind(&s.device_key)
            .bind(s.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(refresh_hash)
        .bind(s.id.0)
        .bind(s.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "session"))]
    async fn session(&self, session_id: Id) -> StoreResult<Option<SessionRecord>> {
        let _t = self.begin("session")?;
        let sql = format!("SELECT {SESSION_COLS} FROM sessions s WHERE s.id = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(session_id.0)
            .fetch_optional(&self.write)
            .await?
            .map(|r| rows::session(&r))
            .transpose()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "session_by_refresh"))]
    async fn session_by_refresh(&self, refresh_hash: &str) -> StoreResult<Option<SessionRecord>> {
        let _t = self.begin("session_by_refresh")?;
        let sql = format!(
            "SELECT {SESSION_COLS} FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id WHERE rt.token_hash = $1"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(refresh_hash)
            .fetch_optional(&self.write)
            .await?
            .map(|r| rows::session(&r))
            .transpose()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "rotate_refresh"))]
    async fn rotate_refresh(
        &self,
        hash: &str,
        successor_hash: &str,
        now: i64,
        grace_ms: i64,
        idle_ms: i64,
    ) -> StoreResult<RefreshOutcome> {
        let _t = self.begin("rotate_refresh")?;
        let mut tx = self.write.begin().await?;
        let sql = format!(
            "SELECT {SESSION_COLS}, rt.used_at, rt.created_at AS issued_at FROM refresh_tokens rt \
             JOIN sessions s ON s.id = rt.session_id WHERE rt.token_hash = $1"
        );
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(hash)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(RefreshOutcome::Invalid);
        };
        let session = rows::session(&row)?;
        if session.revoked_at.is_some() || now - int(&row, "issued_at")? > idle_ms {
            return Ok(RefreshOutcome::Invalid);
        }
        // Conditional update: of two concurrent first uses, exactly one rotates.
        let first = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
        )
        .bind(now)
        .bind(hash)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let outcome = if first {
            sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3) ON CONFLICT (token_hash) DO NOTHING")
                .bind(successor_hash)
                .bind(session.id.0)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE sessions SET refreshed_at = $1 WHERE id = $2")
                .bind(now)
                .bind(session.id.0)
                .execute(&mut *tx)
                .await?;
            RefreshOutcome::Rotated(session)
        } else {
            let used_at: Option<i64> = match opt_int(&row, "used_at")? {
                Some(t) => Some(t),
                None => sqlx::query("SELECT used_at FROM refresh_tokens WHERE token_hash = $1")
                    .bind(hash)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::from)
                    .and_then(|r| opt_int(&r, "used_at"))?,
            };
            if used_at.is_some_and(|t| now - t <= grace_ms) {
                RefreshOutcome::Grace(session)
            } else {
                sqlx::query(
                    "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(session.id.0)
                .execute(&mut *tx)
                .await?;
                RefreshOutcome::Reused(session)
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "revoke_session"))]
    async fn revoke_session(&self, session_id: Id, now: i64) -> StoreResult<bool> {
        let _t = self.begin("revoke_session")?;
        let n =
            sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(session_id.0)
                .execute(&self.write)
                .await?
                .rows_affected();
        Ok(n == 1)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "revoked_sessions_since"))]
    async fn revoked_sessions_since(&self, since: i64) -> StoreResult<Vec<Id>> {
        let _t = self.begin("revoked_sessions_since")?;
        sqlx::query("SELECT id FROM sessions WHERE revoked_at >= $1")
            .bind(since)
            .fetch_all(&self.write)
            .await?
            .iter()
            .map(|r| id(r, "id"))
            .collect()
    }
}
