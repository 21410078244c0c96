//! A three-way call in virtual time through the whole voice engine: two speakers with sine
//! sources at different frequencies and a listener who also speaks; packets cross a lossy,
//! reordering network into per-speaker jitter buffers, are decoded (PLC and FEC for losses),
//! mixed without the listener's own voice, and written to a WAV sink. An FFT of the sink
//! finds both speakers' frequencies and not the listener's; a muted speaker is not heard.

use std::collections::HashMap;

use concord_node::voice_engine::codec::{Decoder, Encoder, Packet};
use concord_node::voice_engine::jitter::{JitterBuffer, Playout};
use concord_node::voice_engine::mixer::mix;
use concord_node::voice_engine::sink::WavSink;
use concord_node::voice_engine::source::{Sine, Source};
use concord_node::voice_engine::{FRAME, FRAME_MS, SAMPLE_RATE};
use concord_proto::Id;
use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

/// A deterministic pseudo-random sequence (the network's dice).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

struct Speaker {
    id: Id,
    source: Sine,
    encoder: Encoder,
}

/// What the listener's sink got, and how many frames were concealed / rebuilt by FEC.
struct Heard {
    samples: Vec<i16>,
    concealed: u64,
    recovered: u64,
}

/// Runs a call of `frames` frames as heard by the listener (id 3).
fn call(frames: usize, muted: &[Id], loss_percent: u64, dir: &std::path::Path) -> Heard {
    let listener = Id(3);
    let mut speakers: Vec<Speaker> = [(Id(1), 440.0), (Id(2), 1_000.0), (listener, 700.0)]
        .into_iter()
        .map(|(id, hz)| Speaker {
            id,
            source: Sine::new(hz, 0.25),
            encoder: Encoder::new(32_000, 10).unwrap(),
        })
        .collect();
    for s in &mut speakers {
        s.encoder.set_muted(muted.contains(&s.id));
    }
    let mut dice = Lcg(7);
    // (delivery time, sender, packet) in flight.
    let mut in_flight: Vec<(i64, Id, Packet)> = Vec::new();
    let mut buffers: HashMap<Id, JitterBuffer> = HashMap::new();
    let mut decoders: HashMap<Id, Decoder> = HashMap::new();
    let path = dir.join("sink.wav");
    let mut sink = WavSink::create(&path).unwrap();
    for tick in 0..frames as i64 {
        let now = tick * FRAME_MS;
        // Everyone captures and sends; the listener's own packets go to the others only.
        for s in &mut speakers {
            let frame = s.source.next_frame();
            if let Some(p) = s.encoder.encode(&frame).unwrap()
                && s.id != listener
                && dice.next() % 100 >= loss_percent
            {
                let delay = 10 + (dice.next() % 50) as i64;
                in_flight.push((now + delay, s.id, p));
            }
        }
        let (arrived, later): (Vec<_>, Vec<_>) =
            in_flight.drain(..).partition(|(at, _, _)| *at <= now);
        in_flight = later;
        for (at, from, p) in arrived {
            buffers.entry(from).or_default().push(p, at);
        }
        // Playout: one frame per remote speaker, mixed.
        let mut decoded: Vec<(Id, Vec<i16>)> = Vec::new();
        for (from, jb) in &mut buffers {
            let dec = decoders
                .entry(*from)
                .or_insert_with(|| Decoder::new().unwrap());
            let frame = match jb.pop(now) {
                Playout::Audio(payload) => dec.decode(&payload),
                Playout::Lost { next: Some(next) } => dec.recover(&next),
                Playout::Lost { next: None } => dec.conceal(),
                Playout::Silence => vec![0; FRAME],
            };
            decoded.push((*from, frame));
        }
        let mixed = mix(listener, decoded.iter().map(|(id, f)| (*id, f.as_slice())));
        sink.write(&mixed).unwrap();
    }
    assert_eq!(sink.frames, frames as u64);
    sink.finish().unwrap();
    let samples: Vec<i16> = hound::WavReader::open(&path)
        .unwrap()
        .into_samples::<i16>()
        .collect::<Result<_, _>>()
        .unwrap();
    Heard {
        samples,
        concealed: decoders.values().map(|d| d.concealed).sum(),
        recovered: decoders.values().map(|d| d.recovered).sum(),
    }
}

/// The spectrum's peak around `hz` relative to the spectrum's strongest peak (1.0: the
/// loudest tone; a tone 40 dB down: 0.01).
fn strength(samples: &[i16], hz: f64) -> f64 {
    let n = 32_768;
    let window = &samples[samples.len() - n..];
    let mut buf: Vec<Complex<f32>> = window
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            // Hann window: less leakage between bins.
            let w = 0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / n as f64).cos();
            Complex::new(f32::from(s) * w as f32, 0.0)
        })
        .collect();
    FftPlanner::new().plan_fft_forward(n).process(&mut buf);
    let mags: Vec<f32> = buf[..n / 2].iter().map(|c| c.norm()).collect();
    let loudest = f64::from(mags.iter().copied().fold(0.0f32, f32::max)).max(1e-3);
    let bin = (hz * n as f64 / f64::from(SAMPLE_RATE)).round() as usize;
    let peak = mags[bin.saturating_sub(3)..=bin + 3]
        .iter()
        .copied()
        .fold(0.0f32, f32::max);
    f64::from(peak) / loudest
}

#[test]
fn each_listener_hears_the_others_and_not_itself() {
    let dir = tempfile::tempdir().unwrap();
    let heard = call(150, &[], 5, dir.path());
    let s = &heard.samples;
    let (a, b, me) = (strength(s, 440.0), strength(s, 1_000.0), strength(s, 700.0));
    eprintln!(
        "relative to the loudest tone: 440 Hz {a:.3}, 1000 Hz {b:.3}, own 700 Hz {me:.5}; concealed {}, rebuilt by FEC {}",
        heard.concealed, heard.recovered
    );
    // Both speakers within 10 dB of the loudest; the listener's own tone 50 dB down.
    assert!(a > 0.3, "the 440 Hz speaker is heard ({a:.3})");
    assert!(b > 0.3, "the 1000 Hz speaker is heard ({b:.3})");
    assert!(me < 0.003, "no self-echo ({me:.5})");
    assert!(
        heard.concealed + heard.recovered > 0,
        "5 % loss was concealed or rebuilt"
    );
}

#[test]
fn a_muted_speaker_is_not_heard() {
    let dir = tempfile::tempdir().unwrap();
    let heard = call(150, &[Id(2)], 0, dir.path());
    let (a, b) = (
        strength(&heard.samples, 440.0),
        strength(&heard.samples, 1_000.0),
    );
    eprintln!("relative to the loudest tone: 440 Hz {a:.3}, muted 1000 Hz {b:.5}");
    assert!(a > 0.99, "the other speaker is the loudest ({a:.3})");
    assert!(b < 0.003, "the muted speaker is silent ({b:.5})");
}
