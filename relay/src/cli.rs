//! The command line: flags and `CONCORD_*` environment variables layered over the TOML file
//! (file < environment < flags), and the subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ipnet::IpNet;

use crate::config::{RelayConfig, TlsConfig};

/// Concord relay: persistence, ordering, delivery and the HTTP/WebSocket API for a Concord
/// community. With no arguments it serves on http://127.0.0.1:8080 with an embedded SQLite
/// database in ./data.
#[derive(Debug, Parser)]
#[command(name = "concord-relay", version, about, long_about = None)]
pub struct Cli {
    /// TOML configuration file (see config/relay.example.toml); flags and environment
    /// variables override its values.
    #[arg(long, short = 'c', env = "CONCORD_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Address to listen on for HTTP(S) and WebSocket [default: 127.0.0.1:8080].
    #[arg(long, env = "CONCORD_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,

    /// Directory for the embedded database and local state [default: ./data].
    #[arg(long, env = "CONCORD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// Database: sqlite://PATH or postgres://USER@HOST/DB [default: SQLite in the data dir].
    #[arg(long, env = "CONCORD_DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    /// PostgreSQL read replica URL; repeatable (or comma-separated in the environment)
    /// [default: none, all reads on the primary].
    #[arg(
        long = "database-read-url",
        env = "CONCORD_DATABASE_READ_URLS",
        value_delimiter = ',',
        global = true
    )]
    pub database_read_urls: Vec<String>,

    /// Redis for several instances (redis://HOST:PORT or rediss://…) [default: none, one
    /// instance].
    #[arg(long, env = "CONCORD_REDIS_URL", global = true)]
    pub redis_url: Option<String>,

    /// Who may create an account: open, invite_only (the first login carries a guild
    /// invite) or closed [default: open].
    #[arg(long, env = "CONCORD_REGISTRATION", value_enum, global = true)]
    pub registration: Option<crate::config::Registration>,

    /// The Redis URL lists Redis Cluster seed nodes, separated by commas [default: false].
    #[arg(long, env = "CONCORD_REDIS_CLUSTER", global = true)]
    pub redis_cluster: bool,

    /// Export OpenTelemetry traces to this OTLP/HTTP collector (http://HOST:4318) [default:
    /// none, no export].
    #[arg(long, env = "CONCORD_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,

    /// `service.name` of exported spans [default: concord-relay].
    #[arg(long, env = "CONCORD_OTLP_SERVICE_NAME", global = true)]
    pub otlp_service_name: Option<String>,

    /// Prefix of Redis channels and keys shared by one cluster's instances [default: concord].
    #[arg(long, env = "CONCORD_REDIS_PREFIX", global = true)]
    pub redis_prefix: Option<String>,

    /// URL the other instances of a cluster reach this one's HTTP API at (voice rooms held
    /// here are served through it) [default: the listen address, or the address this host
    /// reaches Redis from].
    #[arg(long, env = "CONCORD_INSTANCE_URL", global = true)]
    pub instance_url: Option<String>,

    /// Public origin clients use (scheme://host[:port]); repeat for several. The first is the
    /// default login audience [default: the listen address].
    #[arg(
        long = "public-url",
        env = "CONCORD_PUBLIC_URL",
        value_delimiter = ',',
        global = true
    )]
    pub public_url: Vec<String>,

    /// Proxy address or CIDR whose X-Forwarded-For is trusted for per-IP limits; repeatable.
    #[arg(
        long = "trusted-proxy",
        env = "CONCORD_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = crate::config::parse_net,
        global = true
    )]
    pub trusted_proxies: Vec<IpNet>,

    /// Origin allowed to call the API from a browser (CORS); repeatable.
    #[arg(
        long = "cors-origin",
        env = "CONCORD_CORS_ORIGINS",
        value_delimiter = ',',
        global = true
    )]
    pub cors_origins: Vec<String>,

    /// PEM certificate chain: serve HTTPS/WSS (needs --tls-key).
    #[arg(long, env = "CONCORD_TLS_CERT", requires = "tls_key", global = true)]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "CONCORD_TLS_KEY", requires = "tls_cert", global = true)]
    pub tls_key: Option<PathBuf>,

    /// Seconds to finish in-flight requests on SIGTERM/SIGINT [default: 10].
    #[arg(long, env = "CONCORD_SHUTDOWN_GRACE_SECS", global = true)]
    pub shutdown_grace_secs: Option<u64>,

    /// libp2p listen multiaddr; repeatable [default: /ip4/0.0.0.0/tcp/4001 and
    /// /ip4/0.0.0.0/udp/4001/quic-v1].
    #[arg(
        long = "p2p-listen",
        env = "CONCORD_P2P_LISTEN",
        value_delimiter = ',',
        global = true
    )]
    pub p2p_listen: Vec<String>,

    /// libp2p address other peers reach this relay on (behind NAT); repeatable.
    #[arg(
        long = "p2p-external",
        env = "CONCORD_P2P_EXTERNAL",
        value_delimiter = ',',
        global = true
    )]
    pub p2p_external: Vec<String>,

    /// Secret shared with concord-turn for ephemeral TURN credentials (prefer the env var).
    #[arg(
        long,
        env = "CONCORD_TURN_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub turn_secret: Option<String>,

    /// Log filter, e.g. info or concord_relay=debug,info [default: info].
    #[arg(long, env = "CONCORD_LOG", global = true)]
    pub log: Option<String>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Serve the API and gateway (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the effective configuration (file + environment + flags) as TOML and exit.
    CheckConfig,
    /// Print the OpenAPI document and exit.
    Openapi,
    /// Copy every row of one database into another, empty one (e.g. the single-VPS SQLite
    /// into PostgreSQL); the source may keep running (it is read as one snapshot).
    MigrateStore {
        /// Source database URL (sqlite://PATH or postgres://…).
        #[arg(long)]
        from: String,
        /// Destination database URL; created and migrated, and it must hold no rows.
        #[arg(long)]
        to: String,
    },
    /// Write the configured database to a new SQLite file (the relay's own schema).
    Backup {
        /// The backup file to create (it must not exist).
        #[arg(long)]
        to: PathBuf,
    },
    /// Load a backup file into the configured database, which must hold no rows.
    Restore {
        /// A file written by `backup`.
        #[arg(long)]
        from: PathBuf,
    },
    /// Move old months of messages to the archive store, list archived months, or bring one
    /// back (retention.archive_location; a running relay archives by itself too).
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// Instance admins: make an account one (the first admin of a new relay), take it
    /// away, or list them.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum AdminCommand {
    /// Make an existing account an instance admin.
    Grant {
        #[arg(long)]
        username: String,
    },
    /// Take instance admin away from an account.
    Revoke {
        #[arg(long)]
        username: String,
    },
    /// Print the instance admins.
    List,
    /// Print the one-time link that makes whoever opens it the first admin (only while the
    /// relay has none).
    SetupLink,
    /// Delete an account (as `DELETE /api/v1/admin/users/{id}`; its messages are kept as a
    /// deleted user's). It must not own guilds.
    DeleteUser {
        #[arg(long)]
        username: String,
    },
    /// Delete a guild with everything in it.
    DeleteGuild {
        #[arg(long)]
        guild_id: concord_proto::Id,
    },
}

