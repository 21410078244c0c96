//! The command line: flags and `CONCORD_TURN_*` environment variables layered over the TOML
//! file (file < environment < flags).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ipnet::IpNet;

use crate::config::{ConfigError, PortRange, TlsConfig, TurnConfig};

/// Concord TURN server: STUN and TURN over UDP, TCP and TLS for voice and video between
/// peers that cannot reach each other directly. With no arguments it listens on
/// 127.0.0.1:3478 (UDP and TCP) with no users; give it --user or --auth-secret.
#[derive(Debug, Parser)]
#[command(name = "concord-turn", version, about, long_about = None)]
pub struct Cli {
    /// TOML configuration file (see config/turn.example.toml); flags and environment
    /// variables override its values.
    #[arg(long, short = 'c', env = "CONCORD_TURN_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// UDP and TCP listen address [default: 127.0.0.1:3478].
    #[arg(long, env = "CONCORD_TURN_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,

    /// Do not accept TURN over TCP on the listen address.
    #[arg(long, env = "CONCORD_TURN_NO_TCP", global = true)]
    pub no_tcp: bool,

    /// TLS listen address for turns: (needs --cert and --key) [usual port: 5349].
    #[arg(long, env = "CONCORD_TURN_TLS_LISTEN", requires_all = ["cert", "key"], global = true)]
    pub tls_listen: Option<SocketAddr>,

    /// PEM certificate chain for --tls-listen.
    #[arg(
        long,
        env = "CONCORD_TURN_CERT",
        requires = "tls_listen",
        global = true
    )]
    pub cert: Option<PathBuf>,

    /// PEM private key for --tls-listen.
    #[arg(long, env = "CONCORD_TURN_KEY", requires = "tls_listen", global = true)]
    pub key: Option<PathBuf>,

    /// /healthz and /metrics listen address [default: 127.0.0.1:9478].
    #[arg(long, env = "CONCORD_TURN_HTTP_LISTEN", global = true)]
    pub http_listen: Option<SocketAddr>,

    /// Long-term credential realm [default: concord].
    #[arg(long, env = "CONCORD_TURN_REALM", global = true)]
    pub realm: Option<String>,

    /// A static user NAME:PASSWORD; repeatable.
    #[arg(long = "user", env = "CONCORD_TURN_USER", value_parser = parse_user_arg, global = true)]
    pub users: Vec<String>,

    /// TURN REST shared secret (usernames `expiry:user`, passwords
    /// base64(HMAC-SHA1(secret, username)); coturn's use-auth-secret).
    #[arg(
        long,
        env = "CONCORD_TURN_AUTH_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub auth_secret: Option<String>,

    /// Peer address or CIDR to allow although the default policy refuses it (loopback,
    /// private, link-local, multicast, own addresses); repeatable.
    #[arg(
        long = "allow-peer",
        env = "CONCORD_TURN_ALLOW_PEERS",
        value_delimiter = ',',
        value_parser = crate::config::parse_net,
        global = true
    )]
    pub allow_peers: Vec<IpNet>,

    /// Peer address or CIDR to refuse; repeatable.
    #[arg(
        long = "deny-peer",
        env = "CONCORD_TURN_DENY_PEERS",
        value_delimiter = ',',
        value_parser = crate::config::parse_net,
        global = true
    )]
    pub deny_peers: Vec<IpNet>,

    /// UDP port range for relay sockets, MIN-MAX [default: 49152-65535].
    #[arg(long, env = "CONCORD_TURN_RELAY_PORTS", global = true)]
    pub relay_ports: Option<PortRange>,

    /// Address relay sockets bind to [default: the listen IP; required with 0.0.0.0].
    #[arg(long, env = "CONCORD_TURN_RELAY_IP", global = true)]
    pub relay_ip: Option<IpAddr>,

    /// Address advertised for relays when behind a 1:1 NAT [default: the relay IP].
    #[arg(long, env = "CONCORD_TURN_EXTERNAL_IP", global = true)]
    pub external_ip: Option<IpAddr>,

    /// Allocations one user may hold [default: 100].
    #[arg(long, env = "CONCORD_TURN_USER_QUOTA", global = true)]
    pub user_quota: Option<usize>,

    /// Allocations the server holds at once [default: 10000].
    #[arg(long, env = "CONCORD_TURN_MAX_ALLOCATIONS", global = true)]
    pub max_allocations: Option<usize>,

    /// Longest allocation lifetime in seconds [default: 3600].
    #[arg(long, env = "CONCORD_TURN_MAX_LIFETIME", global = true)]
    pub max_lifetime: Option<u64>,

    /// Bytes per second per allocation in each direction, 0 = unlimited [default: 1250000].
    #[arg(long, env = "CONCORD_TURN_BANDWIDTH", global = true)]
    pub bandwidth: Option<u64>,

    /// Seconds a nonce stays valid [default: 600].
    #[arg(long, env = "CONCORD_TURN_NONCE_TTL", global = true)]
    pub nonce_ttl: Option<u64>,

    /// TCP and TLS connections at once [default: 10000].
    #[arg(long, env = "CONCORD_TURN_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<usize>,

    /// Seconds allocations may carry on after SIGTERM/SIGINT [default: 30].
    #[arg(long, env = "CONCORD_TURN_SHUTDOWN_GRACE_SECS", global = true)]
    pub shutdown_grace_secs: Option<u64>,

    /// Log filter, e.g. info or concord_turn=debug [default: info].
    #[arg(long, env = "CONCORD_TURN_LOG", global = true)]
    pub log: Option<String>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Serve (the default).
    Serve,
    /// Print the effective configuration (file + environment + flags, secrets redacted) as
    /// TOML and exit.
    CheckConfig,
}

