//! Concord's shared vocabulary: ids, wire types, signed formats, permissions, limits and the
//! sans-IO state machines that clients and servers both run.
//!
//! No sockets, no database, no clock: time is always a parameter.
//!
//! # Layout
//! - `id`: 64-bit time-ordered ids and their generator.
//! - `signed`: the signed byte formats (device certificate, login, envelope, event, voice
//!   grant).
//! - `permissions`: permission bits and how roles and overwrites combine.
//! - `limits`: every size and shape rule, and the word splitting search uses.
//! - `model`: objects the relay returns and pushes.
//! - `api`: HTTP request and response bodies, each validated.
//! - `gateway`: gateway frames, close codes, the client-frame parser.
//! - `ratelimit`: the fixed-window limiter, sans-IO.
//! - `turn_rest`: TURN REST credentials shared by the relay and concord-turn.
//! - `b64`: base64url without padding.

pub mod api;
pub mod b64;
pub mod gateway;
pub mod id;
pub mod limits;
pub mod model;
pub mod permissions;
pub mod ratelimit;
pub mod signed;
pub mod turn_rest;

pub use id::{Id, IdGenerator};
pub use permissions::Permissions;
