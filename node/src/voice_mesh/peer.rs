//! One WebRTC peer connection of the mesh: Opus with the audio-level extension, ICE servers
//! from the relay (TURN only when `relay_only`), a send track for our packets, and a reader
//! for the remote track that hands packets to the media loop. Complete (non-trickle) SDP:
//! offers and answers are sent once ICE gathering has finished. webrtc 0.21 over the sans-IO
//! `rtc` core; the path taken and the RTT come from its stats.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concord_proto::Id;
use serde::Serialize;
use tokio::sync::watch;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateType, RTCIceGatheringState, RTCIceServer, RTCIceTransportPolicy,
    RTCPeerConnectionState, RTCSessionDescription, RTCStatsReportEntry, SettingEngineBuilder,
    StatsSelector,
};
use webrtc::rtp_transceiver::RtpSender;

use super::media::Media;
use super::rtp::from_rtp;

/// How long ICE gathering may take (TURN allocations included) before the SDP goes as is.
const GATHER_TIMEOUT: Duration = Duration::from_secs(10);
/// The SFU link turns `disconnected` after this long without a packet from the relay (the
/// daemon then rebuilds it, through the room's owner)…
pub const SFU_DISCONNECTED: Duration = Duration::from_secs(2);
/// …while consent checks go out this often whatever the media does.
const SFU_KEEPALIVE: Duration = Duration::from_millis(500);
/// A link that has not connected this long after it was made is given up (and rebuilt by
/// the offerer): a handshake can stall without the connection ever reporting `failed`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// What `concord voice status` shows per peer.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LinkInfo {
    pub user_id: Id,
    pub device_key: String,
    /// `new`, `connecting`, `connected`, `disconnected`, `failed` or `closed`.
    pub state: String,
    /// `direct` or `turn` once connected.
    pub path: Option<String>,
    pub rtt_ms: Option<f64>,
    #[serde(skip)]
    pub payload_type: Option<u8>,
    #[serde(skip)]
    pub level_id: Option<u8>,
}

/// The parts of the relay's ice-servers answer a peer connection needs.
#[derive(Debug, Clone, Default)]
pub struct IceConfig {
    pub servers: Vec<RTCIceServer>,
    /// Relay candidates only: the path goes through TURN and hides our address.
    pub relay_only: bool,
}

pub struct Link {
    pub generation: u64,
    pub pc: Arc<dyn PeerConnection>,
    pub track: Arc<TrackLocalStaticRTP>,
    pub ssrc: u32,
    sender: Arc<dyn RtpSender>,
    pub info: Arc<Mutex<LinkInfo>>,
    gathered: watch::Receiver<bool>,
    pub state: watch::Receiver<RTCPeerConnectionState>,
    created: Instant,
    connected_once: Arc<std::sync::atomic::AtomicBool>,
}

