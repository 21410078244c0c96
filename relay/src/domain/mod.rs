//! The rules every transport obeys, with no transport in them: HTTP (`api/`), the gateway
//! (`gateway/`) and libp2p (`p2p/`) call these operations and only translate their errors
//! (status and `{"code","message"}`, error frames and close codes, `refused{code}`).
//!
//! # Layout
//! - `access`: who may act at all — a registered, unrevoked device of an account that is not
//!   suspended — checked alike for a login and for every libp2p request.
//!
//! Nothing here imports `api`, `gateway` or `p2p`.

pub mod access;
