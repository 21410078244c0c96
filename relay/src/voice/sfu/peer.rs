//! One SFU participant's peer connection, sans-IO (webrtc-rs's `rtc` core): the relay's offer
//! is built here, and the room's task (`room.rs`) feeds it datagrams and timeouts and sends
//! what it writes. No task, channel or lock of its own: forwarding a packet to it is a
//! function call (interceptors, SRTP) and a `sendto`.
//!
//! The offer is complete: one receive-only upstream transceiver, N send-only slots, host
//! candidates on the room's sockets. `Peer` is `repr(C)` with the fields the room reads per
//! packet first (negotiated payload type and level id, the slots' send counters inline, the
//! short paths' contexts unboxed), so forwarding to a listener touches its first cache lines
//! rather than its connection's state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_media::Negotiated;
use concord_media::direct_srtp::KeyTap;
use concord_media::sending::Sending;
use concord_proto::Id;
use rtc::media_stream::MediaStreamTrackId;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use smallvec::SmallVec;

use super::budget::UpstreamBudget;
use super::direct::Direct;
use super::upstream::Upstream;

/// ICE consent checks to each participant at least this often, media or not: a client that
/// hears nothing from the relay for two of these knows its instance is gone (browsers then
/// rejoin; the room moves to a live instance).
const KEEPALIVE: Duration = Duration::from_secs(1);

/// What the room's task asks of a new peer.
pub(super) struct PeerSpec<'a> {
    pub user: Id,
    pub video: bool,
    /// The room's sockets' addresses: the host candidates of the offer.
    pub local_addrs: &'a [SocketAddr],
    pub slots: usize,
    pub max_upstream_kbps: u32,
    pub max_video_kbps: u32,
}

/// The relay's video slot on a participant's connection (what they watch).
pub(super) struct VideoSlot {
    pub sender: RTCRtpSenderId,
    pub ssrc: u32,
}

/// In declaration order (`repr(C)`): the fields the room reads for every packet it sends a
/// listener or takes from a participant, and on every turn of its loop, come first, so that
/// they share the peer's first cache lines rather than being spread over its connection's
/// state (profiled: each was a cache miss).
#[repr(C)]
pub(super) struct Peer {
    pub user: Id,
    /// The connection's next timeout (the room's loop reads every peer's each turn).
    pub deadline: Option<Instant>,
    /// Opus payload type and audio-level id, once connected.
    pub negotiated: Negotiated,
    /// What the relay sent on each of its slots (audio and video), for its sender reports:
    /// inline for the default three slots and video.
    pub sent: SmallVec<[Sending; 4]>,
    /// Forwarded audio's send path (`direct.rs`).
    pub direct: Direct,
    /// Their microphone's short path and the reception statistics (`upstream.rs`).
    pub upstream: Upstream,
    pub pc: RTCPeerConnection,
    /// The relay's ICE username fragment for this peer: the first STUN check from an address
    /// names it, which ties that address to this peer on the room's shared sockets.
    pub ufrag: String,
    pub slot_senders: Vec<RTCRtpSenderId>,
    pub slot_ssrcs: Vec<u32>,
    pub video_slot: Option<VideoSlot>,
    pub video_pt: Option<u8>,
    /// The participant's tracks: kind, and the receiver (keyframe requests go through it).
    pub tracks: HashMap<MediaStreamTrackId, (RtpCodecKind, RTCRtpReceiverId)>,
    /// Their screen or camera: receiver and SSRC, once it sends.
    pub video_in: Option<(RTCRtpReceiverId, u32)>,
    pub audio_budget: UpstreamBudget,
    pub video_budget: UpstreamBudget,
    /// (received, lost) of the upstream at the last statistics sample.
    pub last_counts: (u64, i64),
    pub connected: bool,
    /// The connection's crypto, which shows its SRTP keys to the short path.
    pub tap: Arc<KeyTap>,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("system randomness");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Peer {
    /// A new peer connection and the relay's complete offer (host candidates included): one
    /// upstream audio transceiver, `slots` Opus slots (the first shares the upstream's
    /// m-line, so a client answers it `sendrecv`), and with `video` one VP8 m-line both ways.
    pub fn offer(spec: PeerSpec<'_>, now: Instant) -> Result<(Peer, String), String> {
        let (engine, registry) = concord_media::sfu_media_engine(spec.video)?;
        // ICE ufrag: 4+ characters, password: 22+ (RFC 8839).
        let ufrag = random_hex(8);
        let tap = KeyTap::new()?;
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_ice_timeouts(None, None, Some(KEEPALIVE))
                    .with_ice_credentials(ufrag.clone(), random_hex(16))
                    .with_crypto_provider(tap.clone())
                    .build(),
            )
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .build(now)
            .map_err(|e| format!("peer connection: {e}"))?;
        pc.add_transceiver_from_kind(RtpCodecKind::Audio, None)
            .map_err(|e| format!("upstream transceiver: {e}"))?;
        let (mut slot_senders, mut slot_ssrcs) = (Vec::new(), Vec::new());
        for i in 0..spec.slots {
            let ssrc = concord_media::random_ssrc();
            let track = concord_media::opus_media_track(
                &format!("concord-sfu-{i}"),
                &format!("slot-{i}-{ssrc}"),
                ssrc,
            );
            slot_senders.push(
                pc.add_track(track)
                    .map_err(|e| format!("slot track: {e}"))?,
            );
            slot_ssrcs.push(ssrc);
        }
        // Video after the audio (clients that know nothing of it see the same first m-lines).
        let video_slot = if spec.video {
            let ssrc = concord_media::random_ssrc();
            let track =
                concord_media::vp8_media_track("concord-sfu-video", &format!("video-{ssrc}"), ssrc);
            let sender = pc
                .add_track(track)
                .map_err(|e| format!("video slot track: {e}"))?;
            Some(VideoSlot { sender, ssrc })
        } else {
            None
        };
        let offer = pc.create_offer(None).map_err(|e| e.to_string())?;
        pc.set_local_description(now, offer)
            .map_err(|e| e.to_string())?;
        for addr in spec.local_addrs {
            pc.add_local_candidate(concord_media::host_candidate(*addr)?)
                .map_err(|e| format!("host candidate: {e}"))?;
        }
        // End of candidates: the offer is complete.
        pc.add_local_candidate(RTCIceCandidateInit::default())
            .map_err(|e| format!("end of candidates: {e}"))?;
        let sdp = pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or("no local description")?;
        let peer = Peer {
            user: spec.user,
            pc,
            ufrag,
            slot_senders,
            slot_ssrcs,
            video_slot,
            negotiated: Negotiated::default(),
            video_pt: None,
            tracks: HashMap::new(),
            video_in: None,
            audio_budget: UpstreamBudget::new(spec.max_upstream_kbps),
            video_budget: UpstreamBudget::new(spec.max_video_kbps),
            deadline: None,
            last_counts: (0, 0),
            connected: false,
            tap,
            direct: Direct::Untested,
            upstream: Upstream::default(),
            sent: SmallVec::new(),
        };
        Ok((peer, sdp))
    }

