//! The behaviours: a node runs QUIC (and TCP+Noise+Yamux as fallback) with identify, ping,
//! AutoNAT, relay client, DCUtR, mDNS, Kademlia, GossipSub and Concord's RPC; a relay runs
//! identify, ping, AutoNAT (server side), the circuit relay v2 server and Concord's RPC.
//! `NodeBehaviour` and `RelayBehaviour`, each built from its options (`NodeOptions`,
//! `RelayOptions`).

use std::time::Duration;

use libp2p::connection_limits;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    PeerId, autonat, dcutr, gossipsub, identify, identity::Keypair, kad, mdns, ping, relay,
};

use crate::protocol;

pub const AGENT: &str = concat!("concord/", env!("CARGO_PKG_VERSION"));
pub const IDENTIFY_PROTOCOL: &str = "/concord/id/1";

#[derive(NetworkBehaviour)]
pub struct NodeBehaviour {
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub autonat: autonat::Behaviour,
    pub relay_client: relay::client::Behaviour,
    pub dcutr: Toggle<dcutr::Behaviour>,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub gossipsub: gossipsub::Behaviour,
    pub rpc: protocol::Behaviour,
}

/// Switches of a node's behaviour.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Find peers on the LAN with mDNS (off in relay-only mode, and where multicast would
    /// leak onto a network the user does not trust).
    pub mdns: bool,
    /// Hole punching through DCUtR (off in relay-only mode).
    pub hole_punching: bool,
    pub request_timeout: Duration,
}

impl Default for NodeOptions {
    fn default() -> NodeOptions {
        NodeOptions {
            mdns: true,
            hole_punching: true,
            request_timeout: Duration::from_secs(20),
        }
    }
}

fn identify(keypair: &Keypair) -> identify::Behaviour {
    identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.into(), keypair.public())
            .with_agent_version(AGENT.into()),
    )
}

/// GossipSub with signed messages, manual validation (Concord decides accept / reject /
/// ignore) and modest mesh sizes: chat traffic is small.
pub fn gossipsub(keypair: &Keypair) -> gossipsub::Behaviour {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(64 * 1024)
        .heartbeat_interval(Duration::from_millis(700))
        .mesh_n_low(2)
        .mesh_n(4)
        .mesh_n_high(8)
        .mesh_outbound_min(1)
        .build()
        .expect("static gossipsub config is valid");
    gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(keypair.clone()),
        config,
    )
    .expect("gossipsub accepts a signing key")
}

impl NodeBehaviour {
    pub fn new(
        keypair: &Keypair,
        relay_client: relay::client::Behaviour,
        options: &NodeOptions,
    ) -> std::io::Result<NodeBehaviour> {
        let peer = keypair.public().to_peer_id();
        let mdns = if options.mdns {
            Some(mdns::tokio::Behaviour::new(
                mdns::Config {
                    query_interval: Duration::from_secs(5),
                    ..Default::default()
                },
                peer,
            )?)
        } else {
            None
        };
        let mut kad = kad::Behaviour::new(peer, kad::store::MemoryStore::new(peer));
        kad.set_mode(Some(kad::Mode::Client));
        Ok(NodeBehaviour {
            identify: identify(keypair),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(15))),
            autonat: autonat::Behaviour::new(
                peer,
                autonat::Config {
                    only_global_ips: false,
                    ..Default::default()
                },
            ),
            relay_client,
            dcutr: options
                .hole_punching
                .then(|| dcutr::Behaviour::new(peer))
                .into(),
            mdns: mdns.into(),
            kad,
            gossipsub: gossipsub(keypair),
            rpc: protocol::behaviour(options.request_timeout),
        })
    }
}

#[derive(NetworkBehaviour)]
pub struct RelayBehaviour {
    /// Caps connections in total and per peer, before any other behaviour spends on them.
    pub limits: connection_limits::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub autonat: autonat::Behaviour,
    pub relay: relay::Behaviour,
    pub rpc: protocol::Behaviour,
}

/// Limits of the circuit relay server. libp2p's defaults (2 minutes and 128 KiB per circuit)
/// are too small for chat fallback: a node behind a symmetric NAT stays on its circuit.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub max_reservations: usize,
    pub max_reservations_per_peer: usize,
    pub max_circuits: usize,
    pub max_circuits_per_peer: usize,
    pub max_circuit_duration: Duration,
    pub max_circuit_bytes: u64,
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    pub request_timeout: Duration,
}

impl Default for RelayOptions {
    fn default() -> RelayOptions {
        RelayOptions {
            max_reservations: 4_096,
            max_reservations_per_peer: 4,
            max_circuits: 4_096,
            max_circuits_per_peer: 16,
            max_circuit_duration: Duration::from_secs(60 * 60),
            max_circuit_bytes: 64 * 1024 * 1024,
            max_connections: 20_000,
            max_connections_per_peer: 8,
            request_timeout: Duration::from_secs(20),
        }
    }
}

impl RelayBehaviour {
    pub fn new(keypair: &Keypair, options: &RelayOptions) -> RelayBehaviour {
        let peer: PeerId = keypair.public().to_peer_id();
        let relay_config = relay::Config {
            max_reservations: options.max_reservations,
            max_reservations_per_peer: options.max_reservations_per_peer,
            max_circuits: options.max_circuits,
            max_circuits_per_peer: options.max_circuits_per_peer,
            max_circuit_duration: options.max_circuit_duration,
            max_circuit_bytes: options.max_circuit_bytes,
            reservation_rate_limiters: Vec::new(),
            circuit_src_rate_limiters: Vec::new(),
            ..Default::default()
        }
        // Token buckets (burst, then one more per interval). libp2p's defaults are for anonymous
        // public relays (one reservation or circuit per 2 minutes after a burst of 30): a member
        // whose node restarts a few times would be locked out for an hour. Per IP is generous,
        // since a household, an office or a carrier-grade NAT share one address.
        .reservation_rate_per_peer(nonzero(30), Duration::from_secs(4))
        .reservation_rate_per_ip(nonzero(240), Duration::from_millis(250))
        .circuit_src_per_peer(nonzero(60), Duration::from_secs(2))
        .circuit_src_per_ip(nonzero(480), Duration::from_millis(125));
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(options.max_connections))
            .with_max_established_per_peer(Some(options.max_connections_per_peer))
            .with_max_pending_incoming(Some(options.max_connections.min(1_024)));
        RelayBehaviour {
            limits: connection_limits::Behaviour::new(limits),
            identify: identify(keypair),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(15))),
            autonat: autonat::Behaviour::new(
                peer,
                autonat::Config {
                    only_global_ips: false,
                    ..Default::default()
                },
            ),
            relay: relay::Behaviour::new(peer, relay_config),
            rpc: protocol::behaviour(options.request_timeout),
        }
    }
}

fn nonzero(n: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(n).expect("a positive constant")
}
