//! concord-node: a Concord desktop node — device identity, libp2p swarm, local SQLite cache,
//! outbox, sync with its relay, GossipSub for public channels, a loopback control API and the
//! `concord` CLI.
//!
//! # Layout
//! - `identity`: the device key, account key and device certificate in the data dir; linking.
//! - `relay_http`: the relay's HTTP API as the node uses it.
//! - `cache`: the rusqlite cache (state, seq cursors, unconfirmed messages, outbox, search).
//! - `daemon`: `Node::spawn`: swarm, relay link, send and outbox, apply, member directory,
//!   control API, node-served web client, voice signalling.
//! - `voice_mesh`: the WebRTC links of a voice call and its audio clock.
//! - `voice_engine`: the sans-IO voice engine (VAD, Opus, jitter buffer, mixer).
//! - `cli`: the `concord` command line.

pub mod cache;
pub mod cli;
pub mod daemon;
pub mod identity;
pub mod relay_http;
pub mod voice_engine;
pub mod voice_mesh;

pub use daemon::{Node, NodeConfig};

/// A bootstrap server address as `--bootstrap` takes it: a multiaddr ending in
/// `/p2p/<peer id>`.
pub fn parse_bootstrap(text: &str) -> Result<libp2p::Multiaddr, String> {
    let addr: libp2p::Multiaddr = text
        .parse()
        .map_err(|e| format!("--bootstrap {text:?}: {e}"))?;
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(_)) => Ok(addr),
        _ => Err(format!("--bootstrap {text:?}: must end in /p2p/<peer id>")),
    }
}

/// A random token for the control API.
pub(crate) fn relay_http_token() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    concord_proto::b64::encode(bytes)
}
