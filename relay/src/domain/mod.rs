//! The rules every transport obeys, with no transport in them: HTTP (`api/`), the gateway
//! (`gateway/`) and libp2p (`p2p/`) call these operations and only translate their errors
//! (status and `{"code","message"}`, error frames and close codes, `refused{code}`).
//!
//! # Layout
//! - `error`: the one error type of every operation ([`error::DomainError`]), a stable code
//!   and a message; each transport maps it.
//! - `access`: who may act at all — a registered, unrevoked device of an account that is not
//!   suspended — checked alike for a login and for every libp2p request.
//! - `audit`: the guild audit log entries moderation writes.
//!
//! Nothing here imports `api`, `gateway` or `p2p` (`tests/layering.rs`).

pub mod access;
pub mod audit;
pub mod error;
