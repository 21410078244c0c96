//! Library configuration (`RelayConfig`): plain data, deserialisable from the TOML file, with
//! defaults and validation. The binary layers file < environment < flags on top of it (see
//! `cli.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::store::sql::PoolConfig;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// HTTP(S) listen address.
    pub listen: SocketAddr,
    /// Where the embedded SQLite database and generated secrets live.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; empty means SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Public origins (`scheme://host[:port]`) clients use; the first is the default login
    /// audience. Empty means the listen address.
    pub public_url: Vec<String>,
    /// Peers whose `X-Forwarded-For` is believed (CIDRs or single addresses).
    #[serde(deserialize_with = "de_nets")]
    pub trusted_proxies: Vec<IpNet>,
    /// Origins allowed by CORS (browser clients served from elsewhere). Empty: same origin only.
    pub cors_origins: Vec<String>,
    pub tls: Option<TlsConfig>,
    /// Seconds to drain in-flight requests on shutdown.
    pub shutdown_grace_secs: u64,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    pub rate_limits: RateLimits,
    pub gateway: GatewayConfig,
    pub auth: AuthConfig,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    pub p2p: P2pConfig,
    pub voice: VoiceConfig,
    pub redis: RedisConfig,
    pub retention: RetentionConfig,
    pub telemetry: TelemetryConfig,
}

/// OpenTelemetry traces (off unless an endpoint is set).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP collector, e.g. `http://127.0.0.1:4318` (spans go to `/v1/traces` as JSON).
    pub otlp_endpoint: Option<String>,
    /// `service.name` of this instance's spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: "concord-relay".into(),
        }
    }
}

/// Moving old messages out of the database (see `archive`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Months that ended more than this many days ago are archived; 0 keeps everything.
    pub archive_after_days: u32,
    /// Where archives go: a directory, `file:///…` or `s3://bucket/prefix` (credentials and
    /// endpoint from `AWS_*` variables) [default: `archive` in the data dir].
    pub archive_location: Option<String>,
    /// How often each instance looks for months to archive (and partitions to create) and
    /// purges old audit entries.
    pub check_interval_secs: u64,
    /// Guild and instance audit entries are kept this many days; 0 keeps them forever.
    pub audit_log_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> RetentionConfig {
        RetentionConfig {
            archive_after_days: 183,
            archive_location: None,
            check_interval_secs: 3600,
            audit_log_days: 365,
        }
    }
}

/// Several relay instances on one PostgreSQL: Redis carries fan-out between them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…`; unset on a single instance.
    /// With `cluster`, one or more seed nodes of a Redis Cluster separated by commas.
    pub url: Option<String>,
    /// The URL names Redis Cluster nodes (keys routed by slot) rather than one server.
    pub cluster: bool,
    /// Prefix of every Redis channel and key; the instances of one cluster share it.
    pub prefix: String,
    /// Where the other instances reach this one's HTTP API (`http://10.0.0.5:8080`): voice
    /// requests for rooms this instance holds are forwarded there. Default: `http://` and
    /// the listen address, or, listening on all interfaces, the address this host reaches
    /// Redis from.
    pub instance_url: Option<String>,
}

impl Default for RedisConfig {
    fn default() -> RedisConfig {
        RedisConfig {
            url: None,
            cluster: false,
            prefix: "concord".into(),
            instance_url: None,
        }
    }
}

