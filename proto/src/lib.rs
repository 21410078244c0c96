//! Concord's shared vocabulary: ids, wire types, signed formats, permissions, limits and the
//! sans-IO state machines that clients and servers both run.
//!
//! No sockets, no database, no clock: time is always a parameter.

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
