//! concord-node: a Concord desktop node — device identity, libp2p swarm, local SQLite cache,
//! outbox, sync with its relay, GossipSub for public channels, a loopback control API and the
//! `concord` CLI.

pub mod cache;
pub mod cli;
pub mod daemon;
pub mod identity;
pub mod relay_http;

pub use daemon::{Node, NodeConfig};

/// A random token for the control API.
pub(crate) fn relay_http_token() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    concord_proto::b64::encode(bytes)
}
