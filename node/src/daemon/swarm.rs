//! The node's swarm task: owns the `Swarm`, runs commands from the rest of the daemon, and
//! turns swarm events into work (pushes from the relay, gossip, direct envelopes, connection
//! bookkeeping for `concord peers`).
//!
//! Bootstrap servers come from `--bootstrap` and from the relay's well-known list
//! (`enter_dht`); a relay-only node uses none (nor mDNS nor hole punching).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use concord_net::protocol::Response;
use concord_net::{NodeBehaviour, NodeBehaviourEvent, NodeOptions, Request};
use concord_proto::Id;
use futures_util::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::gossipsub;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, dcutr, identify, mdns, noise, ping, tcp, yamux};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::backoff::Backoff;
use super::{Inner, NodeError};

pub enum Command {
    Rpc {
        peer: PeerId,
        request: Request,
        reply: oneshot::Sender<Result<Response, String>>,
    },
    Respond {
        channel: ResponseChannel<Response>,
        response: Response,
    },
    Dial(Multiaddr),
    /// Dial a member over these addresses unless connected or already dialing it; addresses
    /// that failed recently are skipped (backoff).
    DialPeer {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    },
    /// Bootstrap servers to enter the DHT through (`.../p2p/<peer id>`).
    Bootstrap(Vec<Multiaddr>),
    Subscribe(Id),
    Unsubscribe(Id),
    Publish {
        channel: Id,
        data: Vec<u8>,
    },
}

/// One open connection, as `concord peers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionInfo {
    pub peer_id: String,
    pub address: String,
    /// `direct`, `hole_punched` or `relayed`.
    pub kind: &'static str,
    /// `quic` or `tcp`.
    pub transport: &'static str,
    pub rtt_ms: Option<u64>,
    pub is_relay: bool,
    /// When the connection was established (unix ms).
    pub established_at_ms: i64,
}

#[derive(Default)]
pub struct Connections {
    open: HashMap<ConnectionId, ConnectionInfo>,
    rtt: HashMap<PeerId, Duration>,
}

impl Connections {
    /// Peers with at least one open connection.
    pub fn peers(&self) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = self
            .open
            .values()
            .filter_map(|c| c.peer_id.parse().ok())
            .collect();
        peers.sort();
        peers.dedup();
        peers
    }

    pub fn list(&self) -> Vec<ConnectionInfo> {
        let mut out: Vec<ConnectionInfo> = self
            .open
            .values()
            .cloned()
            .map(|mut c| {
                c.rtt_ms = c
                    .peer_id
                    .parse()
                    .ok()
                    .and_then(|p: PeerId| self.rtt.get(&p))
                    .map(|d| d.as_millis() as u64);
                c
            })
            .collect();
        out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        out
    }
}

fn describe(endpoint: &ConnectedPoint) -> (String, &'static str, &'static str) {
    let addr = endpoint.get_remote_address();
    // An inbound circuit's remote address is only `/p2p/<peer>`; its local address is the
    // relay's `…/p2p-circuit`.
    let circuit = |a: &Multiaddr| a.iter().any(|p| matches!(p, Protocol::P2pCircuit));
    let relayed = circuit(addr)
        || matches!(endpoint, ConnectedPoint::Listener { local_addr, .. } if circuit(local_addr));
    let quic = addr.iter().any(|p| matches!(p, Protocol::QuicV1));
    (
        addr.to_string(),
        if relayed { "relayed" } else { "direct" },
        if quic { "quic" } else { "tcp" },
    )
}

