//! WebRTC audio plumbing shared by the node's voice mesh and the relay's SFU: the media
//! engine (Opus, the RFC 6464 audio-level extension, RTCP reports and NACK), an Opus send
//! track with a fixed SSRC, what a connection negotiated (payload type, extension id), and
//! the audio level read from or written to a packet.
//!
//! `media_engine` is the mesh's; `sfu_media_engine` is the SFU's (no report interceptors: the
//! relay writes its reports itself). `Negotiated::of(sender)` reads the Opus payload type and
//! audio-level id; `level_of` reads a packet's level, `audio_level` writes one.
//!
//! # Layout
//! For the SFU's short paths past the connection's pipeline:
//! - `direct_srtp`: `KeyTap`, the SRTP keys a connection derived, checked before use.
//! - `srtp_gcm`: RFC 7714 AES-GCM for RTP.
//! - `reception`: RFC 3550 receiver statistics, sans-IO.
//! - `sending`: RFC 3550 sender statistics and the round trip, sans-IO.
//! - `keyframe`: the interceptor that passes viewers' keyframe requests (PLI, FIR) on.

use std::sync::Arc;

use rtc::media_stream::MediaStreamTrack;
pub mod direct_srtp;
pub mod keyframe;
pub mod reception;
pub mod sending;
pub mod srtp_gcm;

use rtc::interceptor::Slot;
pub use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RTCRtpSendParameters, RtpCodecKind,
};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{MediaEngine, Registry, configure_nack, configure_rtcp_reports};
use webrtc::rtp_transceiver::RtpSender;

/// RTP clock rates of the codecs both voice sides negotiate (RFC 7587, RFC 7741).
pub const OPUS_CLOCK_RATE: u32 = 48_000;
pub const VP8_CLOCK_RATE: u32 = 90_000;

pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// The CSRC that names a speaker in packets the SFU forwards: FNV-1a (32 bits) of the user
/// id's decimal string (`web/js/voice.js` computes the same).
pub fn audio_source(user_id: i64) -> u32 {
    user_id
        .to_string()
        .bytes()
        .fold(0x811c_9dc5_u32, |hash, b| {
            (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
        })
}

/// The default codecs plus the audio-level extension, and the interceptors that send RTCP
/// sender/receiver reports (RTT, loss), ask for lost packets and answer NACKs.
pub fn media_engine() -> Result<(MediaEngine, Registry), String> {
    let mut engine = MediaEngine::default();
    engine
        .register_default_codecs()
        .map_err(|e| e.to_string())?;
    register_audio_level(&mut engine)?;
    // webrtc's defaults minus transport-wide congestion control: audio at a fixed Opus rate
    // needs no bandwidth estimate, and rtc 0.21 sizes some of its feedback packets wrongly
    // (Chromium peers made the relay log `marshal_to output size 28, but expect 32`).
    let registry = configure_rtcp_reports(configure_nack(Registry::new(), &mut engine));
    Ok((engine, registry))
}

fn register_audio_level(engine: &mut MediaEngine) -> Result<(), String> {
    engine
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: AUDIO_LEVEL_URI.to_owned(),
            },
            RtpCodecKind::Audio,
            Some(RTCRtpTransceiverDirection::Sendrecv),
        )
        .map_err(|e| e.to_string())
}

/// The SFU's engine: Opus and VP8 only (the forwarder reads VP8 keyframes; no RTX, so a
/// retransmission is the original packet on its own SSRC), the audio-level extension, and
/// with `video` NACK both ways and the viewers' keyframe requests passed to the application.
/// No report interceptors: the SFU's audio skips the connection's pipeline both ways, so the
/// relay keeps its own reception and sender statistics ([`reception`], [`sending`]) and sends
/// each connection one compound report a second itself.
pub fn sfu_media_engine(video: bool) -> Result<(MediaEngine, Registry), String> {
    let mut engine = MediaEngine::default();
    engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: opus_codec(),
                payload_type: 111,
            },
            RtpCodecKind::Audio,
        )
        .map_err(|e| e.to_string())?;
    engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: vp8_codec(),
                payload_type: 96,
            },
            RtpCodecKind::Video,
        )
        .map_err(|e| e.to_string())?;
    register_audio_level(&mut engine)?;
    if !video {
        // Audio only: Opus negotiates no NACK and no keyframes, so no interceptor runs; every
        // one is one more queue each packet through the connection crosses, and a timer.
        return Ok((engine, Registry::new()));
    }
    let registry = configure_nack(Registry::new(), &mut engine)
        // Last on the way in: every other interceptor has seen the RTCP first.
        .with(Slot::from(14_000), keyframe::KeyframeRequests::default());
    Ok((engine, registry))
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: OPUS_CLOCK_RATE,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn vp8_codec() -> RTCRtpCodec {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: VP8_CLOCK_RATE,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
    }
}

