//! The node daemon: the swarm, the relay connection (hello, catch-up, pushes), the outbox,
//! GossipSub for public channels, and the control API for the CLI. `Node::spawn(config)`
//! starts it; `shutdown()` stops it. The tasks share one `Inner` (config, cache, swarm
//! commands, directory); local events go out on a broadcast channel (`Node::subscribe`).

mod apply;
mod backoff;
mod control;
mod directory;
mod outbox;
mod relay_link;
mod send;
mod swarm;
mod ui;
mod voice;

pub use voice::VoiceStatus;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use concord_proto::Id;
use concord_proto::model::Message;
use ed25519_dalek::VerifyingKey;
use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cache::{Cache, CacheLimits, CachedMessage};
use crate::identity::Identity;

pub use control::{CONTROL_ADDR_FILE, CONTROL_TOKEN_FILE};
pub use send::SendOutcome;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// The control API (always loopback).
    pub control_listen: SocketAddr,
    /// "Relay only": no mDNS, no hole punching, no direct connections; the IP stays private.
    pub relay_only: bool,
    /// Let guild members and DM contacts connect directly (ignored in relay-only mode).
    pub allow_direct: bool,
    /// mDNS on the LAN (off in relay-only mode).
    pub mdns: bool,
    pub cache_limits: CacheLimits,
    /// Bootstrap servers (`.../p2p/<peer id>`): Kademlia entry points (ignored in relay-only
    /// mode). The relay's well-known list is added at join.
    pub bootstrap: Vec<Multiaddr>,
    pub voice: VoiceOptions,
}

/// The node's audio in voice channels (device I/O comes with the `cpal` feature).
#[derive(Debug, Clone)]
pub struct VoiceOptions {
    /// What this node says: silence, a sine tone or a WAV file.
    pub source: crate::voice_mesh::media::SourceSpec,
    /// Where what it hears is written (WAV), if anywhere.
    pub sink: Option<PathBuf>,
    /// Play what it hears on the default speaker (`cpal` feature).
    pub speaker: bool,
    /// Mesh links use TURN relay candidates only (always so in relay-only mode).
    pub force_turn: bool,
    /// Mouth-to-ear latency measurement (benchmarks with every node in one process).
    pub probe: Option<Arc<crate::voice_mesh::probe::LatencyProbe>>,
}

impl Default for VoiceOptions {
    fn default() -> VoiceOptions {
        VoiceOptions {
            source: crate::voice_mesh::media::SourceSpec::Silence,
            sink: None,
            speaker: false,
            force_turn: false,
            probe: None,
        }
    }
}

impl NodeConfig {
    pub fn new(data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            data_dir,
            listen: vec![
                "/ip4/0.0.0.0/udp/0/quic-v1".parse().expect("valid"),
                "/ip4/0.0.0.0/tcp/0".parse().expect("valid"),
            ],
            control_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            relay_only: false,
            allow_direct: true,
            mdns: true,
            cache_limits: CacheLimits::default(),
            bootstrap: Vec::new(),
            voice: VoiceOptions::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error("cache: {0}")]
    Cache(#[from] crate::cache::CacheError),
    #[error("libp2p: {0}")]
    P2p(String),
    #[error("control API: {0}")]
    Control(std::io::Error),
}

/// The relay this node belongs to, from `/.well-known/concord` at join.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RelayInfo {
    pub url: String,
    pub peer_id: String,
    /// base64url ed25519 key that signs pushed events.
    pub key: String,
    pub addrs: Vec<String>,
    /// The relay's bootstrap servers (`/.well-known/concord`).
    #[serde(default)]
    pub bootstrap: Vec<String>,
}

impl RelayInfo {
    pub fn peer(&self) -> Option<PeerId> {
        self.peer_id.parse().ok()
    }
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        concord_proto::signed::parse_public_key(&self.key, "relay_key").ok()
    }
}

/// What the CLI's `tail` and the web UI see happen.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LocalEvent {
    /// A message arrived or changed (confirmed or not).
    Message {
        message: CachedMessage,
    },
    MessageDeleted {
        channel_id: Id,
        id: Id,
    },
    Typing {
        channel_id: Id,
        user_id: Id,
    },
    Presence {
        user_id: Id,
        status: String,
    },
    StateChanged,
}

/// Someone waiting for the relay's answer to one nonce: the stored message or a refusal.
pub(crate) type AckWaiter = oneshot::Sender<Result<Message, String>>;

