//! The bootstrap's libp2p behaviour. Every part is bounded: connections in total and per
//! peer, DHT records, relay reservations and circuits. Parts: connection limits, identify,
//! ping, Kademlia (always server mode, a bounded `MemoryStore`, a record TTL), the AutoNAT
//! server and, optionally, the circuit relay v2 server.

use libp2p::kad::store::{MemoryStore, MemoryStoreConfig};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{PeerId, autonat, connection_limits, identify, identity::Keypair, kad, ping, relay};

use crate::config::BootstrapConfig;

#[derive(NetworkBehaviour)]
pub struct BootstrapBehaviour {
    pub limits: connection_limits::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: kad::Behaviour<MemoryStore>,
    pub autonat: autonat::Behaviour,
    pub relay: Toggle<relay::Behaviour>,
}

impl BootstrapBehaviour {
    pub fn new(keypair: &Keypair, config: &BootstrapConfig) -> BootstrapBehaviour {
        let peer: PeerId = keypair.public().to_peer_id();
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_connections))
            .with_max_established_per_peer(Some(config.max_connections_per_peer))
            .with_max_pending_incoming(Some(config.max_connections.min(1_024)));
        let store = MemoryStore::with_config(
            peer,
            MemoryStoreConfig {
                max_records: config.dht.max_records,
                max_value_bytes: config.dht.max_value_bytes,
                max_providers_per_key: 20,
                max_provided_keys: config.dht.max_records,
            },
        );
        let mut kad_config = kad::Config::default();
        kad_config.set_record_ttl(Some(std::time::Duration::from_secs(
            config.dht.record_ttl_secs,
        )));
        kad_config.set_provider_record_ttl(Some(std::time::Duration::from_secs(
            config.dht.record_ttl_secs,
        )));
        let mut kad = kad::Behaviour::with_config(peer, store, kad_config);
        // A bootstrap is always a DHT server: answering lookups is its job.
        kad.set_mode(Some(kad::Mode::Server));
        let relay = config.relay.enabled.then(|| {
            relay::Behaviour::new(
                peer,
                relay::Config {
                    max_reservations: config.relay.max_reservations,
                    max_reservations_per_peer: 4,
                    max_circuits: config.relay.max_circuits,
                    max_circuits_per_peer: 16,
                    max_circuit_duration: std::time::Duration::from_secs(
                        config.relay.max_circuit_duration_secs,
                    ),
                    max_circuit_bytes: config.relay.max_circuit_bytes,
                    ..Default::default()
                },
            )
        });
        BootstrapBehaviour {
            limits: connection_limits::Behaviour::new(limits),
            identify: identify::Behaviour::new(
                identify::Config::new(
                    concord_net::behaviour::IDENTIFY_PROTOCOL.into(),
                    keypair.public(),
                )
                .with_agent_version(
                    concat!("concord-bootstrap/", env!("CARGO_PKG_VERSION")).into(),
                ),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
            kad,
            autonat: autonat::Behaviour::new(
                peer,
                autonat::Config {
                    // Probes of private addresses prove nothing on the internet; the lab and
                    // tests turn this off explicitly.
                    only_global_ips: config.autonat_only_global_ips,
                    ..Default::default()
                },
            ),
            relay: relay.into(),
        }
    }
}
