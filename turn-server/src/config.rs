//! Library configuration (`TurnConfig`): plain data, deserialisable from the TOML file. The
//! binary layers file < environment < flags on top of it (see `cli.rs`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::core::Limits;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// UDP listen address, and TCP too unless `tcp` is false.
    pub listen: SocketAddr,
    /// Accept TURN over TCP on the `listen` address.
    pub tcp: bool,
    /// TURN over TLS (`turns:`).
    pub tls: Option<TlsConfig>,
    /// `/healthz` and `/metrics`.
    pub http_listen: SocketAddr,
    /// The long-term credential realm.
    pub realm: String,
    /// Static users, `name:password`.
    pub users: Vec<String>,
    /// TURN REST shared secret (coturn's `static-auth-secret`): usernames
    /// `expiry-unix-ts:user-id` with password `base64(HMAC-SHA1(secret, username))`.
    pub auth_secret: Option<String>,
    /// Address relay sockets bind to [default: the listen address's IP].
    pub relay_ip: Option<IpAddr>,
    /// Address clients are told to reach relays at, when the server is behind a 1:1 NAT
    /// [default: relay_ip].
    pub external_ip: Option<IpAddr>,
    /// UDP ports for relay sockets, `MIN-MAX`.
    pub relay_ports: PortRange,
    /// Peer addresses (CIDRs or single addresses) allowed even though the default policy
    /// refuses them (loopback, private, link-local, multicast, reserved, own addresses).
    #[serde(deserialize_with = "de_nets")]
    pub allow_peers: Vec<IpNet>,
    /// Further peer addresses to refuse.
    #[serde(deserialize_with = "de_nets")]
    pub deny_peers: Vec<IpNet>,
    /// SOFTWARE attribute on responses; empty for none.
    pub software: String,
    /// Seconds existing allocations may carry on after a shutdown signal.
    pub shutdown_grace_secs: u64,
    pub limits: LimitsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// TLS listen address.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Allocations one user holds at once (486 beyond).
    pub user_quota: usize,
    /// Allocations the server holds at once (508 beyond).
    pub max_allocations: usize,
    /// The longest allocation lifetime granted, in seconds.
    pub max_lifetime_secs: u64,
    /// Seconds a nonce stays valid (438 after; clients retry with the new one).
    pub nonce_ttl_secs: u64,
    /// Bytes per second relayed per allocation in each direction; 0 = unlimited.
    pub bandwidth_bytes_per_sec: u64,
    /// Peer IPs with a permission, per allocation.
    pub max_permissions: usize,
    /// Channel bindings per allocation.
    pub max_channels: usize,
    /// TCP and TLS connections at once.
    pub max_connections: usize,
    /// Messages queued for one TCP/TLS client before it counts as too slow and is
    /// disconnected.
    pub stream_queue: usize,
    /// Seconds a TCP/TLS connection without an allocation may stay silent.
    pub stream_idle_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        let core = Limits::default();
        LimitsConfig {
            user_quota: core.user_quota,
            max_allocations: core.max_allocations,
            max_lifetime_secs: core.max_lifetime.as_secs(),
            nonce_ttl_secs: core.nonce_ttl.as_secs(),
            bandwidth_bytes_per_sec: core.bandwidth_bytes_per_sec,
            max_permissions: core.max_permissions,
            max_channels: core.max_channels,
            max_connections: 10_000,
            stream_queue: 256,
            stream_idle_secs: 60,
        }
    }
}

impl LimitsConfig {
    pub fn core(&self) -> Limits {
        Limits {
            user_quota: self.user_quota,
            max_allocations: self.max_allocations,
            max_lifetime: Duration::from_secs(self.max_lifetime_secs),
            nonce_ttl: Duration::from_secs(self.nonce_ttl_secs),
            bandwidth_bytes_per_sec: self.bandwidth_bytes_per_sec,
            max_permissions: self.max_permissions,
            max_channels: self.max_channels,
        }
    }
}

/// An inclusive UDP port range, written `MIN-MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.min..=self.max).contains(&port)
    }

    pub fn len(&self) -> u32 {
        u32::from(self.max) - u32::from(self.min) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<PortRange, String> {
        let err = || format!("{s:?} is not a port range MIN-MAX (1-65535)");
        let (a, b) = s.trim().split_once('-').ok_or_else(err)?;
        let min: u16 = a.trim().parse().map_err(|_| err())?;
        let max: u16 = b.trim().parse().map_err(|_| err())?;
        if min == 0 || min > max {
            return Err(err());
        }
        Ok(PortRange { min, max })
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<PortRange, String> {
        s.parse()
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> String {
        r.to_string()
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// A CIDR, or a single address meaning just that host.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is neither an IP address nor a CIDR"))
}

fn de_nets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|t| parse_net(t).map_err(serde::de::Error::custom))
        .collect()
}

/// A `name:password` user.
pub fn parse_user(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, pass)) if !name.is_empty() && !pass.is_empty() => {
            Ok((name.to_owned(), pass.to_owned()))
        }
        _ => Err("a user is NAME:PASSWORD, both non-empty".to_owned()),
    }
}

