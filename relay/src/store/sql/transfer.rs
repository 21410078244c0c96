//! Copies every row of one relay database into another, empty one, across backends
//! (SQLite ↔ PostgreSQL): `concord-relay migrate-store`, and `backup` / `restore` (a backup
//! is a SQLite file with the relay's own schema, readable with `sqlite3`). The source is read
//! in one transaction (a consistent snapshot, so a running relay may keep writing), the
//! destination written in one (all or nothing), and row counts are compared afterwards.

use futures_util::TryStreamExt;
use sqlx::any::AnyArguments;
use sqlx::{Arguments, Row};

use super::{Backend, SqlStore};
use crate::store::{StoreError, StoreResult};

/// Every table, parents before children (foreign keys). `worker_leases` is left out: a lease
/// belongs to a running instance, not to the data.
pub const TABLES: [&str; 22] = [
    "accounts",
    "devices",
    "auth_challenges",
    "signing_keys",
    "server_secrets",
    "sessions",
    "refresh_tokens",
    "guilds",
    "roles",
    "channels",
    "dm_channels",
    "overwrites",
    "members",
    "member_roles",
    "bans",
    "invites",
    "messages",
    "reactions",
    "channel_events",
    "read_states",
    "archived_months",
    "instance_audit",
];

/// Rows per INSERT: far below both backends' bound-parameter limits.
const BATCH_ROWS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub table: &'static str,
    pub rows: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
}

/// The destination's columns of a table (generated ones left out), with how to carry them.
async fn columns(store: &SqlStore, table: &str) -> StoreResult<Vec<(String, Kind)>> {
    let rows = match store.backend {
        Backend::Sqlite => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT name, type FROM pragma_table_info('{table}')"
            )))
            .fetch_all(&store.write)
            .await?
        }
        Backend::Postgres => {
            sqlx::query(
                "SELECT column_name::text AS name, data_type::text AS type FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 AND is_generated = 'NEVER' \
                 ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(&store.write)
            .await?
        }
    };
    let mut out = Vec::new();
    for row in rows {
        let name: String = row.try_get("name")?;
        let ty: String = row.try_get("type")?;
        let ty = ty.to_ascii_lowercase();
        let kind = if ty.contains("int") {
            Kind::Int
        } else if ty.contains("text") || ty.contains("char") {
            Kind::Text
        } else {
            return Err(StoreError::Corrupt(format!(
                "{table}.{name}: column type {ty} cannot be copied"
            )));
        };
        out.push((name, kind));
    }
    if out.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "no table {table} in the destination"
        )));
    }
    Ok(out)
}

async fn count(pool: &sqlx::AnyPool, table: &str) -> StoreResult<i64> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) AS n FROM {table}"
    )))
    .fetch_one(pool)
    .await?;
    Ok(row.try_get::<i64, _>("n")?)
}

/// Copies everything from `from` into `to`, which must hold no rows.
pub async fn copy_all(from: &SqlStore, to: &SqlStore) -> StoreResult<Vec<Copied>> {
    for table in TABLES {
        if count(&to.write, table).await? != 0 {
            return Err(StoreError::Corrupt(format!(
                "the destination is not empty ({table} has rows); copy only into a new database"
            )));
        }
    }
    // PostgreSQL: every month of the source's messages gets its partition first (else
    // they would all land in the default partition).
    if to.backend == Backend::Postgres {
        let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(id) FROM messages")
            .fetch_one(&from.write)
            .await?;
        if let Some(oldest) = oldest {
            use crate::store::ArchiveStore;
            let mut month = crate::archive::Month::of_id(concord_proto::Id(oldest));
            let stop = crate::archive::Month::of_unix_ms(crate::app::now_ms());
            let mut months = Vec::new();
            while month <= stop {
                let (lo, hi) = month.id_range();
                months.push((month.partition(), lo, hi));
                month = month.next();
            }
            to.ensure_partitions(&months).await?;
        }
    }
    // Column lists first: a SQLite destination has a single connection, which the
    // transaction below holds.
    let mut all_cols = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        all_cols.push(columns(to, table).await?);
    }
    let mut src = from.write.begin().await?;
    let mut dst = to.write.begin().await?;
    let mut copied = Vec::new();
    for (table, cols) in TABLES.into_iter().zip(all_cols) {
        let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
        let select = format!("SELECT {} FROM {table}", names.join(", "));
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(&mut *src);
        let mut batch: Vec<sqlx::any::AnyRow> = Vec::with_capacity(BATCH_ROWS);
        let mut n = 0i64;
        loop {
            let row = rows.try_next().await?;
            let done = row.is_none();
            batch.extend(row);
            if batch.len() == BATCH_ROWS || (done && !batch.is_empty()) {
                n += insert(&mut dst, table, &cols, &batch).await?;
                batch.clear();
            }
            if done {
                break;
            }
        }
        drop(rows);
        copied.push(Copied { table, rows: n });
    }
    src.rollback().await?;
    dst.commit().await?;
    for c in &copied {
        let (s, d) = (
            count(&from.write, c.table).await?,
            count(&to.write, c.table).await?,
        );
        if d != c.rows || s < c.rows {
            return Err(StoreError::Corrupt(format!(
                "{}: copied {} rows but the source has {s} and the destination {d}",
                c.table, c.rows
            )));
        }
    }
    Ok(copied)
}

async fn insert(
    dst: &mut sqlx::Transaction<'static, sqlx::Any>,
    table: &str,
    cols: &[(String, Kind)],
    rows: &[sqlx::any::AnyRow],
) -> StoreResult<i64> {
    let mut args = AnyArguments::default();
    let mut groups = Vec::with_capacity(rows.len());
    let mut p = 0;
    for row in rows {
        let mut marks = Vec::with_capacity(cols.len());
        for (i, (name, kind)) in cols.iter().enumerate() {
            let bound = match kind {
                Kind::Int => args.add(row.try_get::<Option<i64>, _>(i)?),
                Kind::Text => args.add(row.try_get::<Option<String>, _>(i)?),
            };
            bound.map_err(|e| StoreError::Corrupt(format!("{table}.{name}: {e}")))?;
            p += 1;
            marks.push(format!("${p}"));
        }
        groups.push(format!("({})", marks.join(", ")));
    }
    let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES {}",
        names.join(", "),
        groups.join(", ")
    );
    sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
        .execute(&mut **dst)
        .await?;
    Ok(rows.len() as i64)
}
