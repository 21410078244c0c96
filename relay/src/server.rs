//! `Server::spawn(config)`: open the store, lease a worker id, load the token signing keys,
//! bind, start background work, serve. `shutdown()`
//! drains in order: readiness off, gateways closed with 4010, in-flight requests finished,
//! lease released, store closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::{App, AppParts, now_ms};
use crate::auth::tokens::{TokenService, random_token};
use crate::config::{ConfigError, RelayConfig, normalize_origin};
use crate::hub::CloseReason;
use crate::listener::{self, TlsError};
use crate::ratelimit::MemoryLimiter;
use crate::store::space::SpaceWatch;
use crate::store::sql::SqlStore;
use crate::store::{Store, StoreError};

const WORKER_LEASE_MS: i64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("data dir {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("libp2p: {0}")]
    P2p(#[from] crate::p2p::swarm::P2pError),
    #[error("archive: {0}")]
    Archive(String),
    #[error("redis: {0}")]
    Redis(String),
}

pub struct Server {
    app: Arc<App>,
    http_addr: SocketAddr,
    stop_accepting: CancellationToken,
    http_task: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

/// `http[s]://host:port` for a bound address; unspecified addresses become loopback.
fn default_origin(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = if addr.ip().is_unspecified() {
        SocketAddr::new([127, 0, 0, 1].into(), addr.port())
    } else {
        addr
    };
    normalize_origin(&format!("{scheme}://{host}")).expect("a socket address is a valid origin")
}

/// Where the other instances reach this one: the listen address, or when listening on
/// all interfaces, the local address of the route to Redis (the network the instances share).
async fn default_instance_url(http_addr: SocketAddr, tls: bool, config: &RelayConfig) -> String {
    let scheme = if tls { "https" } else { "http" };
    let mut ip = http_addr.ip();
    if ip.is_unspecified() {
        let redis = config.redis.url.as_deref().unwrap_or_default();
        let first = redis.split(',').next().unwrap_or_default().trim();
        if let Some(local) = route_to(first).await {
            ip = local;
        } else {
            tracing::warn!(
                "no route to Redis found to pick this instance's address; set redis.instance_url"
            );
        }
    }
    format!("{scheme}://{}", SocketAddr::new(ip, http_addr.port()))
}

/// The local IP address this host uses to reach `url`'s host (no packet is sent).
async fn route_to(url: &str) -> Option<std::net::IpAddr> {
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = parsed.port().unwrap_or(6379);
    let target = tokio::net::lookup_host((host, port)).await.ok()?.next()?;
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = tokio::net::UdpSocket::bind(bind).await.ok()?;
    socket.connect(target).await.ok()?;
    Some(socket.local_addr().ok()?.ip())
}

impl Server {
    pub async fn spawn(config: RelayConfig) -> Result<Server, ServerError> {
        config.validate()?;
        crate::metrics::install();
        let tls = match &config.tls {
            Some(t) => Some(listener::tls_acceptor(&t.cert, &t.key)?),
            None => None,
        };
        if config.database_url.as_deref().is_none_or(str::is_empty) {
            std::fs::create_dir_all(&config.data_dir)
                .map_err(|e| ServerError::DataDir(config.data_dir.display().to_string(), e))?;
        }
        let mut sql = SqlStore::connect(&config.database_url(), &config.database.pool()).await?;
        let space = config.sqlite_dir().map(|dir| {
            let watch = Arc::new(SpaceWatch::new(
                &dir,
                config.storage.min_free_mib.saturating_mul(1 << 20),
                config.storage.min_free_percent,
            ));
            watch.check();
            sql.watch_space(watch.clone());
            watch
        });
        let store: Arc<dyn Store> = Arc::new(sql);
        let instance = random_token(12);
        let worker_id = store
            .lease_worker_id(&instance, now_ms(), WORKER_LEASE_MS)
            .await?;
        let tokens =
            TokenService::load(store.as_ref(), config.auth.access_token_ttl_secs, now_ms()).await?;

        let tcp = TcpListener::bind(config.listen)
            .await
            .map_err(|e| ServerError::Bind(config.listen, e))?;
        let http_addr = tcp
            .local_addr()
            .map_err(|e| ServerError::Bind(config.listen, e))?;
        let audiences = if config.public_url.is_empty() {
            vec![default_origin(http_addr, tls.is_some())]
        } else {
            config
                .public_url
                .iter()
                .map(|u| normalize_origin(u).expect("validated"))
                .collect()
        };
        let limiter = Arc::new(MemoryLimiter::new(config.rate_limits.max_tracked_keys));
        // Several instances share their limits through Redis (the memory one is its fallback).
        let redis = match &config.redis.url {
            Some(url) => Some(
                crate::cluster::link::Redis::open(url, config.redis.cluster)
                    .map_err(|e| ServerError::Redis(e.to_string()))?,
            ),
            None => None,
        };
        let shared_limiter: Arc<dyn crate::ratelimit::RateLimiter> = match &redis {
            Some(redis) => Arc::new(crate::cluster::ratelimit::RedisLimiter::new(
                redis.clone(),
                &config.redis.prefix,
                limiter.clone(),
            )),
            None => limiter.clone(),
        };
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        let app = Arc::new(App::new(AppParts {
            config,
            audiences,
            store: store.clone(),
            tokens,
            limiter: shared_limiter,
            worker_id,
            instance,
            space,
        }));
        let ttl_ms = app.tokens.access_ttl_secs() * 1000;
        for sid in store.revoked_sessions_since(now_ms() - ttl_ms).await? {
            app.revoked.insert(sid, now_ms() + ttl_ms + 60_000);
        }

        let mut background = Vec::new();
        if app.config.p2p.enabled {
            let key = crate::p2p::load_identity(&app.config.data_dir)
                .map_err(|e| ServerError::DataDir(app.config.data_dir.display().to_string(), e))?;
            let (shared, task) = crate::p2p::spawn(app.clone(), key).await?;
            tracing::info!(peer_id = %shared.peer_id, addrs = ?shared.addrs(), "libp2p listening");
            let _ = app.p2p.set(shared);
            background.push(task);
        }

        let archiver = Arc::new(
            crate::archive::Archiver::open(app.store.clone(), &app.config.archive_location())
                .map_err(|e| ServerError::Archive(e.to_string()))?,
        );
        if redis.is_some() && app.config.retention.archive_location.is_none() {
            tracing::warn!(
                location = %app.config.archive_location(),
                "several instances archive to their own data dirs; set retention.archive_location to storage they share (s3://…) so any instance can restore"
            );
        }
        let jobs = redis.as_ref().map(|redis| {
            Arc::new(crate::cluster::jobs::JobQueue::new(
                redis.clone(),
                &app.config.redis.prefix,
                &app.instance,
                crate::archive::schedule::CLAIM_AFTER,
            ))
        });
        app.refresh_archived_before().await;
        background.extend(crate::archive::schedule::spawn(app.clone(), archiver, jobs));

        if let Some(redis) = redis {
            let instance_url = match &app.config.redis.instance_url {
                Some(u) => u.clone(),
                None => default_instance_url(http_addr, tls.is_some(), &app.config).await,
            };
            let placement = Arc::new(crate::voice::placement::Placement::new(
                redis.clone(),
                &app.config.redis.prefix,
                &app.instance,
                &instance_url,
            ));
            let _ = app.voice.placement.set(placement.clone());
            background.push(tokio::spawn(crate::voice::placement::run(
                app.clone(),
                placement,
            )));
            tracing::info!(%instance_url, "voice rooms placed across the cluster");
            let mode = redis.mode();
            background.extend(crate::cluster::spawn(
                app.clone(),
                redis,
                &app.config.redis.prefix,
            ));
            tracing::info!(prefix = %app.config.redis.prefix, mode, "cluster fan-out through Redis");
        }

        let stop_accepting = CancellationToken::new();
        let router = crate::api::router(app.clone());
        let http_task = tokio::spawn(listener::serve(
            tcp,
            tls,
            router,
            stop_accepting.clone(),
            grace,
        ));
        background.extend(crate::background::spawn_all(app.clone(), limiter));
        tracing::info!(url = %app.audiences[0], %http_addr, worker_id, backend = store.backend().as_str(), "relay listening");
        match crate::api::admin::setup_link(&app).await {
            Ok(Some(link)) => tracing::warn!(
                %link,
                "this relay has no instance admin yet: open this one-time link while logged in to become its admin (or run `concord-relay admin grant --username NAME`)"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not prepare the setup link"),
        }
        Ok(Server {
            app,
            http_addr,
            stop_accepting,
            http_task,
            background,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The public URL (the first configured, or the listen address).
    pub fn url(&self) -> &str {
        &self.app.audiences[0]
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// The relay's libp2p multiaddrs (each ending in /p2p/<peer id>), when P2P is enabled.
    pub fn p2p_addrs(&self) -> Vec<String> {
        self.app.p2p.get().map(|p| p.addrs()).unwrap_or_default()
    }

    pub async fn shutdown(self) {
        let app = self.app;
        app.start_draining();
        app.hub.close_all(CloseReason::GoingAway);
        app.shutdown.cancel();
        self.stop_accepting.cancel();
        let _ = self.http_task.await;
        // Gateway sockets were told to close; give them a moment to send their 4010.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while crate::gateway::open_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for task in self.background {
            task.abort();
        }
        if let Err(e) = app
            .store
            .release_worker_id(app.worker_id, &app.instance)
            .await
        {
            tracing::warn!(error = %e, "could not release the worker id lease");
        }
        app.store.close().await;
        tracing::info!("relay stopped");
    }
}
