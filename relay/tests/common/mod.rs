//! Helpers shared by the relay's integration tests.

pub mod client;
pub mod db;
pub mod ledger;
