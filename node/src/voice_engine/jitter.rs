//! An adaptive jitter buffer for one remote speaker. Packets go in as they arrive; the player
//! takes one 20 ms frame out per tick. Playout starts once the buffer holds its target delay,
//! which follows the measured interarrival jitter (RFC 3550 estimator). A missing frame is
//! silence when the sequence numbers are contiguous (the sender was quiet), else loss: the
//! caller rebuilds it from the next packet's FEC when that packet is here, or conceals it.
//! Bounded: at most `MAX_PACKETS` are held; late packets are dropped and counted.

use std::collections::BTreeMap;

use super::codec::Packet;
use super::{FRAME, FRAME_MS, SAMPLE_RATE};

const MAX_PACKETS: usize = 64;
/// Low enough for a LAN call (the target grows with measured jitter).
const MIN_TARGET_MS: f64 = 30.0;
const MAX_TARGET_MS: f64 = 400.0;

/// What to play for one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    Audio(Vec<u8>),
    /// Lost; `next` is the following packet's payload when it is here (for FEC).
    Lost {
        next: Option<Vec<u8>>,
    },
    /// The speaker was silent (or has not started).
    Silence,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct JitterStats {
    pub received: u64,
    pub played: u64,
    pub lost: u64,
    pub late: u64,
    pub overflow: u64,
    /// Interarrival jitter estimate.
    pub jitter_ms: f64,
    pub target_ms: f64,
}

pub struct JitterBuffer {
    /// timestamp (unwrapped against `next`) → packet
    packets: BTreeMap<i64, Packet>,
    /// The next timestamp to play; `None` before playout starts.
    next: Option<i64>,
    last_seq: Option<u16>,
    first_arrival: Option<i64>,
    last_transit: Option<f64>,
    /// The RTP timestamp of the last packet played (latency probes match it to its capture).
    pub last_played: Option<u32>,
    pub stats: JitterStats,
}

impl Default for JitterBuffer {
    fn default() -> JitterBuffer {
        JitterBuffer {
            packets: BTreeMap::new(),
            next: None,
            last_seq: None,
            first_arrival: None,
            last_transit: None,
            last_played: None,
            stats: JitterStats {
                target_ms: MIN_TARGET_MS,
                ..JitterStats::default()
            },
        }
    }
}

fn ts_ms(ts: i64) -> f64 {
    ts as f64 * 1000.0 / f64::from(SAMPLE_RATE)
}

impl JitterBuffer {
    /// Unwraps a 32-bit RTP timestamp near the play position.
    fn unwrap_ts(&self, ts: u32) -> i64 {
        let reference = self
            .next
            .or_else(|| self.packets.keys().next().copied())
            .unwrap_or(i64::from(ts));
        reference + i64::from(ts.wrapping_sub(reference as u32) as i32)
    }

    pub fn push(&mut self, packet: Packet, arrival_ms: i64) {
        self.stats.received += 1;
        let ts = self.unwrap_ts(packet.timestamp);
        // RFC 3550 §6.4.1: J += (|D| - J) / 16 with D the change in transit time.
        let transit = arrival_ms as f64 - ts_ms(ts);
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            self.stats.jitter_ms += (d - self.stats.jitter_ms) / 16.0;
        }
        self.last_transit = Some(transit);
        self.stats.target_ms =
            (FRAME_MS as f64 + 3.0 * self.stats.jitter_ms).clamp(MIN_TARGET_MS, MAX_TARGET_MS);
        self.first_arrival.get_or_insert(arrival_ms);
        if self.next.is_some_and(|next| ts < next) {
            self.stats.late += 1;
            return;
        }
        if self.packets.len() >= MAX_PACKETS {
            self.stats.overflow += 1;
            self.packets.pop_first();
        }
        self.packets.insert(ts, packet);
    }

    /// The frame to play at `now_ms` (call once per 20 ms).
    pub fn pop(&mut self, now_ms: i64) -> Playout {
        let next = match self.next {
            Some(n) => n,
            None => {
                let Some((&first, _)) = self.packets.first_key_value() else {
                    return Playout::Silence;
                };
                let waited = self.first_arrival.map_or(0, |a| now_ms - a) as f64;
                if waited < self.stats.target_ms {
                    return Playout::Silence;
                }
                first
            }
        };
        self.next = Some(next + FRAME as i64);
        if let Some(packet) = self.packets.remove(&next) {
            self.last_seq = Some(packet.seq);
            self.last_played = Some(packet.timestamp);
            self.stats.played += 1;
            return Playout::Audio(packet.payload);
        }
        let Some((_, following)) = self.packets.first_key_value() else {
            return Playout::Silence;
        };
        let contiguous = self
            .last_seq
            .is_some_and(|s| following.seq == s.wrapping_add(1));
        if contiguous {
            return Playout::Silence;
        }
        self.stats.lost += 1;
        let next_payload = self
            .packets
            .get(&(next + FRAME as i64))
            .map(|p| p.payload.clone());
        // The sequence number the lost packet had is now used up.
        self.last_seq = self.last_seq.map(|s| s.wrapping_add(1));
        Playout::Lost { next: next_payload }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16, frame: u32) -> Packet {
        Packet {
            seq,
            timestamp: frame * FRAME as u32,
            payload: vec![seq as u8],
            level: 30,
        }
    }

    #[test]
    fn reordered_packets_play_in_order_after_the_target_delay() {
        let mut jb = JitterBuffer::default();
        jb.push(packet(1, 1), 25);
        jb.push(packet(0, 0), 30);
        jb.push(packet(2, 2), 45);
        assert_eq!(jb.pop(40), Playout::Silence, "still filling");
        assert_eq!(jb.pop(70), Playout::Audio(vec![0]));
        assert_eq!(jb.pop(90), Playout::Audio(vec![1]));
        assert_eq!(jb.pop(110), Playout::Audio(vec![2]));
        assert_eq!(jb.stats.played, 3);
    }

    #[test]
    fn a_sequence_gap_is_loss_with_fec_and_a_timestamp_gap_is_silence() {
        let mut jb = JitterBuffer::default();
        jb.push(packet(0, 0), 0);
        // seq 1 (frame 1) lost; seq 2 is frame 2.
        jb.push(packet(2, 2), 40);
        // The sender went quiet for frames 3..=4: seq 3 is frame 5.
        jb.push(packet(3, 5), 100);
        assert_eq!(jb.pop(50), Playout::Audio(vec![0]));
        assert_eq!(
            jb.pop(70),
            Playout::Lost {
                next: Some(vec![2])
            }
        );
        assert_eq!(jb.pop(90), Playout::Audio(vec![2]));
        assert_eq!(jb.pop(110), Playout::Silence);
        assert_eq!(jb.pop(130), Playout::Silence);
        assert_eq!(jb.pop(150), Playout::Audio(vec![3]));
        assert_eq!(jb.stats.lost, 1);
        // A packet for a frame already played is late.
        jb.push(packet(1, 1), 160);
        assert_eq!(jb.stats.late, 1);
    }

    #[test]
    fn jitter_raises_the_target_and_the_buffer_is_bounded() {
        let mut jb = JitterBuffer::default();
        for i in 0..200u32 {
            let wobble = if i % 2 == 0 { 0 } else { 60 };
            jb.push(packet(i as u16, i), i64::from(i) * 20 + wobble);
        }
        assert!(jb.stats.jitter_ms > 30.0, "{:?}", jb.stats);
        assert!(jb.stats.target_ms > 100.0);
        assert_eq!(jb.packets.len(), MAX_PACKETS);
        assert_eq!(jb.stats.overflow, 200 - MAX_PACKETS as u64);
    }
}
