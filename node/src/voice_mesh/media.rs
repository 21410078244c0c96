//! The call's audio clock: every 20 ms it takes a frame from the source, encodes it (VAD,
//! DTX, mute) and hands the packet to the senders; and it plays one frame out of each remote
//! speaker's jitter buffer (Opus PLC / FEC for losses), mixes them and writes the sink.
//! Packets from a speaker who may not speak (grant or server mute) are dropped on arrival.
//! It also counts loss, jitter and the longest concealed gap per speaker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use concord_proto::Id;
use serde::Serialize;

use super::probe::LatencyProbe;
use crate::voice_engine::codec::{Decoder, Encoder, Packet};
use crate::voice_engine::jitter::{JitterBuffer, Playout};
use crate::voice_engine::mixer::mix;
use crate::voice_engine::sink::WavSink;
use crate::voice_engine::source::{Sine, Source, WavFile};
use crate::voice_engine::{FRAME, FRAME_MS};

/// Where the node's voice comes from (`--voice-source`): `silence`, `sine:HZ`,
/// `wav:PATH` (48 kHz mono 16-bit) or `device` (the default microphone; needs the `cpal`
/// feature).
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    Silence,
    Sine(f64),
    Wav(PathBuf),
    Device,
}

impl std::str::FromStr for SourceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<SourceSpec, String> {
        match s.split_once(':') {
            None if s == "silence" => Ok(SourceSpec::Silence),
            None if s == "device" => Ok(SourceSpec::Device),
            Some(("sine", hz)) => match hz.parse::<f64>() {
                Ok(hz) if (20.0..=20_000.0).contains(&hz) => Ok(SourceSpec::Sine(hz)),
                _ => Err(format!("sine frequency {hz:?} is not 20-20000 Hz")),
            },
            Some(("wav", path)) if !path.is_empty() => Ok(SourceSpec::Wav(path.into())),
            _ => Err(format!(
                "voice source {s:?}: use silence, sine:HZ, wav:PATH or device"
            )),
        }
    }
}

impl SourceSpec {
    pub fn open(&self) -> Result<Box<dyn Source>, String> {
        Ok(match self {
            SourceSpec::Silence => Box::new(Sine::new(440.0, 0.0)),
            SourceSpec::Sine(hz) => Box::new(Sine::new(*hz, 0.25)),
            SourceSpec::Wav(path) => Box::new(WavFile::open(path)?),
            #[cfg(feature = "cpal")]
            SourceSpec::Device => Box::new(crate::voice_engine::device::DeviceSource::open()?),
            #[cfg(not(feature = "cpal"))]
            SourceSpec::Device => {
                return Err(
                    "this node was built without the cpal feature: no audio devices".into(),
                );
            }
        })
    }
}

/// What one remote speaker's audio went through, as `concord voice status` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SpeakerStats {
    pub received: u64,
    pub lost: u64,
    /// lost / (played + lost)
    pub loss: f64,
    pub jitter_ms: f64,
    pub concealed_frames: u64,
    pub recovered_frames: u64,
    /// The longest run of concealed (PLC) audio, in ms: what a listener heard as a gap.
    pub longest_concealed_ms: i64,
    /// Packets dropped because the speaker may not speak.
    pub dropped_no_speak: u64,
    /// Speaking now (a voice packet in the last 300 ms), and its RFC 6464 level (-dBov).
    pub speaking: bool,
    pub level_dbov: u8,
}

/// A speaker counts as speaking this long after its last voice packet.
const SPEAKING_HOLD_MS: i64 = 300;

struct Speaker {
    buffer: JitterBuffer,
    decoder: Decoder,
    allowed: bool,
    concealed_run_ms: i64,
    last_voice_ms: Option<i64>,
    stats: SpeakerStats,
}

/// Shared between the clock, the track readers and the signalling side.
pub struct Media {
    me: Id,
    probe: Option<Arc<LatencyProbe>>,
    epoch: Instant,
    speakers: Mutex<HashMap<Id, Speaker>>,
    /// Who may speak (voice state / grant); speakers not listed are allowed.
    allowed: Mutex<HashMap<Id, bool>>,
    /// On the SFU: the speaker (CSRC) each slot carried last (a handful of slots).
    slot_sources: Mutex<HashMap<Id, u32>>,
    pub muted: AtomicBool,
    pub deafened: AtomicBool,
    pub frames_played: AtomicU64,
    pub packets_sent: AtomicU64,
}

