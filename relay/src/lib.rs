//! concord-relay: the HTTP API, the gateway, persistence and fan-out. A library first:
//! `Server::spawn(config)` runs one instance; the binary is a thin wrapper (see `cli`).

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
