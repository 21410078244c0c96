//! Instance administration (see `api/admin.rs`).

use async_trait::async_trait;
use concord_proto::Id;
use sqlx::any::AnyRow;

use super::SqlStore;
use super::archive::{ARCHIVED_COLS, archived_message};
use super::rows::{boolean, id, int, opt_id, opt_int, text};
use crate::store::{
    AdminAccount, AdminStore, ArchivedMessage, AuditEntry, InstanceInvite, InstanceStats,
    InviteRefusal, StoreError, StoreResult,
};

const ACCOUNT_COLS: &str = "id, username, created_at, instance_admin, suspended_at";
const INSTANCE_INVITE_COLS: &str =
    "code, created_by, max_uses, uses, expires_at, revoked_at, created_at";

fn instance_invite(row: &AnyRow) -> StoreResult<InstanceInvite> {
    Ok(InstanceInvite {
        code: text(row, "code")?,
        created_by: id(row, "created_by")?,
        max_uses: opt_int(row, "max_uses")?,
        uses: int(row, "uses")?,
        expires_at: opt_int(row, "expires_at")?,
        revoked: opt_int(row, "revoked_at")?.is_some(),
        created_at: int(row, "created_at")?,
    })
}

fn account(row: &AnyRow) -> StoreResult<AdminAccount> {
    Ok(AdminAccount {
        id: id(row, "id")?,
        username: text(row, "username")?,
        created_at: int(row, "created_at")?,
        instance_admin: boolean(row, "instance_admin")?,
        suspended_at: opt_int(row, "suspended_at")?,
    })
}

/// An `instance_audit` or `guild_audit` row.
pub(super) fn audit_entry(row: &AnyRow) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        id: id(row, "id")?,
        actor_id: opt_id(row, "actor_id")?,
        action: text(row, "action")?,
        target_id: opt_id(row, "target_id")?,
        detail: text(row, "detail")?,
        created_at: int(row, "created_at")?,
    })
}

/// Revokes every live session of an account; returns their ids.
pub(super) async fn revoke_sessions_of(
    conn: &mut sqlx::AnyConnection,
    account_id: Id,
    now: i64,
) -> StoreResult<Vec<Id>> {
    sqlx::query(
        "UPDATE sessions SET revoked_at = $1 WHERE account_id = $2 AND revoked_at IS NULL RETURNING id",
    )
    .bind(now)
    .bind(account_id.0)
    .fetch_all(conn)
    .await?
    .iter()
    .map(|r| id(r, "id"))
    .collect()
}