impl Media {
    pub fn new(me: Id, probe: Option<Arc<LatencyProbe>>) -> Media {
        Media {
            me,
            probe,
            epoch: Instant::now(),
            speakers: Mutex::new(HashMap::new()),
            allowed: Mutex::new(HashMap::new()),
            slot_sources: Mutex::new(HashMap::new()),
            muted: AtomicBool::new(false),
            deafened: AtomicBool::new(false),
            frames_played: AtomicU64::new(0),
            packets_sent: AtomicU64::new(0),
        }
    }

    pub fn me(&self) -> Id {
        self.me
    }

    fn now_ms(&self) -> i64 {
        self.epoch.elapsed().as_millis() as i64
    }

    /// On the SFU: the speaker a slot's packet came from (its CSRC).
    pub fn note_source(&self, slot: Id, source: u32) {
        self.slot_sources
            .lock()
            .expect("slot sources")
            .insert(slot, source);
    }

    /// Each SFU slot, the speaker it carried last, and what was received on it.
    pub fn slots(&self) -> Vec<(Id, u32, Option<SpeakerStats>)> {
        let sources: Vec<(Id, u32)> = self
            .slot_sources
            .lock()
            .expect("slot sources")
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        let mut out: Vec<(Id, u32, Option<SpeakerStats>)> = sources
            .into_iter()
            .map(|(slot, source)| (slot, source, self.stats(slot)))
            .collect();
        out.sort_by_key(|(slot, _, _)| std::cmp::Reverse(*slot));
        out
    }

    pub fn set_allowed(&self, user: Id, allowed: bool) {
        self.allowed.lock().expect("allowed").insert(user, allowed);
        if let Some(s) = self.speakers.lock().expect("speakers").get_mut(&user) {
            s.allowed = allowed;
        }
    }

    /// A packet from a remote track.
    pub fn received(&self, from: Id, packet: Packet) {
        if from == self.me {
            return;
        }
        let now = self.now_ms();
        let allowed = self
            .allowed
            .lock()
            .expect("allowed")
            .get(&from)
            .copied()
            .unwrap_or(true);
        let mut speakers = self.speakers.lock().expect("speakers");
        // Bounded by the mesh size: a speaker exists only for a live link.
        let speaker = match speakers.get_mut(&from) {
            Some(s) => s,
            None => {
                let Ok(decoder) = Decoder::new() else { return };
                speakers.entry(from).or_insert(Speaker {
                    buffer: JitterBuffer::default(),
                    decoder,
                    allowed,
                    concealed_run_ms: 0,
                    last_voice_ms: None,
                    stats: SpeakerStats::default(),
                })
            }
        };
        if !speaker.allowed {
            speaker.stats.dropped_no_speak += 1;
            return;
        }
        speaker.last_voice_ms = Some(now);
        speaker.stats.level_dbov = packet.level;
        speaker.buffer.push(packet, now);
    }

    pub fn forget(&self, user: Id) {
        self.speakers.lock().expect("speakers").remove(&user);
    }

    /// One 20 ms tick of playout: every speaker's next frame, mixed.
    pub fn play(&self) -> Vec<i16> {
        let now = self.now_ms();
        let mut speakers = self.speakers.lock().expect("speakers");
        let mut frames: Vec<(Id, Vec<i16>)> = Vec::with_capacity(speakers.len());
        for (id, s) in speakers.iter_mut() {
            let frame = match s.buffer.pop(now) {
                Playout::Audio(payload) => {
                    s.concealed_run_ms = 0;
                    if let (Some(probe), Some(ts)) = (&self.probe, s.buffer.last_played) {
                        probe.played(*id, ts, Instant::now());
                    }
                    s.decoder.decode(&payload)
                }
                Playout::Lost { next: Some(next) } => {
                    s.concealed_run_ms = 0;
                    s.decoder.recover(&next)
                }
                Playout::Lost { next: None } => {
                    s.concealed_run_ms += FRAME_MS;
                    s.stats.longest_concealed_ms =
                        s.stats.longest_concealed_ms.max(s.concealed_run_ms);
                    s.decoder.conceal()
                }
                Playout::Silence => {
                    s.concealed_run_ms = 0;
                    vec![0; FRAME]
                }
            };
            let b = &s.buffer.stats;
            s.stats.received = b.received;
            s.stats.lost = b.lost;
            s.stats.loss = if b.played + b.lost == 0 {
                0.0
            } else {
                b.lost as f64 / (b.played + b.lost) as f64
            };
            s.stats.jitter_ms = b.jitter_ms;
            s.stats.concealed_frames = s.decoder.concealed;
            s.stats.recovered_frames = s.decoder.recovered;
            frames.push((*id, frame));
        }
        drop(speakers);
        self.frames_played.fetch_add(1, Ordering::Relaxed);
        if self.deafened.load(Ordering::Relaxed) {
            return vec![0; FRAME];
        }
        mix(self.me, frames.iter().map(|(id, f)| (*id, f.as_slice())))
    }

