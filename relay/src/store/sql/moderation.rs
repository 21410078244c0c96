//! Guild moderation, ownership transfer and account deletion (see `api/moderation.rs`,
//! `api/reports.rs` and `api/users.rs`).

use async_trait::async_trait;
use concord_proto::Id;
use concord_proto::api::Report;
use concord_proto::model::Guild;
use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;

use super::SqlStore;
use super::admin::{audit_entry, revoke_sessions_of};
use super::rows::{self, id, int, opt_id, opt_int, opt_text, text};
use crate::store::{AuditEntry, DeletedAccount, ModerationStore, StoreError, StoreResult};

const REPORT_COLS: &str = "id, guild_id, reporter_id, user_id, channel_id, message_id, \
     message_content, reason, status, action, handled_by, handled_at, created_at";

fn report(row: &AnyRow) -> StoreResult<Report> {
    Ok(Report {
        id: id(row, "id")?,
        guild_id: opt_id(row, "guild_id")?,
        reporter_id: id(row, "reporter_id")?,
        user_id: id(row, "user_id")?,
        channel_id: opt_id(row, "channel_id")?,
        message_id: opt_id(row, "message_id")?,
        message_content: opt_text(row, "message_content")?,
        reason: text(row, "reason")?,
        status: text(row, "status")?,
        action: opt_text(row, "action")?,
        handled_by: opt_id(row, "handled_by")?,
        handled_at: opt_int(row, "handled_at")?,
        created_at: int(row, "created_at")?,
    })
}

