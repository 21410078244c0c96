//! Listening to a sink's WAV in tests: which tones are in it, by FFT.

use std::path::Path;

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

const SAMPLE_RATE: f64 = 48_000.0;

/// The samples of a 16-bit mono WAV file.
pub fn read_wav(path: &Path) -> Vec<i16> {
    hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_samples::<i16>()
        .collect::<Result<_, _>>()
        .expect("wav samples")
}

/// The tone at `hz` in `samples` relative to the strongest tone (1.0: the loudest; a tone
/// 40 dB down: 0.01), over the largest power-of-two window that fits. 0 for silence.
pub fn strength(samples: &[i16], hz: f64) -> f64 {
    let n = samples.len().next_power_of_two() / 2;
    assert!(n >= 4_096, "too few samples to analyse: {}", samples.len());
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
    let loudest = f64::from(mags.iter().copied().fold(0.0f32, f32::max));
    if loudest < 1.0 {
        return 0.0;
    }
    let bin = (hz * n as f64 / SAMPLE_RATE).round() as usize;
    let spread = (n / 10_000).max(3);
    let peak = mags[bin.saturating_sub(spread)..=bin + spread]
        .iter()
        .copied()
        .fold(0.0f32, f32::max);
    f64::from(peak) / loudest
}

/// Root mean square of the samples (0 for silence).
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}
