//! Audio level as RFC 6464 carries it: 0 (loudest, 0 dBov) to 127 (-127 dBov, silence).

/// The level of one frame, in -dBov (0..=127).
pub fn dbov(frame: &[i16]) -> u8 {
    if frame.is_empty() {
        return 127;
    }
    let sum: f64 = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / frame.len() as f64).sqrt() / f64::from(i16::MAX);
    if rms <= 0.0 {
        return 127;
    }
    (-20.0 * rms.log10()).round().clamp(0.0, 127.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_rfc_6464() {
        assert_eq!(dbov(&[0; 960]), 127);
        assert_eq!(dbov(&[i16::MAX; 960]), 0);
        // A full-scale sine has an RMS 3 dB under full scale.
        let sine: Vec<i16> = (0..960)
            .map(|i| ((i as f64 * 0.1).sin() * f64::from(i16::MAX)) as i16)
            .collect();
        assert_eq!(dbov(&sine), 3);
        let quiet: Vec<i16> = sine.iter().map(|s| s / 100).collect();
        assert_eq!(dbov(&quiet), 43);
    }
}
