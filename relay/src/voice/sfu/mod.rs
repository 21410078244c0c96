//! The SFU (issue 11), built up in steps. Here now: `forwarder.rs`, the sans-IO core that
//! decides which speakers each listener receives (the loudest N by RFC 6464 level, never
//! itself, with hysteresis) and rewrites each down-track slot into one continuous RTP
//! stream. Still to come: the WebRTC side (one peer connection per participant with one
//! upstream track and N down-track slots), HTTP signalling, placement across instances.

pub mod forwarder;
