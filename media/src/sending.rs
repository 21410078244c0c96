//! RFC 3550 sender statistics for one outgoing RTP stream (section 6.4.1): what a sender
//! report says about it. Sans-IO: every call takes `now`. The SFU keeps these itself because
//! its forwarded audio skips the peer connection's pipeline (and the sender-report
//! interceptor, whose counts would stop at the first packet) once the short path is ready;
//! and one compound report per connection is one datagram where the interceptor sent one
//! per stream.

use std::time::Instant;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
