//! The SFU (issue 11), built up in steps. Here now: `forwarder.rs`, the sans-IO core that
//! decides which speakers each listener receives (the loudest N by RFC 6464 level, never
//! itself, with hysteresis) and rewrites each down-track slot into one continuous RTP
//! stream; and `session.rs`, the WebRTC side (one peer connection per participant: the
//! relay offers one receive-only upstream transceiver and N send-only slots). Still to come:
//! the node's SFU client and the mesh → SFU move, the browser, placement across instances.

pub mod budget;
pub mod forwarder;
pub mod session;
