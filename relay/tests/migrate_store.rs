//! The growth path: a SQLite install moves to PostgreSQL with `migrate-store` (every row of
//! every table, compared value by value, while the source relay keeps running), the moved
//! relay serves the same history and search, and `backup` / `restore` round-trip a
//! PostgreSQL database through a backup file.

mod common;

use std::process::Command;

use common::client::{Backend, TestRelay};
use common::db::fresh_postgres_url;
use concord_relay::store::sql::transfer::{TABLES, copy_all};
use concord_relay::store::sql::{PoolConfig, SqlStore};
use sqlx::Row;

/// Every table's rows as text, sorted: equal dumps mean equal data.
async fn dump(url: &str) -> Vec<(String, Vec<Vec<Option<String>>>)> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let mut out = Vec::new();
    for table in TABLES {
        let names = if url.starts_with("sqlite") {
            format!("SELECT name FROM pragma_table_info('{table}')")
        } else {
            format!(
                "SELECT column_name::text AS name FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = '{table}' \
                 AND is_generated = 'NEVER' ORDER BY ordinal_position"
            )
        };
        let mut cols: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(names))
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("name"))
            .collect();
        cols.sort();
        let sql = format!("SELECT {0} FROM {table} ORDER BY {0}", cols.join(", "));
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&pool)
            .await
            .unwrap();
        let rows = rows
            .iter()
            .map(|r| {
                (0..cols.len())
                    .map(|i| {
                        r.try_get::<Option<i64>, _>(i)
                            .map(|v| v.map(|v| v.to_string()))
                            .or_else(|_| r.try_get::<Option<String>, _>(i))
                            .unwrap()
                    })
                    .collect()
            })
            .collect();
        out.push((table.to_owned(), rows));
    }
    pool.close().await;
    out
}

#[tokio::test]
async fn sqlite_install_moves_to_postgres_without_loss() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let (guild, channel) = ana.create_guild("moving").await;
    bob.join(&ana.invite(guild).await).await;
    for i in 0..150 {
        ana.say(channel, &format!("message {i} — ünïcode ✓")).await;
    }
    bob.say(channel, "needle in the haystack").await;
    let sqlite_url = format!(
        "sqlite://{}?mode=rw",
        relay.dir.path().join("relay.db").display()
    );
    let pg_url = fresh_postgres_url().await;

    // The source relay is still running while it is copied.
    let pool = PoolConfig::default();
    let source = SqlStore::connect(&sqlite_url, &pool).await.unwrap();
    let dest = SqlStore::connect(&pg_url, &pool).await.unwrap();
    let copied = copy_all(&source, &dest).await.unwrap();
    let messages = copied.iter().find(|c| c.table == "messages").unwrap();
    assert_eq!(messages.rows, 151);
    // Copying again is refused: the destination is no longer empty.
    assert!(copy_all(&source, &dest).await.is_err());
    assert_eq!(
        dump(&sqlite_url).await,
        dump(&pg_url).await,
        "every row of every table"
    );
    relay.shutdown().await;

    // A relay on the PostgreSQL copy serves the same accounts, history and search.
    let moved = TestRelay::start_with(Backend::Sqlite, |c| {
        common::client::relaxed(c);
        c.database_url = Some(pg_url.clone());
    })
    .await;
    let page = moved
        .http
        .get(format!(
            "{}/api/v1/channels/{channel}/messages?limit=100",
            moved.url
        ))
        .bearer_auth(&bob.access)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "bob's token (signing keys moved too)");
    let page: serde_json::Value = page.json().await.unwrap();
    assert_eq!(page.as_array().unwrap().len(), 100);
    let found: serde_json::Value = moved
        .http
        .get(format!(
            "{}/api/v1/guilds/{guild}/search?q=haystack",
            moved.url
        ))
        .bearer_auth(&ana.access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        found.to_string().contains("needle in the haystack"),
        "{found}"
    );
    moved.shutdown().await;
}

#[test]
fn backup_and_restore_round_trip_through_a_file() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (source_url, restored_url, dir) = rt.block_on(async {
        let relay = TestRelay::start(Backend::Postgres).await;
        let ana = relay.register("ana").await;
        let (_, channel) = ana.create_guild("backed up").await;
        for i in 0..30 {
            ana.say(channel, &format!("kept {i}")).await;
        }
        let url = relay.server().app().config.database_url();
        relay.shutdown().await;
        (
            url,
            fresh_postgres_url().await,
            tempfile::tempdir().unwrap(),
        )
    });
    let file = dir.path().join("relay-backup.db");
    let relay_bin = env!("CARGO_BIN_EXE_concord-relay");
    let run = |args: &[&str]| {
        let out = Command::new(relay_bin).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let file_arg = file.to_str().unwrap();
    let printed = run(&["--database-url", &source_url, "backup", "--to", file_arg]);
    assert!(printed.contains("row counts match"), "{printed}");
    // A backup never overwrites a file.
    let again = Command::new(relay_bin)
        .args(["--database-url", &source_url, "backup", "--to", file_arg])
        .output()
        .unwrap();
    assert!(!again.status.success());
    run(&[
        "--database-url",
        &restored_url,
        "restore",
        "--from",
        file_arg,
    ]);
    rt.block_on(async {
        assert_eq!(dump(&source_url).await, dump(&restored_url).await);
    });
}
