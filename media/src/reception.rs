//! RFC 3550 reception statistics for one incoming RTP stream (appendix A.1, A.3, A.8): what a
//! receiver report says about it. Sans-IO: every call takes `now`. The SFU keeps these itself
//! because its upstream audio skips the peer connection's pipeline (and its report
//! interceptor) once the short path is ready.

use std::time::Instant;

use rtc::rtcp::reception_report::ReceptionReport;

/// A jump of at most this many sequence numbers ahead is loss, not a restart (A.1).
const MAX_DROPOUT: u16 = 3000;
/// A packet at most this far behind is late, not a restart (A.1).
const MAX_MISORDER: u16 = 100;

pub struct Reception {
    ssrc: u32,
    clock_rate: f64,
    epoch: Instant,
    /// None until the first packet.
    base_seq: Option<u32>,
    max_seq: u16,
    /// Sequence-number cycles, shifted (count << 16).
    cycles: u32,
    /// After a large jump: the next sequence number that confirms the stream restarted.
    bad_seq: Option<u16>,
    received: u64,
    /// Expected and received at the last report (for its fraction lost).
    expected_prior: u64,
    received_prior: u64,
    last_transit: Option<f64>,
    /// Interarrival jitter, in timestamp units.
    jitter: f64,
    /// The last sender report: its NTP time's middle 32 bits, and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

impl Reception {
    pub fn new(ssrc: u32, clock_rate: u32, now: Instant) -> Reception {
        Reception {
            ssrc,
            clock_rate: f64::from(clock_rate),
            epoch: now,
            base_seq: None,
            max_seq: 0,
            cycles: 0,
            bad_seq: None,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            last_transit: None,
            jitter: 0.0,
            last_sr: None,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    fn restart(&mut self, seq: u16) {
        self.base_seq = Some(u32::from(seq));
        self.max_seq = seq;
        self.cycles = 0;
        self.bad_seq = None;
        self.received = 0;
        self.expected_prior = 0;
        self.received_prior = 0;
    }

    /// One packet arrived.
    pub fn on_rtp(&mut self, seq: u16, timestamp: u32, now: Instant) {
        if self.base_seq.is_none() {
            self.restart(seq);
        } else {
            let ahead = seq.wrapping_sub(self.max_seq);
            if ahead < MAX_DROPOUT {
                if seq < self.max_seq {
                    self.cycles = self.cycles.wrapping_add(1 << 16);
                }
                self.max_seq = seq;
            } else if ahead <= u16::MAX - MAX_MISORDER {
                // A large jump: a restart only if the next packet follows it.
                if self.bad_seq == Some(seq) {
                    self.restart(seq);
                } else {
                    self.bad_seq = Some(seq.wrapping_add(1));
                    return;
                }
            }
            // Otherwise late or duplicated: counted, as RFC 3550 does.
        }
        self.received += 1;
        let arrival = now.saturating_duration_since(self.epoch).as_secs_f64() * self.clock_rate;
        let transit = arrival - f64::from(timestamp);
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            // Timestamps wrap; a difference that large is a discontinuity, not jitter.
            if d < self.clock_rate * 10.0 {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.last_transit = Some(transit);
    }

    /// A sender report for this stream arrived (`ntp_time`: its 64-bit NTP timestamp).
    pub fn on_sender_report(&mut self, ntp_time: u64, now: Instant) {
        self.last_sr = Some(((ntp_time >> 16) as u32, now));
    }

    fn extended_max(&self) -> u32 {
        self.cycles | u32::from(self.max_seq)
    }

    fn expected(&self) -> u64 {
        match self.base_seq {
            None => 0,
            Some(base) => u64::from(self.cycles) + u64::from(self.max_seq) + 1 - u64::from(base),
        }
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    /// Cumulative packets lost (negative with duplicates, as in RFC 3550).
    pub fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    pub fn jitter_ms(&self) -> f64 {
        self.jitter / self.clock_rate * 1000.0
    }

    /// The report block for a receiver report; starts the next report's interval.
    pub fn report(&mut self, now: Instant) -> ReceptionReport {
        let expected = self.expected();
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        let (last_sender_report, delay) = match self.last_sr {
            Some((lsr, at)) => (
                lsr,
                (now.saturating_duration_since(at).as_secs_f64() * 65536.0) as u32,
            ),
            None => (0, 0),
        };
        ReceptionReport {
            ssrc: self.ssrc,
            fraction_lost,
            // 24 bits, clamped (RFC 3550 6.4.1); never negative here.
            total_lost: self.lost().clamp(0, 0x7f_ffff) as u32,
            last_sequence_number: self.extended_max(),
            jitter: self.jitter as u32,
            last_sender_report,
            delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS20: Duration = Duration::from_millis(20);

    /// Opus at 50 packets/s: 960 timestamp units per packet.
    fn feed(r: &mut Reception, seqs: impl IntoIterator<Item = u16>, start: Instant) {
        for seq in seqs {
            let n = u32::from(seq.wrapping_sub(65_500));
            r.on_rtp(seq, n * 960, start + MS20 * n);
        }
    }

    #[test]
    fn counts_loss_across_a_sequence_wrap() {
        let t0 = Instant::now();
        let mut r = Reception::new(7, 48_000, t0);
        // 65500..=65535 then 0..=63, with 10 and 11 missing.
        let seqs: Vec<u16> = (65_500..=u16::MAX)
            .chain(0..64)
            .filter(|s| *s != 10 && *s != 11)
            .collect();
        feed(&mut r, seqs.iter().copied(), t0);
        assert_eq!(r.received(), 98);
        assert_eq!(r.lost(), 2);
        let report = r.report(t0 + Duration::from_secs(2));
        assert_eq!(report.ssrc, 7);
        assert_eq!(report.last_sequence_number, (1 << 16) | 63);
        assert_eq!(report.total_lost, 2);
        // 2 of 100 expected: 2 * 256 / 100.
        assert_eq!(report.fraction_lost, 5);
        // Packets on time: no jitter.
        assert_eq!(report.jitter, 0);
        // The next interval starts clean.
        r.on_rtp(64, 100 * 960, t0 + MS20 * 100);
        assert_eq!(r.report(t0 + Duration::from_secs(3)).fraction_lost, 0);
    }

    #[test]
    fn late_and_duplicate_packets_are_not_loss() {
        let t0 = Instant::now();
        let mut r = Reception::new(1, 48_000, t0);
        feed(&mut r, [65_500, 65_502, 65_501, 65_503, 65_503], t0);
        assert_eq!(r.lost(), -1);
        let report = r.report(t0);
        assert_eq!(report.total_lost, 0);
        assert_eq!(report.fraction_lost, 0);
        assert_eq!(report.last_sequence_number, 65_503);
    }

    #[test]
    fn a_large_jump_restarts_only_when_confirmed() {
        let t0 = Instant::now();
        let mut r = Reception::new(1, 48_000, t0);
        feed(&mut r, [65_500, 65_501], t0);
        // One stray packet far ahead: ignored.
        r.on_rtp(20_000, 0, t0);
        assert_eq!((r.received(), r.lost()), (2, 0));
        // Followed by its successor: the stream restarted there.
        r.on_rtp(20_001, 960, t0 + MS20);
        assert_eq!((r.received(), r.lost()), (1, 0));
        assert_eq!(r.report(t0).last_sequence_number, 20_001);
    }

    #[test]
    fn jitter_follows_late_arrivals() {
        let t0 = Instant::now();
        let mut r = Reception::new(1, 48_000, t0);
        for n in 0..200u32 {
            // Every other packet 10 ms late.
            let late = if n % 2 == 1 {
                Duration::from_millis(10)
            } else {
                Duration::ZERO
            };
            r.on_rtp(n as u16, n * 960, t0 + MS20 * n + late);
        }
        // |D| is 10 ms every packet: the estimate converges to 10 ms (480 units).
        assert!((r.jitter_ms() - 10.0).abs() < 0.5, "{}", r.jitter_ms());
        assert!((470..=490).contains(&r.report(t0).jitter));
    }

    #[test]
    fn delay_since_the_last_sender_report() {
        let t0 = Instant::now();
        let mut r = Reception::new(1, 48_000, t0);
        assert_eq!(r.report(t0).last_sender_report, 0);
        r.on_sender_report(0x1234_5678_9abc_def0, t0);
        let report = r.report(t0 + Duration::from_millis(500));
        assert_eq!(report.last_sender_report, 0x5678_9abc);
        assert_eq!(report.delay, 32_768);
    }
}
