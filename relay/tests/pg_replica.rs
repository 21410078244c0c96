//! PostgreSQL of the test's own: a primary and a real streaming replica (initdb and
//! pg_basebackup on free ports), so reads can be watched going to the replica while it
//! lags, a client's own writes can be seen read back from the primary, and the database
//! can die and return under a running relay.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::client::{Backend, TestRelay, relaxed};
use serde_json::Value;

/// PostgreSQL's binaries, newest installed version.
fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server installed (scripts/test installs it)")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .last()
        .expect("a PostgreSQL version")
        .join("bin")
        .join(name)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// PostgreSQL refuses to run as root: as root, run it as the postgres user.
fn pg_command(name: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin(name));
        c
    } else {
        Command::new(pg_bin(name))
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One PostgreSQL server in a data directory of the test's own.
struct Pg {
    data: PathBuf,
    port: u16,
}

impl Pg {
    fn start(&self) {
        let mut c = pg_command("pg_ctl");
        c.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.data.with_extension("log"));
        c.args(["-w", "-o"]).arg(format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.parent().unwrap().display()
        ));
        c.arg("start");
        run(c, "pg_ctl start");
    }

    /// `immediate`: as if the machine died.
    fn stop(&self) {
        let mut c = pg_command("pg_ctl");
        c.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = c.output();
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/concord", self.port)
    }

    fn sql(&self, query: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "concord", "-Atc", query])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "{query}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// A primary and, optionally, its streaming replica; both stopped on drop.
struct PgPair {
    primary: Pg,
    replica: Option<Pg>,
    _dir: tempfile::TempDir,
}

