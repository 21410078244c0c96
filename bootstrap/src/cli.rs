//! The command line: flags and `CONCORD_BOOTSTRAP_*` environment variables layered over the
//! TOML file (file < environment < flags).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{BootstrapConfig, ConfigError};

/// Concord bootstrap server: Kademlia DHT, identify, AutoNAT and (with --relay) circuit relay
/// v2, so nodes find each other and learn whether they are reachable. With no arguments it
/// listens on TCP and QUIC port 4002 and prints its multiaddrs.
#[derive(Debug, Parser)]
#[command(name = "concord-bootstrap", version, about, long_about = None)]
pub struct Cli {
    /// TOML configuration file (see config/bootstrap.example.toml).
    #[arg(long, short = 'c', env = "CONCORD_BOOTSTRAP_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Directory of bootstrap.key, the persistent identity [default: ./data-bootstrap].
    #[arg(long, env = "CONCORD_BOOTSTRAP_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// libp2p listen multiaddr; repeatable [default: /ip4/0.0.0.0/tcp/4002 and
    /// /ip4/0.0.0.0/udp/4002/quic-v1].
    #[arg(
        long = "p2p-listen",
        env = "CONCORD_BOOTSTRAP_P2P_LISTEN",
        value_delimiter = ',',
        global = true
    )]
    pub p2p_listen: Vec<String>,

    /// Multiaddr others reach this server at; repeatable.
    #[arg(
        long = "external-addr",
        env = "CONCORD_BOOTSTRAP_EXTERNAL_ADDRS",
        value_delimiter = ',',
        global = true
    )]
    pub external_addrs: Vec<String>,

    /// /healthz and /metrics listen address [default: 127.0.0.1:9402].
    #[arg(long, env = "CONCORD_BOOTSTRAP_HTTP_LISTEN", global = true)]
    pub http_listen: Option<SocketAddr>,

    /// Serve circuit relay v2 for nodes behind NATs.
    #[arg(long, env = "CONCORD_BOOTSTRAP_RELAY", global = true)]
    pub relay: bool,

    /// Let AutoNAT dial back private addresses (labs and LANs; never on the internet).
    #[arg(long, env = "CONCORD_BOOTSTRAP_AUTONAT_PRIVATE", global = true)]
    pub autonat_private: bool,

    /// Log filter, e.g. info or concord_bootstrap=debug [default: info].
    #[arg(long, env = "CONCORD_BOOTSTRAP_LOG", global = true)]
    pub log: Option<String>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Serve (the default).
    Serve,
    /// Print the effective configuration (file + environment + flags) as TOML and exit.
    CheckConfig,
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
    pub fn bootstrap_config(&self) -> Result<BootstrapConfig, CliError> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| CliError::Read(path.display().to_string(), e))?;
                toml::from_str(&text).map_err(|e| CliError::Parse(path.display().to_string(), e))?
            }
            None => BootstrapConfig::default(),
        };
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        if !self.p2p_listen.is_empty() {
            config.p2p_listen = self.p2p_listen.clone();
        }
        if !self.external_addrs.is_empty() {
            config.external_addrs = self.external_addrs.clone();
        }
        if let Some(v) = self.http_listen {
            config.http_listen = v;
        }
        if self.relay {
            config.relay.enabled = true;
        }
        if self.autonat_private {
            config.autonat_only_global_ips = false;
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
    fn flags_override_file_and_bad_addresses_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bootstrap.toml");
        std::fs::write(
            &file,
            "external_addrs = [\"/ip4/203.0.113.5/tcp/4002\"]\n[dht]\nmax_records = 10\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "concord-bootstrap",
            "--config",
            file.to_str().unwrap(),
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
            "--p2p-listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--relay",
            "check-config",
        ])
        .unwrap();
        let config = cli.bootstrap_config().unwrap();
        assert_eq!(config.p2p_listen.len(), 2);
        assert_eq!(config.external_addrs, vec!["/ip4/203.0.113.5/tcp/4002"]);
        assert_eq!(config.dht.max_records, 10);
        assert!(config.relay.enabled);
        assert_eq!(cli.command, Some(Command::CheckConfig));
        let bad = Cli::try_parse_from(["concord-bootstrap", "--p2p-listen", "tcp:4002"]).unwrap();
        assert!(matches!(bad.bootstrap_config(), Err(CliError::Invalid(_))));
        std::fs::write(&file, "nope = 1\n").unwrap();
        let unknown =
            Cli::try_parse_from(["concord-bootstrap", "-c", file.to_str().unwrap()]).unwrap();
        assert!(matches!(
            unknown.bootstrap_config(),
            Err(CliError::Parse(..))
        ));
    }
}