fn track_of(
    stream_id: &str,
    track_id: &str,
    ssrc: u32,
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
) -> TrackLocalStaticRTP {
    TrackLocalStaticRTP::new(media_track_of(stream_id, track_id, ssrc, kind, codec))
}

fn media_track_of(
    stream_id: &str,
    track_id: &str,
    ssrc: u32,
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
) -> MediaStreamTrack {
    MediaStreamTrack::new(
        stream_id.to_owned(),
        track_id.to_owned(),
        track_id.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )
}

/// A VP8 track that sends pre-built RTP packets under `ssrc`.
pub fn vp8_track(stream_id: &str, track_id: &str, ssrc: u32) -> TrackLocalStaticRTP {
    track_of(stream_id, track_id, ssrc, RtpCodecKind::Video, vp8_codec())
}

/// An Opus track that sends pre-built RTP packets under `ssrc`.
pub fn opus_track(stream_id: &str, track_id: &str, ssrc: u32) -> TrackLocalStaticRTP {
    track_of(stream_id, track_id, ssrc, RtpCodecKind::Audio, opus_codec())
}

/// An Opus send track under `ssrc` for a sans-IO (`rtc`) peer connection.
pub fn opus_media_track(stream_id: &str, track_id: &str, ssrc: u32) -> MediaStreamTrack {
    media_track_of(stream_id, track_id, ssrc, RtpCodecKind::Audio, opus_codec())
}

/// A VP8 send track under `ssrc` for a sans-IO (`rtc`) peer connection.
pub fn vp8_media_track(stream_id: &str, track_id: &str, ssrc: u32) -> MediaStreamTrack {
    media_track_of(stream_id, track_id, ssrc, RtpCodecKind::Video, vp8_codec())
}

/// A host ICE candidate for a sans-IO (`rtc`) connection's socket bound at `addr`.
pub fn host_candidate(
    addr: std::net::SocketAddr,
) -> Result<rtc::peer_connection::transport::RTCIceCandidateInit, String> {
    use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .map_err(|e| format!("host candidate: {e}"))?;
    RTCIceCandidate::from(&candidate)
        .to_json()
        .map_err(|e| format!("host candidate: {e}"))
}

/// A random non-zero SSRC.
pub fn random_ssrc() -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("system randomness");
    u32::from_le_bytes(b).max(1)
}

/// What a connection negotiated for audio, read from one of its senders once connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Negotiated {
    pub payload_type: Option<u8>,
    pub level_id: Option<u8>,
}

/// The payload type a sender negotiated for `mime_type` (e.g. the SFU's VP8 slot).
pub async fn payload_type_of(sender: &Arc<dyn RtpSender>, mime_type: &str) -> Option<u8> {
    let params = sender.get_parameters().await.ok()?;
    payload_type_in(&params, mime_type)
}

/// The payload type negotiated for `mime_type` in a sender's parameters.
pub fn payload_type_in(params: &RTCRtpSendParameters, mime_type: &str) -> Option<u8> {
    params
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime_type))
        .map(|c| c.payload_type)
}

impl Negotiated {
    pub async fn of(sender: &Arc<dyn RtpSender>) -> Option<Negotiated> {
        let params = sender.get_parameters().await.ok()?;
        Some(Negotiated::in_parameters(&params))
    }

    /// What a sender's parameters say (a sans-IO connection's sender, once connected).
    pub fn in_parameters(params: &RTCRtpSendParameters) -> Negotiated {
        Negotiated {
            payload_type: payload_type_in(params, MIME_TYPE_OPUS),
            level_id: params
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|e| e.uri == AUDIO_LEVEL_URI)
                .and_then(|e| u8::try_from(e.id).ok()),
        }
    }
}

/// The extension for a packet at `level` (-dBov, 0 loudest, 127 silence) that passed VAD.
pub fn audio_level(level: u8) -> HeaderExtension {
    HeaderExtension::AudioLevel(AudioLevelExtension {
        level: level.min(127),
        voice: true,
    })
}

/// The RFC 6464 element (one byte: the voice flag and the level, clamped to 127) to put on a
/// header with `Header::set_extension` under the negotiated id: what `audio_level` marshals
/// to, without a map and a buffer per packet.
pub fn audio_level_element(level: u8) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(&[0x80 | level.min(127)])
}

