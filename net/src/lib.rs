//! Concord's libp2p layer, shared by the node, the relay and the bootstrap server (which
//! takes its key from `identity`): the behaviour each of them runs, Concord's
//! request-response protocol, GossipSub topics and the identity conversions between libp2p
//! keys and Concord device keys.
//!
//! # Layout
//! - `behaviour`: `NodeBehaviour` and `RelayBehaviour` with their options.
//! - `protocol`: `/concord/rpc/1`, its requests, answers and size caps.
//! - `identity`: device key ↔ libp2p keypair ↔ PeerId; `load_or_create_key` for key files.
//! - `topics`: the GossipSub topic of each public channel.

pub mod behaviour;
pub mod identity;
pub mod protocol;
pub mod topics;

pub use behaviour::{
    NodeBehaviour, NodeBehaviourEvent, NodeOptions, RelayBehaviour, RelayBehaviourEvent,
    RelayOptions,
};
pub use protocol::{PROTOCOL, Request, Response};
