//! Retention: a month of messages goes to the archive store as gzip JSON lines and leaves
//! history and search (history says where the archive begins); restoring brings every
//! message and reaction back. On both backends; on PostgreSQL the month's partition is
//! dropped and recreated. Also: upgrading a PostgreSQL database whose messages predate
//! partitioning puts every row in its month's partition and keeps nonces unique.

mod common;

use std::io::Read;

use common::client::{Backend, TestRelay, TestUser};
use common::db::fresh_postgres_url;
use concord_relay::archive::{Archiver, Month};
use serde_json::{Value, json};

const DAY_MS: i64 = 86_400_000;

fn contents(page: &Value) -> Vec<String> {
    page.as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

async fn history(user: &TestUser, channel: concord_proto::Id) -> (Value, Option<String>) {
    let r = user
        .get(&format!("/api/v1/channels/{channel}/messages?limit=100"))
        .await;
    let header = r.header("concord-archived-before").map(str::to_owned);
    (r.ok(200), header)
}

async fn search_hits(user: &TestUser, guild: concord_proto::Id, q: &str) -> usize {
    user.get(&format!("/api/v1/guilds/{guild}/search?q={q}"))
        .await
        .ok(200)["hits"]
        .as_array()
        .unwrap()
        .len()
}

async fn archive_and_restore(backend: Backend) {
    let relay = TestRelay::start(backend).await;
    let ana = relay.register("ana").await;
    let (guild, channel) = ana.create_guild("old times").await;
    let first = ana.say(channel, "walrus one").await;
    ana.say(channel, "walrus two").await;
    ana.put(
        &format!(
            "/api/v1/channels/{channel}/messages/{}/reactions/%F0%9F%91%8D",
            first["id"].as_str().unwrap()
        ),
        None,
    )
    .await
    .ok(204);
    let (before, header) = history(&ana, channel).await;
    assert_eq!(header, None, "nothing archived yet");
    let kept = contents(&before);
    assert!(kept.len() >= 2);
    assert_eq!(search_hits(&ana, guild, "walrus").await, 2);

    // A year from now this month is due (retention keeps 183 days).
    let app = relay.server().app().clone();
    let dir = tempfile::tempdir().unwrap();
    let archiver = Archiver::open(app.store.clone(), dir.path().to_str().unwrap()).unwrap();
    let now = concord_relay::app::now_ms();
    let month = Month::of_unix_ms(now);
    assert!(archiver.due_months(now, 183).await.unwrap().is_empty());
    let done = archiver.archive_due(now + 365 * DAY_MS, 183).await.unwrap();
    assert_eq!(done, [(month, kept.len() as u64)]);

    // The object: gzip JSON lines, every message with its reactions.
    let path = dir
        .path()
        .join("messages")
        .join(format!("{month}.jsonl.gz"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), kept.len());
    let one = lines.iter().find(|l| l["content"] == "walrus one").unwrap();
    assert_eq!(one["reactions"][0]["emoji"], "👍");

    // Out of history and search; history says where the archive begins.
    app.refresh_archived_before().await;
    let (page, header) = history(&ana, channel).await;
    assert_eq!(contents(&page), Vec::<String>::new());
    assert_eq!(header, Some(month.id_range().1.to_string()));
    assert_eq!(search_hits(&ana, guild, "walrus").await, 0);
    let listed = archiver.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].month, month.to_string());

    // PostgreSQL dropped the month's partition: creating partitions recreates it.
    let recreated = archiver.ensure_partitions(now).await.unwrap();
    match backend {
        Backend::Postgres => assert_eq!(recreated, 1),
        Backend::Sqlite => assert_eq!(recreated, 0),
    }

    // Restoring brings everything back, reactions included.
    assert!(matches!(
        archiver.restore_month(month.next()).await,
        Err(concord_relay::archive::ArchiveError::NotArchived(_))
    ));
    let restored = archiver.restore_month(month).await.unwrap();
    assert_eq!(restored, kept.len() as u64);
    app.refresh_archived_before().await;
    let (page, header) = history(&ana, channel).await;
    assert_eq!(header, None);
    assert_eq!(contents(&page), kept);
    let back = page
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["content"] == "walrus one")
        .unwrap();
    assert_eq!(back["reactions"][0]["emoji"], "👍");
    assert_eq!(back["reactions"][0]["count"], 1);
    assert_eq!(search_hits(&ana, guild, "walrus").await, 2);

    // Sends still work, and a retried nonce still finds the restored message.
    ana.say(channel, "walrus three").await;
    let again = ana
        .post(
            &format!("/api/v1/channels/{channel}/messages"),
            json!({ "content": "walrus one", "nonce": first["nonce"] }),
        )
        .await
        .ok(200);
    assert_eq!(again["id"], first["id"]);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_month_is_archived_and_restored_on_sqlite() {
    archive_and_restore(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_month_is_archived_and_restored_on_postgres() {
    archive_and_restore(Backend::Postgres).await;
}

#[tokio::test]
async fn upgrading_postgres_partitions_existing_messages_by_month() {
    use sqlx::Connection;
    let url = fresh_postgres_url().await;
    // The schema as it was before partitioning, with messages from two months.
    concord_relay::store::sql::SqlStore::migrate_to(&url, 1)
        .await
        .unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let march: Month = "2025-03".parse().unwrap();
    let may: Month = "2025-05".parse().unwrap();
    let (m1, m2) = (march.id_range().0.0 + 5, may.id_range().0.0 + 7);
    for sql in [
        "INSERT INTO accounts (id, username, account_key, created_at) VALUES (1, 'old', 'k', 0)"
            .to_owned(),
        "INSERT INTO guilds (id, name, owner_id, created_at) VALUES (2, 'g', 1, 0)".to_owned(),
        "INSERT INTO channels (id, guild_id, name, kind, position, created_at) VALUES (3, 2, 'c', 'text', 0, 0)".to_owned(),
        format!("INSERT INTO messages (id, channel_id, author_id, device_key, nonce, content, seq, created_at) VALUES ({m1}, 3, 1, 'd', 'n1', 'in march', 1, 0)"),
        format!("INSERT INTO messages (id, channel_id, author_id, device_key, nonce, content, seq, created_at) VALUES ({m2}, 3, 1, 'd', 'n2', 'in may', 2, 0)"),
        format!("INSERT INTO reactions (message_id, emoji, user_id, created_at) VALUES ({m1}, 'x', 1, 0)"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
    }

    let store = concord_relay::store::sql::SqlStore::connect(&url, &common::db::pool_config())
        .await
        .unwrap();
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, tableoid::regclass::text FROM messages ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        rows,
        [
            (m1, "messages_p202503".to_owned()),
            (m2, "messages_p202505".to_owned())
        ]
    );
    let reactions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reactions")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(reactions, 1, "reactions survive the table swap");
    // (author, nonce) is still unique across partitions.
    let dup = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO messages (id, channel_id, author_id, device_key, nonce, content, seq, created_at) VALUES ({}, 3, 1, 'd', 'n1', 'again', 3, 0)",
        m2 + 1
    )))
    .execute(&mut conn)
    .await
    .unwrap_err();
    assert!(dup.to_string().contains("duplicate key"), "{dup}");
    // Months from the oldest message to three ahead exist.
    let parts: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE 'messages_p%'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let now = Month::of_unix_ms(concord_relay::app::now_ms());
    let mut expected = 0;
    let mut m = march;
    while m <= now {
        expected += 1;
        m = m.next();
    }
    assert!(
        parts >= expected + 3,
        "{parts} partitions, expected {expected} + ahead"
    );
    use concord_relay::store::ServerStore;
    store.close().await;
}

