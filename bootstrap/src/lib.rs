//! `concord-bootstrap`: where nodes find the network. It runs Kademlia in server mode (a
//! node finds another's addresses by its PeerId), identify, the AutoNAT server (a node learns
//! whether it is reachable) and, optionally, a circuit relay v2 server. It never hands out
//! guild membership: that comes from the guild's relay.
//!
//! - [`Bootstrap::spawn`] starts the swarm task and the `/healthz` + `/metrics` server.
//! - [`BootstrapConfig`] is the TOML file's shape; [`cli`] layers flags and environment over it.
//!
//! Nodes take bootstrap servers from `--bootstrap` and from their relay's well-known list
//! (`concord_node`'s `daemon/swarm.rs::enter_dht`), never in relay-only mode.
//!
//! # Layout
//! - `server`: `Bootstrap::spawn`, the swarm task, `/healthz` + `/metrics`, `shutdown()`.
//! - `behaviour`: connection limits, identify, ping, Kademlia, AutoNAT, optional relay.
//! - `config`: `BootstrapConfig`; `cli`: flags and `CONCORD_BOOTSTRAP_*` over the file.
//! - `metrics`: per-instance atomics rendered as Prometheus text.

pub mod behaviour;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod server;

pub use config::BootstrapConfig;
pub use server::{Bootstrap, BootstrapError};