pub(crate) struct Inner {
    pub config: NodeConfig,
    pub identity: Identity,
    pub peer_id: PeerId,
    pub cache: Mutex<Cache>,
    pub commands: mpsc::Sender<swarm::Command>,
    pub events: broadcast::Sender<LocalEvent>,
    pub relay: RwLock<Option<RelayInfo>>,
    pub relay_connected: AtomicBool,
    /// A circuit relay reservation at the relay is held (members can reach us through it).
    pub relay_reserved: AtomicBool,
    /// When the current relay reservation was first accepted (unix ms).
    pub relay_reserved_at_ms: Mutex<Option<i64>>,
    /// Connected and the hello answered: the relay pushes to this node.
    pub relay_ready: AtomicBool,
    pub relay_changed: Notify,
    pub outbox_wake: Notify,
    /// Senders waiting for the relay's ack of a nonce.
    pub ack_waiters: Mutex<HashMap<String, Vec<AckWaiter>>>,
    /// Channels with a catch-up under way (another gap waits for it).
    pub catching_up: Mutex<HashSet<Id>>,
    pub connections: Mutex<swarm::Connections>,
    pub directory: Mutex<directory::Directory>,
    pub http: RwLock<Option<Arc<crate::relay_http::RelayHttp>>>,
    /// The voice channel this node is in, if any.
    pub voice: Mutex<Option<voice::Session>>,
    pub shutdown: CancellationToken,
}

impl Inner {
    pub fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().expect("cache lock")
    }

    pub fn relay(&self) -> Option<RelayInfo> {
        self.relay.read().expect("relay lock").clone()
    }

    pub fn is_relay_connected(&self) -> bool {
        self.relay_connected.load(Ordering::Relaxed)
    }

    pub fn allow_direct(&self) -> bool {
        self.config.allow_direct && !self.config.relay_only
    }

    pub fn http(&self) -> Option<Arc<crate::relay_http::RelayHttp>> {
        self.http.read().expect("http lock").clone()
    }

    pub fn emit(&self, event: LocalEvent) {
        let _ = self.events.send(event);
    }

    /// A request to a peer over Concord's RPC, through the swarm task.
    pub async fn rpc(
        &self,
        peer: PeerId,
        request: concord_net::Request,
    ) -> Result<concord_net::Response, String> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(swarm::Command::Rpc {
                peer,
                request,
                reply,
            })
            .await
            .map_err(|_| "the swarm stopped".to_owned())?;
        answer.await.map_err(|_| "the swarm stopped".to_owned())?
    }
}

pub struct Node {
    inner: Arc<Inner>,
    control_addr: SocketAddr,
    listen_addrs: Vec<Multiaddr>,
    tasks: Vec<JoinHandle<()>>,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

const RELAY_SETTING: &str = "relay";

impl Node {
    pub async fn spawn(config: NodeConfig) -> Result<Node, NodeError> {
        let identity = crate::identity::load(&config.data_dir)?;
        let cache = Cache::open(&config.data_dir.join("cache.db"), config.cache_limits)?;
        let relay: Option<RelayInfo> = cache
            .setting(RELAY_SETTING)?
            .and_then(|s| serde_json::from_str(&s).ok());
        let http = relay
            .as_ref()
            .map(|r| Arc::new(crate::relay_http::RelayHttp::new(&r.url)));
        let (commands, command_rx) = mpsc::channel(1_024);
        let (events, _) = broadcast::channel(1_024);
        let peer_id = identity.peer_id();
        let inner = Arc::new(Inner {
            config: config.clone(),
            identity,
            peer_id,
            cache: Mutex::new(cache),
            commands,
            events,
            relay: RwLock::new(relay),
            relay_connected: AtomicBool::new(false),
            relay_reserved: AtomicBool::new(false),
            relay_reserved_at_ms: Mutex::new(None),
            relay_ready: AtomicBool::new(false),
            relay_changed: Notify::new(),
            outbox_wake: Notify::new(),
            ack_waiters: Mutex::new(HashMap::new()),
            catching_up: Mutex::new(HashSet::new()),
            connections: Mutex::new(swarm::Connections::default()),
            directory: Mutex::new(directory::Directory::default()),
            http: RwLock::new(http),
            voice: Mutex::new(None),
            shutdown: CancellationToken::new(),
        });
        *inner.directory.lock().expect("directory lock") = directory::Directory::load(&inner);
        let (swarm_task, listen_addrs) = swarm::spawn(inner.clone(), command_rx).await?;
        let (control_task, control_addr) = control::spawn(inner.clone())
            .await
            .map_err(NodeError::Control)?;
        let tasks = vec![
            swarm_task,
            control_task,
            tokio::spawn(relay_link::supervise(inner.clone())),
            tokio::spawn(outbox::run(inner.clone())),
            tokio::spawn(retention(inner.clone())),
        ];
        tracing::info!(peer_id = %inner.peer_id, %control_addr, "node started");
        Ok(Node {
            inner,
            control_addr,
            listen_addrs,
            tasks,
        })
    }

    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// Whether this node holds a circuit relay reservation at its relay.
    pub fn has_relay_reservation(&self) -> bool {
        self.inner.relay_reserved.load(Ordering::Relaxed)
    }

