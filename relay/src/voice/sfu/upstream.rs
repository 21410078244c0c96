//! A participant's upstream: the short path for their microphone's packets, and the
//! reception statistics behind the relay's receiver reports.
//!
//! Once the connection has opened one of their audio packets, and the tapped keys show which
//! SRTP context opens it too (`concord_media::direct_srtp::remote_context`), the rest of that
//! SSRC's packets are decrypted and parsed here and go straight to the forwarder, skipping
//! the connection's per-packet pipeline. STUN, DTLS, RTCP and video still go through the
//! connection. So the connection no longer sees every packet, and the relay keeps the
//! RFC 3550 statistics itself (`concord_media::reception`), for audio and video alike: they
//! fill the reception blocks of the reports it sends (`reports`), and the loss and jitter it shows.
//! The participant's own reception blocks on what the relay sends them give the round trip
//! (RFC 3550: their LSR and DLSR against the relay's sender reports).
//!
//! Every second, one compound RTCP packet per connection: a sender report per slot that has
//! sent (`concord_media::sending`, counted by `Peer::on_sent`), the reception blocks in the
//! first (`sfu_media_engine` registers no report interceptor). LSR/DLSR come from the
//! participant's own sender reports, read from a copy of their RTCP opened with the same
//! key; the round trip (`sending::round_trip`) shows in `…/sfu/stats`, the ICE consent
//! checks' until they have reported.

use std::time::{Duration, Instant};

use concord_media::direct_srtp::{self, KeyTap, Srtp};
use concord_media::reception::Reception;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp;
use rtc::shared::marshal::Unmarshal;

use super::direct::count_key_test;

/// What became of a datagram from the participant.
pub(super) enum Taken {
    /// One of their audio packets, opened here.
    Audio(rtp::Packet),
    /// An audio packet that does not open (replayed, altered): dropped.
    Refused,
    /// Everything else: for the connection.
    Connection,
}

// Ready is kept inline, not boxed: every upstream packet uses it, and a box was one more
// cache miss each time.
#[allow(clippy::large_enum_variant)]
enum Path {
    /// The next packet of the audio SSRC tests the tapped keys.
    Untested,
    Ready(Srtp),
    /// No tapped key opens their packets: all goes through the connection.
    Off,
}

pub(super) struct Upstream {
    path: Path,
    /// One stream per kind: a new SSRC (a screen share restarted) replaces the old one.
    audio: Option<Reception>,
    video: Option<Reception>,
    /// The last round trip their reception blocks showed.
    rtt: Option<Duration>,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            path: Path::Untested,
            audio: None,
            video: None,
            rtt: None,
        }
    }
}