/// `%` and `_` in a search are literal.
fn like_pattern(query: &str) -> String {
    let mut out = String::from("%");
    for c in query.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[async_trait]
impl AdminStore for SqlStore {
    #[tracing::instrument(name = "db", skip_all, fields(op = "admin_account"))]
    async fn admin_account(&self, account_id: Id) -> StoreResult<Option<AdminAccount>> {
        let _t = self.begin("admin_account")?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLS} FROM accounts WHERE id = $1"
        )))
        .bind(account_id.0)
        .fetch_optional(&self.write)
        .await?;
        row.as_ref().map(account).transpose()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "admin_account_by_username"))]
    async fn admin_account_by_username(&self, username: &str) -> StoreResult<Option<AdminAccount>> {
        let _t = self.begin("admin_account_by_username")?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLS} FROM accounts WHERE username = $1"
        )))
        .bind(username)
        .fetch_optional(&self.write)
        .await?;
        row.as_ref().map(account).transpose()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "search_accounts"))]
    async fn search_accounts(
        &self,
        query: &str,
        after: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<AdminAccount>> {
        let _t = self.begin("search_accounts")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLS} FROM accounts WHERE LOWER(username) LIKE $1 ESCAPE '\\' \
             AND id > $2 ORDER BY id LIMIT $3"
        )))
        .bind(like_pattern(query))
        .bind(after.map_or(i64::MIN, |a| a.0))
        .bind(i64::from(limit))
        .fetch_all(&mut *self.read.acquire().await?)
        .await?;
        rows.iter().map(account).collect()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "instance_admins"))]
    async fn instance_admins(&self) -> StoreResult<Vec<AdminAccount>> {
        let _t = self.begin("instance_admins")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLS} FROM accounts WHERE instance_admin <> 0 ORDER BY id"
        )))
        .fetch_all(&self.write)
        .await?;
        rows.iter().map(account).collect()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "set_instance_admin"))]
    async fn set_instance_admin(&self, account_id: Id, admin: bool) -> StoreResult<bool> {
        let _t = self.begin("set_instance_admin")?;
        let n = sqlx::query("UPDATE accounts SET instance_admin = $1 WHERE id = $2")
            .bind(i64::from(admin))
            .bind(account_id.0)
            .execute(&self.write)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "set_suspended"))]
    async fn set_suspended(&self, account_id: Id, at: Option<i64>) -> StoreResult<Vec<Id>> {
        let _t = self.begin("set_suspended")?;
        let mut tx = self.write.begin().await?;
        let n = sqlx::query("UPDATE accounts SET suspended_at = $1 WHERE id = $2")
            .bind(at)
            .bind(account_id.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        let revoked = match at {
            Some(now) => revoke_sessions_of(&mut tx, account_id, now).await?,
            None => Vec::new(),
        };
        tx.commit().await?;
        Ok(revoked)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "revoke_account_sessions"))]
    async fn revoke_account_sessions(&self, account_id: Id, now: i64) -> StoreResult<Vec<Id>> {
        let _t = self.begin("revoke_account_sessions")?;
        let mut conn = self.write.acquire().await?;
        revoke_sessions_of(&mut conn, account_id, now).await
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "instance_stats"))]
    async fn instance_stats(&self) -> StoreResult<InstanceStats> {
        let _t = self.begin("instance_stats")?;
        let mut conn = self.read.acquire().await?;
        let mut count = async |sql: &'static str| -> StoreResult<i64> {
            Ok(sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&mut *conn)
                .await?)
        };
        Ok(InstanceStats {
            accounts: count("SELECT COUNT(*) FROM accounts").await?,
            suspended_accounts: count(
                "SELECT COUNT(*) FROM accounts WHERE suspended_at IS NOT NULL",
            )
            .await?,
            guilds: count("SELECT COUNT(*) FROM guilds").await?,
            messages: count("SELECT COUNT(*) FROM messages").await?,
            active_sessions: count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL")
                .await?,
        })
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "add_audit"))]
    async fn add_audit(&self, e: &AuditEntry) -> StoreResult<()> {
        let _t = self.begin("add_audit")?;
        sqlx::query(
            "INSERT INTO instance_audit (id, actor_id, action, target_id, detail, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(e.id.0)
        .bind(e.actor_id.map(|a| a.0))
        .bind(&e.action)
        .bind(e.target_id.map(|t| t.0))
        .bind(&e.detail)
        .bind(e.created_at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "audit_log"))]
    async fn audit_log(&self, before: Option<Id>, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let _t = self.begin("audit_log")?;
        let rows = sqlx::query(
            "SELECT id, actor_id, action, target_id, detail, created_at FROM instance_audit \
             WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before.map_or(i64::MAX, |b| b.0))
        .bind(i64::from(limit))
        .fetch_all(&self.write)
        .await?;
        rows.iter().map(audit_entry).collect()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "create_instance_invite"))]
    async fn create_instance_invite(&self, i: &InstanceInvite) -> StoreResult<()> {
        let _t = self.begin_write("create_instance_invite")?;
        sqlx::query(
            "INSERT INTO instance_invites (code, created_by, max_uses, uses, expires_at, created_at) \
             VALUES ($1, $2, $3, 0, $4, $5)",
        )
        .bind(&i.code)
        .bind(i.created_by.0)
        .bind(i.max_uses)
        .bind(i.expires_at)
        .bind(i.created_at)
        .execute(&self.write)
        .await
        .map_err(|e| {
            if super::is_unique_violation(&e) {
                StoreError::Conflict("invite_code_taken")
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "instance_invite"))]
    async fn instance_invite(&self, code: &str) -> StoreResult<Option<InstanceInvite>> {
        let _t = self.begin("instance_invite")?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INSTANCE_INVITE_COLS} FROM instance_invites WHERE code = $1"
        )))
        .bind(code)
        .fetch_optional(&self.write)
        .await?;
        row.as_ref().map(instance_invite).transpose()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "instance_invites"))]
    async fn instance_invites(&self) -> StoreResult<Vec<InstanceInvite>> {
        let _t = self.begin("instance_invites")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INSTANCE_INVITE_COLS} FROM instance_invites ORDER BY created_at DESC, code"
        )))
        .fetch_all(&self.write)
        .await?;
        rows.iter().map(instance_invite).collect()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "revoke_instance_invite"))]
    async fn revoke_instance_invite(&self, code: &str, now: i64) -> StoreResult<bool> {
        let _t = self.begin("revoke_instance_invite")?;
        let n = sqlx::query(
            "UPDATE instance_invites SET revoked_at = COALESCE(revoked_at, $1) WHERE code = $2",
        )
        .bind(now)
        .bind(code)
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "use_instance_invite"))]
    async fn use_instance_invite(
        &self,
        code: &str,
        now: i64,
    ) -> StoreResult<Result<(), InviteRefusal>> {
        let _t = self.begin("use_instance_invite")?;
        let n = sqlx::query(
            "UPDATE instance_invites SET uses = uses + 1 WHERE code = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2) AND (max_uses IS NULL OR uses < max_uses)",
        )
        .bind(code)
        .bind(now)
        .execute(&self.write)
        .await?
        .rows_affected();
        if n > 0 {
            return Ok(Ok(()));
        }
        // Say why: the same rule the API applies before a sign-up.
        Ok(Err(match self.instance_invite(code).await? {
            None => InviteRefusal::Unknown,
            Some(i) => {
                crate::store::InviteRefusal::check(i.revoked, i.expires_at, i.max_uses, i.uses, now)
                    .err()
                    .unwrap_or(InviteRefusal::UsedUp)
            }
        }))
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "messages_by_author"))]
    async fn messages_by_author(
        &self,
        author: Id,
        after: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<ArchivedMessage>> {
        let _t = self.begin("messages_by_author")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ARCHIVED_COLS} FROM messages WHERE author_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        )))
        .bind(author.0)
        .bind(after.map_or(i64::MIN, |a| a.0))
        .bind(i64::from(limit))
        .fetch_all(&mut *self.read.acquire().await?)
        .await?;
        rows.iter().map(archived_message).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_patterns_take_wildcards_literally() {
        assert_eq!(like_pattern("Ana"), "%ana%");
        assert_eq!(like_pattern("a_b%"), "%a\\_b\\%%");
    }
}
