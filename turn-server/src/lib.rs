//! `concord-turn`: a STUN/TURN server (RFC 8489, RFC 8656, compatible with RFC 5766 clients)
//! over UDP, TCP and TLS, with long-term and TURN REST credentials, a peer address policy,
//! quotas and caps.
//!
//! - [`core`]: the sans-IO protocol state machine ([`core::TurnCore`]), tested with virtual
//!   time.
//! - [`TurnServer`]: the tokio driver (UDP, TCP and TLS listeners, one UDP relay socket per
//!   allocation, `/healthz` and `/metrics`).
//! - [`rest_credentials`]: the ephemeral credentials a relay hands its users.
//!
//! # Layout
//! - `core`: `TurnCore` (sans-IO), `wire` (STUN and ChannelData parsing), `stats` (counters).
//! - `auth`: long-term and TURN REST credentials, stateless nonces.
//! - `policy`: which peer addresses an allocation may reach.
//! - `server`: `TurnServer::spawn`, the tokio driver, and `shutdown()`.
//! - `config`: `TurnConfig`, the TOML file's shape; `cli`: flags and environment over it.
//! - `metrics`: `concord_turn_*` names; `tls`: the rustls acceptor.

pub mod auth;
pub mod core;
pub mod policy;

pub use auth::{rest_credentials, rest_password};
pub mod cli;
pub mod config;
pub mod metrics;
pub mod server;
pub mod tls;

pub use config::TurnConfig;
pub use server::{ServerError, TurnServer};