fn parse_user_arg(text: &str) -> Result<String, String> {
    crate::config::parse_user(text).map(|_| text.to_owned())
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: {1}")]
    Parse(String, toml::de::Error),
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

impl Cli {
    /// File < environment < flags (clap has already put flags over environment).
    pub fn turn_config(&self) -> Result<TurnConfig, CliError> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| CliError::Read(path.display().to_string(), e))?;
                toml::from_str(&text).map_err(|e| CliError::Parse(path.display().to_string(), e))?
            }
            None => TurnConfig::default(),
        };
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if self.no_tcp {
            config.tcp = false;
        }
        if let (Some(listen), Some(cert), Some(key)) = (self.tls_listen, &self.cert, &self.key) {
            config.tls = Some(TlsConfig {
                listen,
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        if let Some(v) = self.http_listen {
            config.http_listen = v;
        }
        if let Some(v) = &self.realm {
            config.realm = v.clone();
        }
        if !self.users.is_empty() {
            config.users = self.users.clone();
        }
        if let Some(v) = &self.auth_secret {
            config.auth_secret = Some(v.clone());
        }
        if !self.allow_peers.is_empty() {
            config.allow_peers = self.allow_peers.clone();
        }
        if !self.deny_peers.is_empty() {
            config.deny_peers = self.deny_peers.clone();
        }
        if let Some(v) = self.relay_ports {
            config.relay_ports = v;
        }
        if let Some(v) = self.relay_ip {
            config.relay_ip = Some(v);
        }
        if let Some(v) = self.external_ip {
            config.external_ip = Some(v);
        }
        let l = &mut config.limits;
        if let Some(v) = self.user_quota {
            l.user_quota = v;
        }
        if let Some(v) = self.max_allocations {
            l.max_allocations = v;
        }
        if let Some(v) = self.max_lifetime {
            l.max_lifetime_secs = v;
        }
        if let Some(v) = self.bandwidth {
            l.bandwidth_bytes_per_sec = v;
        }
        if let Some(v) = self.nonce_ttl {
            l.nonce_ttl_secs = v;
        }
        if let Some(v) = self.max_connections {
            l.max_connections = v;
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
        let file = dir.path().join("turn.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:4000\"\nrealm = \"from-file\"\nusers = [\"a:b\"]\n[limits]\nuser_quota = 7\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "concord-turn",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:4001",
            "--user",
            "ana:pw",
            "--user",
            "bob:pw:with:colons",
            "--allow-peer",
            "127.0.0.0/8",
            "--allow-peer",
            "10.0.0.1",
            "--relay-ports",
            "40000-40100",
            "--max-allocations",
            "5",
        ])
        .unwrap();
        let config = cli.turn_config().unwrap();
        assert_eq!(config.listen, "127.0.0.1:4001".parse().unwrap());
        assert_eq!(config.realm, "from-file");
        assert_eq!(config.users, vec!["ana:pw", "bob:pw:with:colons"]);
        assert_eq!(
            config.allow_peers,
            vec![
                "127.0.0.0/8".parse::<IpNet>().unwrap(),
                "10.0.0.1/32".parse().unwrap()
            ]
        );
        assert_eq!(config.relay_ports.to_string(), "40000-40100");
        assert_eq!(config.limits.user_quota, 7);
        assert_eq!(config.limits.max_allocations, 5);
        assert!(Cli::try_parse_from(["concord-turn", "--tls-listen", "127.0.0.1:5349"]).is_err());
        assert!(Cli::try_parse_from(["concord-turn", "--user", "nopass"]).is_err());
        let tls = Cli::try_parse_from([
            "concord-turn",
            "--tls-listen",
            "127.0.0.1:5349",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "check-config",
        ])
        .unwrap();
        assert_eq!(tls.command, Some(Command::CheckConfig));
        assert!(tls.turn_config().unwrap().tls.is_some());
    }

    #[test]
    fn bad_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("turn.toml");
        std::fs::write(&file, "listen = 5\n").unwrap();
        let cli =
            Cli::try_parse_from(["concord-turn", "--config", file.to_str().unwrap()]).unwrap();
        assert!(matches!(cli.turn_config(), Err(CliError::Parse(..))));
    }
}
