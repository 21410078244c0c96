//! RFC 3550 sender statistics for one outgoing RTP stream (section 6.4.1): what a sender
//! report says about it. Sans-IO: every call takes `now`. The SFU keeps these itself because
//! its forwarded audio skips the peer connection's pipeline (and the sender-report
//! interceptor, whose counts would stop at the first packet) once the short path is ready;
//! and one compound report per connection is one datagram where the interceptor sent one
//! per stream.

use std::time::{Duration, Instant};

use rtc::rtcp::sender_report::SenderReport;

pub struct Sending {
    ssrc: u32,
    clock_rate: f64,
    /// Wrapping, as the report's 32-bit fields.
    packets: u32,
    octets: u32,
    /// The newest packet's RTP timestamp and when it was sent: the report's RTP time is
    /// extrapolated from it.
    last: Option<(u32, Instant)>,
}

impl Sending {
    pub fn new(ssrc: u32, clock_rate: u32) -> Sending {
        Sending {
            ssrc,
            clock_rate: f64::from(clock_rate),
            packets: 0,
            octets: 0,
            last: None,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// One packet sent: its RTP timestamp and payload size (octets count payload only).
    pub fn on_rtp(&mut self, timestamp: u32, payload_len: usize, now: Instant) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self
            .octets
            .wrapping_add(u32::try_from(payload_len).unwrap_or(u32::MAX));
        let newer = self.last.is_none_or(|(last, _)| {
            // Half the timestamp space ahead or less is newer (a reordered packet is not).
            timestamp.wrapping_sub(last) < 1 << 31
        });
        if newer {
            self.last = Some((timestamp, now));
        }
    }

    /// The sender report at `now` (wall clock `ntp`, a 64-bit NTP timestamp such as
    /// `rtc::shared::time::SystemInstant::ntp` gives), with no reception blocks; `None`
    /// before the first packet (RFC 3550: only senders send reports).
    pub fn report(&self, now: Instant, ntp: u64) -> Option<SenderReport> {
        let (timestamp, at) = self.last?;
        let elapsed = now.saturating_duration_since(at).as_secs_f64() * self.clock_rate;
        Some(SenderReport {
            ssrc: self.ssrc,
            ntp_time: ntp,
            rtp_time: timestamp.wrapping_add(elapsed as u32),
            packet_count: self.packets,
            octet_count: self.octets,
            ..Default::default()
        })
    }
}

/// The round-trip time a reception block about one of our streams shows (RFC 3550 6.4.1):
/// the block arrived at `arrival_ntp` (64-bit NTP), naming the sender report it last got by
/// its middle 32 bits (`lsr`) and how long it held it (`dlsr`, 1/65536 s). `None` when the
/// block names no report (`lsr` 0) or the result is negative (clocks or a stale block).
pub fn round_trip(lsr: u32, dlsr: u32, arrival_ntp: u64) -> Option<Duration> {
    if lsr == 0 {
        return None;
    }
    let arrival = (arrival_ntp >> 16) as u32;
    let rtt = arrival.wrapping_sub(lsr).wrapping_sub(dlsr);
    // More than half the 16.16 space (about 9 hours) is a negative difference.
    (rtt < 1 << 31).then(|| Duration::from_secs_f64(f64::from(rtt) / 65_536.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_reception_block_gives_the_round_trip() {
        // A report sent at NTP 1000.5 s, held 0.25 s, back at 1000.8 s: 50 ms.
        let ntp = |secs: f64| ((secs * 65_536.0) as u64) << 16;
        let lsr = (ntp(1000.5) >> 16) as u32;
        let dlsr = (0.25 * 65_536.0) as u32;
        let rtt = round_trip(lsr, dlsr, ntp(1000.8)).unwrap();
        assert!((rtt.as_secs_f64() - 0.05).abs() < 1e-4, "{rtt:?}");
        // No report named, or a block that would make it negative: none.
        assert_eq!(round_trip(0, dlsr, ntp(1000.8)), None);
        assert_eq!(round_trip(lsr, dlsr, ntp(1000.6)), None);
        // Across the wrap of the middle 32 bits.
        let lsr = u32::MAX - 10;
        let rtt = round_trip(lsr, 0, u64::from(lsr.wrapping_add(6_554)) << 16).unwrap();
        assert!((rtt.as_secs_f64() - 0.1).abs() < 1e-3, "{rtt:?}");
    }

    #[test]
    fn a_report_counts_what_was_sent_and_extrapolates_the_rtp_time() {
        let t0 = Instant::now();
        let mut s = Sending::new(42, 48_000);
        assert!(s.report(t0, 1).is_none(), "nothing sent: no report");
        // 50 packets of 60 bytes, one per 20 ms, the timestamp wrapping on the way.
        let start = u32::MAX - 960 * 10;
        for n in 0..50u32 {
            s.on_rtp(
                start.wrapping_add(n * 960),
                60,
                t0 + Duration::from_millis(20 * u64::from(n)),
            );
        }
        // A late packet counts but does not move the timestamp back.
        s.on_rtp(start, 60, t0 + Duration::from_millis(990));
        let at = t0 + Duration::from_millis(980 + 250);
        let report = s.report(at, 7).unwrap();
        assert_eq!(report.ssrc, 42);
        assert_eq!(report.ntp_time, 7);
        assert_eq!((report.packet_count, report.octet_count), (51, 51 * 60));
        // Last timestamp + 250 ms at 48 kHz.
        assert_eq!(report.rtp_time, start.wrapping_add(49 * 960 + 12_000));
        assert!(report.reports.is_empty());
    }
}