pub async fn spawn(
    inner: Arc<Inner>,
    commands: mpsc::Receiver<Command>,
) -> Result<(JoinHandle<()>, Vec<Multiaddr>), NodeError> {
    let options = NodeOptions {
        mdns: inner.config.mdns && !inner.config.relay_only,
        hole_punching: !inner.config.relay_only,
        ..NodeOptions::default()
    };
    let p2p = |e: &dyn std::fmt::Display| NodeError::P2p(e.to_string());
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(inner.identity.keypair())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| p2p(&e))?
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| p2p(&e))?
        .with_behaviour(
            |kp, relay_client| -> Result<NodeBehaviour, Box<dyn std::error::Error + Send + Sync>> {
                Ok(NodeBehaviour::new(kp, relay_client, &options)?)
            },
        )
        .map_err(|e| p2p(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3_600)))
        .build();
    let mut listen_addrs = Vec::new();
    if !inner.config.relay_only {
        for addr in &inner.config.listen {
            swarm.listen_on(addr.clone()).map_err(|e| p2p(&e))?;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while listen_addrs.len() < inner.config.listen.len() {
            match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
                Ok(SwarmEvent::NewListenAddr { address, .. }) => listen_addrs.push(address),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    if !inner.config.relay_only {
        let mut servers = inner.config.bootstrap.clone();
        if let Some(relay) = inner.relay() {
            servers.extend(relay.bootstrap.iter().filter_map(|a| a.parse().ok()));
        }
        enter_dht(&mut swarm, servers);
    }
    let task = tokio::spawn(run(inner, swarm, commands));
    Ok((task, listen_addrs))
}

/// How often the node refreshes its DHT routing table through the bootstrap servers.
const DHT_REFRESH: Duration = Duration::from_secs(300);

/// Adds bootstrap servers to Kademlia, dials them and starts a DHT bootstrap. Addresses
/// without a `/p2p/` suffix and the node's own id are skipped.
fn enter_dht(swarm: &mut Swarm<NodeBehaviour>, servers: Vec<Multiaddr>) {
    let me = *swarm.local_peer_id();
    let mut any = false;
    for addr in servers {
        let Some(Protocol::P2p(peer)) = addr.iter().last() else {
            tracing::warn!(%addr, "bootstrap address without /p2p/<peer id> ignored");
            continue;
        };
        if peer == me {
            continue;
        }
        let mut transport = addr.clone();
        transport.pop();
        swarm.behaviour_mut().kad.add_address(&peer, transport);
        if !swarm.is_connected(&peer)
            && let Err(e) = swarm.dial(addr)
        {
            tracing::debug!(error = %e, "bootstrap dial failed");
        }
        any = true;
    }
    if any {
        let _ = swarm.behaviour_mut().kad.bootstrap();
    }
}

async fn run(
    inner: Arc<Inner>,
    mut swarm: Swarm<NodeBehaviour>,
    mut commands: mpsc::Receiver<Command>,
) {
    let mut pending: HashMap<OutboundRequestId, oneshot::Sender<Result<Response, String>>> =
        HashMap::new();
    let mut backoff = Backoff::default();
    let mut refresh =
        tokio::time::interval_at(tokio::time::Instant::now() + DHT_REFRESH, DHT_REFRESH);
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => break,
            // No known DHT peers is the usual case without bootstrap servers: nothing to do.
            _ = refresh.tick() => { let _ = swarm.behaviour_mut().kad.bootstrap(); }
            Some(command) = commands.recv() => command_received(&mut swarm, &mut backoff, &mut pending, command),
            event = swarm.select_next_some() => event_received(&inner, &mut swarm, &mut backoff, &mut pending, event),
        }
    }
    for (_, reply) in pending.drain() {
        let _ = reply.send(Err("node shutting down".into()));
    }
}