    pub fn stats(&self, user: Id) -> Option<SpeakerStats> {
        let now = self.now_ms();
        self.speakers
            .lock()
            .expect("speakers")
            .get(&user)
            .map(|s| SpeakerStats {
                speaking: s.last_voice_ms.is_some_and(|t| now - t <= SPEAKING_HOLD_MS),
                ..s.stats.clone()
            })
    }
}

/// The capture side of the clock: source → encoder (muted: nothing is sent).
pub struct Capture {
    source: Box<dyn Source>,
    encoder: Encoder,
}

impl Capture {
    pub fn new(source: Box<dyn Source>) -> Result<Capture, String> {
        // 32 kb/s speech with FEC tuned for 10 % loss.
        Ok(Capture {
            source,
            encoder: Encoder::new(32_000, 10)?,
        })
    }

    pub fn next(&mut self, muted: bool) -> Result<Option<Packet>, String> {
        self.encoder.set_muted(muted);
        let frame = self.source.next_frame();
        self.encoder.encode(&frame)
    }
}

/// The playback side: the WAV sink and the speaker, when configured.
pub struct Playback {
    pub sink: Option<WavSink>,
    #[cfg(feature = "cpal")]
    pub speaker: Option<crate::voice_engine::device::DeviceSink>,
}

impl Playback {
    pub fn new(sink: Option<WavSink>, speaker: bool) -> Result<Playback, String> {
        #[cfg(feature = "cpal")]
        {
            let speaker = speaker
                .then(crate::voice_engine::device::DeviceSink::open)
                .transpose()?;
            Ok(Playback { sink, speaker })
        }
        #[cfg(not(feature = "cpal"))]
        {
            if speaker {
                return Err(
                    "this node was built without the cpal feature: no audio devices".into(),
                );
            }
            Ok(Playback { sink })
        }
    }

    pub fn write(&mut self, frame: &[i16]) {
        #[cfg(feature = "cpal")]
        if let Some(speaker) = &self.speaker {
            speaker.write(frame);
        }
        if let Some(sink) = self.sink.as_mut()
            && let Err(e) = sink.write(frame)
        {
            tracing::warn!(error = %e, "voice sink write failed; sink closed");
            self.sink = None;
        }
    }

    pub fn finish(self) {
        if let Some(sink) = self.sink
            && let Err(e) = sink.finish()
        {
            tracing::warn!(error = %e, "voice sink not finalized");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_specs_parse_or_say_why_not() {
        assert_eq!("silence".parse::<SourceSpec>(), Ok(SourceSpec::Silence));
        assert_eq!(
            "sine:440".parse::<SourceSpec>(),
            Ok(SourceSpec::Sine(440.0))
        );
        assert_eq!(
            "wav:/tmp/a.wav".parse::<SourceSpec>(),
            Ok(SourceSpec::Wav("/tmp/a.wav".into()))
        );
        assert_eq!("device".parse::<SourceSpec>(), Ok(SourceSpec::Device));
        for bad in ["", "sine", "sine:5", "sine:x", "wav:", "mic", "device:x"] {
            assert!(bad.parse::<SourceSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_speaker_who_may_not_speak_is_dropped_and_counted() {
        let media = Media::new(Id(1), None);
        media.set_allowed(Id(2), false);
        let p = Packet {
            seq: 0,
            timestamp: 0,
            payload: vec![0xf8, 0xff, 0xfe],
            level: 10,
        };
        media.received(Id(2), p.clone());
        media.received(Id(2), p.clone());
        let s = media.stats(Id(2)).unwrap();
        assert_eq!((s.received, s.dropped_no_speak), (0, 2));
        // Our own packets never come back in.
        media.received(Id(1), p);
        assert!(media.stats(Id(1)).is_none());
    }
}
