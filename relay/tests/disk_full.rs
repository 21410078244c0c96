//! A full disk under the SQLite relay (the real binary, its data dir on a 20 MiB tmpfs in a
//! private mount namespace): an acknowledged message is committed, exactly once, under a
//! unique gapless seq; refusals are 507 `storage_full`; the writer recovers by itself when
//! space returns; the free-space floor refuses new content early and `/readyz` says so.
//!
//! The tmpfs lives in a mount namespace held by a shell that exits when this process closes
//! its stdin (normally or not), so nothing outlives the test. Needs root (CI runs as root);
//! elsewhere the test says so and passes vacuously only when `unshare` is refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::client::{Resp, TestRelay, TestUser, send};
use common::ledger::Ledger;
use concord_proto::Id;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const TMPFS_MIB: u64 = 20;
const SENDERS: usize = 5;
/// 3 KB of content per message.
fn content(tag: &str) -> String {
    format!("{tag} {}", "x".repeat(3_000))
}

/// A tmpfs in a private mount namespace, held by `sh` until its stdin closes.
struct PrivateTmpfs {
    holder: Child,
    /// The mount point, as the namespace sees it.
    dir: PathBuf,
    _base: tempfile::TempDir,
}

impl PrivateTmpfs {
    async fn mount(size_mib: u64) -> PrivateTmpfs {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                "mount -t tmpfs -o size=\"$1\"m tmpfs \"$0\" && echo mounted && read _ignored; exit 0",
            )
            .arg(&dir)
            .arg(size_mib.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("unshare runs");
        let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("the holder answers")
            .unwrap();
        assert_eq!(
            line.as_deref(),
            Some("mounted"),
            "mounting a tmpfs in a private namespace needs root"
        );
        PrivateTmpfs {
            holder,
            dir,
            _base: base,
        }
    }

    /// A path inside the tmpfs, reachable from this (outer) namespace.
    fn outside(&self, name: &str) -> PathBuf {
        let pid = self.holder.id().expect("holder runs");
        let inner = self.dir.join(name);
        Path::new(&format!("/proc/{pid}/root")).join(inner.strip_prefix("/").unwrap())
    }

    fn free_bytes(&self) -> u64 {
        let st = rustix::fs::statvfs(self.outside("")).unwrap();
        st.f_bavail * st.f_frsize
    }

    /// Fills the tmpfs with `fill`, then gives back enough to leave about `leave` bytes free.
    fn fill_leaving(&self, leave: u64) {
        use std::io::Write;
        let path = self.outside("fill");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let chunk = vec![7u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        drop(f);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len.saturating_sub(leave)).unwrap();
        f.sync_all().unwrap();
    }

    fn free_all(&self) {
        let _ = std::fs::remove_file(self.outside("fill"));
    }

    async fn release(mut self) {
        let mut stdin = self.holder.stdin.take().unwrap();
        let _ = stdin.write_all(b"\n").await;
        drop(stdin);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.holder.wait()).await;
    }
}

/// The relay binary inside the namespace, on the tmpfs.
struct Relay {
    child: Child,
    url: String,
}

impl Relay {
    async fn start(fs: &PrivateTmpfs, min_free_mib: u64) -> Relay {
        let pid = fs.holder.id().unwrap().to_string();
        let config = fs.outside("relay.toml");
        std::fs::write(
            &config,
            format!(
                "[rate_limits]\nmessage_send = {{ requests = 1000000, window_secs = 10 }}\n\
                 general = {{ requests = 1000000, window_secs = 60 }}\n\
                 auth = {{ requests = 1000000, window_secs = 60 }}\n\
                 [storage]\nmin_free_mib = {min_free_mib}\nmin_free_percent = 0.0\n\
                 [p2p]\nenabled = false\n"
            ),
        )
        .unwrap();
        let mut child = Command::new("nsenter")
            .args(["--target", &pid, "--mount", "--"])
            .arg(env!("CARGO_BIN_EXE_concord-relay"))
            .args(["--listen", "127.0.0.1:0", "--log", "warn", "--data-dir"])
            .arg(&fs.dir)
            .env("CONCORD_CONFIG", fs.dir.join("relay.toml"))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("nsenter runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("the relay starts")
                .unwrap()
                .expect("prints its URL");
            if let Some(url) = line.strip_prefix("concord-relay listening on ") {
                break url.to_owned();
            }
        };
        // Keep draining stdout so the relay never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Relay { child, url }
    }

