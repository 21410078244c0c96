//! Two relay instances on one PostgreSQL schema and one Redis (a prefix of their own): users
//! on different instances get each other's messages, typing and presence through the
//! gateway; seq stays gapless when both instances write one channel; a logout on one
//! instance closes the session's socket on the other and its token stops working there.

mod common;

use std::time::{Duration, Instant};

use common::client::{Backend, Got, TestRelay, rand_suffix, relaxed, send};
use common::db::fresh_postgres_url;
use concord_proto::gateway::close;
use serde_json::{Value, json};

fn redis_url() -> String {
    std::env::var("CONCORD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Two instances sharing a fresh schema and a fresh Redis prefix.
async fn cluster() -> (TestRelay, TestRelay) {
    cluster_with(relaxed).await
}

async fn cluster_with(tweak: fn(&mut concord_relay::RelayConfig)) -> (TestRelay, TestRelay) {
    cluster_on(redis_url(), false, tweak).await
}

/// Two instances on the given Redis (one server, or Redis Cluster seeds).
async fn cluster_on(
    redis: String,
    redis_cluster: bool,
    tweak: impl Fn(&mut concord_relay::RelayConfig) + Clone + Send + 'static,
) -> (TestRelay, TestRelay) {
    let db = fresh_postgres_url().await;
    let prefix = format!("test{}", rand_suffix());
    let start = || {
        let (db, prefix, redis) = (db.clone(), prefix.clone(), redis.clone());
        let tweak = tweak.clone();
        // Backend::Sqlite only picks the temp dir; the database URL is replaced.
        TestRelay::start_with(Backend::Sqlite, move |c| {
            tweak(c);
            c.database_url = Some(db);
            c.redis.url = Some(redis);
            c.redis.cluster = redis_cluster;
            c.redis.prefix = prefix;
        })
    };
    let a = start().await;
    let b = start().await;
    for relay in [&a, &b] {
        assert_eq!(wait_readyz(relay, "ok").await["status"], "ready");
    }
    (a, b)
}

#[tokio::test]
async fn users_on_two_instances_talk_through_redis() {
    let (a, b) = cluster().await;
    assert_ne!(a.url, b.url);
    let ana = a.register("ana").await;
    let bob = b.register("bob").await;
    let (guild, channel) = ana.create_guild("cluster").await;
    bob.join(&ana.invite(guild).await).await;
    let mut ana_gw = ana.gateway().await;
    let mut bob_gw = bob.gateway().await;

    // Presence crosses: bob came online on B, ana on A hears it.
    let online = ana_gw
        .event_where("presence_update", |d| d["user_id"] == bob.id.to_string())
        .await;
    assert_eq!(online["status"], "online");

    // Messages both ways.
    ana.say(channel, "hello from A").await;
    let got = bob_gw.event("message_create").await;
    assert_eq!(got["content"], "hello from A");
    bob.say(channel, "hello from B").await;
    let got = ana_gw
        .event_where("message_create", |d| d["content"] == "hello from B")
        .await;
    assert_eq!(got["author"], bob.id.to_string());

    // Typing crosses too.
    bob.post(&format!("/api/v1/channels/{channel}/typing"), json!({}))
        .await
        .ok(204);
    let typing = ana_gw.event("typing_start").await;
    assert_eq!(typing["user_id"], bob.id.to_string());

    // A member joining on B is announced to ana on A.
    let carol = b.register("carol").await;
    carol.join(&ana.invite(guild).await).await;
    let added = ana_gw.event("member_add").await;
    assert_eq!(added["user"]["id"], carol.id.to_string());

    // Bob goes offline on B: ana hears it on A.
    bob_gw.ws.close(None).await.unwrap();
    let offline = ana_gw
        .event_where("presence_update", |d| {
            d["user_id"] == bob.id.to_string() && d["status"] == "offline"
        })
        .await;
    assert_eq!(offline["status"], "offline");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn seq_is_gapless_when_both_instances_write_one_channel() {
    let (a, b) = cluster().await;
    let ana = a.register("ana").await;
    let bob = b.register("bob").await;
    let (guild, channel) = ana.create_guild("seq").await;
    bob.join(&ana.invite(guild).await).await;
    let path = format!("/api/v1/channels/{channel}/messages");
    let sends = (0..20).flat_map(|i| {
        [
            ana.post(
                &path,
                json!({ "content": format!("a{i}"), "nonce": format!("a{i}") }),
            ),
            bob.post(
                &path,
                json!({ "content": format!("b{i}"), "nonce": format!("b{i}") }),
            ),
        ]
    });
    for r in futures_util::future::join_all(sends).await {
        r.ok(201);
    }
    let page = bob
        .get(&format!("/api/v1/channels/{channel}/messages?limit=100"))
        .await
        .ok(200);
    let mut seqs: Vec<i64> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=40).collect::<Vec<_>>(),
        "one seq per message, no gaps"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn logout_on_one_instance_closes_the_socket_on_the_other() {
    let (a, b) = cluster().await;
    logout_crosses(&a, &b, "bob").await;
    a.shutdown().await;
    b.shutdown().await;
}

/// A user connected to B logs out through A: B closes the socket as revoked and refuses the
/// token.
async fn logout_crosses(a: &TestRelay, b: &TestRelay, name: &str) {
    let bob = b.register(name).await;
    let mut bob_gw = bob.gateway().await;
    let started = Instant::now();
    let r = a
        .http
        .post(format!("{}/api/v1/auth/logout", a.url))
        .json(&json!({ "refresh_token": bob.refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let closed = loop {
        match bob_gw.next(Duration::from_secs(5)).await {
            Got::Frame(_) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(closed, Got::Closed(Some(code)) if code == close::SESSION_REVOKED),
        "bob's socket on B closed as revoked: {closed:?}"
    );
    // Timing is measured, not asserted (shared machines are noisy); Redis carries it in ms.
    eprintln!(
        "revocation reached the other instance in {:?}",
        started.elapsed()
    );
    // The access token is refused on B too.
    let me = bob.get("/api/v1/users/@me").await;
    assert_eq!(me.status, 401);
}

/// A Redis of the test's own on a free port, so it can die and come back.
struct OwnRedis {
    child: std::process::Child,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        OwnRedis::start_with(port, &[])
    }

    fn start_with(port: u16, extra: &[&str]) -> OwnRedis {
        let child = std::process::Command::new("redis-server")
            .args(extra)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis { child }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A three-node Redis Cluster of the test's own (the seed's phase 4): three masters on free
/// ports, slots spread by `redis-cli --cluster create`.
struct OwnRedisCluster {
    ports: Vec<u16>,
    _nodes: Vec<OwnRedis>,
    _dir: tempfile::TempDir,
}

impl OwnRedisCluster {
    fn start() -> OwnRedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports = cluster_ports(3);
        let nodes = ports
            .iter()
            .map(|port| {
                let node_dir = dir.path().join(port.to_string());
                std::fs::create_dir(&node_dir).unwrap();
                let node_dir = node_dir.to_str().unwrap().to_owned();
                OwnRedis::start_with(
                    *port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        "2000",
                        "--dir",
                        &node_dir,
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs (scripts/test installs redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in &ports {
            loop {
                let info = std::process::Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster on {port} never became ok"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        OwnRedisCluster {
            ports,
            _nodes: nodes,
            _dir: dir,
        }
    }

    /// Seed URLs as the relay takes them: comma-separated.
    fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Free ports whose cluster-bus port (+10000) is free too.
fn cluster_ports(n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    while ports.len() < n {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port > 55_000 || ports.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

async fn readyz(relay: &TestRelay) -> Value {
    relay
        .http
        .get(format!("{}/readyz", relay.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_readyz(relay: &TestRelay, redis: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = readyz(relay).await;
        if r["redis"] == redis {
            return r;
        }
        assert!(Instant::now() < deadline, "redis never became {redis}: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rules cross without Redis too: with the Redis subscription down, a kick and a logout done
/// through A take effect on B (its permission cache and revocation set come from the store)
/// within about a second; and what happened in the gap before B resubscribed holds after.
#[tokio::test]
async fn with_redis_down_kicks_and_revocations_still_reach_the_other_instance() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = Some(OwnRedis::start(port));
    let db = fresh_postgres_url().await;
    let start = || {
        let db = db.clone();
        TestRelay::start_with(Backend::Sqlite, move |c| {
            relaxed(c);
            c.database_url = Some(db);
            c.redis.url = Some(format!("redis://127.0.0.1:{port}"));
        })
    };
    let (a, b) = (start().await, start().await);
    wait_readyz(&a, "ok").await;
    wait_readyz(&b, "ok").await;
    let ana = a.register("ana").await;
    let (guild, channel) = ana.create_guild("rules").await;
    let invite = ana.invite(guild).await;
    let (carl, dave) = (b.register("carl").await, b.register("dave").await);
    carl.join(&invite).await;
    dave.join(&invite).await;
    let history = format!("/api/v1/channels/{channel}/messages?limit=5");
    // B's permission cache knows carl as a member.
    carl.get(&history).await.ok(200);
    let mut dave_gw = dave.gateway().await;

    drop(redis.take());
    wait_readyz(&b, "down").await;
    wait_readyz(&a, "down").await;

    // Ana kicks carl through A: B refuses him soon after.
    let r = ana
        .delete(&format!("/api/v1/guilds/{guild}/members/{}", carl.id))
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let kicked = Instant::now();
    loop {
        let r = carl.get(&history).await;
        if r.status == 403 || r.status == 404 {
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            kicked.elapsed() < Duration::from_secs(5),
            "B still serves a kicked member"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kick_ms = kicked.elapsed().as_millis();

    // Dave logs out through A: B refuses his token and closes his socket.
    let r = a
        .http
        .post(format!("{}/api/v1/auth/logout", a.url))
        .json(&serde_json::json!({ "refresh_token": dave.refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let revoked = Instant::now();
    assert_eq!(
        dave_gw.closed().await,
        Some(concord_proto::gateway::close::SESSION_REVOKED)
    );
    let close_ms = revoked.elapsed().as_millis();
    let r = dave.get("/api/v1/users/@me").await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (401, Some("session_revoked")),
        "{}",
        r.body
    );
    eprintln!(
        "with Redis down, B refused a member kicked on A after {kick_ms} ms, closed a session revoked on A after {close_ms} ms"
    );

    // Back up: B resubscribes; a rule changed meanwhile still holds, and the cluster works.
    let _redis = OwnRedis::start(port);
    wait_readyz(&a, "ok").await;
    wait_readyz(&b, "ok").await;
    let r = carl.get(&history).await;
    assert!(r.status == 403 || r.status == 404, "{}", r.body);
    let r = dave.get("/api/v1/users/@me").await;
    assert_eq!(r.status, 401, "{}", r.body);
}

#[tokio::test]
async fn without_redis_each_instance_serves_its_own_clients_and_recovers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = Some(OwnRedis::start(port));
    let db = fresh_postgres_url().await;
    let start = || {
        let db = db.clone();
        TestRelay::start_with(Backend::Sqlite, move |c| {
            relaxed(c);
            c.database_url = Some(db);
            c.redis.url = Some(format!("redis://127.0.0.1:{port}"));
        })
    };
    let (a, b) = (start().await, start().await);
    wait_readyz(&a, "ok").await;
    wait_readyz(&b, "ok").await;
    let ana = a.register("ana").await;
    let bob = b.register("bob").await;
    let (guild, channel) = ana.create_guild("degraded").await;
    bob.join(&ana.invite(guild).await).await;
    let mut ana_gw = ana.gateway().await;
    let mut bob_gw = bob.gateway().await;
    ana.say(channel, "before").await;
    assert_eq!(bob_gw.event("message_create").await["content"], "before");

    // Redis dies: both report degraded and still serve their own clients.
    drop(redis.take());
    assert_eq!(wait_readyz(&a, "down").await["status"], "degraded");
    wait_readyz(&b, "down").await;
    ana.say(channel, "while down").await;
    assert_eq!(
        ana_gw
            .event_where("message_create", |d| d["content"] == "while down")
            .await["content"],
        "while down"
    );

    // Redis returns: the instances resubscribe without a restart and talk again.
    let _redis = OwnRedis::start(port);
    wait_readyz(&a, "ok").await;
    wait_readyz(&b, "ok").await;
    ana.say(channel, "after").await;
    let got = bob_gw
        .event_where("message_create", |d| d["content"] != "while down")
        .await;
    assert_eq!(got["content"], "after");
    // What could not cross while Redis was down is in the history (persisted by A).
    let history = bob
        .get(&format!("/api/v1/channels/{channel}/messages"))
        .await
        .ok(200);
    assert!(history.to_string().contains("while down"));

    let metrics = a
        .http
        .get(format!("{}/metrics", a.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "concord_cluster_published_total",
        "concord_cluster_received_total",
        "concord_cluster_dropped_total",
        "concord_cluster_redis_up 1",
        // The shared rate limiter failed over to the local one while Redis was down.
        "concord_breaker_state{dependency=\"redis\"}",
    ] {
        assert!(metrics.contains(name), "{name} in /metrics");
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Redis is an accelerator, the database the truth: with Redis killed and restarted under a
/// steady stream of messages sent through instance A, a gateway client on B receives every
/// one of them live, during the outage too (from the store), in seq order, without a
/// duplicate; and across the outage a send answers about as fast as before.
#[tokio::test]
async fn with_redis_killed_the_other_instance_delivers_from_the_store() {
    use std::sync::{Arc, Mutex};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = Some(OwnRedis::start(port));
    let db = fresh_postgres_url().await;
    let start = || {
        let db = db.clone();
        TestRelay::start_with(Backend::Sqlite, move |c| {
            relaxed(c);
            c.database_url = Some(db);
            c.redis.url = Some(format!("redis://127.0.0.1:{port}"));
        })
    };
    let (a, b) = (start().await, start().await);
    wait_readyz(&a, "ok").await;
    wait_readyz(&b, "ok").await;
    let ana = Arc::new(a.register("ana").await);
    let bob = b.register("bob").await;
    let (guild, channel) = ana.create_guild("truth").await;
    bob.join(&ana.invite(guild).await).await;
    let mut bob_gw = bob.gateway().await;
    ana.say(channel, "warm").await;
    assert_eq!(bob_gw.event("message_create").await["content"], "warm");

    // Ana sends every 50 ms; each send's time and latency are noted.
    #[derive(Default)]
    struct Sent {
        at: std::collections::HashMap<String, Instant>,
        latency: Vec<(Instant, Duration)>,
    }
    let sent = Arc::new(Mutex::new(Sent::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (ana, sent, stop) = (ana.clone(), sent.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let content = format!("m{i}");
                let started = Instant::now();
                sent.lock().unwrap().at.insert(content.clone(), started);
                ana.say(channel, &content).await;
                sent.lock()
                    .unwrap()
                    .latency
                    .push((started, started.elapsed()));
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            i
        })
    };
    // Bob's client: every message_create with its seq and when it arrived.
    let received = Arc::new(Mutex::new(Vec::<(String, i64, Instant)>::new()));
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            loop {
                match bob_gw.next(Duration::from_secs(30)).await {
                    Got::Frame(f) if f.t.as_deref() == Some("message_create") => {
                        let content = f.d["content"].as_str().unwrap().to_owned();
                        let seq = f.d["seq"].as_i64().unwrap();
                        received
                            .lock()
                            .unwrap()
                            .push((content, seq, Instant::now()));
                    }
                    Got::Frame(_) => {}
                    Got::Timeout => return bob_gw,
                    Got::Closed(code) => panic!("bob's gateway closed: {code:?}"),
                }
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(redis.take());
    let down_at = Instant::now();
    wait_readyz(&b, "down").await;
    eprintln!(
        "B saw Redis down after {} ms",
        down_at.elapsed().as_millis()
    );
    assert_eq!(readyz(&b).await["fanout"], "store");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _redis = OwnRedis::start(port);
    let up_at = Instant::now();
    wait_readyz(&a, "ok").await;
    assert_eq!(wait_readyz(&b, "ok").await["fanout"], "redis");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let count = sender.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while received.lock().unwrap().len() < count {
        assert!(Instant::now() < deadline, "not every message reached bob");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    reader.abort();

    let received = std::mem::take(&mut *received.lock().unwrap());
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    let contents: Vec<&str> = received.iter().map(|(c, _, _)| c.as_str()).collect();
    let expected: Vec<String> = (0..count).map(|i| format!("m{i}")).collect();
    assert_eq!(contents, expected, "every message, once, in order");
    let seqs: Vec<i64> = received.iter().map(|(_, s, _)| *s).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seqs in order: {seqs:?}"
    );

    // Delivery latency of what was sent while B's subscription was down.
    let mut during: Vec<Duration> = received
        .iter()
        .filter_map(|(c, _, got)| {
            let at = sent.at[c];
            (at >= down_at && at < up_at).then(|| got.duration_since(at))
        })
        .collect();
    during.sort();
    assert!(
        during.len() > 20,
        "{} messages during the outage",
        during.len()
    );
    let p99 = during[(during.len() * 99).div_ceil(100) - 1];
    let send_p50 = |from: Instant, to: Instant| {
        let mut l: Vec<Duration> = sent
            .latency
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, d)| *d)
            .collect();
        l.sort();
        (l[l.len() / 2], l[l.len() - 1])
    };
    let (before_p50, before_max) = send_p50(down_at - Duration::from_secs(1), down_at);
    let (during_p50, during_max) = send_p50(down_at, up_at);
    eprintln!(
        "{count} messages; during the outage {} delivered from the store, p99 {} ms, max {} ms; send p50/max before {}/{} ms, during {}/{} ms",
        during.len(),
        p99.as_millis(),
        during.last().unwrap().as_millis(),
        before_p50.as_millis(),
        before_max.as_millis(),
        during_p50.as_millis(),
        during_max.as_millis(),
    );
    // The target is 2 s (printed above); a loaded CI machine gets slack.
    assert!(p99 < Duration::from_secs(5), "p99 {p99:?}");
    let metrics = b
        .http
        .get(format!("{}/metrics", b.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("concord_cluster_caught_up_total"));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_rate_limit_holds_across_instances() {
    let (a, b) = cluster_with(|c| {
        relaxed(c);
        c.rate_limits.message_send.requests = 6;
        c.rate_limits.message_send.window_secs = 60;
    })
    .await;
    let ana = a.register("ana").await;
    let (_, channel) = ana.create_guild("limits").await;
    let mut statuses = Vec::new();
    let mut last = None;
    for i in 0..10 {
        // Alternate instances: each alone would allow 6, together they still allow 6.
        let relay = if i % 2 == 0 { &a } else { &b };
        let r = send(
            &relay.http,
            reqwest::Method::POST,
            format!("{}/api/v1/channels/{channel}/messages", relay.url),
            Some(&ana.access),
            Some(json!({ "content": format!("m{i}"), "nonce": format!("n{i}") })),
        )
        .await;
        statuses.push(r.status);
        last = Some(r);
    }
    assert_eq!(
        statuses,
        [201, 201, 201, 201, 201, 201, 429, 429, 429, 429],
        "six sends in the window, wherever they land"
    );
    let last = last.unwrap();
    assert_eq!(last.header("x-ratelimit-limit"), Some("6"));
    assert_eq!(last.header("x-ratelimit-remaining"), Some("0"));
    assert!(last.header("retry-after").is_some());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_redis_cluster_carries_events_and_limits() {
    let redis = tokio::task::spawn_blocking(OwnRedisCluster::start)
        .await
        .unwrap();
    let (a, b) = cluster_on(redis.url(), true, |c| {
        relaxed(c);
        c.rate_limits.message_send.requests = 4;
        c.rate_limits.message_send.window_secs = 60;
    })
    .await;
    let ana = a.register("ana").await;
    let bob = b.register("bob").await;
    let (guild, channel) = ana.create_guild("sharded").await;
    bob.join(&ana.invite(guild).await).await;
    let mut bob_gw = bob.gateway().await;

    // Pub/sub crosses the cluster bus: A's subscriber and B's may sit on different nodes.
    ana.say(channel, "through the cluster").await;
    let got = bob_gw.event("message_create").await;
    assert_eq!(got["content"], "through the cluster");

    // The limiter's keys live in the cluster (slot-routed Lua): alternating instances
    // still get four sends, not eight. Ana has used one already.
    let mut statuses = Vec::new();
    for i in 0..5 {
        let relay = if i % 2 == 0 { &b } else { &a };
        let r = send(
            &relay.http,
            reqwest::Method::POST,
            format!("{}/api/v1/channels/{channel}/messages", relay.url),
            Some(&ana.access),
            Some(json!({ "content": format!("m{i}"), "nonce": format!("c{i}") })),
        )
        .await;
        statuses.push(r.status);
    }
    assert_eq!(statuses, [201, 201, 201, 429, 429]);
    let keys: usize = redis
        .ports
        .iter()
        .map(|p| {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &p.to_string(), "dbsize"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert!(keys > 0, "rate-limit windows are stored in the cluster");
    // Revocation crosses the cluster too.
    logout_crosses(&a, &b, "carol").await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_instance_started_later_learns_who_is_online() {
    let db = fresh_postgres_url().await;
    let prefix = format!("test{}", rand_suffix());
    let start = |db: String, prefix: String| {
        TestRelay::start_with(Backend::Sqlite, move |c| {
            relaxed(c);
            c.database_url = Some(db);
            c.redis.url = Some(redis_url());
            c.redis.prefix = prefix;
        })
    };
    let a = start(db.clone(), prefix.clone()).await;
    wait_readyz(&a, "ok").await;
    let ana = a.register("ana").await;
    let (guild, _) = ana.create_guild("early").await;
    let code = ana.invite(guild).await;
    let _ana_gw = ana.gateway().await;

    // B starts after ana came online on A: its hello brings A's list of who is online.
    let b = start(db, prefix).await;
    wait_readyz(&b, "ok").await;
    let bob = b.register("bob").await;
    bob.join(&code).await;
    let ana_id = ana.id.to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let gw = bob.gateway().await;
        let listed = gw.ready["presences"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["user_id"] == ana_id.as_str()));
        if listed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B's ready never listed ana: {}",
            gw.ready
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn presence_spans_instances() {
    let (a, b) = cluster().await;
    let ana = a.register("ana").await;
    let bob = b.register("bob").await;
    let (guild, _) = ana.create_guild("presence").await;
    bob.join(&ana.invite(guild).await).await;
    let bob_id = bob.id.to_string();

    // Bob is online on B before ana connects on A: ana's ready lists him.
    let mut bob_on_b = bob.gateway().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ana_gw = loop {
        let gw = ana.gateway().await;
        let listed = gw.ready["presences"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["user_id"] == bob_id.as_str()));
        if listed {
            break gw;
        }
        assert!(
            Instant::now() < deadline,
            "ready never listed bob: {}",
            gw.ready
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Bob also connects on A, then leaves B: for ana he never goes offline.
    let _bob_on_a = common::client::Gateway::identify(&a.url, &bob.access).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob_on_b.ws.close(None).await.unwrap();
    let until = Instant::now() + Duration::from_secs(2);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match ana_gw.next(left).await {
            Got::Frame(f) if f.t.as_deref() == Some("presence_update") => {
                assert!(
                    !(f.d["user_id"] == bob_id.as_str() && f.d["status"] == "offline"),
                    "bob is still online on A"
                );
            }
            Got::Frame(_) => {}
            Got::Timeout => break,
            Got::Closed(c) => panic!("ana's gateway closed: {c:?}"),
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_job_abandoned_by_a_dead_instance_is_finished_by_another() {
    use concord_relay::cluster::jobs::{Job, JobQueue};
    use concord_relay::cluster::link::Redis;
    let prefix = format!("test{}", rand_suffix());
    let redis = Redis::open(&redis_url(), false).unwrap();
    let claim_after = Duration::from_millis(300);
    let a = JobQueue::new(redis.clone(), &prefix, "instance-a", claim_after);
    let b = JobQueue::new(redis, &prefix, "instance-b", claim_after);
    let job = Job::ArchiveMonth {
        month: "2025-03".into(),
    };

    // Every instance's scheduler offers the job; one copy is queued.
    assert!(
        a.enqueue_once(&job, "archive:2025-03", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(
        !b.enqueue_once(&job, "archive:2025-03", Duration::from_secs(60))
            .await
            .unwrap()
    );

    // A takes it and dies before acknowledging: the job stays pending, B does not get it yet.
    let (_, taken) = a
        .next(Duration::from_millis(100))
        .await
        .unwrap()
        .expect("a job");
    assert_eq!(taken, job);
    drop(a);
    assert_eq!(b.pending().await.unwrap(), 1);
    assert!(b.next(Duration::from_millis(50)).await.unwrap().is_none());

    // Once it has been idle long enough, B claims it, runs it and acknowledges it.
    tokio::time::sleep(claim_after + Duration::from_millis(100)).await;
    let (id, reclaimed) = b
        .next(Duration::from_millis(50))
        .await
        .unwrap()
        .expect("reclaimed");
    assert_eq!(reclaimed, job);
    b.ack(&id).await.unwrap();
    assert_eq!(b.pending().await.unwrap(), 0);
    assert!(b.next(Duration::from_millis(50)).await.unwrap().is_none());
}

#[tokio::test]
async fn an_archive_job_on_the_queue_is_run_by_an_instance() {
    use concord_relay::archive::Month;
    use concord_relay::cluster::jobs::{Job, JobQueue};
    use concord_relay::cluster::link::Redis;
    use concord_relay::store::NewMessage;
    // Archives of a cluster go to storage every instance shares.
    let shared = tempfile::tempdir().unwrap();
    let location = shared.path().to_str().unwrap().to_owned();
    let (a, b) = cluster_on(redis_url(), false, move |c| {
        relaxed(c);
        c.retention.archive_location = Some(location.clone());
    })
    .await;
    let ana = a.register("ana").await;
    let (_, channel) = ana.create_guild("archived").await;
    let store = a.server().app().store.clone();
    let march: Month = "2025-03".parse().unwrap();
    let (lo, hi) = march.id_range();
    store
        .ensure_partitions(&[(march.partition(), lo, hi)])
        .await
        .unwrap();
    let old = concord_proto::Id(lo.0 + 1);
    store
        .insert_message(&NewMessage {
            id: old,
            channel_id: channel,
            author: ana.id,
            device: "d".into(),
            nonce: "old".into(),
            content: "from march".into(),
            reply_to: None,
            mentions: Vec::new(),
            created_at: old.unix_ms(),
        })
        .await
        .unwrap();

    // The job goes on the queue; whichever instance's worker takes it archives the month.
    let prefix = a.server().app().config.redis.prefix.clone();
    let queue = JobQueue::new(
        Redis::open(&redis_url(), false).unwrap(),
        &prefix,
        "test",
        Duration::from_secs(600),
    );
    let job = Job::ArchiveMonth {
        month: march.to_string(),
    };
    assert!(
        queue
            .enqueue_once(&job, "archive:2025-03", Duration::from_secs(60))
            .await
            .unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let months = store.archived_months().await.unwrap();
        if months.iter().any(|m| m.month == "2025-03") {
            break;
        }
        assert!(Instant::now() < deadline, "the archive job never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(shared.path().join("messages/2025-03.jsonl.gz").is_file());
    assert_eq!(
        queue.pending().await.unwrap(),
        0,
        "the job was acknowledged"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_voice_room_keeps_its_owner_as_instances_join_and_moves_when_it_dies() {
    use concord_proto::Id;
    use concord_relay::cluster::link::Redis;
    use concord_relay::voice::placement::{LIVENESS, Owner, Placement};

    let redis = Redis::open(&redis_url(), false).unwrap();
    let prefix = format!("place{}", rand_suffix());
    let a = Placement::new(redis.clone(), &prefix, "a", "http://a.test");
    a.heartbeat().await.unwrap();
    let rooms: Vec<Id> = (1..=40).map(|i| Id(i * 7_919)).collect();
    for room in &rooms {
        assert_eq!(a.claim(*room).await.unwrap(), Owner::Here);
    }
    // B joins the cluster: the live rooms stay where they are.
    let b = Placement::new(redis.clone(), &prefix, "b", "http://b.test");
    b.heartbeat().await.unwrap();
    let on_a = Owner::There {
        instance: "a".into(),
        url: "http://a.test".into(),
    };
    for room in &rooms {
        assert_eq!(b.claim(*room).await.unwrap(), on_a);
        assert_eq!(b.owner(*room).await.unwrap(), Some(on_a.clone()));
    }
    assert!(a.renew(&rooms).await.unwrap().is_empty());
    // New rooms spread over both, and both instances agree on each.
    let mut on_b = 0;
    for i in 41..=120 {
        let room = Id(i * 7_919);
        let owner = b.claim(room).await.unwrap();
        let seen_from_a = a.owner(room).await.unwrap().unwrap();
        match owner {
            Owner::Here => {
                on_b += 1;
                assert!(
                    matches!(seen_from_a, Owner::There { ref instance, .. } if instance == "b")
                );
            }
            Owner::There { .. } => assert_eq!(seen_from_a, Owner::Here),
        }
    }
    assert!((10..70).contains(&on_b), "{on_b} of 80 new rooms on b");
    // A stops beating: once its liveness key is gone, a claim moves its rooms to B.
    let deadline = Instant::now() + LIVENESS + Duration::from_secs(2);
    loop {
        b.heartbeat().await.unwrap();
        if b.claim(rooms[0]).await.unwrap() == Owner::Here {
            break;
        }
        assert!(Instant::now() < deadline, "the dead owner kept its room");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for room in &rooms {
        assert_eq!(b.claim(*room).await.unwrap(), Owner::Here);
    }
    assert!(b.live().await.unwrap().iter().all(|(i, _)| i == "b"));
    // A comes back: it finds it lost every room, and B keeps them.
    a.heartbeat().await.unwrap();
    assert_eq!(a.renew(&rooms).await.unwrap().len(), rooms.len());
    assert_eq!(b.claim(rooms[1]).await.unwrap(), Owner::Here);
}

/// A cluster whose voice channels run on the SFU, once both instances' placement is up.
async fn voice_cluster() -> (TestRelay, TestRelay) {
    voice_cluster_with(|c| {
        relaxed(c);
        c.voice.mesh_size = 1;
    })
    .await
}

async fn voice_cluster_with(tweak: fn(&mut concord_relay::RelayConfig)) -> (TestRelay, TestRelay) {
    let (a, b) = cluster_with(tweak).await;
    for relay in [&a, &b] {
        let app = relay.server().app().clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        while app.voice.placement.get().and_then(|p| p.secret()).is_none() {
            assert!(Instant::now() < deadline, "no placement heartbeat");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    (a, b)
}

#[tokio::test]
async fn voice_requests_reach_the_room_owner_from_either_instance() {
    use concord_relay::api::voice_forward::{FORWARDED, SERVED_BY};

    let (a, b) = voice_cluster().await;
    let ana = a.register(&format!("ana{}", rand_suffix())).await;
    let (guild, _) = ana.create_guild("voice").await;
    let channel = ana.voice_channel(guild, "stage").await;
    let code = ana.invite(guild).await;
    let bob = b.register(&format!("bob{}", rand_suffix())).await;
    bob.join(&code).await;
    let join = format!("/api/v1/voice/channels/{channel}/join");

    let first = ana.post(&join, json!({ "client": "node" })).await;
    let owner = first.header(SERVED_BY).expect("served by").to_owned();
    first.ok(200);
    let second = bob.post(&join, json!({ "client": "node" })).await;
    assert_eq!(second.header(SERVED_BY), Some(owner.as_str()));
    let second = second.ok(200);
    assert_eq!(second["mode"], "sfu");
    assert_eq!(second["participants"].as_array().unwrap().len(), 2);
    // The grant verifies with the key of the instance bob talks to (it vouches for the
    // owner's answer).
    let grant: concord_proto::signed::VoiceGrant =
        serde_json::from_value(second["grant"].clone()).unwrap();
    let b_key = b.server().app().p2p.get().unwrap().key.verifying_key();
    grant
        .verify(&b_key, concord_relay::app::now_ms())
        .expect("grant signed by the instance bob asked");

    // Only the owner holds the room; both instances answer with its participants.
    let (owner_relay, other) = if a.server().app().instance == owner {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(owner_relay.server().app().voice.with(|r| r.room_count()), 1);
    assert_eq!(other.server().app().voice.with(|r| r.room_count()), 0);
    for user in [&ana, &bob] {
        let list = user.get(&format!("/api/v1/voice/channels/{channel}")).await;
        assert_eq!(list.header(SERVED_BY), Some(owner.as_str()));
        assert_eq!(list.ok(200).as_array().unwrap().len(), 2);
    }
    // A made-up forwarding mark changes nothing: the request still goes to the owner.
    for user in [&ana, &bob] {
        let forged = user
            .http
            .get(format!("{}/api/v1/voice/channels/{channel}", user.url))
            .bearer_auth(&user.access)
            .header(FORWARDED, "forged")
            .send()
            .await
            .unwrap();
        assert_eq!(
            forged.headers().get(SERVED_BY).unwrap().to_str().unwrap(),
            owner
        );
    }
    let metrics = ana.get("/metrics").await.body;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains(r#"concord_cluster_voice_forwarded_total{result="ok"}"#),
        "{metrics}"
    );
    // A moderator's server mute sent to the instance without the room reaches its owner.
    let mute = |relay: &TestRelay, on: bool| {
        let url = format!(
            "{}/api/v1/guilds/{guild}/voice-states/{}",
            relay.url, bob.id
        );
        let token = ana.access.clone();
        async move {
            reqwest::Client::new()
                .patch(url)
                .bearer_auth(token)
                .json(&json!({ "server_mute": on }))
                .send()
                .await
                .unwrap()
        }
    };
    let muted = mute(other, true).await;
    assert_eq!(muted.status(), 200);
    assert_eq!(muted.json::<Value>().await.unwrap()["server_mute"], true);
    let on_owner = owner_relay
        .server()
        .app()
        .voice
        .with(|r| r.state_in(channel, bob.id).cloned())
        .expect("bob on the owner");
    assert!(on_owner.server_mute, "{on_owner:?}");
    assert_eq!(mute(owner_relay, false).await.status(), 200);

    // Leaving through either instance empties the owner's room.
    for user in [&ana, &bob] {
        user.post(
            &format!("/api/v1/voice/channels/{channel}/leave"),
            json!({}),
        )
        .await
        .ok(204);
    }
    assert_eq!(owner_relay.server().app().voice.with(|r| r.room_count()), 0);
}

#[tokio::test]
async fn voice_states_and_one_channel_per_user_span_instances() {
    use concord_relay::voice::placement::pick_owner;

    // One participant per room: a join refused as full must leave the user where they are.
    let (a, b) = voice_cluster_with(|c| {
        relaxed(c);
        c.voice.mesh_size = 1;
        c.voice.max_participants = 1;
    })
    .await;
    let ana = a.register(&format!("ana{}", rand_suffix())).await;
    let (guild, _) = ana.create_guild("voice").await;
    let bob = b.register(&format!("bob{}", rand_suffix())).await;
    bob.join(&ana.invite(guild).await).await;
    // Two voice channels whose rooms land on different instances (rendezvous hashing over
    // the two live instances decides, as the first join's claim will).
    let instances = [
        a.server().app().instance.clone(),
        b.server().app().instance.clone(),
    ];
    let owner_of = |channel| {
        pick_owner(channel, instances.iter().map(String::as_str))
            .unwrap()
            .to_owned()
    };
    let first = ana.voice_channel(guild, "one").await;
    let mut second = ana.voice_channel(guild, "two").await;
    for i in 0..20 {
        if owner_of(second) != owner_of(first) {
            break;
        }
        second = ana.voice_channel(guild, &format!("two-{i}")).await;
    }
    assert_ne!(
        owner_of(second),
        owner_of(first),
        "no channel on the other owner"
    );
    let relay_of = |instance: String| if instance == instances[0] { &a } else { &b };
    let voice_in = |view: &Value| -> Vec<(String, String)> {
        // Left out when nobody is in voice.
        let none = Vec::new();
        let mut v: Vec<(String, String)> = view["voice_states"]
            .as_array()
            .unwrap_or(&none)
            .iter()
            .map(|s| {
                (
                    s["user_id"].as_str().unwrap().to_owned(),
                    s["channel_id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let guild_path = format!("/api/v1/guilds/{guild}");
    let ana_id = ana.id.to_string();

    ana.post(
        &format!("/api/v1/voice/channels/{first}/join"),
        json!({ "client": "node" }),
    )
    .await
    .ok(200);
    // Both instances list ana in the first channel, whichever holds its room.
    for viewer in [&ana, &bob] {
        let view = viewer.get(&guild_path).await.ok(200);
        assert_eq!(
            voice_in(&view),
            vec![(ana_id.clone(), first.to_string())],
            "{}",
            viewer.url
        );
    }

    // Joining the second channel (held by the other instance) takes ana out of the first.
    ana.post(
        &format!("/api/v1/voice/channels/{second}/join"),
        json!({ "client": "node" }),
    )
    .await
    .ok(200);
    let first_owner = relay_of(owner_of(first));
    let second_owner = relay_of(owner_of(second));
    assert_eq!(
        first_owner.server().app().voice.with(|r| r.room_count()),
        0,
        "ana is still in the first channel"
    );
    assert_eq!(
        second_owner
            .server()
            .app()
            .voice
            .with(|r| r.channel_of(ana.id)),
        Some(second)
    );
    for viewer in [&ana, &bob] {
        let view = viewer.get(&guild_path).await.ok(200);
        assert_eq!(
            voice_in(&view),
            vec![(ana_id.clone(), second.to_string())],
            "{}",
            viewer.url
        );
    }

    // Bob takes the first channel's only place; ana's join there is refused and she stays
    // in the second.
    bob.post(
        &format!("/api/v1/voice/channels/{first}/join"),
        json!({ "client": "node" }),
    )
    .await
    .ok(200);
    let refused = ana
        .post(
            &format!("/api/v1/voice/channels/{first}/join"),
            json!({ "client": "node" }),
        )
        .await;
    assert_eq!(refused.status, 409);
    assert_eq!(
        second_owner
            .server()
            .app()
            .voice
            .with(|r| r.channel_of(ana.id)),
        Some(second),
        "a refused join took ana out of her channel"
    );

    for (user, channel) in [(&ana, second), (&bob, first)] {
        user.post(
            &format!("/api/v1/voice/channels/{channel}/leave"),
            json!({}),
        )
        .await
        .ok(204);
    }
    for viewer in [&ana, &bob] {
        let view = viewer.get(&guild_path).await.ok(200);
        assert!(voice_in(&view).is_empty(), "{view}");
    }
}