fn command_received(
    swarm: &mut Swarm<NodeBehaviour>,
    backoff: &mut Backoff,
    pending: &mut HashMap<OutboundRequestId, oneshot::Sender<Result<Response, String>>>,
    command: Command,
) {
    match command {
        Command::Rpc {
            peer,
            request,
            reply,
        } => {
            let id = swarm.behaviour_mut().rpc.send_request(&peer, request);
            pending.insert(id, reply);
        }
        Command::Respond { channel, response } => {
            let _ = swarm.behaviour_mut().rpc.send_response(channel, response);
        }
        Command::Dial(addr) => {
            let peer = match addr.iter().last() {
                Some(Protocol::P2p(peer)) => Some(peer),
                _ => None,
            };
            // Explicit dials (the relay link with its own retry schedule, `dial`) are not
            // backed off; member dials (`DialPeer`) are.
            if peer == Some(*swarm.local_peer_id()) {
                return;
            }
            if let Err(e) = swarm.dial(addr) {
                tracing::debug!(error = %e, "dial failed");
            }
        }
        Command::DialPeer { peer, addrs } => {
            let now = std::time::Instant::now();
            let addrs: Vec<Multiaddr> = addrs
                .into_iter()
                .filter(|a| !backoff.is_backed_off(peer, a, now))
                .collect();
            if peer == *swarm.local_peer_id() || addrs.is_empty() {
                return;
            }
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(addrs)
                .build();
            if let Err(e) = swarm.dial(opts) {
                tracing::debug!(%peer, error = %e, "no dial");
            }
        }
        Command::Bootstrap(servers) => enter_dht(swarm, servers),
        Command::Subscribe(channel) => {
            let _ = swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&concord_net::topics::channel_topic(channel));
        }
        Command::Unsubscribe(channel) => {
            swarm
                .behaviour_mut()
                .gossipsub
                .unsubscribe(&concord_net::topics::channel_topic(channel));
        }
        Command::Publish { channel, data } => {
            // No peer in the topic is normal (alone in a channel); the relay path still runs.
            if let Err(e) = swarm
                .behaviour_mut()
                .gossipsub
                .publish(concord_net::topics::channel_topic(channel), data)
            {
                tracing::debug!(error = %e, %channel, "gossip publish skipped");
            }
        }
    }
}

