//! In-process Concord clusters for tests: a relay on loopback ports and any number of nodes,
//! each with its own data dir, talking real QUIC/TCP libp2p and real HTTP.

pub mod audio;
pub mod browser;
pub mod lossy;
pub mod procs;
pub mod raw;

use std::sync::Arc;
use std::time::Duration;

use concord_node::cache::CachedMessage;
use concord_node::{Node, NodeConfig};
use concord_proto::Id;
use concord_relay::{RelayConfig, Server};
use serde_json::{Value, json};
use tempfile::TempDir;

pub fn init_tracing() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

/// A relay with SQLite in a temp dir, loopback listeners and no rate limits in the way.
pub struct TestRelay {
    pub server: Option<Server>,
    pub url: String,
    pub dir: TempDir,
}

pub fn relay_config(dir: &std::path::Path) -> RelayConfig {
    let mut config = RelayConfig {
        listen: "127.0.0.1:0".parse().expect("valid"),
        data_dir: dir.to_owned(),
        ..RelayConfig::default()
    };
    config.p2p.listen = vec![
        "/ip4/127.0.0.1/udp/0/quic-v1".into(),
        "/ip4/127.0.0.1/tcp/0".into(),
    ];
    for limit in [
        &mut config.rate_limits.auth,
        &mut config.rate_limits.signup,
        &mut config.rate_limits.message_send,
        &mut config.rate_limits.general,
    ] {
        limit.requests = 1_000_000;
    }
    config
}

impl TestRelay {
    /// Two instances of one cluster: a fresh PostgreSQL schema and a Redis prefix of their
    /// own (`prefix` and this process's id), both connected to Redis when this returns.
    pub async fn cluster_pair(prefix: &str) -> (TestRelay, TestRelay) {
        let db = fresh_postgres_url();
        let prefix = format!("{prefix}{}", std::process::id());
        let start = || {
            let (db, prefix) = (db.clone(), prefix.clone());
            TestRelay::start_with(tempfile::tempdir().expect("temp dir"), move |c| {
                c.database_url = Some(db);
                c.redis.url = Some(redis_url());
                c.redis.prefix = prefix;
            })
        };
        let (a, b) = (start().await, start().await);
        for relay in [&a, &b] {
            let app = relay.server().app();
            wait_for(Duration::from_secs(10), || app.redis_ok()).await;
        }
        (a, b)
    }