impl Default for TurnConfig {
    fn default() -> TurnConfig {
        TurnConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 3478)),
            tcp: true,
            tls: None,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9478)),
            realm: "concord".into(),
            users: Vec::new(),
            auth_secret: None,
            relay_ip: None,
            external_ip: None,
            relay_ports: PortRange {
                min: 49152,
                max: 65535,
            },
            allow_peers: Vec::new(),
            deny_peers: Vec::new(),
            software: "concord-turn".into(),
            shutdown_grace_secs: 30,
            limits: LimitsConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl TurnConfig {
    /// The address relay sockets bind to.
    pub fn relay_bind_ip(&self) -> Option<IpAddr> {
        self.relay_ip
            .or_else(|| Some(self.listen.ip()).filter(|ip| !ip.is_unspecified()))
    }

    /// Parsed static users.
    pub fn parsed_users(&self) -> Vec<(String, String)> {
        self.users
            .iter()
            .filter_map(|u| parse_user(u).ok())
            .collect()
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError(m.to_owned()));
        if self.realm.is_empty() || self.realm.len() > 763 {
            return bad("realm must be 1 to 763 bytes");
        }
        for user in &self.users {
            parse_user(user).map_err(|e| ConfigError(format!("users: {e}")))?;
        }
        match self.relay_bind_ip() {
            None => {
                return bad(
                    "relay_ip is required when listening on an unspecified address (0.0.0.0 or ::)",
                );
            }
            Some(ip) if ip.is_unspecified() => return bad("relay_ip must be a concrete address"),
            Some(ip) => {
                if let Some(ext) = self.external_ip
                    && ext.is_ipv4() != ip.is_ipv4()
                {
                    return bad("external_ip and relay_ip must be of the same family");
                }
            }
        }
        let l = &self.limits;
        if l.user_quota == 0
            || l.max_allocations == 0
            || l.max_lifetime_secs == 0
            || l.nonce_ttl_secs == 0
            || l.max_permissions == 0
            || l.max_channels == 0
            || l.max_connections == 0
            || l.stream_queue == 0
            || l.stream_idle_secs == 0
        {
            return bad("limits: every limit except bandwidth_bytes_per_sec must be positive");
        }
        if l.max_lifetime_secs > u64::from(u32::MAX) {
            return bad("limits.max_lifetime_secs must fit in 32 bits");
        }
        if self.software.len() > 763 {
            return bad("software must be at most 763 bytes");
        }
        Ok(())
    }

    /// A copy with passwords and the shared secret replaced (for printing).
    pub fn redacted(&self) -> TurnConfig {
        let mut c = self.clone();
        c.users = c
            .users
            .iter()
            .map(|u| match u.split_once(':') {
                Some((name, _)) => format!("{name}:<redacted>"),
                None => "<redacted>".into(),
            })
            .collect();
        if c.auth_secret.is_some() {
            c.auth_secret = Some("<redacted>".into());
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip() {
        let config = TurnConfig::default();
        config.validate().unwrap();
        let text = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<TurnConfig>(&text).unwrap(), config);
        assert!(toml::from_str::<TurnConfig>("unknown_key = 1").is_err());
        assert!(config.limits.user_quota >= 100);
    }

    #[test]
    fn port_ranges_parse() {
        assert_eq!(
            "1000-2000".parse::<PortRange>().unwrap(),
            PortRange {
                min: 1000,
                max: 2000
            }
        );
        for bad in ["", "5", "0-10", "10-5", "a-b", "1-70000"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn unspecified_listen_needs_a_relay_ip() {
        let mut c = TurnConfig {
            listen: "0.0.0.0:3478".parse().unwrap(),
            ..TurnConfig::default()
        };
        assert!(c.validate().is_err());
        c.relay_ip = Some("198.51.100.1".parse().unwrap());
        c.validate().unwrap();
        c.external_ip = Some("2001:db8::1".parse().unwrap());
        assert!(c.validate().is_err());
    }

    #[test]
    fn redaction_hides_secrets() {
        let c = TurnConfig {
            users: vec!["ana:pw".into()],
            auth_secret: Some("s".into()),
            ..TurnConfig::default()
        };
        let text = toml::to_string(&c.redacted()).unwrap();
        assert!(!text.contains("pw\"") && !text.contains("\"s\""), "{text}");
    }
}