/// Where clients find STUN and TURN (concord-turn), and the secret shared with it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceConfig {
    /// STUN URLs, e.g. `stun:turn.example.org:3478`.
    pub stun_urls: Vec<String>,
    /// TURN URLs, e.g. `turn:turn.example.org:3478?transport=udp`,
    /// `turn:turn.example.org:3478?transport=tcp`, `turns:turn.example.org:5349?transport=tcp`.
    pub turn_urls: Vec<String>,
    /// The secret shared with concord-turn (`--auth-secret`); without it no TURN credentials
    /// are issued.
    pub turn_secret: Option<String>,
    /// How long issued TURN credentials stay valid (a call refreshes its allocation with them).
    pub credential_ttl_secs: u64,
    /// Channels up to this many participants (and no browser) use a P2P mesh between nodes;
    /// larger ones the SFU.
    pub mesh_size: u32,
    /// Participants in one voice channel at most.
    pub max_participants: u32,
    /// How long a voice grant (and the participant's place in the channel) lasts; clients
    /// join again to renew before it ends, and a participant that stops renewing leaves.
    pub grant_ttl_secs: u64,
    /// Speakers the SFU forwards to each listener at most (the loudest ones).
    pub sfu_forwarded_speakers: u32,
    /// SFU rooms (voice channels on the SFU) this instance holds at most; a new one past it
    /// is refused with `sfu_full`.
    pub sfu_max_rooms: u32,
    /// Upstream bitrate one SFU participant may send (kb/s); the excess is dropped.
    pub sfu_max_upstream_kbps: u32,
    /// Upstream bitrate of one participant's screen share or camera (kb/s); the excess is
    /// dropped.
    pub sfu_max_video_kbps: u32,
}