fn event_received(
    inner: &Arc<Inner>,
    swarm: &mut Swarm<NodeBehaviour>,
    backoff: &mut Backoff,
    pending: &mut HashMap<OutboundRequestId, oneshot::Sender<Result<Response, String>>>,
    event: SwarmEvent<NodeBehaviourEvent>,
) {
    let relay_peer = inner.relay().and_then(|r| r.peer());
    match event {
        SwarmEvent::ConnectionEstablished {
            peer_id,
            connection_id,
            endpoint,
            num_established,
            ..
        } => {
            let (address, kind, transport) = describe(&endpoint);
            let is_relay = Some(peer_id) == relay_peer;
            inner
                .connections
                .lock()
                .expect("connections lock")
                .open
                .insert(
                    connection_id,
                    ConnectionInfo {
                        peer_id: peer_id.to_string(),
                        address,
                        kind,
                        transport,
                        rtt_ms: None,
                        is_relay,
                        established_at_ms: super::now_ms(),
                    },
                );
            backoff.succeeded(peer_id, endpoint.get_remote_address());
            // A direct connection replaces relayed ones to the same peer for every protocol
            // (DCUtR's own success is handled below; this covers direct dials and mDNS).
            if kind == "direct" && !is_relay {
                close_relayed(inner, swarm, peer_id);
            }
            if is_relay && num_established.get() == 1 {
                inner
                    .relay_connected
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                inner.relay_changed.notify_waiters();
                tokio::spawn(super::relay_link::on_connected(inner.clone()));
                // Reserve a slot at the relay so members who cannot reach us directly connect
                // through it; DCUtR then tries to turn that into a direct connection.
                if inner.allow_direct()
                    && let ConnectedPoint::Dialer { address, .. } = &endpoint
                {
                    let circuit = address
                        .clone()
                        .with_p2p(peer_id)
                        .unwrap_or_else(|a| a)
                        .with(Protocol::P2pCircuit);
                    if let Err(e) = swarm.listen_on(circuit) {
                        tracing::debug!(error = %e, "no relay reservation");
                    }
                }
            }
        }
        SwarmEvent::ConnectionClosed {
            peer_id,
            connection_id,
            num_established,
            ..
        } => {
            inner
                .connections
                .lock()
                .expect("connections lock")
                .open
                .remove(&connection_id);
            if Some(peer_id) == relay_peer && num_established == 0 {
                inner
                    .relay_ready
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                inner
                    .relay_connected
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                inner.relay_changed.notify_waiters();
            }
        }
        SwarmEvent::Behaviour(NodeBehaviourEvent::Rpc(event)) => match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let inner = inner.clone();
                tokio::spawn(async move {
                    let response = super::apply::inbound(&inner, peer, relay_peer, request).await;
                    let _ = inner
                        .commands
                        .send(Command::Respond { channel, response })
                        .await;
                });
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = pending.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            _ => {}
        },
        SwarmEvent::Behaviour(NodeBehaviourEvent::Gossipsub(gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        })) => {
            let acceptance = super::apply::gossip(inner, &message);
            let _ = swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&message_id, &propagation_source, acceptance);
        }
        SwarmEvent::Behaviour(NodeBehaviourEvent::Mdns(mdns::Event::Discovered(found)))
            if inner.allow_direct() =>
        {
            for (peer, addr) in found {
                if !swarm.is_connected(&peer) {
                    let _ = swarm.dial(addr.with_p2p(peer).unwrap_or_else(|a| a));
                }
            }
        }
        SwarmEvent::Behaviour(NodeBehaviourEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) if inner.allow_direct() => {
            for addr in info.listen_addrs.into_iter().take(8) {
                swarm.behaviour_mut().kad.add_address(&peer_id, addr);
            }
        }
        SwarmEvent::Behaviour(NodeBehaviourEvent::Ping(ping::Event {
            peer,
            result: Ok(rtt),
            ..
        })) => {
            inner
                .connections
                .lock()
                .expect("connections lock")
                .rtt
                .insert(peer, rtt);
        }
        SwarmEvent::Behaviour(NodeBehaviourEvent::RelayClient(
            libp2p::relay::client::Event::ReservationReqAccepted { renewal, .. },
        )) => {
            inner
                .relay_reserved
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let mut at = inner.relay_reserved_at_ms.lock().expect("reserved lock");
            if !renewal || at.is_none() {
                *at = Some(super::now_ms());
            }
        }
        SwarmEvent::ListenerClosed { addresses, .. }
            if addresses
                .iter()
                .any(|a| a.iter().any(|p| matches!(p, Protocol::P2pCircuit))) =>
        {
            inner
                .relay_reserved
                .store(false, std::sync::atomic::Ordering::Relaxed);
            *inner.relay_reserved_at_ms.lock().expect("reserved lock") = None;
        }
        SwarmEvent::Behaviour(NodeBehaviourEvent::Dcutr(dcutr::Event {
            remote_peer_id,
            result: Ok(connection_id),
        })) => {
            if let Some(c) = inner
                .connections
                .lock()
                .expect("connections lock")
                .open
                .get_mut(&connection_id)
            {
                c.kind = "hole_punched";
            }
            tracing::info!(peer = %remote_peer_id, "hole punched");
            close_relayed(inner, swarm, remote_peer_id);
        }
        SwarmEvent::Behaviour(NodeBehaviourEvent::Dcutr(dcutr::Event {
            remote_peer_id,
            result: Err(error),
        })) => {
            tracing::info!(peer = %remote_peer_id, %error, "hole punch failed; staying relayed");
        }
        SwarmEvent::OutgoingConnectionError {
            peer_id: Some(peer),
            error: DialError::Transport(failed),
            ..
        } => {
            for (addr, error) in failed {
                tracing::debug!(%peer, %addr, %error, "address failed");
                backoff.failed(peer, &addr, std::time::Instant::now());
            }
        }
        _ => {}
    }
}

/// The direct connection replaces relayed ones for every protocol: requests and gossip can
/// no longer pick the slower path, and the relay's circuit is freed.
fn close_relayed(inner: &Arc<Inner>, swarm: &mut Swarm<NodeBehaviour>, peer: PeerId) {
    let peer = peer.to_string();
    let relayed: Vec<ConnectionId> = inner
        .connections
        .lock()
        .expect("connections lock")
        .open
        .iter()
        .filter(|(_, c)| c.peer_id == peer && c.kind == "relayed")
        .map(|(id, _)| *id)
        .collect();
    for id in relayed {
        swarm.close_connection(id);
    }
}
