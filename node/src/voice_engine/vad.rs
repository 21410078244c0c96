//! Voice activity detection by frame energy with a hangover, so word endings are not cut:
//! a frame louder than the threshold opens speech, which stays open for `hangover` frames.

use super::level::dbov;

pub struct Vad {
    /// Frames at or above this level (in -dBov, so smaller is louder) are speech.
    threshold: u8,
    hangover: u32,
    left: u32,
}

impl Default for Vad {
    /// -50 dBov, 200 ms of hangover.
    fn default() -> Vad {
        Vad::new(50, 10)
    }
}

impl Vad {
    pub fn new(threshold: u8, hangover_frames: u32) -> Vad {
        Vad {
            threshold,
            hangover: hangover_frames,
            left: 0,
        }
    }

    /// Whether this frame is (still) speech.
    pub fn is_speech(&mut self, frame: &[i16]) -> bool {
        if dbov(frame) <= self.threshold {
            self.left = self.hangover;
            return true;
        }
        if self.left > 0 {
            self.left -= 1;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_opens_and_hangs_over() {
        let mut vad = Vad::new(50, 2);
        let loud = vec![8_000i16; 960];
        let silent = vec![0i16; 960];
        assert!(!vad.is_speech(&silent));
        assert!(vad.is_speech(&loud));
        assert!(vad.is_speech(&silent));
        assert!(vad.is_speech(&silent));
        assert!(!vad.is_speech(&silent));
    }
}