#[async_trait]
impl ModerationStore for SqlStore {
    #[tracing::instrument(name = "db", skip_all, fields(op = "add_guild_audit"))]
    async fn add_guild_audit(&self, guild_id: Id, e: &AuditEntry) -> StoreResult<()> {
        let _t = self.begin("add_guild_audit")?;
        sqlx::query(
            "INSERT INTO guild_audit (id, guild_id, actor_id, action, target_id, detail, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(e.id.0)
        .bind(guild_id.0)
        .bind(e.actor_id.map_or(0, |a| a.0))
        .bind(&e.action)
        .bind(e.target_id.map(|t| t.0))
        .bind(&e.detail)
        .bind(e.created_at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "guild_audit"))]
    async fn guild_audit(
        &self,
        guild_id: Id,
        action: Option<&str>,
        before: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        let _t = self.begin("guild_audit")?;
        let rows = sqlx::query(
            "SELECT id, actor_id, action, target_id, detail, created_at FROM guild_audit \
             WHERE guild_id = $1 AND id < $2 AND ($3 = '' OR action = $3) ORDER BY id DESC LIMIT $4",
        )
        .bind(guild_id.0)
        .bind(before.map_or(i64::MAX, |b| b.0))
        .bind(action.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.write)
        .await?;
        rows.iter().map(audit_entry).collect()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "purge_audit"))]
    async fn purge_audit(&self, before_ms: i64) -> StoreResult<u64> {
        let _t = self.begin("purge_audit")?;
        let mut n = 0;
        for table in ["guild_audit", "instance_audit"] {
            n += sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE created_at < $1"
            )))
            .bind(before_ms)
            .execute(&self.write)
            .await?
            .rows_affected();
        }
        Ok(n)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "set_timeout"))]
    async fn set_timeout(
        &self,
        guild_id: Id,
        user_id: Id,
        until: Option<i64>,
    ) -> StoreResult<bool> {
        let _t = self.begin("set_timeout")?;
        let n = sqlx::query(
            "UPDATE members SET timeout_until = $1 WHERE guild_id = $2 AND user_id = $3",
        )
        .bind(until)
        .bind(guild_id.0)
        .bind(user_id.0)
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "latest_message_by"))]
    async fn latest_message_by(
        &self,
        channel_id: Id,
        author: Id,
        since: Id,
    ) -> StoreResult<Option<(String, i64)>> {
        let _t = self.begin("latest_message_by")?;
        let row = sqlx::query(
            "SELECT nonce, created_at FROM messages WHERE author_id = $1 AND id >= $2 \
             AND channel_id = $3 ORDER BY id DESC LIMIT 1",
        )
        .bind(author.0)
        .bind(since.0)
        .bind(channel_id.0)
        .fetch_optional(&self.write)
        .await?;
        row.map(|r| Ok((text(&r, "nonce")?, int(&r, "created_at")?)))
            .transpose()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "live_messages_by"))]
    async fn live_messages_by(
        &self,
        author: Id,
        guild_id: Option<Id>,
        since: Id,
        limit: u32,
    ) -> StoreResult<Vec<(Id, Id)>> {
        let _t = self.begin("live_messages_by")?;
        let rows = sqlx::query(
            "SELECT m.channel_id, m.id FROM messages m JOIN channels c ON c.id = m.channel_id \
             WHERE m.author_id = $1 AND m.id >= $2 AND m.deleted_at IS NULL \
             AND ($3 = 0 OR c.guild_id = $3) ORDER BY m.id DESC LIMIT $4",
        )
        .bind(author.0)
        .bind(since.0)
        .bind(guild_id.map_or(0, |g| g.0))
        .bind(i64::from(limit))
        .fetch_all(&self.write)
        .await?;
        rows.iter()
            .map(|r| Ok((id(r, "channel_id")?, id(r, "id")?)))
            .collect()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "create_report"))]
    async fn create_report(&self, r: &Report) -> StoreResult<()> {
        let _t = self.begin_write("create_report")?;
        sqlx::query(
            "INSERT INTO reports (id, guild_id, reporter_id, user_id, channel_id, message_id, \
             message_content, reason, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open', $9)",
        )
        .bind(r.id.0)
        .bind(r.guild_id.map(|g| g.0))
        .bind(r.reporter_id.0)
        .bind(r.user_id.0)
        .bind(r.channel_id.map(|c| c.0))
        .bind(r.message_id.map(|m| m.0))
        .bind(&r.message_content)
        .bind(&r.reason)
        .bind(r.created_at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "report"))]
    async fn report(&self, report_id: Id) -> StoreResult<Option<Report>> {
        let _t = self.begin("report")?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {REPORT_COLS} FROM reports WHERE id = $1"
        )))
        .bind(report_id.0)
        .fetch_optional(&self.write)
        .await?;
        row.as_ref().map(report).transpose()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "reports"))]
    async fn reports(
        &self,
        guild_id: Option<Id>,
        status: Option<&str>,
        before: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<Report>> {
        let _t = self.begin("reports")?;
        let scope = match guild_id {
            Some(_) => "guild_id = $1",
            None => "guild_id IS NULL AND $1 = 0",
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {REPORT_COLS} FROM reports WHERE {scope} AND ($2 = '' OR status = $2) \
             AND id < $3 ORDER BY id DESC LIMIT $4"
        )))
        .bind(guild_id.map_or(0, |g| g.0))
        .bind(status.unwrap_or(""))
        .bind(before.map_or(i64::MAX, |b| b.0))
        .bind(i64::from(limit))
        .fetch_all(&self.write)
        .await?;
        rows.iter().map(report).collect()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "handle_report"))]
    async fn handle_report(
        &self,
        report_id: Id,
        status: &str,
        action: &str,
        by: Id,
        at: i64,
    ) -> StoreResult<Report> {
        let _t = self.begin("handle_report")?;
        let n = sqlx::query(
            "UPDATE reports SET status = $1, action = $2, handled_by = $3, handled_at = $4 \
             WHERE id = $5 AND status = 'open'",
        )
        .bind(status)
        .bind(action)
        .bind(by.0)
        .bind(at)
        .bind(report_id.0)
        .execute(&self.write)
        .await?
        .rows_affected();
        let found = self.report(report_id).await?.ok_or(StoreError::NotFound)?;
        if n == 0 {
            return Err(StoreError::Conflict("report_closed"));
        }
        Ok(found)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "owned_guilds"))]
    async fn owned_guilds(&self, user_id: Id) -> StoreResult<Vec<Id>> {
        let _t = self.begin("owned_guilds")?;
        sqlx::query("SELECT id FROM guilds WHERE owner_id = $1 ORDER BY id")
            .bind(user_id.0)
            .fetch_all(&self.write)
            .await?
            .iter()
            .map(|r| id(r, "id"))
            .collect()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "transfer_guild"))]
    async fn transfer_guild(&self, guild_id: Id, new_owner: Id) -> StoreResult<Guild> {
        let _t = self.begin("transfer_guild")?;
        let row = sqlx::query(
            "UPDATE guilds SET owner_id = $1 WHERE id = $2 AND EXISTS \
             (SELECT 1 FROM members WHERE guild_id = $2 AND user_id = $1) \
             RETURNING id, name, owner_id, created_at",
        )
        .bind(new_owner.0)
        .bind(guild_id.0)
        .fetch_optional(&self.write)
        .await?
        .ok_or(StoreError::NotFound)?;
        rows::guild(&row)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "delete_account"))]
    async fn delete_account(&self, account_id: Id, now: i64) -> StoreResult<DeletedAccount> {
        let _t = self.begin("delete_account")?;
        let mut tx = self.write.begin().await?;
        let owned: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM guilds WHERE owner_id = $1")
            .bind(account_id.0)
            .fetch_one(&mut *tx)
            .await?;
        if owned > 0 {
            return Err(StoreError::Conflict("owns_guilds"));
        }
        let n = sqlx::query(
            "UPDATE accounts SET username = $1, account_key = $2, deleted_at = $3, \
             instance_admin = 0 WHERE id = $4 AND deleted_at IS NULL",
        )
        .bind(format!("deleted-{}", account_id.0))
        .bind(format!("deleted:{}", account_id.0))
        .bind(now)
        .bind(account_id.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        let sessions = revoke_sessions_of(&mut tx, account_id, now).await?;
        let guilds = sqlx::query("DELETE FROM members WHERE user_id = $1 RETURNING guild_id")
            .bind(account_id.0)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| id(r, "guild_id"))
            .collect::<StoreResult<Vec<_>>>()?;
        for sql in [
            "DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM sessions WHERE account_id = $1)",
            "DELETE FROM devices WHERE account_id = $1",
            "DELETE FROM read_states WHERE user_id = $1",
            "DELETE FROM reactions WHERE user_id = $1",
        ] {
            sqlx::query(sql)
                .bind(account_id.0)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(DeletedAccount { sessions, guilds })
    }
}