impl PgPair {
    fn start(with_replica: bool) -> PgPair {
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:").arg(dir.path());
                    c
                },
                "chown",
            );
        }
        let primary = Pg {
            data: dir.path().join("primary"),
            port: free_port(),
        };
        let mut c = pg_command("initdb");
        c.arg("-D").arg(&primary.data);
        c.args(["-U", "postgres", "--auth=trust", "-N", "-E", "UTF8"]);
        run(c, "initdb");
        primary.start();
        let mut c = Command::new("psql");
        c.args(["-h", "127.0.0.1", "-p", &primary.port.to_string()]);
        c.args(["-U", "postgres", "-c", "CREATE DATABASE concord"]);
        run(c, "create database");
        let replica = with_replica.then(|| {
            let replica = Pg {
                data: dir.path().join("replica"),
                port: free_port(),
            };
            let mut c = pg_command("pg_basebackup");
            c.args(["-h", "127.0.0.1", "-p", &primary.port.to_string()]);
            c.args(["-U", "postgres", "-D"]).arg(&replica.data);
            c.args(["-R", "-X", "stream", "-c", "fast"]);
            run(c, "pg_basebackup");
            replica.start();
            replica
        });
        PgPair {
            primary,
            replica,
            _dir: dir,
        }
    }

    fn replica(&self) -> &Pg {
        self.replica.as_ref().expect("started with a replica")
    }

    /// Until the replica has replayed everything the primary has written so far.
    fn wait_replica_caught_up(&self) {
        let target = self.primary.sql("SELECT pg_current_wal_lsn()");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let behind = self.replica().sql(&format!(
                "SELECT pg_wal_lsn_diff('{target}', pg_last_wal_replay_lsn()) > 0"
            ));
            if behind == "f" {
                return;
            }
            assert!(Instant::now() < deadline, "replica never caught up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PgPair {
    fn drop(&mut self) {
        if let Some(r) = &self.replica {
            r.stop();
        }
        self.primary.stop();
    }
}

fn contents(page: &Value) -> Vec<String> {
    page.as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

async fn metrics(relay: &TestRelay) -> String {
    relay
        .http
        .get(format!("{}/metrics", relay.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn wait_metric(relay: &TestRelay, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !metrics(relay).await.contains(line) {
        assert!(Instant::now() < deadline, "metric never showed {line}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_database(relay: &TestRelay, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r: Value = relay
            .http
            .get(format!("{}/readyz", relay.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r["database"] == state {
            return;
        }
        assert!(Instant::now() < deadline, "database never {state}: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn reads_go_to_the_replica_and_writers_read_their_own_writes() {
    let pg = tokio::task::spawn_blocking(|| PgPair::start(true))
        .await
        .unwrap();
    let (primary, replica) = (pg.primary.url(), pg.replica().url());
    let relay = TestRelay::start_with(Backend::Sqlite, move |c| {
        relaxed(c);
        c.database_url = Some(primary);
        c.database.read_urls = vec![replica];
        c.database.read_your_writes_secs = 1;
    })
    .await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let (guild, channel) = ana.create_guild("replicated").await;
    bob.join(&ana.invite(guild).await).await;
    let first = ana.say(channel, "before the pause").await;
    pg.wait_replica_caught_up();

    // The replica stops replaying: from now on it lags the primary.
    assert_eq!(pg.replica().sql("SELECT pg_is_in_recovery()"), "t");
    pg.replica().sql("SELECT pg_wal_replay_pause()");
    ana.say(channel, "while the replica lags").await;
    let history = format!("/api/v1/channels/{channel}/messages?limit=50");

    // Ana just wrote: her reads go to the primary and see it.
    let page = ana.get(&history).await.ok(200);
    assert_eq!(
        contents(&page),
        ["before the pause", "while the replica lags"]
    );

    // Bob's last write is older than the read-your-writes window: his plain reads go to the
    // lagging replica (which proves reads are spread there)…
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let page = bob.get(&history).await.ok(200);
    assert_eq!(contents(&page), ["before the pause"]);
    // …but a catch-up read (after=) resumes a stream and reads the primary.
    let page = bob
        .get(&format!(
            "/api/v1/channels/{channel}/messages?after={}",
            first["id"].as_str().unwrap()
        ))
        .await
        .ok(200);
    assert_eq!(contents(&page), ["while the replica lags"]);
    assert!(metrics(&relay).await.contains("target=\"replica\""));

    // Replay resumes: the replica catches up and bob sees it there too.
    pg.replica().sql("SELECT pg_wal_replay_resume()");
    pg.wait_replica_caught_up();
    let page = bob.get(&history).await.ok(200);
    assert_eq!(contents(&page).len(), 2);

    // The replica dies: reads fall back to the primary, nothing fails.
    pg.replica().stop();
    ana.say(channel, "replica gone").await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    for _ in 0..3 {
        let page = bob.get(&history).await.ok(200);
        assert_eq!(contents(&page).len(), 3);
    }
    assert!(
        metrics(&relay)
            .await
            .contains("target=\"primary_fallback\"")
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn a_database_outage_fails_fast_and_recovers_without_a_restart() {
    let pg = tokio::task::spawn_blocking(|| PgPair::start(false))
        .await
        .unwrap();
    let primary = pg.primary.url();
    let relay = TestRelay::start_with(Backend::Sqlite, move |c| {
        relaxed(c);
        c.database_url = Some(primary);
        // Without the breaker every call would wait this long for a connection.
        c.database.acquire_timeout_secs = 60;
    })
    .await;
    let ana = relay.register("ana").await;
    let (_, channel) = ana.create_guild("outage").await;
    ana.say(channel, "before").await;

    pg.primary.stop();
    wait_database(&relay, "down").await;
    wait_metric(&relay, "concord_breaker_state{dependency=\"database\"} 1").await;
    let history = format!("/api/v1/channels/{channel}/messages?limit=50");
    // Fails fast: an answer, not a wait for the 60 s acquire timeout (the client gives up
    // after 20 s).
    let r = relay
        .http
        .get(format!("{}{history}", relay.url))
        .bearer_auth(&ana.access)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("an answer while the database is down");
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "unavailable");

    // The database returns: the probe closes the breaker, no restart.
    let pg = tokio::task::spawn_blocking(move || {
        pg.primary.start();
        pg
    })
    .await
    .unwrap();
    wait_database(&relay, "ok").await;
    let page = ana.get(&history).await.ok(200);
    assert_eq!(contents(&page), ["before"]);
    ana.say(channel, "after").await;
    assert!(
        metrics(&relay)
            .await
            .contains("concord_breaker_state{dependency=\"database\"} 0")
    );
    relay.shutdown().await;
    drop(pg);
}

/// What one sender saw: every nonce it acked (with its seq), and each 503 with the time it
/// took and its code.
/// The senders' ledger, and how long each 503 took.
#[derive(Default)]
struct Seen {
    ledger: common::ledger::Ledger,
    unavailable: Vec<Duration>,
}

/// PostgreSQL killed (`-m immediate`) under five senders and started again: requests fail
/// with 503 instead of hanging, the relay serves again once the database is back, every
/// acknowledged message is stored once at its seq, and retries with the same nonce (every 503
/// is retried so) never store a message twice.
#[tokio::test]
async fn postgres_killed_under_load_fails_fast_and_loses_nothing() {
    use std::sync::{Arc, Mutex};
    let pg = tokio::task::spawn_blocking(|| PgPair::start(false))
        .await
        .unwrap();
    let primary = pg.primary.url();
    let relay = TestRelay::start_with(Backend::Sqlite, move |c| {
        relaxed(c);
        c.database_url = Some(primary);
    })
    .await;
    let ana = Arc::new(relay.register("ana").await);
    let (_, channel) = ana.create_guild("outage").await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut senders = Vec::new();
    for s in 0..5 {
        let (ana, stop, seen) = (ana.clone(), stop.clone(), seen.clone());
        senders.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let nonce = format!("s{s}-{i}");
                // The same nonce until it is acknowledged, as clients retry.
                loop {
                    let started = Instant::now();
                    let r = ana
                        .http
                        .post(format!("{}/api/v1/channels/{channel}/messages", ana.url))
                        .bearer_auth(&ana.access)
                        .json(&serde_json::json!({ "content": nonce, "nonce": nonce }))
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await
                        .expect("an answer while the database is down");
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap();
                    match status {
                        200 | 201 => {
                            let seq = body["seq"].as_i64().unwrap();
                            seen.lock().unwrap().ledger.ack(&nonce, seq);
                            break;
                        }
                        503 => {
                            let code = body["code"].as_str().unwrap().to_owned();
                            assert!(code == "unavailable" || code == "retry", "{body}");
                            {
                                let mut seen = seen.lock().unwrap();
                                seen.unavailable.push(started.elapsed());
                                seen.ledger.refuse(503, &code);
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        other => panic!("{other}: {body}"),
                    }
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before_kill = seen.lock().unwrap().ledger.acked.len();
    assert!(before_kill > 0, "the load produced acknowledged messages");

    let killed = Instant::now();
    let pg = tokio::task::spawn_blocking(move || {
        pg.primary.stop();
        pg
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (slowest, refused) = {
        let s = seen.lock().unwrap();
        let slowest = s.unavailable.iter().copied().max();
        (slowest, s.unavailable.len())
    };
    let slowest = slowest.expect("sends were refused while the database was down");
    eprintln!(
        "database down: {refused} sends answered 503, the slowest after {} ms",
        slowest.as_millis()
    );
    // The target is 1 s (reported above); a loaded CI machine gets slack.
    assert!(slowest < Duration::from_secs(5), "{slowest:?}");

    let acked_before_restart = seen.lock().unwrap().ledger.acked.len();
    let pg = tokio::task::spawn_blocking(move || {
        pg.primary.start();
        pg
    })
    .await
    .unwrap();
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(20);
    while seen.lock().unwrap().ledger.acked.len() == acked_before_restart {
        assert!(Instant::now() < deadline, "sends never went through again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "database back: the first send acknowledged {} ms after it accepted connections again (down {} ms in all)",
        restarted.elapsed().as_millis(),
        killed.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }

    // Every acknowledged nonce stored once, at its seq; seqs gapless; nothing else stored.
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    seen.ledger.verify_against(&pg.primary.url(), channel).await;
    let retries = seen.ledger.refused_with("retry");
    eprintln!(
        "{} acknowledged, all stored once; {} answered 503 ({retries} of them retry)",
        seen.ledger.acked.len(),
        seen.unavailable.len()
    );
    relay.shutdown().await;
    drop(pg);
}
