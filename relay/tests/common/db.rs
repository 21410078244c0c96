//! Throwaway stores: a SQLite file in a temporary directory, or a fresh schema in the
//! PostgreSQL database named by `CONCORD_TEST_DATABASE_URL`.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use concord_relay::store::Store;
use concord_relay::store::sql::{PoolConfig, SqlStore};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};
use tempfile::TempDir;

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Test schemas older than this are dropped by the next test run.
const STALE_SCHEMA_AGE: Duration = Duration::from_secs(6 * 3600);

pub fn postgres_url() -> String {
    std::env::var("CONCORD_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// Small pools: many tests share one PostgreSQL server at once.
pub fn pool_config() -> PoolConfig {
    PoolConfig {
        max_write_connections: 4,
        max_read_connections: 4,
        acquire_timeout: Duration::from_secs(30),
        ..PoolConfig::default()
    }
}

pub async fn sqlite_store() -> (Arc<dyn Store>, TempDir) {
    let dir = tempfile::tempdir().expect("create temp dir");
    let url = format!("sqlite://{}/relay.db?mode=rwc", dir.path().display());
    let store = SqlStore::connect(&url, &pool_config())
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    (Arc::new(store), dir)
}

/// A migrated store in a schema of its own, so tests never see each other's rows.
pub async fn postgres_store() -> Arc<dyn Store> {
    let url = fresh_postgres_url().await;
    let store = SqlStore::connect(&url, &pool_config())
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    Arc::new(store)
}

/// The test database URL pointed at a new, empty schema (for stores and relay servers).
pub async fn fresh_postgres_url() -> String {
    let base = postgres_url();
    let schema = fresh_schema_name();
    let mut conn = PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("connect to {base} (set CONCORD_TEST_DATABASE_URL): {e}"));
    if !CLEANED.swap(true, Ordering::SeqCst) {
        drop_stale_schemas(&mut conn).await;
    }
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("create schema {schema}: {e}"));
    conn.close().await.ok();
    with_param(&base, &format!("options[search_path]={schema}"))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);
static CLEANED: AtomicBool = AtomicBool::new(false);

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

/// `t_<pid>_<counter>_<nanos>`: unique across concurrent test binaries and reruns.
fn fresh_schema_name() -> String {
    format!(
        "t_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        unix_nanos()
    )
}

/// The creation time of a schema named by [`fresh_schema_name`], if `name` is one.
fn schema_nanos(name: &str) -> Option<u128> {
    let parts: Vec<&str> = name.strip_prefix("t_")?.split('_').collect();
    match parts.as_slice() {
        [pid, counter, nanos]
            if [pid, counter, nanos]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) =>
        {
            nanos.parse().ok()
        }
        _ => None,
    }
}

/// Best effort: earlier runs never drop their schemas, so old ones are removed here.
async fn drop_stale_schemas(conn: &mut PgConnection) {
    let Ok(rows) = sqlx::query("SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%'")
        .fetch_all(&mut *conn)
        .await
    else {
        return;
    };
    let cutoff = unix_nanos().saturating_sub(STALE_SCHEMA_AGE.as_nanos());
    for row in rows {
        let Ok(name) = row.try_get::<String, _>("nspname") else {
            continue;
        };
        if schema_nanos(&name).is_some_and(|t| t < cutoff) {
            let _ = sqlx::query(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
}

fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}
