//! `BootstrapConfig`: plain data, the TOML file's shape, with defaults and validation.

use std::net::SocketAddr;
use std::path::PathBuf;

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BootstrapConfig {
    /// Holds `bootstrap.key`, the persistent identity (nodes pin the PeerId).
    pub data_dir: PathBuf,
    /// libp2p listen addresses. Port 4002 so a relay on 4001 can share the host.
    pub p2p_listen: Vec<String>,
    /// Addresses others reach this server at (public IP, DNS name behind a NAT or proxy).
    /// Needed for relay reservations: without them a reservation carries no address.
    pub external_addrs: Vec<String>,
    /// `/healthz` and `/metrics`.
    pub http_listen: SocketAddr,
    /// AutoNAT dials back only global IPs (a private address proves nothing on the internet).
    pub autonat_only_global_ips: bool,
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    /// Seconds a connection without open streams stays up.
    pub idle_connection_timeout_secs: u64,
    pub dht: DhtConfig,
    pub relay: RelayConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DhtConfig {
    pub max_records: usize,
    pub max_value_bytes: usize,
    /// Records and provider records expire after this many seconds unless republished.
    pub record_ttl_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Serve circuit relay v2 (nodes behind NATs reserve a slot and are reached through it).
    pub enabled: bool,
    pub max_reservations: usize,
    pub max_circuits: usize,
    pub max_circuit_duration_secs: u64,
    pub max_circuit_bytes: u64,
}

impl Default for BootstrapConfig {
    fn default() -> BootstrapConfig {
        BootstrapConfig {
            data_dir: PathBuf::from("./data-bootstrap"),
            p2p_listen: vec![
                "/ip4/0.0.0.0/tcp/4002".into(),
                "/ip4/0.0.0.0/udp/4002/quic-v1".into(),
            ],
            external_addrs: Vec::new(),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9402)),
            autonat_only_global_ips: true,
            max_connections: 10_000,
            max_connections_per_peer: 4,
            idle_connection_timeout_secs: 60,
            dht: DhtConfig::default(),
            relay: RelayConfig::default(),
        }
    }
}

impl Default for DhtConfig {
    fn default() -> DhtConfig {
        DhtConfig {
            max_records: 65_536,
            max_value_bytes: 65_536,
            record_ttl_secs: 36 * 3_600,
        }
    }
}

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig {
            enabled: false,
            max_reservations: 1_024,
            max_circuits: 1_024,
            max_circuit_duration_secs: 3_600,
            max_circuit_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{field}: {value:?} is not a multiaddr: {reason}")]
    Multiaddr {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("p2p_listen: at least one listen address is needed")]
    NoListen,
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

fn parse_all(field: &'static str, values: &[String]) -> Result<Vec<Multiaddr>, ConfigError> {
    values
        .iter()
        .map(|v| {
            v.parse()
                .map_err(|e: libp2p::multiaddr::Error| ConfigError::Multiaddr {
                    field,
                    value: v.clone(),
                    reason: e.to_string(),
                })
        })
        .collect()
}

impl BootstrapConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.p2p_listen.is_empty() {
            return Err(ConfigError::NoListen);
        }
        self.listen_addrs()?;
        self.external()?;
        for (name, value) in [
            ("max_connections", u64::from(self.max_connections)),
            (
                "max_connections_per_peer",
                u64::from(self.max_connections_per_peer),
            ),
            ("dht.max_records", self.dht.max_records as u64),
            ("dht.max_value_bytes", self.dht.max_value_bytes as u64),
            ("dht.record_ttl_secs", self.dht.record_ttl_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        Ok(())
    }

    pub fn listen_addrs(&self) -> Result<Vec<Multiaddr>, ConfigError> {
        parse_all("p2p_listen", &self.p2p_listen)
    }

    pub fn external(&self) -> Result<Vec<Multiaddr>, ConfigError> {
        parse_all("external_addrs", &self.external_addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        BootstrapConfig::default().validate().unwrap();
        let c = BootstrapConfig {
            p2p_listen: vec!["/ip4/1.2.3.4/tcp/x".into()],
            ..BootstrapConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Multiaddr {
                field: "p2p_listen",
                ..
            })
        ));
        let c = BootstrapConfig {
            p2p_listen: vec![],
            ..BootstrapConfig::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::NoListen));
        let mut c = BootstrapConfig::default();
        c.dht.max_records = 0;
        assert_eq!(c.validate(), Err(ConfigError::Zero("dht.max_records")));
    }
}
