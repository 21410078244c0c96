//! Playback sinks: a WAV file (with statistics) for tests and headless nodes. Device
//! playback (cpal) takes the same frames behind a cargo feature.

use std::path::Path;

use super::SAMPLE_RATE;

pub struct WavSink {
    writer: hound::WavWriter<std::io::BufWriter<std::fs::File>>,
    pub frames: u64,
    pub peak: i16,
}

impl WavSink {
    pub fn create(path: &Path) -> Result<WavSink, String> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        Ok(WavSink {
            writer: hound::WavWriter::create(path, spec).map_err(|e| e.to_string())?,
            frames: 0,
            peak: 0,
        })
    }

    pub fn write(&mut self, frame: &[i16]) -> Result<(), String> {
        for &s in frame {
            self.writer.write_sample(s).map_err(|e| e.to_string())?;
            self.peak = self.peak.max(s.saturating_abs());
        }
        self.frames += 1;
        Ok(())
    }

    pub fn finish(self) -> Result<(), String> {
        self.writer.finalize().map_err(|e| e.to_string())
    }
}
