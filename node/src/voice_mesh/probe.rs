//! Mouth-to-ear latency, for benchmarks with every node in one process: the sender notes
//! when each frame was captured (by its RTP timestamp), the listener when that frame was
//! played out; the difference is the latency a person would hear. Bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use concord_proto::Id;

/// Captures remembered at most (about 16 s of four speakers).
const MAX_CAPTURES: usize = 4_096;
/// Latencies kept at most.
const MAX_SAMPLES: usize = 1_000_000;

#[derive(Debug, Default)]
pub struct LatencyProbe {
    captured: Mutex<HashMap<(Id, u32), Instant>>,
    samples: Mutex<Vec<Duration>>,
}

impl LatencyProbe {
    pub fn captured(&self, speaker: Id, timestamp: u32, at: Instant) {
        let mut captured = self.captured.lock().expect("probe");
        if captured.len() >= MAX_CAPTURES {
            // Old captures were played long ago (or lost): forget the older half.
            let cutoff = at - Duration::from_secs(4);
            captured.retain(|_, t| *t > cutoff);
            if captured.len() >= MAX_CAPTURES {
                captured.clear();
            }
        }
        captured.insert((speaker, timestamp), at);
    }

    pub fn played(&self, speaker: Id, timestamp: u32, at: Instant) {
        let Some(captured) = self
            .captured
            .lock()
            .expect("probe")
            .get(&(speaker, timestamp))
            .copied()
        else {
            return;
        };
        let mut samples = self.samples.lock().expect("probe");
        if samples.len() < MAX_SAMPLES {
            samples.push(at.saturating_duration_since(captured));
        }
    }

    /// The latencies measured so far (and clears them).
    pub fn take(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.samples.lock().expect("probe"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_played_frame_is_matched_to_its_capture() {
        let probe = LatencyProbe::default();
        let t0 = Instant::now();
        probe.captured(Id(1), 960, t0);
        probe.played(Id(1), 960, t0 + Duration::from_millis(45));
        // Someone else's frame with the same timestamp, and a frame never captured.
        probe.played(Id(2), 960, t0 + Duration::from_millis(50));
        probe.played(Id(1), 1920, t0 + Duration::from_millis(50));
        assert_eq!(probe.take(), vec![Duration::from_millis(45)]);
        assert!(probe.take().is_empty());
    }
}
