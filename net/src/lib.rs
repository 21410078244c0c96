//! Concord's libp2p layer, shared by the node, the relay and (later) the bootstrap server:
//! the behaviour each of them runs, Concord's request-response protocol, GossipSub topics
//! and the identity conversions between libp2p keys and Concord device keys.

pub mod behaviour;
pub mod identity;
pub mod protocol;
pub mod topics;

pub use behaviour::{
    NodeBehaviour, NodeBehaviourEvent, NodeOptions, RelayBehaviour, RelayBehaviourEvent,
    RelayOptions,
};
pub use protocol::{PROTOCOL, Request, Response};
