//! `Bootstrap::spawn(config)`: load the identity, start the swarm task and the HTTP server.
//! The swarm task owns the `Swarm`; it feeds Kademlia with the listen addresses peers report
//! through identify (only peers that serve the DHT), and keeps the numbers `/metrics` shows.
//! The identity is `bootstrap.key` in the data dir, loaded by `load_or_create_key`
//! (`concord_net::identity`); the swarm listens on TCP and QUIC. `shutdown()` closes every
//! connection and stops the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, autonat, identify, kad, noise, relay, tcp, yamux};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::behaviour::{BootstrapBehaviour, BootstrapBehaviourEvent};
use crate::config::{BootstrapConfig, ConfigError};
use crate::metrics::{Stats, inc, set};

/// Listen addresses one peer may put into the routing table (identify is peer-supplied).
const MAX_ADDRS_PER_PEER: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("identity {0}: {1}")]
    Identity(String, std::io::Error),
    #[error("libp2p transport: {0}")]
    Transport(String),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, String),
    #[error("cannot bind {0}: {1}")]
    Http(SocketAddr, std::io::Error),
}

pub struct Bootstrap {
    peer_id: PeerId,
    listen_addrs: Vec<Multiaddr>,
    http_addr: SocketAddr,
    stats: Arc<Stats>,
    stop: CancellationToken,
    swarm_task: JoinHandle<()>,
    http_task: JoinHandle<()>,
}

impl Bootstrap {
    pub async fn spawn(config: BootstrapConfig) -> Result<Bootstrap, BootstrapError> {
        config.validate()?;
        let key_path = config.data_dir.join("bootstrap.key");
        let key = concord_net::identity::load_or_create_key(&key_path)
            .map_err(|e| BootstrapError::Identity(key_path.display().to_string(), e))?;
        let keypair = concord_net::identity::keypair(&key);
        let idle = Duration::from_secs(config.idle_connection_timeout_secs);
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| BootstrapError::Transport(e.to_string()))?
            .with_quic()
            .with_behaviour(|kp| BootstrapBehaviour::new(kp, &config))
            .map_err(|e| BootstrapError::Transport(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build();
        let wanted = config.listen_addrs()?;
        for addr in &wanted {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| BootstrapError::Listen(addr.to_string(), e.to_string()))?;
        }
        let external = config.external()?;
        for addr in &external {
            swarm.add_external_address(addr.clone());
        }
        let listen_addrs = wait_for_listeners(&mut swarm, wanted.len()).await?;
        if external.is_empty() {
            // A LAN bootstrap or a test: what we listen on is what peers reach.
            for addr in &listen_addrs {
                swarm.add_external_address(addr.clone());
            }
        }

        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let http = tokio::net::TcpListener::bind(config.http_listen)
            .await
            .map_err(|e| BootstrapError::Http(config.http_listen, e))?;
        let http_addr = http
            .local_addr()
            .map_err(|e| BootstrapError::Http(config.http_listen, e))?;
        let app = axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok\n" }))
            .route(
                "/metrics",
                axum::routing::get({
                    let stats = stats.clone();
                    move || async move {
                        (
                            [("content-type", "text/plain; version=0.0.4")],
                            stats.render(),
                        )
                    }
                }),
            );
        let http_stop = stop.clone();
        let http_task = tokio::spawn(async move {
            let _ = axum::serve(http, app)
                .with_graceful_shutdown(http_stop.cancelled_owned())
                .await;
        });
        let peer_id = *swarm.local_peer_id();
        tracing::info!(%peer_id, addrs = ?listen_addrs, "bootstrap listening");
        let swarm_task = tokio::spawn(run(swarm, stats.clone(), stop.clone()));
        Ok(Bootstrap {
            peer_id,
            listen_addrs,
            http_addr,
            stats,
            stop,
            swarm_task,
            http_task,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses it listens on, each ending in `/p2p/<peer id>` (what nodes configure).
    pub fn multiaddrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs
            .iter()
            .map(|a| a.clone().with_p2p(self.peer_id).unwrap_or_else(|a| a))
            .collect()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Closes every connection and stops the HTTP server.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.swarm_task.await;
        let _ = self.http_task.await;
    }
}

async fn wait_for_listeners(
    swarm: &mut Swarm<BootstrapBehaviour>,
    wanted: usize,
) -> Result<Vec<Multiaddr>, BootstrapError> {
    let mut addrs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while addrs.len() < wanted {
        match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
            Ok(SwarmEvent::NewListenAddr { address, .. }) => addrs.push(address),
            Ok(SwarmEvent::ListenerError { error, .. }) => {
                return Err(BootstrapError::Listen("listener".into(), error.to_string()));
            }
            Ok(SwarmEvent::ListenerClosed {
                addresses, reason, ..
            }) => {
                return Err(BootstrapError::Listen(
                    format!("{addresses:?}"),
                    format!("{reason:?}"),
                ));
            }
            Ok(_) => {}
            // 0.0.0.0 may expand to several addresses or fewer than asked; go with what we have.
            Err(_) => break,
        }
    }
    Ok(addrs)
}

async fn run(mut swarm: Swarm<BootstrapBehaviour>, stats: Arc<Stats>, stop: CancellationToken) {
    let mut gauges = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = gauges.tick() => update_gauges(&mut swarm, &stats),
            event = swarm.select_next_some() => handle(&mut swarm, &stats, event),
        }
    }
}