struct Handler {
    user_id: Id,
    /// The link to the relay's SFU: each slot (SSRC) is its own stream.
    sfu: bool,
    info: Arc<Mutex<LinkInfo>>,
    media: Arc<Media>,
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    connected_once: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.info.lock().expect("link info").state = state.to_string();
        if state == RTCPeerConnectionState::Connected {
            self.connected_once
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let _ = self.state.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let (media, info, user_id, sfu) = (
            self.media.clone(),
            self.info.clone(),
            self.user_id,
            self.sfu,
        );
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(packet) => {
                        let level_id = info.lock().expect("link info").level_id;
                        let from = if sfu {
                            let slot = slot_id(packet.header.ssrc);
                            if let Some(&source) = packet.header.csrc.first() {
                                media.note_source(slot, source);
                            }
                            slot
                        } else {
                            user_id
                        };
                        media.received(from, from_rtp(&packet, level_id));
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

/// The stream of one SFU slot, as the mixer names it: a negative id (user ids are positive),
/// so a slot never mixes with a mesh peer or with another slot.
pub fn slot_id(ssrc: u32) -> Id {
    Id(-i64::from(ssrc) - 1)
}

/// The SSRC of a slot named by [`slot_id`].
pub fn slot_ssrc(slot: Id) -> u32 {
    u32::try_from(-slot.0 - 1).unwrap_or_default()
}

impl Link {
    pub async fn new(
        generation: u64,
        user_id: Id,
        device_key: &str,
        ice: &IceConfig,
        media: Arc<Media>,
        sfu: bool,
    ) -> Result<Link, String> {
        let (engine, registry) = concord_media::media_engine()?;
        let config = RTCConfigurationBuilder::default()
            .with_ice_servers(ice.servers.clone())
            .with_ice_transport_policy(if ice.relay_only {
                RTCIceTransportPolicy::Relay
            } else {
                RTCIceTransportPolicy::All
            })
            .build();
        let info = Arc::new(Mutex::new(LinkInfo {
            user_id,
            device_key: device_key.to_owned(),
            state: "new".into(),
            ..Default::default()
        }));
        let (gathered_tx, gathered) = watch::channel(false);
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let connected_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut builder = PeerConnectionBuilder::new();
        if sfu {
            // The relay's SFU link notices a dead relay within SFU_DISCONNECTED (consent
            // checks every SFU_KEEPALIVE), so the daemon moves to the room's new owner fast.
            builder = builder.with_setting_engine(
                SettingEngineBuilder::new()
                    .with_ice_timeouts(
                        Some(SFU_DISCONNECTED),
                        Some(Duration::from_secs(10)),
                        Some(SFU_KEEPALIVE),
                    )
                    .build(),
            );
        }
        let pc = builder
            .with_configuration(config)
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                user_id,
                sfu,
                info: info.clone(),
                media,
                gathered: gathered_tx,
                state: state_tx,
                connected_once: connected_once.clone(),
            }))
            .with_udp_addrs(vec!["0.0.0.0:0".to_owned()])
            .build()
            .await
            .map_err(|e| format!("peer connection: {e}"))?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let ssrc = concord_media::random_ssrc();
        let track = Arc::new(concord_media::opus_track(
            "concord-voice",
            &format!("audio-{ssrc}"),
            ssrc,
        ));
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| format!("add track: {e}"))?;
        Ok(Link {
            generation,
            pc,
            track,
            ssrc,
            sender,
            info,
            gathered,
            state,
            created: Instant::now(),
            connected_once,
        })
    }

    /// Our complete SDP once gathering has finished (or timed out).
    async fn gathered_sdp(&self) -> Result<String, String> {
        let mut gathered = self.gathered.clone();
        let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.wait_for(|done| *done)).await;
        self.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| "no local description".to_owned())
    }

    pub async fn offer(&self, restart: bool) -> Result<String, String> {
        if restart {
            self.pc.restart_ice().await.map_err(|e| e.to_string())?;
        }
        let offer = self
            .pc
            .create_offer(None)
            .await
            .map_err(|e| format!("offer: {e}"))?;
        self.pc
            .set_local_description(offer)
            .await
            .map_err(|e| format!("offer: {e}"))?;
        self.gathered_sdp().await
    }

    pub async fn answer(&self, offer_sdp: String) -> Result<String, String> {
        let offer = RTCSessionDescription::offer(offer_sdp).map_err(|e| format!("offer: {e}"))?;
        self.pc
            .set_remote_description(offer)
            .await
            .map_err(|e| format!("offer: {e}"))?;
        let answer = self
            .pc
            .create_answer(None)
            .await
            .map_err(|e| format!("answer: {e}"))?;
        self.pc
            .set_local_description(answer)
            .await
            .map_err(|e| format!("answer: {e}"))?;
        self.gathered_sdp().await
    }

    pub async fn accept(&self, answer_sdp: String) -> Result<(), String> {
        let answer =
            RTCSessionDescription::answer(answer_sdp).map_err(|e| format!("answer: {e}"))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(|e| format!("answer: {e}"))
    }

    /// Once connected: the negotiated payload type and audio-level id (needed to send), then
    /// path and RTT every two seconds until the connection ends.
    pub fn watch(&self) -> tokio::task::JoinHandle<()> {
        let (pc, sender, info, mut state) = (
            self.pc.clone(),
            self.sender.clone(),
            self.info.clone(),
            self.state.clone(),
        );
        tokio::spawn(async move {
            if state
                .wait_for(|s| *s == RTCPeerConnectionState::Connected)
                .await
                .is_err()
            {
                return;
            }
            if let Some(n) = concord_media::Negotiated::of(&sender).await {
                let mut info = info.lock().expect("link info");
                info.payload_type = n.payload_type;
                info.level_id = n.level_id;
            }
            loop {
                let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
                let (path, rtt) = selected_path(&report);
                {
                    let mut info = info.lock().expect("link info");
                    info.path = path.or(info.path.take());
                    info.rtt_ms = rtt.or(info.rtt_ms);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    changed = state.changed() => {
                        if changed.is_err() || matches!(*state.borrow(), RTCPeerConnectionState::Closed) {
                            return;
                        }
                    }
                }
            }
        })
    }

    pub fn is_connected(&self) -> bool {
        *self.state.borrow() == RTCPeerConnectionState::Connected
    }

    pub fn is_dead(&self) -> bool {
        let never_connected = !self
            .connected_once
            .load(std::sync::atomic::Ordering::Relaxed)
            && self.created.elapsed() > CONNECT_TIMEOUT;
        never_connected
            || matches!(
                *self.state.borrow(),
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
            )
    }

    pub fn payload_type(&self) -> Option<u8> {
        self.info.lock().expect("link info").payload_type
    }
}

/// The selected candidate pair: `turn` when our side of it is a relay candidate, and its RTT.
fn selected_path(
    report: &webrtc::peer_connection::RTCStatsReport,
) -> (Option<String>, Option<f64>) {
    let Some(transport) = report.transport() else {
        return (None, None);
    };
    let Some(RTCStatsReportEntry::IceCandidatePair(pair)) =
        report.get(&transport.selected_candidate_pair_id)
    else {
        return (None, None);
    };
    // The pair names the agent's candidate id; the candidate's own entry may carry a prefix.
    let local = report.iter().find_map(|e| match e {
        RTCStatsReportEntry::LocalCandidate(c)
            if c.stats.id == pair.local_candidate_id
                || c.stats
                    .id
                    .ends_with(&format!("_{}", pair.local_candidate_id)) =>
        {
            Some(c)
        }
        _ => None,
    });
    let path = local.map(|c| {
        if c.candidate_type == RTCIceCandidateType::Relay {
            "turn"
        } else {
            "direct"
        }
        .to_owned()
    });
    let rtt = (pair.current_round_trip_time > 0.0).then_some(pair.current_round_trip_time * 1000.0);
    (path, rtt)
}