/// An RTP packet's SSRC, read from its clear header.
fn ssrc_of(datagram: &[u8]) -> Option<u32> {
    let bytes = datagram.get(8..12)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

impl Upstream {
    /// A datagram from the participant, before the connection sees it.
    pub fn take(&mut self, tap: &KeyTap, datagram: &[u8], now: Instant) -> Taken {
        if !direct_srtp::is_rtp_or_rtcp(datagram) {
            return Taken::Connection;
        }
        if !direct_srtp::is_rtp(datagram) {
            self.peek_rtcp(datagram, now);
            return Taken::Connection;
        }
        let Some(audio) = &mut self.audio else {
            return Taken::Connection;
        };
        if ssrc_of(datagram) != Some(audio.ssrc()) {
            return Taken::Connection;
        }
        match &mut self.path {
            Path::Off => Taken::Connection,
            Path::Untested => {
                // The connection opens this one too (and delivers it); the context found has
                // opened it as well, so both continue from here.
                let found = direct_srtp::remote_context(tap, datagram);
                count_key_test("up", found.is_some());
                self.path = match found {
                    Some((context, _)) => Path::Ready(context),
                    None => {
                        tracing::info!(
                            "sfu: no tapped key opens a participant's audio; it keeps the full pipeline"
                        );
                        Path::Off
                    }
                };
                Taken::Connection
            }
            Path::Ready(context) => {
                let packet = context
                    .unprotect_rtp(datagram)
                    .ok()
                    .and_then(|plain| rtp::Packet::unmarshal(&mut &plain[..]).ok());
                match packet {
                    Some(packet) => {
                        audio.on_rtp(packet.header.sequence_number, packet.header.timestamp, now);
                        Taken::Audio(packet)
                    }
                    None => Taken::Refused,
                }
            }
        }
    }

    /// RTCP from the participant still goes to the connection; a copy opened here shows
    /// their sender reports (the receiver reports' LSR and DLSR, from which they get RTT) and
    /// their reception blocks on the relay's slots (from which the relay gets it).
    fn peek_rtcp(&mut self, datagram: &[u8], now: Instant) {
        let Path::Ready(context) = &mut self.path else {
            return;
        };
        let Ok(plain) = context.unprotect_rtcp(datagram) else {
            return;
        };
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut &plain[..]) else {
            return;
        };
        for packet in &packets {
            let blocks = if let Some(sr) = packet.as_any().downcast_ref::<SenderReport>() {
                for stream in [&mut self.audio, &mut self.video].into_iter().flatten() {
                    if stream.ssrc() == sr.ssrc {
                        stream.on_sender_report(sr.ntp_time, now);
                    }
                }
                &sr.reports
            } else if let Some(rr) = packet.as_any().downcast_ref::<ReceiverReport>() {
                &rr.reports
            } else {
                continue;
            };
            // Only the relay sends them media: every block with an LSR names one of its
            // sender reports.
            for block in blocks.iter().filter(|b| b.last_sender_report != 0) {
                let arrival = rtc::shared::time::SystemInstant::now(now).ntp(now);
                if let Some(rtt) = concord_media::sending::round_trip(
                    block.last_sender_report,
                    block.delay,
                    arrival,
                ) {
                    self.rtt = Some(rtt);
                }
            }
        }
    }

    /// The round trip to the participant from their last reception block with an LSR.
    pub fn rtcp_rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// A packet the connection delivered (audio before the short path is ready, video).
    pub fn on_delivered(&mut self, video: bool, header: &rtp::header::Header, now: Instant) {
        let (slot, clock) = if video {
            (&mut self.video, concord_media::VP8_CLOCK_RATE)
        } else {
            (&mut self.audio, concord_media::OPUS_CLOCK_RATE)
        };
        let stream = match slot {
            Some(stream) if stream.ssrc() == header.ssrc => stream,
            _ => slot.insert(Reception::new(header.ssrc, clock, now)),
        };
        stream.on_rtp(header.sequence_number, header.timestamp, now);
    }

    /// The report block for each stream that has sent.
    pub fn reports(&mut self, now: Instant) -> Vec<ReceptionReport> {
        [&mut self.audio, &mut self.video]
            .into_iter()
            .flatten()
            .filter(|s| s.received() > 0)
            .map(|s| s.report(now))
            .collect()
    }

    /// Their microphone's (received, lost, jitter in ms), once it has sent.
    pub fn audio_counts(&self) -> Option<(u64, i64, f64)> {
        self.audio
            .as_ref()
            .map(|s| (s.received(), s.lost(), s.jitter_ms()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::sender_report::SenderReport;
    use rtc::shared::marshal::Marshal;
    use rtc::srtp::context::Context;
    use rtc::srtp::protection_profile::ProtectionProfile;

    fn packet(ssrc: u32, seq: u16) -> rtp::Packet {
        rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: 111,
                sequence_number: seq,
                timestamp: u32::from(seq) * 960,
                ssrc,
                ..Default::default()
            },
            payload: bytes::Bytes::from(vec![0xf8; 40]),
        }
    }

    /// The participant's sending context, made through the tap as the connection's DTLS
    /// handler makes its remote one.
    fn participant(tap: &KeyTap) -> Context {
        let profile = ProtectionProfile::AeadAes128Gcm;
        let key = vec![3; profile.key_len()];
        let salt = vec![9; profile.salt_len()];
        Context::new(
            &key,
            &salt,
            profile,
            None,
            None,
            rtc::crypto::RTCCryptoProvider::crypto(tap),
        )
        .expect("context")
    }

    fn sealed(sender: &mut Context, ssrc: u32, seq: u16) -> Vec<u8> {
        let plain = packet(ssrc, seq).marshal().expect("marshal");
        sender.encrypt_rtp(&plain).expect("encrypt").to_vec()
    }

    #[test]
    fn audio_takes_the_short_path_once_tested_and_bad_packets_are_refused() {
        let tap = KeyTap::new().unwrap();
        let mut sender = participant(&tap);
        let mut up = Upstream::default();
        let t0 = Instant::now();
        // Nothing known of their audio yet: the connection opens it and delivers it.
        let first = sealed(&mut sender, 5, 10);
        assert!(matches!(up.take(&tap, &first, t0), Taken::Connection));
        up.on_delivered(false, &packet(5, 10).header, t0);
        // The next one tests the keys (and still goes through the connection).
        let second = sealed(&mut sender, 5, 11);
        assert!(matches!(up.take(&tap, &second, t0), Taken::Connection));
        up.on_delivered(false, &packet(5, 11).header, t0);
        // From then on it is opened here.
        let third = sealed(&mut sender, 5, 12);
        match up.take(&tap, &third, t0) {
            Taken::Audio(p) => {
                assert_eq!(p.header.sequence_number, 12);
                assert_eq!(p.payload, packet(5, 12).payload);
            }
            _ => panic!("the third packet takes the short path"),
        }
        // Replayed or altered: refused, and the statistics do not move.
        assert!(matches!(up.take(&tap, &third, t0), Taken::Refused));
        let mut altered = sealed(&mut sender, 5, 13);
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(matches!(up.take(&tap, &altered, t0), Taken::Refused));
        // Another SSRC (their video, say) and STUN go to the connection.
        let video = sealed(&mut sender, 6, 1);
        assert!(matches!(up.take(&tap, &video, t0), Taken::Connection));
        assert!(matches!(
            up.take(&tap, &[0, 1, 0, 0], t0),
            Taken::Connection
        ));
        // Their sender report goes to the connection, and its time reaches our report.
        let sr = SenderReport {
            ssrc: 5,
            ntp_time: 0x1111_2222_3333_4444,
            ..Default::default()
        };
        let sr = sender
            .encrypt_rtcp(&sr.marshal().expect("marshal"))
            .expect("encrypt");
        assert!(matches!(up.take(&tap, &sr, t0), Taken::Connection));
        let reports = up.reports(t0 + std::time::Duration::from_secs(1));
        assert_eq!(reports.len(), 1);
        let report = &reports[0];
        assert_eq!(report.ssrc, 5);
        assert_eq!(report.last_sequence_number, 12);
        assert_eq!((report.total_lost, report.fraction_lost), (0, 0));
        assert_eq!(report.last_sender_report, 0x2222_3333);
        assert_eq!(report.delay, 65_536);
        assert_eq!(up.audio_counts().map(|c| (c.0, c.1)), Some((3, 0)));

        // Their reception block on one of the relay's slots: the relay's report left 300 ms
        // ago and they held it 250 ms, so the round trip is 50 ms.
        assert_eq!(up.rtcp_rtt(), None);
        let ntp = rtc::shared::time::SystemInstant::now(t0).ntp(t0);
        let ago = |secs: f64| ((ntp >> 16) as u32).wrapping_sub((secs * 65_536.0) as u32);
        let rr = ReceiverReport {
            ssrc: 5,
            reports: vec![
                // A block that names no report of ours is no measure.
                ReceptionReport {
                    ssrc: 901,
                    ..Default::default()
                },
                ReceptionReport {
                    ssrc: 900,
                    last_sender_report: ago(0.3),
                    delay: (0.25 * 65_536.0) as u32,
                    ..Default::default()
                },
            ],
            profile_extensions: bytes::Bytes::new(),
        };
        let rr = sender
            .encrypt_rtcp(&rr.marshal().expect("marshal"))
            .expect("encrypt");
        assert!(matches!(up.take(&tap, &rr, t0), Taken::Connection));
        let rtt = up.rtcp_rtt().expect("a round trip").as_secs_f64();
        assert!((rtt - 0.05).abs() < 0.002, "{rtt}");
    }

    #[test]
    fn keys_that_open_nothing_leave_the_audio_on_the_connection() {
        let tap = KeyTap::new().unwrap();
        // The participant's keys were never derived through this tap.
        let mut sender = participant(&KeyTap::new().unwrap());
        let mut up = Upstream::default();
        let t0 = Instant::now();
        up.on_delivered(false, &packet(5, 1).header, t0);
        for seq in 2..5 {
            let datagram = sealed(&mut sender, 5, seq);
            assert!(matches!(up.take(&tap, &datagram, t0), Taken::Connection));
        }
        assert!(matches!(up.path, Path::Off));
    }
}