    pub async fn start() -> TestRelay {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir).await
    }

    /// Starts (or restarts) a relay on a data dir; the database and the libp2p identity
    /// survive restarts, the ports do not.
    pub async fn start_in(dir: TempDir) -> TestRelay {
        Self::start_with(dir, |_| {}).await
    }

    pub async fn start_with(dir: TempDir, tweak: impl FnOnce(&mut RelayConfig)) -> TestRelay {
        init_tracing();
        concord_relay::listener::install_crypto_provider();
        let mut config = relay_config(dir.path());
        tweak(&mut config);
        let server = Server::spawn(config).await.expect("relay starts");
        let url = server.url().to_owned();
        TestRelay {
            server: Some(server),
            url,
            dir,
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    /// Stops the relay and hands back its data dir (to start it again).
    pub async fn stop(mut self) -> TempDir {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        self.dir
    }
}

pub struct TestNode {
    pub node: Node,
    pub name: String,
    pub dir: TempDir,
}

pub fn node_config(dir: &std::path::Path) -> NodeConfig {
    let mut config = NodeConfig::new(dir.to_owned());
    config.listen = vec![
        "/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("valid"),
        "/ip4/127.0.0.1/tcp/0".parse().expect("valid"),
    ];
    // mDNS ignores loopback and would leak onto the host's LAN: off in-process.
    config.mdns = false;
    config
}

impl TestNode {
    /// A node with a fresh identity (`concord init`).
    pub async fn start(name: &str) -> TestNode {
        Self::start_with(name, |_| {}).await
    }

    pub async fn start_with(name: &str, tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
        init_tracing();
        concord_relay::listener::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        concord_node::identity::init(dir.path(), name).expect("identity");
        let mut config = node_config(dir.path());
        tweak(&mut config);
        let node = Node::spawn(config).await.expect("node starts");
        TestNode {
            node,
            name: name.to_owned(),
            dir,
        }
    }

    /// Restarts the node on the same data dir (identity, cache, outbox).
    pub async fn restart(self) -> TestNode {
        let TestNode { node, name, dir } = self;
        node.shutdown().await;
        let node = Node::spawn(node_config(dir.path()))
            .await
            .expect("node restarts");
        TestNode { node, name, dir }
    }

    /// Registers this node's account as the owner of a new guild, then joins it. Returns the
    /// guild id and its `general` text channel.
    pub async fn create_guild(&self, relay: &TestRelay, guild_name: &str) -> (Id, Id, String) {
        let http = concord_node::relay_http::RelayHttp::new(&relay.url);
        http.login(self.node.identity(), Some(&self.name))
            .await
            .expect("owner registers");
        let guild: Value = http
            .authed(
                self.node.identity(),
                reqwest::Method::POST,
                "/api/v1/guilds",
                Some(json!({ "name": guild_name })),
            )
            .await
            .expect("guild created");
        let guild_id: Id = serde_json::from_value(guild["id"].clone()).expect("guild id");
        let general = guild["channels"]
            .as_array()
            .expect("channels")
            .iter()
            .find(|c| c["kind"] == "text")
            .expect("text channel");
        let general: Id = serde_json::from_value(general["id"].clone()).expect("channel id");
        let invite: Value = http
            .authed(
                self.node.identity(),
                reqwest::Method::POST,
                &format!("/api/v1/guilds/{guild_id}/invites"),
                Some(json!({})),
            )
            .await
            .expect("invite");
        let code = invite["code"].as_str().expect("code").to_owned();
        self.node
            .join(&relay.url, &code, None)
            .await
            .expect("owner joins");
        (guild_id, general, code)
    }

    /// A voice channel in a guild this node may manage.
    pub async fn create_voice_channel(&self, relay: &TestRelay, guild: Id, name: &str) -> Id {
        let channel: Value = concord_node::relay_http::RelayHttp::new(&relay.url)
            .authed(
                self.node.identity(),
                reqwest::Method::POST,
                &format!("/api/v1/guilds/{guild}/channels"),
                Some(json!({ "name": name, "kind": "voice" })),
            )
            .await
            .expect("voice channel");
        serde_json::from_value(channel["id"].clone()).expect("channel id")
    }

    pub async fn join(&self, relay: &TestRelay, code: &str) {
        self.node
            .join(&relay.url, code, Some(&self.name))
            .await
            .expect("joins");
    }

    /// Waits until the node is connected to its relay and has its hello answer (the relay
    /// pushes to it from then on).
    pub async fn wait_connected(&self) {
        wait_for(Duration::from_secs(10), || {
            self.node.is_relay_connected()
                && self.node.with_cache(|c| c.me().ok().flatten().is_some())
        })
        .await;
    }

    /// Waits until the cached history of a channel satisfies `pred`.
    pub async fn wait_history(
        &self,
        channel: Id,
        pred: impl Fn(&[CachedMessage]) -> bool,
    ) -> Vec<CachedMessage> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let page = self.node.history(channel, 500).unwrap_or_default();
            if pred(&page) {
                return page;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{}: history of {channel} never matched; it has {} messages: {:?}",
                    self.name,
                    page.len(),
                    page.iter().map(|m| &m.content).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub async fn wait_for(timeout: Duration, mut pred: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !pred() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub type Shared<T> = Arc<T>;

/// The test PostgreSQL (`CONCORD_TEST_DATABASE_URL`) pointed at a new, empty schema, made
/// with `psql` (several relays of one test share it).
pub fn fresh_postgres_url() -> String {
    let base = std::env::var("CONCORD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let schema = format!("tk_{}_{nanos}", std::process::id());
    let out = std::process::Command::new("psql")
        .args([&base, "-qc", &format!("CREATE SCHEMA \"{schema}\"")])
        .output()
        .expect("psql runs (scripts/test installs it)");
    assert!(
        out.status.success(),
        "create schema: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options[search_path]={schema}")
}

/// The test Redis (`CONCORD_TEST_REDIS_URL`).
pub fn redis_url() -> String {
    std::env::var("CONCORD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A relay's metrics, in Prometheus text (`GET {url}/metrics`).
pub async fn metrics_text(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// One metric in Prometheus text, 0 when it is not there yet: with no `labels` the unlabelled
/// series, else the first series carrying every one of them (`key="value"`).
pub fn metric_in(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(name)?;
            if labels.is_empty() {
                return rest.strip_prefix(' ');
            }
            let (series, value) = rest.strip_prefix('{')?.rsplit_once("} ")?;
            labels.iter().all(|x| series.contains(x)).then_some(value)
        })
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

/// One unlabelled metric of a relay (`GET {url}/metrics`), 0 when it is not there yet.
pub async fn metric(url: &str, name: &str) -> f64 {
    metric_in(&metrics_text(url).await, name, &[])
}
