//! The database's own insert rate, measured in the same run as the relay: a direct sqlx loop
//! into a message-shaped table of the same backend (SQLite file with the relay's pragmas, or a
//! fresh PostgreSQL schema), one row per transaction and 256 rows per transaction. The
//! relay's persisted message rate is reported against both.

use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

#[derive(Serialize, Clone, Copy, Default)]
pub struct Baseline {
    pub unbatched_rows_per_s: f64,
    pub batched_rows_per_s: f64,
    pub batch_rows: usize,
}

const BATCH: usize = 256;
const TABLE: &str = "CREATE TABLE bench_raw (id BIGINT PRIMARY KEY, channel_id BIGINT NOT NULL, \
     author_id BIGINT NOT NULL, nonce TEXT NOT NULL, content TEXT NOT NULL, seq BIGINT NOT NULL, \
     created_at BIGINT NOT NULL, UNIQUE (author_id, nonce))";
/// The relay's own SQLite settings (relay/src/store/sql/mod.rs).
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA temp_store = MEMORY;";

/// Runs each loop for `secs`; `database_url` None means SQLite in a temporary directory.
pub async fn measure(database_url: Option<&str>, secs: f64) -> anyhow::Result<Baseline> {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir()?;
    let mut schema = None;
    let url = match database_url {
        Some(url) if url.starts_with("postgres") => {
            let name = format!("bench_raw_{}", std::process::id());
            let mut conn = PgConnection::connect(url).await?;
            conn.execute(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
            )))
            .await?;
            conn.execute(AssertSqlSafe(format!("CREATE SCHEMA \"{name}\"")))
                .await?;
            schema = Some((url.to_owned(), name.clone()));
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}options[search_path]={name}")
        }
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}/raw.db?mode=rwc", dir.path().display()),
    };
    let sqlite = url.starts_with("sqlite");
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    conn.execute(SQLITE_PRAGMAS).await?;
                }
                Ok(())
            })
        })
        .connect_with(AnyConnectOptions::from_str(&url)?)
        .await?;
    pool.execute(TABLE).await?;
    let content = "Deploy the release tomorrow, the bug fix is merged and the tests pass";
    let mut next: i64 = 1;
    let row = |q: sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>, id: i64| {
        q.bind(id)
            .bind(id % 500)
            .bind(id % 5_000)
            .bind(format!("n{id}"))
            .bind(content)
            .bind(id)
            .bind(id)
    };

    let until = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut rows = 0usize;
    while Instant::now() < until {
        let q = sqlx::query(
            "INSERT INTO bench_raw (id, channel_id, author_id, nonce, content, seq, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        );
        row(q, next).execute(&pool).await?;
        next += 1;
        rows += 1;
    }
    let unbatched = rows as f64 / start.elapsed().as_secs_f64();

    let values: Vec<String> = (0..BATCH)
        .map(|r| {
            let b = r * 7;
            format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7
            )
        })
        .collect();
    let sql: &'static str = Box::leak(
        format!(
            "INSERT INTO bench_raw (id, channel_id, author_id, nonce, content, seq, created_at) VALUES {}",
            values.join(", ")
        )
        .into_boxed_str(),
    );
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut rows = 0usize;
    while Instant::now() < until {
        let mut tx = pool.begin().await?;
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for _ in 0..BATCH {
            q = row(q, next);
            next += 1;
        }
        q.execute(&mut *tx).await?;
        tx.commit().await?;
        rows += BATCH;
    }
    let batched = rows as f64 / start.elapsed().as_secs_f64();
    pool.close().await;
    if let Some((url, name)) = schema
        && let Ok(mut conn) = PgConnection::connect(&url).await
    {
        let _ = conn
            .execute(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
            )))
            .await;
    }
    Ok(Baseline {
        unbatched_rows_per_s: super::round2(unbatched),
        batched_rows_per_s: super::round2(batched),
        batch_rows: BATCH,
    })
}
