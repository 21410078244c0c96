//! Opus at 48 kHz mono in 20 ms frames, tuned for speech: VoIP mode, in-band FEC for the
//! expected loss, DTX. The encoder drops silent frames after the VAD hangover (a timestamp
//! gap, not a sequence gap, tells the receiver it was silence, not loss).

use super::level::dbov;
use super::vad::Vad;
use super::{FRAME, Frame, SAMPLE_RATE};

/// One encoded frame as RTP would carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Counts sent packets (a gap is loss).
    pub seq: u16,
    /// Counts samples (a gap with no sequence gap is silence).
    pub timestamp: u32,
    pub payload: Vec<u8>,
    /// RFC 6464 level of the frame (-dBov), sent in the header extension.
    pub level: u8,
}

pub struct Encoder {
    opus: opus::Encoder,
    vad: Vad,
    seq: u16,
    timestamp: u32,
    muted: bool,
}

fn codec_error(e: opus::Error) -> String {
    format!("opus: {e}")
}

impl Encoder {
    /// `bitrate` in bits per second (speech: 24 000 to 40 000); `expected_loss` in percent.
    pub fn new(bitrate: i32, expected_loss: i32) -> Result<Encoder, String> {
        let mut opus =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .map_err(codec_error)?;
        opus.set_bitrate(opus::Bitrate::Bits(bitrate))
            .map_err(codec_error)?;
        opus.set_inband_fec(true).map_err(codec_error)?;
        opus.set_packet_loss_perc(expected_loss.clamp(0, 100))
            .map_err(codec_error)?;
        opus.set_dtx(true).map_err(codec_error)?;
        Ok(Encoder {
            opus,
            vad: Vad::default(),
            seq: 0,
            timestamp: 0,
            muted: false,
        })
    }

    /// Muted: nothing is sent (the timestamp keeps running, so peers hear silence).
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    /// Encodes one 20 ms frame; `None` when muted or silent.
    pub fn encode(&mut self, frame: &[i16]) -> Result<Option<Packet>, String> {
        if frame.len() != FRAME {
            return Err(format!("a frame is {FRAME} samples, got {}", frame.len()));
        }
        let timestamp = self.timestamp;
        self.timestamp = self.timestamp.wrapping_add(FRAME as u32);
        let speech = self.vad.is_speech(frame);
        if self.muted || !speech {
            return Ok(None);
        }
        let mut out = [0u8; 1275];
        let n = self.opus.encode(frame, &mut out).map_err(codec_error)?;
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        Ok(Some(Packet {
            seq,
            timestamp,
            payload: out[..n].to_vec(),
            level: dbov(frame),
        }))
    }
}

pub struct Decoder {
    opus: opus::Decoder,
    pub concealed: u64,
    pub recovered: u64,
}

impl Decoder {
    pub fn new() -> Result<Decoder, String> {
        Ok(Decoder {
            opus: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).map_err(codec_error)?,
            concealed: 0,
            recovered: 0,
        })
    }

    fn run(&mut self, payload: &[u8], fec: bool) -> Frame {
        let mut out = vec![0i16; FRAME];
        match self.opus.decode(payload, &mut out, fec) {
            Ok(n) => out.truncate(n.min(FRAME)),
            // A corrupt packet is concealed like a lost one.
            Err(_) => return self.conceal(),
        }
        out.resize(FRAME, 0);
        out
    }

    pub fn decode(&mut self, payload: &[u8]) -> Frame {
        self.run(payload, false)
    }

    /// A lost frame, rebuilt from the FEC data the next packet carries.
    pub fn recover(&mut self, next_payload: &[u8]) -> Frame {
        self.recovered += 1;
        self.run(next_payload, true)
    }

    /// A lost frame with nothing to rebuild it from: Opus packet-loss concealment.
    pub fn conceal(&mut self) -> Frame {
        self.concealed += 1;
        let mut out = vec![0i16; FRAME];
        let _ = self.opus.decode(&[], &mut out, false);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voice_engine::source::{Sine, Source};

    #[test]
    fn speech_is_encoded_and_silence_and_mute_are_not() {
        let mut enc = Encoder::new(32_000, 10).unwrap();
        let mut sine = Sine::new(440.0, 0.3);
        let first = enc.encode(&sine.next_frame()).unwrap().unwrap();
        assert_eq!((first.seq, first.timestamp), (0, 0));
        assert!(first.level < 20, "level {}", first.level);
        let mut dec = Decoder::new().unwrap();
        assert_eq!(dec.decode(&first.payload).len(), FRAME);
        // Ten silent frames of hangover, then nothing.
        let silence = vec![0i16; FRAME];
        let sent = (0..20)
            .filter(|_| enc.encode(&silence).unwrap().is_some())
            .count();
        assert_eq!(sent, 10);
        enc.set_muted(true);
        assert!(enc.encode(&sine.next_frame()).unwrap().is_none());
        enc.set_muted(false);
        let next = enc.encode(&sine.next_frame()).unwrap().unwrap();
        assert_eq!(next.seq, 11, "sequence numbers count packets");
        assert_eq!(
            next.timestamp,
            22 * FRAME as u32,
            "timestamps count samples"
        );
        assert!(enc.encode(&[0; 10]).is_err());
        assert_eq!(dec.conceal().len(), FRAME);
        assert_eq!(dec.decode(b"\xff\xff\xff").len(), FRAME);
    }
}