    async fn stop(mut self) {
        let pid = self.child.id().unwrap().to_string();
        // nsenter forwards the signal to the relay and exits with its status.
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("stops within its grace period")
            .unwrap();
        assert!(status.success(), "exit status {status:?}");
    }

    async fn readyz(&self) -> Resp {
        send(
            &reqwest::Client::new(),
            reqwest::Method::GET,
            format!("{}/readyz", self.url),
            None,
            None,
        )
        .await
    }
}

async fn send_message(user: &TestUser, channel: Id, nonce: &str) -> Resp {
    user.post(
        &format!("/api/v1/channels/{channel}/messages"),
        json!({ "content": content(nonce), "nonce": nonce }),
    )
    .await
}

fn record(ledger: &Mutex<Ledger>, nonce: &str, r: &Resp) {
    let mut l = ledger.lock().unwrap();
    if r.status == 201 || r.status == 200 {
        l.ack(
            nonce,
            r.body["seq"].as_i64().expect("an ack carries its seq"),
        );
    } else {
        l.refuse(r.status, r.body["code"].as_str().unwrap_or(""));
    }
}

/// Sends with the same nonce until it is acknowledged, waiting out 507s as a client would.
async fn send_until_acked(user: &TestUser, channel: Id, nonce: &str, ledger: &Mutex<Ledger>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = send_message(user, channel, nonce).await;
        record(ledger, nonce, &r);
        if r.status == 201 || r.status == 200 {
            return;
        }
        assert_eq!(r.status, 507, "only storage_full is expected: {}", r.body);
        assert!(
            Instant::now() < deadline,
            "{nonce} never acknowledged after space returned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_no_acknowledged_message_and_the_floor_refuses_early() {
    concord_relay::listener::install_crypto_provider();
    let fs = PrivateTmpfs::mount(TMPFS_MIB).await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    // Phase 1: no floor, so the writes themselves meet the full disk.
    let relay = Relay::start(&fs, 0).await;
    let client = TestRelay {
        server: None,
        url: relay.url.clone(),
        http: reqwest::Client::new(),
        dir: tempfile::tempdir().unwrap(),
    };
    let user = Arc::new(client.register("filler").await);
    let (_, channel) = user.create_guild("disk").await;

    fs.fill_leaving(600 * 1024);
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (user, ledger) = (user.clone(), ledger.clone());
        senders.push(tokio::spawn(async move {
            let mut refused = 0;
            for i in 0..150 {
                let nonce = format!("full-{s}-{i}");
                let r = send_message(&user, channel, &nonce).await;
                record(&ledger, &nonce, &r);
                if r.status != 201 {
                    assert_eq!(
                        (r.status, r.body["code"].as_str()),
                        (507, Some("storage_full")),
                        "a full disk is a 507: {}",
                        r.body
                    );
                    assert!(r.header("retry-after").is_some(), "507 says when to retry");
                    refused += 1;
                    if refused == 10 {
                        break;
                    }
                }
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let (acked_full, refused_full) = {
        let l = ledger.lock().unwrap();
        (l.acked.len(), l.refused.len())
    };
    assert!(refused_full > 0, "the disk never filled up");
    eprintln!("disk full: {acked_full} acknowledged, {refused_full} refused with 507");

    // Reads go on while the disk is full.
    user.get(&format!("/api/v1/channels/{channel}/messages?limit=5"))
        .await
        .ok(200);

    // Space returns: the same writer takes messages again, no restart. First a write that
    // rolls back (a taken username): on a writer whose transaction state a disk-full commit
    // had left out of step, that rollback kept a transaction open for good, and every later
    // "commit" was acknowledged inside it and lost.
    fs.free_all();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let account = common::client::random_key();
    let device = common::client::random_key();
    let cert = concord_proto::signed::DeviceCertificate::sign(
        &account,
        &device.verifying_key(),
        "second",
        1_700_000_000,
    );
    let (status, body) = common::client::login(
        &client.http,
        &client.url,
        &device,
        Some(&cert),
        Some("filler"),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (user, ledger) = (user.clone(), ledger.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..20 {
                send_until_acked(&user, channel, &format!("after-{s}-{i}"), &ledger).await;
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let text = metrics_text(&relay.url).await;
    for name in [
        "concord_db_writer_reopened_total",
        "concord_storage_transitions_total{to=\"low\"}",
        "concord_storage_transitions_total{to=\"ok\"}",
    ] {
        assert!(
            metric(&text, name) > 0.0,
            "{name} moved on a full disk:\n{text}"
        );
    }
    relay.stop().await;

    // Phase 2: a floor of 8 MiB on the 20 MiB disk.
    let relay = Relay::start(&fs, 8).await;
    let user = Arc::new(log_in_again(&client, &relay.url, &user).await);
    let r = relay.readyz().await;
    assert_eq!(
        (r.status, r.body["storage"].as_str()),
        (200, Some("ok")),
        "{}",
        r.body
    );
    send_until_acked(&user, channel, "floor-before", &ledger).await;

    fs.fill_leaving(4 << 20);
    assert!(fs.free_bytes() < 8 << 20);
    wait_for("/readyz to report low storage", async || {
        let r = relay.readyz().await;
        r.status == 503 && r.body["storage"] == "low"
    })
    .await;
    let r = send_message(&user, channel, "floor-refused").await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (507, Some("storage_full")),
        "{}",
        r.body
    );
    assert_eq!(r.header("retry-after"), Some("10"));
    record(&ledger, "floor-refused", &r);
    // Reads and other content-free calls go on under the floor.
    user.get(&format!("/api/v1/channels/{channel}/messages?limit=5"))
        .await
        .ok(200);
    user.get("/api/v1/users/@me").await.ok(200);
    // New content of other kinds is refused the same way.
    let r = user.post("/api/v1/guilds", json!({ "name": "more" })).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (507, Some("storage_full")),
        "{}",
        r.body
    );
    let text = metrics_text(&relay.url).await;
    assert_eq!(metric(&text, "concord_storage_low"), 1.0, "{text}");
    assert!(
        metric(&text, "concord_storage_refused_total") >= 2.0,
        "{text}"
    );

    fs.free_all();
    wait_for("/readyz to report storage ok again", async || {
        let r = relay.readyz().await;
        r.status == 200 && r.body["storage"] == "ok"
    })
    .await;
    // The refused nonce goes through once there is room.
    send_until_acked(&user, channel, "floor-refused", &ledger).await;
    relay.stop().await;

    // Every acknowledged nonce is stored once, at the seq it was acknowledged with; the
    // seqs are 1..=n with no gap; nothing else is stored.
    // SQLite resolves symlinks in a database's path, and /proc/PID/root is one (to "/", in
    // this namespace): read a copy.
    let copy = tempfile::tempdir().unwrap();
    for name in ["relay.db", "relay.db-wal"] {
        if fs.outside(name).exists() {
            std::fs::copy(fs.outside(name), copy.path().join(name)).unwrap();
        }
    }
    let db = format!(
        "sqlite://{}?mode=rw",
        copy.path().join("relay.db").display()
    );
    let l = std::mem::take(&mut *ledger.lock().unwrap());
    l.verify_against(&db, channel).await;
    eprintln!(
        "{} acknowledged messages all stored once; {} refusals, all 507",
        l.acked.len(),
        l.refused.len()
    );
    fs.release().await;
}

async fn metrics_text(url: &str) -> String {
    let r = send(
        &reqwest::Client::new(),
        reqwest::Method::GET,
        format!("{url}/metrics"),
        None,
        None,
    )
    .await;
    r.body.as_str().unwrap_or_default().to_owned()
}

/// One sample's value (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The same account, logged in again on the restarted relay (its signing keys persist, but
/// a fresh login keeps the test independent of token lifetimes).
async fn log_in_again(client: &TestRelay, url: &str, user: &TestUser) -> TestUser {
    let (status, body): (u16, Value) =
        common::client::login(&client.http, url, &user.device, None, None).await;
    assert_eq!(status, 200, "{body}");
    TestUser {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        id: user.id,
        username: user.username.clone(),
        session_id: serde_json::from_value(body["session_id"].clone()).unwrap(),
        account: user.account.clone(),
        device: user.device.clone(),
        url: url.to_owned(),
        http: user.http.clone(),
    }
}
