//! Synthetic audio sources, always available (tests, headless nodes): a sine tone and a WAV
//! file. Device capture (cpal) implements the same trait behind a cargo feature.

use std::path::Path;

use super::{FRAME, Frame, SAMPLE_RATE};

pub trait Source: Send {
    /// The next 20 ms; silence once a finite source runs out.
    fn next_frame(&mut self) -> Frame;
}

/// A continuous sine tone.
pub struct Sine {
    step: f64,
    phase: f64,
    amplitude: f64,
}

impl Sine {
    /// `amplitude` as a fraction of full scale (0..=1).
    pub fn new(frequency_hz: f64, amplitude: f64) -> Sine {
        Sine {
            step: std::f64::consts::TAU * frequency_hz / f64::from(SAMPLE_RATE),
            phase: 0.0,
            amplitude: amplitude.clamp(0.0, 1.0) * f64::from(i16::MAX),
        }
    }
}

impl Source for Sine {
    fn next_frame(&mut self) -> Frame {
        (0..FRAME)
            .map(|_| {
                let s = self.phase.sin() * self.amplitude;
                self.phase = (self.phase + self.step) % std::f64::consts::TAU;
                s as i16
            })
            .collect()
    }
}

/// A 48 kHz mono 16-bit WAV file, played once.
pub struct WavFile {
    samples: std::vec::IntoIter<i16>,
}

impl WavFile {
    pub fn open(path: &Path) -> Result<WavFile, String> {
        let reader = hound::WavReader::open(path).map_err(|e| e.to_string())?;
        let spec = reader.spec();
        if spec.sample_rate != SAMPLE_RATE || spec.channels != 1 || spec.bits_per_sample != 16 {
            return Err(format!(
                "{}: need 48 kHz mono 16-bit PCM, got {} Hz, {} channels, {} bits",
                path.display(),
                spec.sample_rate,
                spec.channels,
                spec.bits_per_sample
            ));
        }
        let samples = reader
            .into_samples::<i16>()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        Ok(WavFile {
            samples: samples.into_iter(),
        })
    }
}

impl Source for WavFile {
    fn next_frame(&mut self) -> Frame {
        let mut frame: Frame = self.samples.by_ref().take(FRAME).collect();
        frame.resize(FRAME, 0);
        frame
    }
}
