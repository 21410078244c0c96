//! SIGTERM on the real binary under load: it stops accepting, closes gateways with 4010,
//! finishes in-flight writes, exits 0, and every acknowledged message is in the database.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::client::{Backend, TestRelay, database_url};
use concord_proto::Id;
use concord_proto::gateway::close;
use concord_relay::store::MessageStore;
use concord_relay::store::sql::{PoolConfig, SqlStore};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

async fn sigterm_under_load(backend: Backend) {
    concord_relay::listener::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(backend, &dir).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_concord-relay"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args([
            "--database-url",
            &db,
            "--shutdown-grace-secs",
            "10",
            "--log",
            "warn",
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
        // Senders in this test must not be rate limited.
        .env("CONCORD_CONFIG", write_config(&dir))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("prints its URL");
        if let Some(url) = line.strip_prefix("concord-relay listening on ") {
            break url.to_owned();
        }
    };

    let relay = TestRelay {
        server: None,
        url: url.clone(),
        http: reqwest::Client::new(),
        dir: tempfile::tempdir().unwrap(),
    };
    let user = Arc::new(relay.register("load").await);
    let (_, channel) = user.create_guild("load").await;
    let mut gw = user.gateway().await;

    let acked: Arc<Mutex<Vec<Id>>> = Arc::default();
    let mut senders = Vec::new();
    for worker in 0..8 {
        let (user, acked) = (user.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                let body = json!({ "content": format!("load {worker}/{i}"), "nonce": format!("w{worker}-{i}") });
                let sent = user.http.post(format!("{}/api/v1/channels/{channel}/messages", user.url)).bearer_auth(&user.access).json(&body).send().await;
                match sent {
                    Ok(r) if r.status() == 201 => {
                        let m: serde_json::Value = r.json().await.unwrap();
                        acked.lock().unwrap().push(serde_json::from_value(m["id"].clone()).unwrap());
                    }
                    // Refused or cut off during shutdown: not acknowledged, so no promise.
                    _ => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = acked.lock().unwrap().len();
    assert!(before > 0, "the load produced acknowledged messages");
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );

    assert_eq!(gw.closed().await, Some(close::GOING_AWAY));
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits within the grace period")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    for s in senders {
        s.await.unwrap();
    }

    let store = SqlStore::connect(&db, &PoolConfig::default())
        .await
        .unwrap();
    let acked = acked.lock().unwrap().clone();
    for id in &acked {
        assert!(
            store.message(channel, *id).await.unwrap().is_some(),
            "acknowledged message {id} is missing"
        );
    }
    let events = store.events(channel, 0, 100).await.unwrap();
    assert_eq!(events.first().map(|e| e.seq), Some(1));
    eprintln!(
        "{} messages acknowledged ({before} before SIGTERM), all persisted",
        acked.len()
    );
}

fn write_config(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, "[rate_limits]\nmessage_send = { requests = 1000000, window_secs = 10 }\ngeneral = { requests = 1000000, window_secs = 60 }\nauth = { requests = 1000000, window_secs = 60 }\n").unwrap();
    path
}

#[tokio::test]
async fn sigterm_under_load_on_sqlite() {
    sigterm_under_load(Backend::Sqlite).await;
}

#[tokio::test]
async fn sigterm_under_load_on_postgres() {
    sigterm_under_load(Backend::Postgres).await;
}