fn update_gauges(swarm: &mut Swarm<BootstrapBehaviour>, stats: &Stats) {
    set(&stats.peers, swarm.connected_peers().count() as u64);
    let kad = &mut swarm.behaviour_mut().kad;
    let routing: usize = kad.kbuckets().map(|b| b.num_entries()).sum();
    set(&stats.routing_peers, routing as u64);
    use libp2p::kad::store::RecordStore;
    set(&stats.records, kad.store_mut().records().count() as u64);
}

fn handle(
    swarm: &mut Swarm<BootstrapBehaviour>,
    stats: &Stats,
    event: SwarmEvent<BootstrapBehaviourEvent>,
) {
    match event {
        SwarmEvent::ConnectionEstablished { .. } => {
            inc(&stats.connections);
            set(&stats.peers, swarm.connected_peers().count() as u64);
        }
        SwarmEvent::ConnectionClosed { .. } => {
            set(&stats.peers, swarm.connected_peers().count() as u64);
        }
        SwarmEvent::Behaviour(BootstrapBehaviourEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) => {
            // Only DHT servers belong in the routing table: a node behind a NAT (client
            // mode) cannot answer lookups, and its listen addresses would mislead others.
            let serves_dht = info.protocols.contains(&kad::PROTOCOL_NAME);
            if serves_dht {
                for addr in info.listen_addrs.into_iter().take(MAX_ADDRS_PER_PEER) {
                    swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
                update_gauges(swarm, stats);
            }
        }
        SwarmEvent::Behaviour(BootstrapBehaviourEvent::Kad(kad::Event::InboundRequest {
            request,
        })) => stats.query(match request {
            kad::InboundRequest::FindNode { .. } => "find_node",
            kad::InboundRequest::GetProvider { .. } => "get_providers",
            kad::InboundRequest::AddProvider { .. } => "add_provider",
            kad::InboundRequest::GetRecord { .. } => "get_record",
            kad::InboundRequest::PutRecord { .. } => "put_record",
        }),
        SwarmEvent::Behaviour(BootstrapBehaviourEvent::Kad(kad::Event::RoutingUpdated {
            ..
        })) => update_gauges(swarm, stats),
        SwarmEvent::Behaviour(BootstrapBehaviourEvent::Autonat(autonat::Event::InboundProbe(
            probe,
        ))) => match probe {
            autonat::InboundProbeEvent::Response { .. } => inc(&stats.autonat_probes[0]),
            autonat::InboundProbeEvent::Error { .. } => inc(&stats.autonat_probes[1]),
            autonat::InboundProbeEvent::Request { .. } => {}
        },
        SwarmEvent::Behaviour(BootstrapBehaviourEvent::Relay(event)) => match event {
            relay::Event::ReservationReqAccepted { .. } => inc(&stats.reservations[0]),
            relay::Event::ReservationReqDenied { .. } => inc(&stats.reservations[1]),
            relay::Event::CircuitReqAccepted { .. } => inc(&stats.circuits[0]),
            relay::Event::CircuitReqDenied { .. } => inc(&stats.circuits[1]),
            _ => {}
        },
        _ => {}
    }
}
