//! The swarm task: owns the `Swarm`, turns inbound requests into handler tasks, sends pushes
//! for the pusher tasks, and keeps the peer table in step with connections. Handler tasks in
//! flight and the peer table are bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use concord_net::protocol::Response;
use concord_net::{RelayBehaviour, RelayBehaviourEvent, RelayOptions};
use futures_util::StreamExt;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, identify, noise, tcp, yamux};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Command, P2p, Shared};
use crate::app::App;

/// Inbound requests handled at once, across all peers; more are refused as busy.
const MAX_INFLIGHT_REQUESTS: usize = 256;
const COMMAND_QUEUE: usize = 1_024;
const MAX_ADDRS_PER_PEER: usize = 8;
const MAX_OBSERVED_PEERS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error("libp2p transport: {0}")]
    Transport(String),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, String),
}

fn options(app: &App) -> RelayOptions {
    let c = &app.config.p2p;
    RelayOptions {
        max_reservations: c.max_reservations,
        max_reservations_per_peer: c.max_reservations_per_peer,
        max_circuits: c.max_circuits,
        max_circuits_per_peer: c.max_circuits_per_peer,
        max_circuit_duration: Duration::from_secs(c.max_circuit_duration_secs),
        max_circuit_bytes: c.max_circuit_bytes,
        max_connections: c.max_connections,
        max_connections_per_peer: c.max_connections_per_peer,
        ..RelayOptions::default()
    }
}

/// Builds the swarm, starts listening, and runs it until the app shuts down. Returns once the
/// listen addresses are known.
pub async fn spawn(
    app: Arc<App>,
    key: ed25519_dalek::SigningKey,
) -> Result<(Shared, JoinHandle<()>), P2pError> {
    let keypair = concord_net::identity::keypair(&key);
    let relay_options = options(&app);
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| P2pError::Transport(e.to_string()))?
        .with_quic()
        .with_behaviour(|kp| RelayBehaviour::new(kp, &relay_options))
        .map_err(|e| P2pError::Transport(e.to_string()))?
        // Nodes hold their connection to the relay open; they redial when it drops.
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3_600)))
        .build();
    for addr in &app.config.p2p.listen {
        let ma: Multiaddr = addr
            .parse()
            .map_err(|e: libp2p::multiaddr::Error| P2pError::Listen(addr.clone(), e.to_string()))?;
        swarm
            .listen_on(ma)
            .map_err(|e| P2pError::Listen(addr.clone(), e.to_string()))?;
    }
    let external: Vec<Multiaddr> = app
        .config
        .p2p
        .external_addrs
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    for addr in &external {
        swarm.add_external_address(addr.clone());
    }
    // Wait for the listeners so that the addresses we advertise are real.
    let mut listen_addrs = Vec::new();
    let wanted = app.config.p2p.listen.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while listen_addrs.len() < wanted {
        match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
            Ok(SwarmEvent::NewListenAddr { address, .. }) => listen_addrs.push(address),
            Ok(SwarmEvent::ListenerError { error, .. }) => {
                return Err(P2pError::Listen("listener".into(), error.to_string()));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if external.is_empty() {
        // Without configured external addresses, advertise what we listen on (a LAN relay,
        // tests); circuit reservations need at least one.
        for addr in &listen_addrs {
            swarm.add_external_address(addr.clone());
        }
    }
    let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
    let shared = Arc::new(P2p {
        peer_id: *swarm.local_peer_id(),
        key,
        commands,
        listen_addrs: RwLock::new(listen_addrs),
        external_addrs: external,
        peers: Mutex::new(HashMap::new()),
        observed: Mutex::new(HashMap::new()),
        drop_next_pushes: Mutex::new(HashMap::new()),
    });
    let task = tokio::spawn(run(app, swarm, receiver, shared.clone()));
    Ok((shared, task))
}

async fn run(
    app: Arc<App>,
    mut swarm: Swarm<RelayBehaviour>,
    mut commands: mpsc::Receiver<Command>,
    shared: Shared,
) {
    let mut pending: HashMap<OutboundRequestId, oneshot::Sender<Result<Response, String>>> =
        HashMap::new();
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_REQUESTS));
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => break,
            Some(command) = commands.recv() => match command {
                Command::Push { peer, events, reply } => {
                    let id = swarm.behaviour_mut().rpc.send_request(&peer, concord_net::Request::Push { events });
                    pending.insert(id, reply);
                }
                Command::Respond { channel, response } => {
                    let _ = swarm.behaviour_mut().rpc.send_response(channel, response);
                }
                Command::Disconnect { peer } => {
                    let _ = swarm.disconnect_peer_id(peer);
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(RelayBehaviourEvent::Rpc(event)) => match event {
                    request_response::Event::Message { peer, message: request_response::Message::Request { request, channel, .. }, .. } => {
                        let Ok(permit) = inflight.clone().try_acquire_owned() else {
                            let _ = swarm.behaviour_mut().rpc.send_response(channel, Response::refused("busy", "too many requests in flight; retry"));
                            continue;
                        };
                        let (app, shared) = (app.clone(), shared.clone());
                        tokio::spawn(async move {
                            let response = super::handlers::handle(&app, &shared, peer, request).await;
                            let _ = shared.commands.send(Command::Respond { channel, response }).await;
                            drop(permit);
                        });
                    }
                    request_response::Event::Message { message: request_response::Message::Response { request_id, response }, .. } => {
                        if let Some(reply) = pending.remove(&request_id) {
                            let _ = reply.send(Ok(response));
                        }
                    }
                    request_response::Event::OutboundFailure { request_id, error, .. } => {
                        if let Some(reply) = pending.remove(&request_id) {
                            let _ = reply.send(Err(error.to_string()));
                        }
                    }
                    _ => {}
                },
                SwarmEvent::Behaviour(RelayBehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    let addrs: Vec<Multiaddr> = info.listen_addrs.into_iter().take(MAX_ADDRS_PER_PEER).collect();
                    let mut peers = shared.peers.lock().expect("peers lock");
                    if let Some(meta) = peers.get_mut(&peer_id) {
                        meta.addrs = addrs;
                    } else {
                        let mut observed = shared.observed.lock().expect("observed lock");
                        if observed.len() < MAX_OBSERVED_PEERS {
                            observed.insert(peer_id, addrs);
                        }
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    shared.observed.lock().expect("observed lock").remove(&peer_id);
                    let meta = shared.peers.lock().expect("peers lock").remove(&peer_id);
                    metrics::gauge!("concord_p2p_nodes").set(shared.connected_nodes() as f64);
                    if let Some(meta) = meta {
                        if let Some(session) = app.hub.session(&meta.session_id) {
                            session.close(crate::hub::CloseReason::GoingAway);
                        }
                        app.hub.unregister(&meta.session_id);
                    }
                }
                SwarmEvent::NewListenAddr { address, .. } => {
                    let mut addrs = shared.listen_addrs.write().expect("addrs lock");
                    if !addrs.contains(&address) {
                        addrs.push(address);
                    }
                }
                _ => {}
            },
        }
    }
    for (_, reply) in pending.drain() {
        let _ = reply.send(Err("relay shutting down".into()));
    }
}