    /// Whether one of their audio packets fits their upstream budget (header and payload:
    /// what forwarding it costs); counted as dropped if not.
    pub fn audio_allowed(&mut self, packet: &rtc::rtp::Packet, now: Instant) -> bool {
        let allowed = self.audio_budget.allow(12 + packet.payload.len(), now);
        if !allowed {
            metrics::counter!("concord_sfu_dropped_packets_total", "reason" => "upstream_bitrate")
                .increment(1);
        }
        allowed
    }

    /// One packet sent on the relay's slot `ssrc` (one of this connection's, so the list stays
    /// as short as its slots).
    pub fn on_sent(
        &mut self,
        ssrc: u32,
        clock_rate: u32,
        timestamp: u32,
        payload: usize,
        now: Instant,
    ) {
        let index = match self.sent.iter().position(|s| s.ssrc() == ssrc) {
            Some(i) => i,
            None => {
                self.sent.push(Sending::new(ssrc, clock_rate));
                self.sent.len() - 1
            }
        };
        self.sent[index].on_rtp(timestamp, payload, now);
    }

    /// This second's RTCP for the connection, as one compound packet: a sender report per slot
    /// that has sent, the first carrying the reception blocks on their upstream, or a receiver
    /// report with just those blocks; empty if there is nothing to say.
    pub fn reports(&mut self, now: Instant, ntp: u64) -> Vec<Box<dyn rtc::rtcp::Packet>> {
        let blocks = self.upstream.reports(now);
        let mut senders: Vec<SenderReport> = self
            .sent
            .iter()
            .filter_map(|s| s.report(now, ntp))
            .collect();
        match senders.first_mut() {
            Some(first) => first.reports = blocks,
            None if blocks.is_empty() => return Vec::new(),
            None => {
                return vec![Box::new(ReceiverReport {
                    // The report's sender: the relay's first slot on this connection.
                    ssrc: self.slot_ssrcs.first().copied().unwrap_or_default(),
                    reports: blocks,
                    profile_extensions: bytes::Bytes::new(),
                })];
            }
        }
        senders
            .into_iter()
            .map(|sr| Box::new(sr) as Box<dyn rtc::rtcp::Packet>)
            .collect()
    }

    /// Once connected: the payload types and audio-level id the participant's answer chose.
    pub fn read_negotiated(&mut self) {
        if let Some(&id) = self.slot_senders.first()
            && let Some(mut sender) = self.pc.rtp_sender(id)
        {
            self.negotiated = Negotiated::in_parameters(sender.get_parameters());
        }
        if let Some(slot) = &self.video_slot
            && let Some(mut sender) = self.pc.rtp_sender(slot.sender)
        {
            self.video_pt = concord_media::payload_type_in(
                sender.get_parameters(),
                concord_media::MIME_TYPE_VP8,
            );
        }
    }
}
