//! The SFU (issue 11), built up in steps. Here now: `forwarder.rs`, the sans-IO core that
//! decides which speakers each listener receives (the loudest N by RFC 6464 level, never
//! itself, with hysteresis) and rewrites each down-track slot into one continuous RTP
//! stream; and `session.rs`, the WebRTC side (one peer connection per participant: the
//! relay offers one receive-only upstream transceiver and N send-only slots); `video.rs`,
//! the sans-IO core of screen share and camera (who watches whom, keyframe requests);
//! `budget.rs`, the upstream bitrate caps.

pub mod budget;
pub mod forwarder;
pub mod session;
pub mod video;