/// A packet's RFC 6464 level given the negotiated extension id (127, silence, when it is
/// absent or unreadable).
pub fn level_of(packet: &rtp::Packet, level_id: Option<u8>) -> u8 {
    level_id
        .and_then(|id| packet.header.get_extension(id))
        .and_then(|b| b.first().copied())
        .map(|b| b & 0x7f)
        .unwrap_or(127)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::shared::marshal::{Marshal, MarshalSize, Unmarshal};

    /// A viewer's NACK is answered from what the SFU's video connections sent: the engine
    /// for video registers the NACK responder (and negotiates `nack` for VP8); audio's has
    /// no interceptor at all.
    #[test]
    fn the_sfus_video_connections_resend_what_a_viewer_nacks() {
        use rtc::interceptor::{
            AttributedPacket, Interceptor, Packet, RTCPFeedback, StreamInfo, TaggedPacket,
        };
        use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
        use rtc::sansio::Protocol;
        use rtc::shared::TransportContext;

        let tagged = |packet: Packet| TaggedPacket {
            now: std::time::Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(packet),
        };
        let nack_of = |seq: u16| {
            let nack = TransportLayerNack {
                sender_ssrc: 1,
                media_ssrc: 7,
                nacks: vec![NackPair {
                    packet_id: seq,
                    lost_packets: 0b1,
                }],
            };
            Packet::Rtcp(vec![Box::new(nack)])
        };
        let video = StreamInfo {
            ssrc: 7,
            payload_type: 96,
            clock_rate: VP8_CLOCK_RATE,
            mime_type: MIME_TYPE_VP8.to_owned(),
            rtcp_feedback: vec![RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: String::new(),
            }],
            ..Default::default()
        };
        let send = |interceptor: &mut dyn FnMut(TaggedPacket) -> Vec<u16>| {
            let mut out = Vec::new();
            for seq in 10..20u16 {
                let mut p = rtp::Packet::default();
                p.header.version = 2;
                p.header.ssrc = 7;
                p.header.payload_type = 96;
                p.header.sequence_number = seq;
                p.payload = Bytes::from(vec![seq as u8; 30]);
                out.extend(interceptor(tagged(Packet::Rtp(p))));
            }
            out
        };

        // VP8 offers `nack` (the viewer's browser NACKs what it lost).
        assert!(
            vp8_codec()
                .rtcp_feedback
                .iter()
                .any(|f| f.typ == "nack" && f.parameter.is_empty())
        );
        let (_, registry) = sfu_media_engine(true).unwrap();
        let mut chain = registry.build();
        chain.bind_local_stream(&video);
        let written = send(&mut |p| {
            chain.handle_write(p).unwrap();
            std::iter::from_fn(|| chain.poll_write())
                .filter_map(|p| match p.message.packet {
                    Packet::Rtp(r) => Some(r.header.sequence_number),
                    _ => None,
                })
                .collect()
        });
        assert_eq!(written, (10..20).collect::<Vec<u16>>());
        // The viewer lost 13 and 14.
        chain.handle_read(tagged(nack_of(13))).unwrap();
        let resent: Vec<(u16, Bytes)> = std::iter::from_fn(|| chain.poll_write())
            .filter_map(|p| match p.message.packet {
                Packet::Rtp(r) => Some((r.header.sequence_number, r.payload)),
                _ => None,
            })
            .collect();
        assert_eq!(
            resent,
            vec![
                (13, Bytes::from(vec![13u8; 30])),
                (14, Bytes::from(vec![14u8; 30]))
            ]
        );

        // Audio only: nothing buffered, nothing resent.
        let (_, registry) = sfu_media_engine(false).unwrap();
        let mut chain = registry.build();
        chain.bind_local_stream(&video);
        send(&mut |p| {
            chain.handle_write(p).unwrap();
            std::iter::from_fn(|| chain.poll_write())
                .map(|_| 0)
                .collect()
        });
        chain.handle_read(tagged(nack_of(13))).unwrap();
        assert!(chain.poll_write().is_none());
    }

    #[test]
    fn the_level_survives_the_wire() {
        let mut p = rtp::Packet::default();
        p.header.version = 2;
        let ext = audio_level(23);
        let mut buf = vec![0u8; ext.marshal_size()];
        ext.marshal_to(&mut buf).unwrap();
        p.header.set_extension(3, Bytes::from(buf)).unwrap();
        let bytes = p.marshal().unwrap();
        let back = rtp::Packet::unmarshal(&mut bytes.as_ref()).unwrap();
        // The V bit is set; the level is in the low 7 bits.
        assert_eq!(back.header.get_extension(3).unwrap()[0], 0x80 | 23);
        assert_eq!(level_of(&back, Some(3)), 23);
        assert_eq!(level_of(&back, None), 127);
        assert_eq!(level_of(&back, Some(9)), 127);
        // Levels past silence are clamped to it.
        let loud = audio_level(200);
        let mut buf = vec![0u8; loud.marshal_size()];
        loud.marshal_to(&mut buf).unwrap();
        assert_eq!(buf[0], 0x80 | 127);
        // The shortcut writes the same byte.
        assert_eq!(audio_level_element(200)[..], buf[..]);
        let mut buf = vec![0u8; ext.marshal_size()];
        ext.marshal_to(&mut buf).unwrap();
        assert_eq!(audio_level_element(23)[..], buf[..]);
    }
}