#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum ArchiveCommand {
    /// Archive every month that ended more than N days ago.
    Run {
        /// Days to keep in the database [default: retention.archive_after_days].
        #[arg(long)]
        older_than_days: Option<u32>,
    },
    /// Print the archived months.
    List,
    /// Put one archived month (YYYY-MM) back into the database.
    Restore {
        #[arg(long, value_parser = parse_month)]
        month: crate::archive::Month,
    },
}

fn parse_month(s: &str) -> Result<crate::archive::Month, String> {
    s.parse()
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: {1}")]
    Parse(String, toml::de::Error),
    #[error(transparent)]
    Invalid(#[from] crate::config::ConfigError),
}

impl Cli {
    /// File < environment < flags (clap has already put flags over environment).
    pub fn relay_config(&self) -> Result<RelayConfig, CliError> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| CliError::Read(path.display().to_string(), e))?;
                toml::from_str(&text).map_err(|e| CliError::Parse(path.display().to_string(), e))?
            }
            None => RelayConfig::default(),
        };
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = &self.database_url {
            config.database_url = Some(v.clone());
        }
        if !self.database_read_urls.is_empty() {
            config.database.read_urls = self.database_read_urls.clone();
        }
        if let Some(v) = &self.redis_url {
            config.redis.url = Some(v.clone());
        }
        if let Some(v) = &self.otlp_endpoint {
            config.telemetry.otlp_endpoint = Some(v.clone());
        }
        if let Some(v) = &self.otlp_service_name {
            config.telemetry.service_name = v.clone();
        }
        if let Some(v) = self.registration {
            config.auth.registration = v;
        }
        if self.redis_cluster {
            config.redis.cluster = true;
        }
        if let Some(v) = &self.redis_prefix {
            config.redis.prefix = v.clone();
        }
        if let Some(v) = &self.instance_url {
            config.redis.instance_url = Some(v.clone());
        }
        if !self.public_url.is_empty() {
            config.public_url = self.public_url.clone();
        }
        if !self.trusted_proxies.is_empty() {
            config.trusted_proxies = self.trusted_proxies.clone();
        }
        if !self.cors_origins.is_empty() {
            config.cors_origins = self.cors_origins.clone();
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config.tls = Some(TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        if !self.p2p_listen.is_empty() {
            config.p2p.listen = self.p2p_listen.clone();
        }
        if !self.p2p_external.is_empty() {
            config.p2p.external_addrs = self.p2p_external.clone();
        }
        if let Some(v) = &self.turn_secret {
            config.voice.turn_secret = Some(v.clone());
        }
        if let Some(v) = self.shutdown_grace_secs {
            config.shutdown_grace_secs = v;
        }
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/tmp/from-file\"\nshutdown_grace_secs = 3\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "concord-relay",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:9001",
        ])
        .unwrap();
        let config = cli.relay_config().unwrap();
        assert_eq!(
            config.listen,
            "127.0.0.1:9001".parse::<std::net::SocketAddr>().unwrap()
        );
        assert_eq!(config.data_dir, PathBuf::from("/tmp/from-file"));
        assert_eq!(config.shutdown_grace_secs, 3);
        let cli = Cli::try_parse_from([
            "concord-relay",
            "--trusted-proxy",
            "10.0.0.1",
            "--trusted-proxy",
            "10.1.0.0/16",
        ])
        .unwrap();
        assert_eq!(
            cli.relay_config().unwrap().trusted_proxies,
            vec![
                "10.0.0.1/32".parse().unwrap(),
                "10.1.0.0/16".parse::<IpNet>().unwrap()
            ]
        );
        let cli = Cli::try_parse_from([
            "concord-relay",
            "--public-url",
            "https://a.example,https://b.example",
            "migrate",
        ])
        .unwrap();
        assert_eq!(cli.command, Some(Command::Migrate));
        assert_eq!(cli.relay_config().unwrap().public_url.len(), 2);
        assert!(Cli::try_parse_from(["concord-relay", "--tls-cert", "x.pem"]).is_err());
    }

    #[test]
    fn bad_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.toml");
        std::fs::write(&file, "listen = 5\n").unwrap();
        let cli =
            Cli::try_parse_from(["concord-relay", "--config", file.to_str().unwrap()]).unwrap();
        assert!(matches!(cli.relay_config(), Err(CliError::Parse(..))));
    }
}
