//! The SFU (issue 11). `forwarder.rs`, the sans-IO core that decides which speakers each
//! listener receives (the loudest N by RFC 6464 level, never itself, with hysteresis) and
//! rewrites each down-track slot into one continuous RTP stream; `video.rs`, the sans-IO
//! core of screen share and camera (who watches whom, keyframe requests); `budget.rs`, the
//! upstream bitrate caps; `peer.rs`, one participant's sans-IO peer connection (webrtc-rs's
//! `rtc` core: one receive-only upstream transceiver and N send-only slots); `demux.rs`, which
//! participant a datagram on a room's shared sockets is for; `direct.rs`, forwarded audio's
//! short path (SRTP and the socket, past the connection's pipeline), sent a fan-out at a time
//! (`batch.rs`, `sendmmsg`); `upstream.rs`, a participant's microphone's short path (opened
//! past the connection's pipeline) and the reception statistics behind the relay's receiver
//! reports; `room.rs`, the task that owns a room's sockets and connections
//! and forwards in one call per packet; `session.rs`, the API (`Sfu`).
//!
//! It imports nothing from the rest of the relay (it is to become its own crate,
//! `concord-sfu`). Tested over real WebRTC in `relay/tests/sfu.rs` and, with three Chromium
//! browsers, in `testkit/tests/web_voice.rs`.

mod batch;
pub mod budget;
mod demux;
mod direct;
pub mod forwarder;
mod peer;
mod room;
pub mod session;
mod upstream;
pub mod video;
