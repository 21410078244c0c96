//! A participant's upstream: the short path for their microphone's packets, and the
//! reception statistics behind the relay's receiver reports.
//!
//! Once the connection has opened one of their audio packets, and the tapped keys show which
//! SRTP context opens it too (`concord_media::direct_srtp::remote_context`), the rest of that
//! SSRC's packets are decrypted and parsed here and go straight to the forwarder, skipping
//! the connection's per-packet pipeline. STUN, DTLS, RTCP and video still go through the
//! connection. So the connection no longer sees every packet, and the relay keeps the
//! RFC 3550 statistics itself (`concord_media::reception`), for audio and video alike: they
//! fill the receiver reports it sends (`reports`), and the loss and jitter it shows.

use std::time::Instant;

use concord_media::direct_srtp::{self, KeyTap};
use concord_media::reception::Reception;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::shared::marshal::Unmarshal;
use rtc::srtp::context::Context;

const OPUS_CLOCK: u32 = 48_000;
const VP8_CLOCK: u32 = 90_000;

/// What became of a datagram from the participant.
pub(super) enum Taken {
    /// One of their audio packets, opened here.
    Audio(rtp::Packet),
    /// An audio packet that does not open (replayed, altered): dropped.
    Refused,
    /// Everything else: for the connection.
    Connection,
}

enum Path {
    /// The next packet of the audio SSRC tests the tapped keys.
    Untested,
    Ready(Box<Context>),
    /// No tapped key opens their packets: all goes through the connection.
    Off,
}

/// One incoming stream and the receiver it arrives on (its reports go out through it).
struct Stream {
    reception: Reception,
    receiver: RTCRtpReceiverId,
}

pub(super) struct Upstream {
    path: Path,
    /// One stream per kind: a new SSRC (a screen share restarted) replaces the old one.
    audio: Option<Stream>,
    video: Option<Stream>,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            path: Path::Untested,
            audio: None,
            video: None,
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
        if ssrc_of(datagram) != Some(audio.reception.ssrc()) {
            return Taken::Connection;
        }
        match &mut self.path {
            Path::Off => Taken::Connection,
            Path::Untested => {
                // The connection opens this one too (and delivers it); the context found has
                // opened it as well, so both continue from here.
                self.path = match direct_srtp::remote_context(tap, datagram) {
                    Some((context, _)) => {
                        metrics::counter!("concord_sfu_direct_srtp_total", "direction" => "up", "result" => "matched").increment(1);
                        Path::Ready(Box::new(context))
                    }
                    None => {
                        metrics::counter!("concord_sfu_direct_srtp_total", "direction" => "up", "result" => "mismatch").increment(1);
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
                    .decrypt_rtp(datagram)
                    .ok()
                    .and_then(|plain| rtp::Packet::unmarshal(&mut &plain[..]).ok());
                match packet {
                    Some(packet) => {
                        audio.reception.on_rtp(
                            packet.header.sequence_number,
                            packet.header.timestamp,
                            now,
                        );
                        Taken::Audio(packet)
                    }
                    None => Taken::Refused,
                }
            }
        }
    }

    /// RTCP from the participant still goes to the connection; a copy opened here shows
    /// their sender reports (the receiver reports' LSR and DLSR, from which they get RTT).
    fn peek_rtcp(&mut self, datagram: &[u8], now: Instant) {
        let Path::Ready(context) = &mut self.path else {
            return;
        };
        let Ok(plain) = context.decrypt_rtcp(datagram) else {
            return;
        };
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut &plain[..]) else {
            return;
        };
        for packet in &packets {
            if let Some(sr) = packet.as_any().downcast_ref::<SenderReport>() {
                for stream in [&mut self.audio, &mut self.video].into_iter().flatten() {
                    if stream.reception.ssrc() == sr.ssrc {
                        stream.reception.on_sender_report(sr.ntp_time, now);
                    }
                }
            }
        }
    }

    /// A packet the connection delivered (audio before the short path is ready, video).
    pub fn on_delivered(
        &mut self,
        video: bool,
        receiver: RTCRtpReceiverId,
        header: &rtp::header::Header,
        now: Instant,
    ) {
        let (slot, clock) = if video {
            (&mut self.video, VP8_CLOCK)
        } else {
            (&mut self.audio, OPUS_CLOCK)
        };
        let stream = match slot {
            Some(stream) if stream.reception.ssrc() == header.ssrc => stream,
            _ => slot.insert(Stream {
                reception: Reception::new(header.ssrc, clock, now),
                receiver,
            }),
        };
        stream
            .reception
            .on_rtp(header.sequence_number, header.timestamp, now);
    }

    /// The report block for each stream that has sent, and the receiver it goes out on.
    pub fn reports(&mut self, now: Instant) -> Vec<(RTCRtpReceiverId, ReceptionReport)> {
        [&mut self.audio, &mut self.video]
            .into_iter()
            .flatten()
            .filter(|s| s.reception.received() > 0)
            .map(|s| (s.receiver, s.reception.report(now)))
            .collect()
    }

    /// Their microphone's (received, lost, jitter in ms), once it has sent.
    pub fn audio_counts(&self) -> Option<(u64, i64, f64)> {
        self.audio.as_ref().map(|s| {
            (
                s.reception.received(),
                s.reception.lost(),
                s.reception.jitter_ms(),
            )
        })
    }
}