impl Default for VoiceConfig {
    fn default() -> VoiceConfig {
        VoiceConfig {
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            turn_secret: None,
            credential_ttl_secs: 12 * 3_600,
            mesh_size: 4,
            max_participants: 99,
            grant_ttl_secs: 120,
            sfu_forwarded_speakers: 3,
            sfu_max_rooms: 500,
            sfu_max_upstream_kbps: 256,
            sfu_max_video_kbps: 4_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct P2pConfig {
    /// Run the libp2p side (node connections, pushes, circuit relay).
    pub enabled: bool,
    /// libp2p listen multiaddrs.
    pub listen: Vec<String>,
    /// Addresses other peers can reach this relay on (behind NAT or a load balancer); they are
    /// advertised and used for circuit relay reservations.
    pub external_addrs: Vec<String>,
    /// Bootstrap peers (multiaddrs with /p2p/) handed to nodes in /.well-known/concord.
    pub bootstrap_peers: Vec<String>,
    /// Events queued for one node before it counts as too slow and is disconnected.
    pub max_pending_events: usize,
    /// Most libp2p connections at once, and per peer.
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    /// Circuit relay v2 server limits.
    pub max_reservations: usize,
    pub max_reservations_per_peer: usize,
    pub max_circuits: usize,
    pub max_circuits_per_peer: usize,
    pub max_circuit_duration_secs: u64,
    pub max_circuit_bytes: u64,
}

impl Default for P2pConfig {
    fn default() -> P2pConfig {
        P2pConfig {
            enabled: true,
            listen: vec![
                "/ip4/0.0.0.0/tcp/4001".into(),
                "/ip4/0.0.0.0/udp/4001/quic-v1".into(),
            ],
            external_addrs: Vec::new(),
            bootstrap_peers: Vec::new(),
            max_pending_events: 4_096,
            max_connections: 20_000,
            max_connections_per_peer: 8,
            max_reservations: 4_096,
            max_reservations_per_peer: 4,
            max_circuits: 4_096,
            max_circuits_per_peer: 16,
            max_circuit_duration_secs: 3_600,
            max_circuit_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A CIDR, or a single address meaning just that host.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is neither an IP address nor a CIDR"))
}

fn de_nets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|t| parse_net(t).map_err(serde::de::Error::custom))
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub requests: u32,
    pub window_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Login, challenge and refresh, per client IP.
    pub auth: Limit,
    /// New accounts, per client IP.
    pub signup: Limit,
    /// Sending messages, per account.
    pub message_send: Limit,
    /// Every other API route, per account (per IP when anonymous).
    pub general: Limit,
    /// Frames a gateway client may send, per session.
    pub gateway: Limit,
    /// Most rate-limit keys kept in memory at once.
    pub max_tracked_keys: usize,
}

impl Default for RateLimits {
    fn default() -> RateLimits {
        RateLimits {
            auth: Limit {
                requests: 30,
                window_secs: 60,
            },
            signup: Limit {
                requests: 10,
                window_secs: 3600,
            },
            message_send: Limit {
                requests: 20,
                window_secs: 10,
            },
            general: Limit {
                requests: 600,
                window_secs: 60,
            },
            gateway: Limit {
                requests: 120,
                window_secs: 60,
            },
            max_tracked_keys: 200_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub heartbeat_interval_ms: u64,
    /// How long a disconnected session stays resumable.
    pub resume_window_secs: u64,
    /// Events kept per session for resume.
    pub resume_buffer: usize,
    /// Events queued for one connection before it counts as too slow (close 4008).
    pub max_pending_events: usize,
    /// Most concurrent gateway connections.
    pub max_connections: usize,
    /// WebSocket read buffer per connection, in bytes: the chunk each read reserves, a
    /// larger frame still arrives whole. tungstenite's default of 128 KiB makes an idle
    /// socket cost ~135 KiB of relay memory; 4 KiB ~11 KiB; 1 KiB ~8 KiB (docs/benchmarks.md).
    pub read_buffer_bytes: usize,
    /// Bytes of outgoing frames gathered before a write; 0 writes each frame at once and
    /// keeps no buffer while idle.
    pub write_buffer_bytes: usize,
    /// Most bytes one connection may have waiting to be written; past it the write fails
    /// and the connection is closed.
    pub max_write_buffer_bytes: usize,
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            heartbeat_interval_ms: 41_250,
            resume_window_secs: 60,
            resume_buffer: 512,
            max_pending_events: 512,
            max_connections: 50_000,
            read_buffer_bytes: 1024,
            write_buffer_bytes: 0,
            max_write_buffer_bytes: 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub access_token_ttl_secs: u64,
    /// A refresh token used again within this window returns the same successor (≤ 10 s).
    pub refresh_grace_secs: u64,
    pub challenge_ttl_secs: u64,
    /// A refresh token unused for this many days expires (the device logs in again).
    pub refresh_idle_days: u64,
    /// Who may create an account: `open`, `invite_only` (the first login carries a guild
    /// invite) or `closed`.
    pub registration: Registration,
    /// Older form: `false` means `registration = "closed"`.
    pub open_registration: bool,
    /// What happens to the messages of a deleted account: `keep` (shown as written by a
    /// deleted user) or `erase` (their content is removed like any deleted message).
    pub deleted_account_messages: DeletedMessages,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum DeletedMessages {
    #[default]
    Keep,
    Erase,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Registration {
    #[default]
    Open,
    InviteOnly,
    Closed,
}

impl AuthConfig {
    /// The policy in force (the older `open_registration = false` closes registration).
    pub fn registration(&self) -> Registration {
        if self.open_registration {
            self.registration
        } else {
            Registration::Closed
        }
    }
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            access_token_ttl_secs: 900,
            refresh_grace_secs: 10,
            challenge_ttl_secs: 120,
            refresh_idle_days: 30,
            registration: Registration::Open,
            open_registration: true,
            deleted_account_messages: DeletedMessages::Keep,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub max_write_connections: u32,
    /// Per read pool: the primary's, and each replica's.
    pub max_read_connections: u32,
    /// SQLite: how long a call waits for the connection it needs.
    pub acquire_timeout_secs: u64,
    /// PostgreSQL: how long a call waits for a connection (a pooled one, or a new one while
    /// the database refuses connections) before it fails with 503 `unavailable`.
    pub fail_fast_ms: u64,
    /// How often the database is probed; two failed probes in a row open the breaker (calls
    /// fail at once), the first that succeeds closes it.
    pub probe_interval_ms: u64,
    /// PostgreSQL read replicas (`postgres://…`); reads spread over them.
    pub read_urls: Vec<String>,
    /// After a client writes, its reads stay on the primary this long.
    pub read_your_writes_secs: u64,
}

/// The free-space floor of the SQLite database's filesystem (`store/space.rs`): under it,
/// new content is refused with 507 `storage_full` and `/readyz` says `storage: low`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The floor in MiB …
    pub min_free_mib: u64,
    /// … or this share of the filesystem, whichever is larger (both 0: no floor).
    pub min_free_percent: f64,
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig {
            min_free_mib: 256,
            min_free_percent: 1.0,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> DatabaseConfig {
        DatabaseConfig {
            max_write_connections: 16,
            max_read_connections: 16,
            acquire_timeout_secs: 10,
            fail_fast_ms: 800,
            probe_interval_ms: 250,
            read_urls: Vec::new(),
            read_your_writes_secs: 5,
        }
    }
}

impl DatabaseConfig {
    pub fn pool(&self) -> PoolConfig {
        PoolConfig {
            max_write_connections: self.max_write_connections,
            max_read_connections: self.max_read_connections,
            acquire_timeout: std::time::Duration::from_secs(self.acquire_timeout_secs),
            fail_fast: std::time::Duration::from_millis(self.fail_fast_ms),
            read_urls: self.read_urls.clone(),
            ..PoolConfig::default()
        }
    }
}

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            database_url: None,
            public_url: Vec::new(),
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
            tls: None,
            shutdown_grace_secs: 10,
            max_body_bytes: concord_proto::limits::MAX_BODY_BYTES,
            rate_limits: RateLimits::default(),
            gateway: GatewayConfig::default(),
            auth: AuthConfig::default(),
            database: DatabaseConfig::default(),
            storage: StorageConfig::default(),
            p2p: P2pConfig::default(),
            voice: VoiceConfig::default(),
            redis: RedisConfig::default(),
            retention: RetentionConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("public_url {0:?}: {1}")]
    PublicUrl(String, &'static str),
    #[error("{0}")]
    Invalid(String),
}

impl RelayConfig {
    /// The SQLite URL in the data dir unless a database URL is set.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.is_empty() => url.clone(),
            _ => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("relay.db").display()
            ),
        }
    }

    /// The directory of the SQLite database file (`None` on PostgreSQL).
    pub fn sqlite_dir(&self) -> Option<PathBuf> {
        let url = self.database_url();
        let rest = url.strip_prefix("sqlite:")?;
        let path = rest.strip_prefix("//").unwrap_or(rest);
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() || path == ":memory:" {
            return None;
        }
        let parent = std::path::Path::new(path).parent()?;
        Some(if parent.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            parent.to_path_buf()
        })
    }

    /// Where archives go: the configured location, or `archive` in the data dir.
    pub fn archive_location(&self) -> String {
        self.retention
            .archive_location
            .clone()
            .unwrap_or_else(|| self.data_dir.join("archive").display().to_string())
    }

    /// Checks what serde cannot: ranges and URL shapes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.redis.url {
            let urls: Vec<&str> = url.split(',').map(str::trim).collect();
            if urls
                .iter()
                .any(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
            {
                return Err(ConfigError::Invalid(
                    "redis.url must start with redis:// or rediss://".into(),
                ));
            }
            if urls.len() > 1 && !self.redis.cluster {
                return Err(ConfigError::Invalid(
                    "several redis.url entries need redis.cluster = true".into(),
                ));
            }
        }
        if let Some(u) = &self.redis.instance_url
            && reqwest::Url::parse(u)
                .ok()
                .is_none_or(|p| !matches!(p.scheme(), "http" | "https") || p.host().is_none())
        {
            return Err(ConfigError::Invalid(
                "redis.instance_url must be an http:// or https:// URL with a host".into(),
            ));
        }
        if self.database.fail_fast_ms == 0 || self.database.probe_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "database.fail_fast_ms and database.probe_interval_ms must be more than 0".into(),
            ));
        }
        if !(0.0..=100.0).contains(&self.storage.min_free_percent) {
            return Err(ConfigError::Invalid(
                "storage.min_free_percent must be between 0 and 100".into(),
            ));
        }
        for url in &self.database.read_urls {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError::Invalid(
                    "database.read_urls entries must be postgres:// URLs".into(),
                ));
            }
        }
        if self.database.read_urls.len() > 16 {
            return Err(ConfigError::Invalid(
                "database.read_urls takes at most 16 replicas".into(),
            ));
        }
        if let Some(e) = &self.telemetry.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(
                "telemetry.otlp_endpoint must be an http:// or https:// URL".into(),
            ));
        }
        if self.telemetry.service_name.is_empty() || self.telemetry.service_name.len() > 64 {
            return Err(ConfigError::Invalid(
                "telemetry.service_name must be 1-64 characters".into(),
            ));
        }
        if self.retention.check_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "retention.check_interval_secs must be at least 1".into(),
            ));
        }
        if let Some(loc) = &self.retention.archive_location
            && loc.contains("://")
            && !(loc.starts_with("file://") || loc.starts_with("s3://"))
        {
            return Err(ConfigError::Invalid(
                "retention.archive_location is a directory, file:// or s3:// URL".into(),
            ));
        }
        let prefix = &self.redis.prefix;
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_:-".contains(&b))
        {
            return Err(ConfigError::Invalid(
                "redis.prefix must be 1-64 of A-Z a-z 0-9 _ : -".into(),
            ));
        }
        for url in &self.public_url {
            normalize_origin(url).map_err(|e| ConfigError::PublicUrl(url.clone(), e))?;
        }
        let limits = &self.rate_limits;
        for (name, l) in [
            ("auth", limits.auth),
            ("signup", limits.signup),
            ("message_send", limits.message_send),
            ("general", limits.general),
            ("gateway", limits.gateway),
        ] {
            if l.requests == 0 || l.window_secs == 0 {
                return Err(ConfigError::Invalid(format!(
                    "rate_limits.{name}: requests and window_secs must be positive"
                )));
            }
        }
        if !(1..=10).contains(&self.auth.refresh_grace_secs) {
            return Err(ConfigError::Invalid(
                "auth.refresh_grace_secs must be between 1 and 10".into(),
            ));
        }
        if !(60..=86_400).contains(&self.auth.access_token_ttl_secs) {
            return Err(ConfigError::Invalid(
                "auth.access_token_ttl_secs must be between 60 and 86400".into(),
            ));
        }
        if !(1..=365).contains(&self.auth.refresh_idle_days) {
            return Err(ConfigError::Invalid(
                "auth.refresh_idle_days must be between 1 and 365".into(),
            ));
        }
        for addr in self
            .p2p
            .listen
            .iter()
            .chain(&self.p2p.external_addrs)
            .chain(&self.p2p.bootstrap_peers)
        {
            addr.parse::<libp2p::Multiaddr>()
                .map_err(|e| ConfigError::Invalid(format!("p2p address {addr:?}: {e}")))?;
        }
        if self.p2p.max_pending_events == 0 {
            return Err(ConfigError::Invalid(
                "p2p.max_pending_events must be positive".into(),
            ));
        }
        if self.voice.mesh_size == 0 || self.voice.max_participants == 0 {
            return Err(ConfigError::Invalid(
                "voice.mesh_size and voice.max_participants must be at least 1".into(),
            ));
        }
        if self.voice.sfu_max_rooms == 0
            || !(16..=10_000).contains(&self.voice.sfu_max_upstream_kbps)
        {
            return Err(ConfigError::Invalid(
                "voice.sfu_max_rooms must be at least 1 and voice.sfu_max_upstream_kbps between 16 and 10000".into(),
            ));
        }
        if !(100..=50_000).contains(&self.voice.sfu_max_video_kbps) {
            return Err(ConfigError::Invalid(
                "voice.sfu_max_video_kbps must be between 100 and 50000".into(),
            ));
        }
        if !(1..=8).contains(&self.voice.sfu_forwarded_speakers) {
            return Err(ConfigError::Invalid(
                "voice.sfu_forwarded_speakers must be between 1 and 8".into(),
            ));
        }
        if !(5..=86_400).contains(&self.voice.grant_ttl_secs) {
            return Err(ConfigError::Invalid(
                "voice.grant_ttl_secs must be between 5 and 86400".into(),
            ));
        }
        for url in &self.voice.stun_urls {
            if !url.starts_with("stun:") && !url.starts_with("stuns:") {
                return Err(ConfigError::Invalid(format!(
                    "voice.stun_urls: {url:?} is not a stun: URL"
                )));
            }
        }
        for url in &self.voice.turn_urls {
            if !url.starts_with("turn:") && !url.starts_with("turns:") {
                return Err(ConfigError::Invalid(format!(
                    "voice.turn_urls: {url:?} is not a turn: or turns: URL"
                )));
            }
        }
        if !(60..=7 * 86_400).contains(&self.voice.credential_ttl_secs) {
            return Err(ConfigError::Invalid(
                "voice.credential_ttl_secs must be between 60 and 604800".into(),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_body_bytes must be at least 1024".into(),
            ));
        }
        if self.gateway.heartbeat_interval_ms < 1_000
            || self.gateway.resume_buffer == 0
            || self.gateway.max_pending_events == 0
        {
            return Err(ConfigError::Invalid(
                "gateway: heartbeat_interval_ms >= 1000, resume_buffer and max_pending_events > 0"
                    .into(),
            ));
        }
        // tungstenite refuses a write buffer limit at or below the write buffer size.
        if self.gateway.read_buffer_bytes == 0
            || self.gateway.max_write_buffer_bytes <= self.gateway.write_buffer_bytes
            || self.gateway.max_write_buffer_bytes < 64 * 1024
        {
            return Err(ConfigError::Invalid(
                "gateway: read_buffer_bytes > 0, max_write_buffer_bytes >= 65536 and above write_buffer_bytes"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// `scheme://host[:port]`: lowercase scheme and host, default ports dropped, no path, no
/// trailing slash.
pub fn normalize_origin(url: &str) -> Result<String, &'static str> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("needs a scheme (http:// or https://)")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return Err("scheme must be http or https"),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err("must be scheme://host[:port] without path, query or user");
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (ip, after) = inner.split_once(']').ok_or("unclosed '[' in IPv6 host")?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("junk after IPv6 host")?),
        };
        (format!("[{ip}]"), port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    let host = host.to_ascii_lowercase();
    match port {
        Some(p) if p.parse::<u16>().is_err() => Err("port must be a number"),
        Some(p) if p == default_port => Ok(format!("{scheme}://{host}")),
        Some(p) => Ok(format!("{scheme}://{host}:{p}")),
        None => Ok(format!("{scheme}://{host}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised() {
        assert_eq!(
            normalize_origin("https://Chat.Example.org:443/").unwrap(),
            "https://chat.example.org"
        );
        assert_eq!(
            normalize_origin("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalize_origin("http://[::1]:8080").unwrap(),
            "http://[::1]:8080"
        );
        assert_eq!(normalize_origin("http://host:80").unwrap(), "http://host");
        assert!(normalize_origin("chat.example.org").is_err());
        assert!(normalize_origin("ftp://x").is_err());
        assert!(normalize_origin("https://x/path").is_err());
        assert!(normalize_origin("https://x:port").is_err());
    }

    #[test]
    fn defaults_validate_and_round_trip() {
        let config = RelayConfig::default();
        config.validate().unwrap();
        let text = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<RelayConfig>(&text).unwrap(), config);
        assert!(toml::from_str::<RelayConfig>("unknown_key = 1").is_err());
    }
}
