//! The node's voice engine, sans-IO: 20 ms frames of 48 kHz mono audio go from a source
//! through voice activity detection and Opus (in-band FEC, DTX) into packets carrying an
//! RFC 6464 audio level; received packets go through an adaptive jitter buffer (loss
//! concealed by Opus PLC, or recovered from the next packet's FEC), are decoded, and every
//! speaker but ourselves is mixed into the sink. Nothing here touches a socket or a clock:
//! callers pass packets and time in, so tests run a whole call in virtual time.
//! (The WebRTC mesh in `voice_mesh` carries the packets; `device.rs`, with the `cpal`
//! feature, reads the microphone and plays to the speaker.)
//! `node/tests/voice_call.rs` runs a three-way call in virtual time and checks the mix by FFT.

pub mod codec;
#[cfg(feature = "cpal")]
pub mod device;
pub mod jitter;
pub mod level;
pub mod mixer;
pub mod sink;
pub mod source;
pub mod vad;

/// Samples per second.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per 20 ms frame.
pub const FRAME: usize = 960;
/// One frame's duration.
pub const FRAME_MS: i64 = 20;

/// One frame of PCM.
pub type Frame = Vec<i16>;
