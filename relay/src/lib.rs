//! concord-relay: the HTTP API, the gateway, persistence and fan-out. A library first:
//! `Server::spawn(config)` runs one instance; the binary is a thin wrapper (see `cli`).
//!
//! # Layout
//! - `api`: the HTTP API, one file per resource (transport).
//! - `app`: `App`, the shared state of one instance.
//! - `archive`: retention: months of messages to an object store and back.
//! - `auth`: access and refresh tokens, revocations, the `Caller` extractor.
//! - `background`: periodic work (readiness, expiry, purges, lease renewal, gauges).
//! - `cli`: flags and environment over the TOML file, subcommands.
//! - `cluster`: several instances: fan-out over Redis, durable jobs, shared rate limits.
//! - `config`: `RelayConfig`, the TOML file's shape.
//! - `domain`: transport-free rules: the error type, access checks, the audit log.
//! - `gateway`: the WebSocket (transport).
//! - `hub`: this instance's sessions and fan-out to them, presence.
//! - `listener`: the accept loop, optional TLS, graceful drain.
//! - `messaging`: writes that create channel events, for every transport.
//! - `metrics`: Prometheus names and the HTTP middleware.
//! - `p2p`: the libp2p side (transport).
//! - `perms`: permission checks from cached guild state.
//! - `ratelimit`: the limiter trait, in-memory limiter and rules.
//! - `server`: `Server::spawn` and ordered shutdown.
//! - `store`: persistence traits and their SQL implementation.
//! - `telemetry`: logs and OpenTelemetry traces.
//! - `voice`: voice rooms, grants, placement across instances, the SFU.
//! - `web`: serving the embedded web client (transport).

pub mod api;
pub mod app;
pub mod archive;
pub mod auth;
mod background;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod gateway;
pub mod hub;
pub mod listener;
pub mod messaging;
pub mod metrics;
pub mod p2p;
pub mod perms;
pub mod ratelimit;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod voice;
pub mod web;

pub use config::RelayConfig;
pub use server::{Server, ServerError};
