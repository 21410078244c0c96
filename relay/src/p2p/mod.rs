//! The relay's libp2p side: nodes connect over QUIC or TCP, prove their device key in the
//! Noise handshake, and use Concord's RPC to submit envelopes, receive relay-signed pushes and
//! sync by seq. The same `App` (store, permissions, hub) serves them as serves HTTP, so a
//! message from a node and one from a browser follow one path.
//!
//! `identity.rs` (the key), `swarm.rs` (the swarm task), `handlers.rs` (requests), `pusher.rs`
//! (one task per node). Test hook, cheap when unused: `drop_next_pushes` drops pushes to one
//! peer, to make a seq gap.

mod handlers;
mod identity;
mod pusher;
pub mod swarm;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use concord_net::protocol::Response;
use ed25519_dalek::SigningKey;
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

pub use identity::load_or_create as load_identity;
pub use swarm::spawn;

/// Commands to the swarm task, which owns the `Swarm`.
pub enum Command {
    Push {
        peer: PeerId,
        events: Vec<concord_proto::signed::SignedEvent>,
        reply: oneshot::Sender<Result<Response, String>>,
    },
    Respond {
        channel: ResponseChannel<Response>,
        response: Response,
    },
    Disconnect {
        peer: PeerId,
    },
}

/// What the relay knows about a connected node.
#[derive(Debug, Clone)]
pub struct PeerMeta {
    pub user_id: concord_proto::Id,
    pub device_key: String,
    pub allow_direct: bool,
    /// The gateway-style session in the hub that collects this node's events.
    pub session_id: String,
    /// Addresses the node told us it listens on (identify), bounded.
    pub addrs: Vec<Multiaddr>,
}

/// Shared between the swarm task, request handlers and the HTTP side.
pub struct P2p {
    pub peer_id: PeerId,
    /// Signs every event pushed to nodes; its public half is in /.well-known/concord.
    pub key: SigningKey,
    pub commands: mpsc::Sender<Command>,
    listen_addrs: RwLock<Vec<Multiaddr>>,
    external_addrs: Vec<Multiaddr>,
    pub(crate) peers: Mutex<HashMap<PeerId, PeerMeta>>,
    /// Listen addresses learnt through identify for peers that have not said hello yet.
    pub(crate) observed: Mutex<HashMap<PeerId, Vec<Multiaddr>>>,
    /// Test hook: the next this-many events pushed to a peer are dropped instead of sent, so
    /// the node sees a gap in seq.
    pub drop_next_pushes: Mutex<HashMap<PeerId, usize>>,
}

impl P2p {
    /// Where nodes can reach this relay, each ending in /p2p/<peer id>.
    pub fn addrs(&self) -> Vec<String> {
        let listen = self.listen_addrs.read().expect("addrs lock").clone();
        self.external_addrs
            .iter()
            .chain(listen.iter())
            .map(|a| format!("{a}/p2p/{}", self.peer_id))
            .collect()
    }

    pub fn public_key(&self) -> String {
        concord_proto::b64::encode(self.key.verifying_key().as_bytes())
    }

    /// Closes every connection of a device (revoked devices).
    pub fn disconnect_device(&self, device_key: &str) {
        if let Some(peer) = concord_net::identity::peer_id_of_device_key(device_key) {
            let _ = self.commands.try_send(Command::Disconnect { peer });
        }
    }

    pub fn connected_nodes(&self) -> usize {
        self.peers.lock().expect("peers lock").len()
    }
}

pub type Shared = Arc<P2p>;