#[tokio::test]
async fn three_months_land_in_three_partitions_and_come_back_from_the_archive() {
    use concord_relay::store::NewMessage;
    use sqlx::Connection;
    let url = fresh_postgres_url().await;
    let store: std::sync::Arc<dyn concord_relay::store::Store> = std::sync::Arc::new(
        concord_relay::store::sql::SqlStore::connect(&url, &common::db::pool_config())
            .await
            .unwrap(),
    );
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    for sql in [
        "INSERT INTO accounts (id, username, account_key, created_at) VALUES (1, 'old', 'k', 0)",
        "INSERT INTO guilds (id, name, owner_id, created_at) VALUES (2, 'g', 1, 0)",
        "INSERT INTO channels (id, guild_id, name, kind, position, created_at) VALUES (3, 2, 'c', 'text', 0, 0)",
    ] {
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }
    let months: Vec<Month> = ["2025-01", "2025-02", "2025-03"]
        .iter()
        .map(|m| m.parse().unwrap())
        .collect();
    // The months are older than the migration's partitions: create theirs, as migrate-store
    // does for old data.
    let parts: Vec<_> = months
        .iter()
        .map(|m| (m.partition(), m.id_range().0, m.id_range().1))
        .collect();
    assert_eq!(store.ensure_partitions(&parts).await.unwrap(), 3);
    for (i, month) in months.iter().enumerate() {
        for j in 0..4 {
            let id = concord_proto::Id(month.id_range().0.0 + (j << 22) + 1);
            store
                .insert_message(&NewMessage {
                    id,
                    channel_id: concord_proto::Id(3),
                    author: concord_proto::Id(1),
                    device: "d".into(),
                    nonce: format!("m{i}-{j}"),
                    content: format!("month {month} message {j}"),
                    reply_to: None,
                    mentions: Vec::new(),
                    created_at: id.unix_ms(),
                })
                .await
                .unwrap();
        }
    }
    let placement = || async {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query_as::<_, (String, i64)>(
            "SELECT tableoid::regclass::text, COUNT(*) FROM messages GROUP BY 1 ORDER BY 1",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap()
    };
    assert_eq!(
        placement().await,
        [
            ("messages_p202501".to_owned(), 4),
            ("messages_p202502".to_owned(), 4),
            ("messages_p202503".to_owned(), 4)
        ]
    );
    let everything = |store: std::sync::Arc<dyn concord_relay::store::Store>| async move {
        store
            .export_messages(concord_proto::Id(0), concord_proto::Id(i64::MAX), None, 100)
            .await
            .unwrap()
    };
    let before = everything(store.clone()).await;
    assert_eq!(before.len(), 12);

    let dir = tempfile::tempdir().unwrap();
    let archiver = Archiver::open(store.clone(), dir.path().to_str().unwrap()).unwrap();
    let done = archiver
        .archive_due(concord_relay::app::now_ms(), 183)
        .await
        .unwrap();
    assert_eq!(
        done,
        months.iter().map(|m| (*m, 4)).collect::<Vec<_>>(),
        "three months archived, four messages each"
    );
    assert!(everything(store.clone()).await.is_empty());
    assert_eq!(placement().await, []);
    for month in &months {
        assert_eq!(archiver.restore_month(*month).await.unwrap(), 4);
    }
    assert_eq!(
        everything(store.clone()).await,
        before,
        "the same rows come back"
    );
    assert_eq!(placement().await.len(), 3, "in their partitions again");
    assert!(archiver.list().await.unwrap().is_empty());
    store.close().await;
}

/// moto's S3-compatible server on a free port, stopped on drop.
struct Moto(std::process::Child, u16);

impl Moto {
    fn start() -> Moto {
        let bin = std::env::var("CONCORD_TEST_MOTO").unwrap_or_else(|_| {
            format!(
                "{}/.cache/concord/moto/bin/moto_server",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin} runs (scripts/test installs moto): {e}"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "moto never listened");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Moto(child, port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn archives_go_to_s3_compatible_storage() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let endpoint = format!("http://127.0.0.1:{}", moto.1);
    // A bucket to archive into (moto takes the unsigned create).
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/concord-archive"))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());

    let relay = TestRelay::start(Backend::Postgres).await;
    let ana = relay.register("ana").await;
    let (_, channel) = ana.create_guild("to s3").await;
    ana.say(channel, "off to the bucket").await;
    let (before, _) = history(&ana, channel).await;

    let app = relay.server().app().clone();
    let options = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let archiver =
        Archiver::open_with(app.store.clone(), "s3://concord-archive/relay", options).unwrap();
    let now = concord_relay::app::now_ms();
    let month = Month::of_unix_ms(now);
    let done = archiver.archive_due(now + 365 * DAY_MS, 183).await.unwrap();
    assert_eq!(done, [(month, before.as_array().unwrap().len() as u64)]);

    // The object is in the bucket, under the prefix.
    let listing = reqwest::Client::new()
        .get(format!(
            "{endpoint}/concord-archive?list-type=2&prefix=relay/"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listing.contains(&format!("relay/messages/{month}.jsonl.gz")),
        "{listing}"
    );
    app.refresh_archived_before().await;
    assert_eq!(
        contents(&history(&ana, channel).await.0),
        Vec::<String>::new()
    );

    archiver.restore_month(month).await.unwrap();
    assert_eq!(history(&ana, channel).await.0, before);
    relay.shutdown().await;
}