    pub fn is_relay_connected(&self) -> bool {
        self.inner.is_relay_connected()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LocalEvent> {
        self.inner.events.subscribe()
    }

    /// Joins a relay by URL and invite: discovery, login (registering the account on first
    /// join), the invite, then the libp2p connection.
    pub async fn join(
        &self,
        relay_url: &str,
        invite: &str,
        username: Option<&str>,
    ) -> Result<concord_proto::gateway::ReadyGuild, String> {
        relay_link::join(&self.inner, relay_url, invite, username).await
    }

    /// Sends a message; with `wait`, returns once the relay has acknowledged it.
    pub async fn send(
        &self,
        channel_id: Id,
        content: &str,
        wait: bool,
    ) -> Result<SendOutcome, String> {
        send::send(&self.inner, channel_id, content, None, wait).await
    }

    pub async fn send_dm(
        &self,
        user_id: Id,
        content: &str,
        wait: bool,
    ) -> Result<SendOutcome, String> {
        send::send_dm(&self.inner, user_id, content, wait).await
    }

    /// Joins a voice channel through the relay (and keeps renewing the grant).
    pub async fn voice_join(&self, channel_id: Id, self_mute: bool) -> Result<VoiceStatus, String> {
        voice::join(&self.inner, channel_id, self_mute).await
    }

    pub async fn voice_leave(&self) -> Result<(), String> {
        voice::leave(&self.inner).await
    }

    /// Deafen (nothing is played; the microphone is muted too) or undeafen.
    pub async fn voice_deafen(&self, deaf: bool) -> Result<VoiceStatus, String> {
        voice::set_deaf(&self.inner, deaf).await
    }

    pub async fn voice_mute(&self, mute: bool) -> Result<VoiceStatus, String> {
        voice::set_mute(&self.inner, mute).await
    }

    pub fn voice_status(&self) -> Option<VoiceStatus> {
        voice::status(&self.inner)
    }

    pub fn history(&self, channel_id: Id, limit: usize) -> Result<Vec<CachedMessage>, String> {
        self.inner
            .cache()
            .history(channel_id, None, limit)
            .map_err(|e| e.to_string())
    }

    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<CachedMessage>, String> {
        self.inner
            .cache()
            .search(query, limit)
            .map_err(|e| e.to_string())
    }

    pub fn with_cache<T>(&self, f: impl FnOnce(&mut Cache) -> T) -> T {
        f(&mut self.inner.cache())
    }

    /// The relay's HTTP API as this node's account (after join).
    pub fn relay_http(&self) -> Option<Arc<crate::relay_http::RelayHttp>> {
        self.inner.http()
    }

    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    pub fn relay_info(&self) -> Option<RelayInfo> {
        self.inner.relay()
    }

    pub fn outbox_len(&self) -> usize {
        self.inner.cache().outbox_len().unwrap_or(0)
    }

    /// A raw RPC to a peer (tests and tools).
    pub async fn rpc(
        &self,
        peer: PeerId,
        request: concord_net::Request,
    ) -> Result<concord_net::protocol::Response, String> {
        self.inner.rpc(peer, request).await
    }

    /// Dials a peer directly (tests, LAN).
    pub async fn dial(&self, addr: Multiaddr) {
        let _ = self.inner.commands.send(swarm::Command::Dial(addr)).await;
    }

    pub fn connections(&self) -> Vec<swarm::ConnectionInfo> {
        self.inner
            .connections
            .lock()
            .expect("connections lock")
            .list()
    }

    pub async fn shutdown(self) {
        self.inner.shutdown.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
        let _ = self.inner.cache().checkpoint();
    }
}

/// Keeps the cache within its limits.
async fn retention(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = inner.cache().enforce_retention(now_ms()) {
                    tracing::warn!(error = %e, "cache retention failed");
                }
            }
            _ = inner.shutdown.cancelled() => return,
        }
    }
}
