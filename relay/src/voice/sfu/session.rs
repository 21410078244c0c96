//! The SFU's WebRTC side: one peer connection per participant, the relay offering one
//! receive-only audio transceiver (the participant's voice) and N send-only slots (the
//! loudest other speakers, chosen by the forwarder). Upstream packets are read as they come,
//! handed to the room's forwarder, and written to the chosen listeners' slots with the
//! rewritten header and the audio level. Complete SDP (ICE gathered before the offer goes
//! out), host candidates on the relay's addresses.
//!
//! The first slot shares the upstream transceiver's m-line (webrtc fills a transceiver
//! without a sender first), so a client answers it `sendrecv`. A participant that asks for
//! video (browsers) also gets one video m-line, both ways: their screen or camera up, and
//! whoever they watch down (`video.rs` decides); a viewer's keyframe requests and each new viewer turn into a PLI to the
//! publisher.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concord_media::Negotiated;
use concord_proto::Id;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::watch;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, RTCStatsReport,
    RTCStatsReportEntry, SettingEngineBuilder, StatsSelector,
};
use webrtc::rtp_transceiver::RtpSender;

use super::forwarder::Forwarder;
use super::video::VideoRouter;

const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// ICE consent checks to each participant at least this often, media or not: a client that
/// hears nothing from the relay for two of these knows its instance is gone (browsers then
/// rejoin; the room moves to a live instance).
const KEEPALIVE: Duration = Duration::from_secs(1);
/// How often each participant's RTCP statistics are read.
const STATS_EVERY: Duration = Duration::from_secs(5);

/// One sample of a participant's statistics; `last` carries (received, lost) of the upstream
/// between samples so the loss is that of the last interval.
fn sample_stats(user: Id, report: &RTCStatsReport, last: &mut (u64, i64)) -> MemberStats {
    let mut out = MemberStats {
        user_id: user,
        ..MemberStats::default()
    };
    let (mut down_loss, mut down_n) = (0.0, 0u32);
    for entry in report.iter() {
        match entry {
            RTCStatsReportEntry::InboundRtp(s) => {
                let r = &s.received_rtp_stream_stats;
                let (got, lost) = (
                    r.packets_received.saturating_sub(last.0),
                    (r.packets_lost - last.1).max(0),
                );
                *last = (r.packets_received, r.packets_lost);
                let total = got as f64 + lost as f64;
                out.upstream_loss = if total > 0.0 {
                    lost as f64 / total
                } else {
                    0.0
                };
                // rtc 0.21 fills `jitter` with the receiver report's field as it is: RTP
                // timestamp units (Opus: 48 kHz), though its doc says seconds.
                out.upstream_jitter_ms = r.jitter / 48.0;
            }
            RTCStatsReportEntry::RemoteInboundRtp(s) => {
                down_loss += s.fraction_lost;
                down_n += 1;
            }
            // rtc 0.21 leaves the receiver reports' RTT at 0; the selected ICE pair's
            // consent checks measure it.
            RTCStatsReportEntry::Transport(t) => {
                if let Some(RTCStatsReportEntry::IceCandidatePair(pair)) =
                    report.get(&t.selected_candidate_pair_id)
                    && pair.current_round_trip_time > 0.0
                {
                    out.rtt_ms = Some(pair.current_round_trip_time * 1000.0);
                }
            }
            _ => {}
        }
    }
    if down_n > 0 {
        out.downstream_loss = down_loss / f64::from(down_n);
    }
    out
}

/// A participant's call quality from RTCP, sampled every few seconds (what the relay
/// receives from them, and what they report of what it sends).
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct MemberStats {
    pub user_id: Id,
    /// Lost fraction of the participant's upstream since the last sample.
    pub upstream_loss: f64,
    /// Upstream interarrival jitter (RFC 3550), milliseconds.
    pub upstream_jitter_ms: f64,
    /// Loss the participant reports on the slots it receives (RTCP receiver reports).
    pub downstream_loss: f64,
    /// Round-trip time to the participant (ICE consent checks on the selected pair), ms.
    pub rtt_ms: Option<f64>,
}

/// A room's quality: the mean over its participants of their loss (the worse of up and
/// down), upstream jitter and RTT.
#[derive(Debug, PartialEq)]
struct RoomQuality {
    loss: f64,
    jitter_ms: f64,
    rtt_ms: Option<f64>,
}

impl RoomQuality {
    fn of(samples: &[MemberStats]) -> Option<RoomQuality> {
        if samples.is_empty() {
            return None;
        }
        let n = samples.len() as f64;
        let rtts: Vec<f64> = samples.iter().filter_map(|s| s.rtt_ms).collect();
        Some(RoomQuality {
            loss: samples
                .iter()
                .map(|s| s.upstream_loss.max(s.downstream_loss))
                .sum::<f64>()
                / n,
            jitter_ms: samples.iter().map(|s| s.upstream_jitter_ms).sum::<f64>() / n,
            rtt_ms: (!rtts.is_empty()).then(|| rtts.iter().sum::<f64>() / rtts.len() as f64),
        })
    }
}

struct Member {
    pc: Arc<dyn PeerConnection>,
    stats: Arc<Mutex<MemberStats>>,
    slots: Vec<Arc<TrackLocalStaticRTP>>,
    negotiated: Arc<Mutex<Negotiated>>,
    /// The video slot (what this participant watches) and its negotiated VP8 payload type.
    video_slot: Option<Arc<TrackLocalStaticRTP>>,
    video_pt: Arc<Mutex<Option<u8>>>,
    watcher: tokio::task::JoinHandle<()>,
    /// Reads the viewer's keyframe requests on the video slot.
    feedback: Option<tokio::task::JoinHandle<()>>,
}

impl Member {
    fn stop_tasks(&self) {
        self.watcher.abort();
        if let Some(f) = &self.feedback {
            f.abort();
        }
    }
}

/// A participant's upstream video: where to send a keyframe request.
struct Publisher {
    track: Arc<dyn TrackRemote>,
    ssrc: u32,
}

/// One voice channel on the SFU.
pub struct Room {
    epoch: Instant,
    forwarder: Mutex<Forwarder>,
    members: Mutex<HashMap<Id, Arc<Member>>>,
    video: Mutex<VideoRouter>,
    publishers: Mutex<HashMap<Id, Publisher>>,
    /// Offers being made (changed under the rooms lock): a room with one is not empty,
    /// even before its first member is in.
    pending: std::sync::atomic::AtomicUsize,
}

impl Room {
    fn now_ms(&self) -> i64 {
        self.epoch.elapsed().as_millis() as i64
    }

    /// One packet from `from`'s microphone: forwarded to the listeners whose slots carry it.
    async fn upstream(&self, from: Id, mut packet: rtc::rtp::Packet, level_id: Option<u8>) {
        let level = concord_media::level_of(&packet, level_id);
        let forwards = self.forwarder.lock().expect("forwarder").on_packet(
            from,
            packet.header.sequence_number,
            packet.header.timestamp,
            level,
            self.now_ms(),
        );
        if forwards.is_empty() {
            return;
        }
        packet.header.extensions.clear();
        packet.header.extension = false;
        let targets: Vec<(super::forwarder::Forward, Arc<Member>)> = {
            let members = self.members.lock().expect("members");
            forwards
                .into_iter()
                .filter_map(|f| members.get(&f.listener).map(|m| (f, m.clone())))
                .collect()
        };
        let started = Instant::now();
        let source = audio_source(from);
        let level_element = concord_media::audio_level_element(level);
        for (f, member) in targets {
            let (Some(pt), level_id) = ({
                let n = member.negotiated.lock().expect("negotiated");
                (n.payload_type, n.level_id)
            }) else {
                continue;
            };
            let Some(track) = member.slots.get(f.slot) else {
                continue;
            };
            let bytes = 12 + 4 + packet.payload.len();
            let mut out = packet.clone();
            out.header.ssrc = f.ssrc;
            // Who is speaking on this slot right now (browsers: getContributingSources).
            out.header.csrc = vec![source];
            out.header.sequence_number = f.seq;
            out.header.timestamp = f.timestamp;
            out.header.marker = f.marker;
            out.header.payload_type = pt;
            // The level under the id this listener negotiated, set here rather than through
            // `write_rtp_with_extensions` (a map, a buffer and one more track lock per packet).
            if let Some(id) = level_id {
                let _ = out.header.set_extension(id, level_element.clone());
            }
            if track.write_rtp(out).await.is_ok() {
                metrics::counter!("concord_sfu_forwarded_packets_total").increment(1);
                // Header with one CSRC, and the payload (extensions and SRTP not counted).
                metrics::counter!("concord_sfu_forwarded_bytes_total").increment(bytes as u64);
            }
        }
        metrics::histogram!("concord_sfu_forward_seconds").record(started.elapsed().as_secs_f64());
    }
}

impl Room {
    /// One packet of `from`'s screen or camera: to the viewers watching them, once each
    /// viewer's stream has started on a keyframe.
    async fn video_upstream(&self, from: Id, mut packet: rtc::rtp::Packet) {
        if self.forwarder.lock().expect("forwarder").is_muted(from) {
            return;
        }
        let keyframe = super::video::vp8_keyframe_start(&packet.payload);
        let actions = self.video.lock().expect("video").on_packet(
            from,
            packet.header.sequence_number,
            packet.header.timestamp,
            keyframe,
            self.now_ms(),
        );
        if let Some(publisher) = actions.keyframe_request {
            self.request_keyframe(publisher, "waiting").await;
        }
        if actions.forwards.is_empty() {
            return;
        }
        packet.header.extensions.clear();
        packet.header.extension = false;
        let targets: Vec<(super::video::VideoForward, Arc<Member>)> = {
            let members = self.members.lock().expect("members");
            actions
                .forwards
                .into_iter()
                .filter_map(|f| members.get(&f.viewer).map(|m| (f, m.clone())))
                .collect()
        };
        for (f, member) in targets {
            let (Some(track), Some(pt)) = (
                member.video_slot.as_ref(),
                *member.video_pt.lock().expect("video pt"),
            ) else {
                continue;
            };
            let mut out = packet.clone();
            out.header.ssrc = f.ssrc;
            out.header.sequence_number = f.seq;
            out.header.timestamp = f.timestamp;
            out.header.payload_type = pt;
            let bytes = 12 + out.payload.len();
            if track.write_rtp(out).await.is_ok() {
                metrics::counter!("concord_sfu_forwarded_video_packets_total").increment(1);
                metrics::counter!("concord_sfu_forwarded_video_bytes_total")
                    .increment(bytes as u64);
            }
        }
    }

    /// Asks `publisher` for a keyframe (RTCP PLI on their video upstream).
    async fn request_keyframe(&self, publisher: Id, reason: &'static str) {
        let target = {
            let publishers = self.publishers.lock().expect("publishers");
            publishers
                .get(&publisher)
                .map(|p| (p.track.clone(), p.ssrc))
        };
        // Not publishing yet: their first packets will be held until a keyframe, which the
        // `waiting` path asks for.
        let Some((track, ssrc)) = target else {
            return;
        };
        let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: ssrc,
        };
        if track.write_rtcp(vec![Box::new(pli)]).await.is_ok() {
            metrics::counter!("concord_sfu_keyframe_requests_total", "reason" => reason)
                .increment(1);
        }
    }
}

/// The CSRC that names a speaker in forwarded packets (see [`concord_media::audio_source`]).
pub fn audio_source(user: Id) -> u32 {
    concord_media::audio_source(user.0)
}

/// What one instance's SFU allows.
#[derive(Debug, Clone, Copy)]
pub struct SfuLimits {
    /// Speakers forwarded to each listener.
    pub slots: usize,
    pub max_rooms: usize,
    pub max_upstream_kbps: u32,
    /// Upstream cap for a participant's screen or camera.
    pub max_video_kbps: u32,
}

/// Why the SFU gave no offer.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    #[error("this relay holds its maximum of {0} SFU rooms")]
    Full(usize),
    #[error("{0}")]
    Failed(String),
}

impl From<String> for OfferError {
    fn from(e: String) -> OfferError {
        OfferError::Failed(e)
    }
}

/// All SFU rooms of this instance.
pub struct Sfu {
    limits: SfuLimits,
    rooms: Mutex<HashMap<Id, Arc<Room>>>,
}

struct Handler {
    user: Id,
    max_upstream_kbps: u32,
    max_video_kbps: u32,
    room: Arc<Room>,
    negotiated: Arc<Mutex<Negotiated>>,
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let (room, user, negotiated) = (self.room.clone(), self.user, self.negotiated.clone());
        if track.kind().await == RtpCodecKind::Video {
            let budget = super::budget::UpstreamBudget::new(self.max_video_kbps);
            tokio::spawn(video_upstream(room, user, track, budget));
            return;
        }
        let mut budget = super::budget::UpstreamBudget::new(self.max_upstream_kbps);
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(packet) => {
                        // Header and payload: what forwarding it would cost.
                        if !budget.allow(12 + packet.payload.len(), Instant::now()) {
                            metrics::counter!("concord_sfu_dropped_packets_total", "reason" => "upstream_bitrate").increment(1);
                            continue;
                        }
                        let level_id = negotiated.lock().expect("negotiated").level_id;
                        room.upstream(user, packet, level_id).await;
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

/// Reads a participant's screen or camera and hands it to the room.
async fn video_upstream(
    room: Arc<Room>,
    user: Id,
    track: Arc<dyn TrackRemote>,
    mut budget: super::budget::UpstreamBudget,
) {
    let mut known_ssrc = None;
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(packet) => {
                if known_ssrc != Some(packet.header.ssrc) {
                    known_ssrc = Some(packet.header.ssrc);
                    room.publishers.lock().expect("publishers").insert(
                        user,
                        Publisher {
                            track: track.clone(),
                            ssrc: packet.header.ssrc,
                        },
                    );
                }
                if !budget.allow(12 + packet.payload.len(), Instant::now()) {
                    metrics::counter!("concord_sfu_dropped_packets_total", "reason" => "video_bitrate").increment(1);
                    continue;
                }
                room.video_upstream(user, packet).await;
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}

/// Reads a viewer's RTCP on their video slot: a keyframe request (their decoder lost its
/// way) goes on to whoever they watch.
async fn viewer_feedback(room: Arc<Room>, user: Id, slot: Arc<TrackLocalStaticRTP>) {
    while let Some(event) = slot.poll().await {
        if let TrackLocalEvent::OnRtcpPacket(packets) = event
            && packets
                .iter()
                .any(|p| concord_media::keyframe::is_keyframe_request(p.as_ref()))
        {
            let target = room
                .video
                .lock()
                .expect("video")
                .viewer_wants_keyframe(user, room.now_ms());
            if let Some(publisher) = target {
                room.request_keyframe(publisher, "viewer").await;
            }
        }
    }
}

/// Why a watch request failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("no SFU session with video: ask for an offer with video first")]
    NoVideo,
}

impl Sfu {
    pub fn new(limits: SfuLimits) -> Sfu {
        Sfu {
            limits: SfuLimits {
                slots: limits.slots.max(1),
                ..limits
            },
            rooms: Mutex::new(HashMap::new()),
        }
    }

    /// The channel's room, made if there is room for one more.
    fn room(&self, channel: Id) -> Result<Arc<Room>, OfferError> {
        let mut rooms = self.rooms.lock().expect("rooms");
        if !rooms.contains_key(&channel) && rooms.len() >= self.limits.max_rooms {
            metrics::counter!("concord_sfu_refused_total", "reason" => "rooms").increment(1);
            return Err(OfferError::Full(self.limits.max_rooms));
        }
        let room = rooms
            .entry(channel)
            .or_insert_with(|| {
                metrics::gauge!("concord_sfu_rooms").increment(1.0);
                Arc::new(Room {
                    epoch: Instant::now(),
                    forwarder: Mutex::new(Forwarder::new(self.limits.slots)),
                    members: Mutex::new(HashMap::new()),
                    video: Mutex::new(VideoRouter::default()),
                    publishers: Mutex::new(HashMap::new()),
                    pending: Default::default(),
                })
            })
            .clone();
        room.pending.fetch_add(1, Ordering::Relaxed);
        Ok(room)
    }

    /// An offer into `room` is done (made or failed): a room left empty goes.
    fn settle(&self, channel: Id, room: &Arc<Room>) {
        let mut rooms = self.rooms.lock().expect("rooms");
        room.pending.fetch_sub(1, Ordering::Relaxed);
        if room.pending.load(Ordering::Relaxed) == 0
            && room.members.lock().expect("members").is_empty()
            && rooms.get(&channel).is_some_and(|r| Arc::ptr_eq(r, room))
        {
            rooms.remove(&channel);
            metrics::gauge!("concord_sfu_rooms").decrement(1.0);
        }
    }

    /// A new peer connection for `user` in `channel` (replacing an earlier one) and the
    /// relay's complete offer; with `video`, the video upstream and slot too.
    pub async fn offer(
        &self,
        channel: Id,
        user: Id,
        speak: bool,
        video: bool,
    ) -> Result<String, OfferError> {
        // Whom they watched survives the new connection (a renegotiation or a failover).
        let watched = self.watching(channel, user);
        self.leave(channel, user).await;
        let room = self.room(channel)?;
        let made = self.offer_in(&room, user, speak, video).await;
        if made.is_ok() && video && watched.is_some() {
            let now = room.now_ms();
            room.video.lock().expect("video").watch(user, watched, now);
        }
        self.settle(channel, &room);
        made
    }

    async fn offer_in(
        &self,
        room: &Arc<Room>,
        user: Id,
        speak: bool,
        video: bool,
    ) -> Result<String, OfferError> {
        let (engine, registry) = concord_media::sfu_media_engine()?;
        let negotiated = Arc::new(Mutex::new(Negotiated::default()));
        let (gathered_tx, gathered) = watch::channel(false);
        let (state_tx, mut state) = watch::channel(RTCPeerConnectionState::New);
        let pc = PeerConnectionBuilder::new()
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_ice_timeouts(None, None, Some(KEEPALIVE))
                    .build(),
            )
            .with_configuration(RTCConfigurationBuilder::default().build())
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                user,
                max_upstream_kbps: self.limits.max_upstream_kbps,
                max_video_kbps: self.limits.max_video_kbps,
                room: room.clone(),
                negotiated: negotiated.clone(),
                gathered: gathered_tx,
                state: state_tx,
            }))
            .with_udp_addrs(vec!["0.0.0.0:0".to_owned()])
            .build()
            .await
            .map_err(|e| format!("peer connection: {e}"))?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        pc.add_transceiver_from_kind(RtpCodecKind::Audio, None)
            .await
            .map_err(|e| format!("upstream transceiver: {e}"))?;
        let mut slots = Vec::new();
        let mut senders: Vec<Arc<dyn RtpSender>> = Vec::new();
        let mut ssrcs = Vec::new();
        for i in 0..self.limits.slots {
            let ssrc = concord_media::random_ssrc();
            let track = Arc::new(concord_media::opus_track(
                &format!("concord-sfu-{i}"),
                &format!("slot-{i}-{ssrc}"),
                ssrc,
            ));
            senders.push(
                pc.add_track(track.clone() as Arc<dyn TrackLocal>)
                    .await
                    .map_err(|e| format!("slot track: {e}"))?,
            );
            slots.push(track);
            ssrcs.push(ssrc);
        }
        // Video after the audio (clients that know nothing of it see the same first m-lines):
        // one m-line both ways, the participant's screen or camera up, what they watch down.
        let (mut video_slot, mut video_sender, mut video_ssrc) = (None, None, 0);
        if video {
            video_ssrc = concord_media::random_ssrc();
            let track = Arc::new(concord_media::vp8_track(
                "concord-sfu-video",
                &format!("video-{video_ssrc}"),
                video_ssrc,
            ));
            video_sender = Some(
                pc.add_track(track.clone() as Arc<dyn TrackLocal>)
                    .await
                    .map_err(|e| format!("video slot track: {e}"))?,
            );
            video_slot = Some(track);
        }
        let offer = pc.create_offer(None).await.map_err(|e| e.to_string())?;
        pc.set_local_description(offer)
            .await
            .map_err(|e| e.to_string())?;
        let mut wait = gathered.clone();
        let _ = tokio::time::timeout(GATHER_TIMEOUT, wait.wait_for(|d| *d)).await;
        let sdp = pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| OfferError::Failed("no local description".into()))?;
        // Once connected: the negotiated payload type and audio-level id.
        let (sender, neg) = (senders[0].clone(), negotiated.clone());
        let video_pt = Arc::new(Mutex::new(None));
        let video_neg = video_pt.clone();
        let stats = Arc::new(Mutex::new(MemberStats {
            user_id: user,
            ..MemberStats::default()
        }));
        let (stats_pc, member_stats) = (pc.clone(), stats.clone());
        let watcher = tokio::spawn(async move {
            if state
                .wait_for(|s| *s == RTCPeerConnectionState::Connected)
                .await
                .is_err()
            {
                return;
            }
            if let Some(n) = Negotiated::of(&sender).await {
                *neg.lock().expect("negotiated") = n;
            }
            if let Some(vs) = &video_sender {
                *video_neg.lock().expect("video pt") =
                    concord_media::payload_type_of(vs, concord_media::MIME_TYPE_VP8).await;
            }
            let mut last = (0u64, 0i64);
            loop {
                tokio::time::sleep(STATS_EVERY).await;
                let report = stats_pc
                    .get_stats(Instant::now(), StatsSelector::None)
                    .await;
                let sample = sample_stats(user, &report, &mut last);
                metrics::histogram!("concord_sfu_loss_ratio", "direction" => "up")
                    .record(sample.upstream_loss);
                metrics::histogram!("concord_sfu_loss_ratio", "direction" => "down")
                    .record(sample.downstream_loss);
                metrics::histogram!("concord_sfu_jitter_seconds")
                    .record(sample.upstream_jitter_ms / 1000.0);
                if let Some(rtt) = sample.rtt_ms {
                    metrics::histogram!("concord_sfu_rtt_seconds").record(rtt / 1000.0);
                }
                *member_stats.lock().expect("stats") = sample;
            }
        });
        {
            let mut f = room.forwarder.lock().expect("forwarder");
            f.add_listener(user, &ssrcs);
            f.set_muted(user, !speak);
        }
        if video {
            room.video
                .lock()
                .expect("video")
                .add_viewer(user, video_ssrc);
        }
        let feedback = video_slot
            .clone()
            .map(|slot| tokio::spawn(viewer_feedback(room.clone(), user, slot)));
        room.members.lock().expect("members").insert(
            user,
            Arc::new(Member {
                pc,
                stats,
                slots,
                negotiated,
                video_slot,
                video_pt,
                watcher,
                feedback,
            }),
        );
        metrics::gauge!("concord_sfu_participants").increment(1.0);
        Ok(sdp)
    }

    /// The participant's answer to the relay's offer.
    pub async fn answer(&self, channel: Id, user: Id, sdp: String) -> Result<(), String> {
        let member = self
            .rooms
            .lock()
            .expect("rooms")
            .get(&channel)
            .and_then(|r| r.members.lock().expect("members").get(&user).cloned())
            .ok_or("no SFU session: ask for an offer first")?;
        let answer = RTCSessionDescription::answer(sdp).map_err(|e| format!("answer: {e}"))?;
        member
            .pc
            .set_remote_description(answer)
            .await
            .map_err(|e| format!("answer: {e}"))
    }

    /// Whom `user` watches in `channel`, if anyone.
    pub fn watching(&self, channel: Id, user: Id) -> Option<Id> {
        let room = self.rooms.lock().expect("rooms").get(&channel).cloned()?;
        room.video.lock().expect("video").watching(user)
    }

    /// `viewer` watches `target`'s screen or camera on their video slot (None: nobody); the
    /// target is asked for a keyframe so the picture starts at once.
    pub async fn watch(
        &self,
        channel: Id,
        viewer: Id,
        target: Option<Id>,
    ) -> Result<(), WatchError> {
        let room = self
            .rooms
            .lock()
            .expect("rooms")
            .get(&channel)
            .cloned()
            .ok_or(WatchError::NoVideo)?;
        let has_slot = room
            .members
            .lock()
            .expect("members")
            .get(&viewer)
            .is_some_and(|m| m.video_slot.is_some());
        if !has_slot {
            return Err(WatchError::NoVideo);
        }
        let now = room.now_ms();
        let ask = room.video.lock().expect("video").watch(viewer, target, now);
        if let Some(publisher) = ask {
            room.request_keyframe(publisher, "new_viewer").await;
        }
        Ok(())
    }

    /// Server mute / speak permission changes.
    pub fn set_muted(&self, channel: Id, user: Id, muted: bool) {
        if let Some(room) = self.rooms.lock().expect("rooms").get(&channel) {
            room.forwarder
                .lock()
                .expect("forwarder")
                .set_muted(user, muted);
        }
    }

    pub async fn leave(&self, channel: Id, user: Id) {
        let gone = {
            let mut rooms = self.rooms.lock().expect("rooms");
            let Some(room) = rooms.get(&channel).cloned() else {
                return;
            };
            let gone = room.members.lock().expect("members").remove(&user);
            room.forwarder.lock().expect("forwarder").remove(user);
            room.video.lock().expect("video").remove(user);
            room.publishers.lock().expect("publishers").remove(&user);
            // Not while another participant's offer is on its way in (it holds the room).
            if room.members.lock().expect("members").is_empty()
                && room.pending.load(Ordering::Relaxed) == 0
            {
                rooms.remove(&channel);
                metrics::gauge!("concord_sfu_rooms").decrement(1.0);
            }
            gone
        };
        if let Some(member) = gone {
            member.stop_tasks();
            let _ = member.pc.close().await;
            metrics::gauge!("concord_sfu_participants").decrement(1.0);
        }
    }

    /// Every participant's latest statistics in a room (empty when it is not on the SFU).
    pub fn room_stats(&self, channel: Id) -> Vec<MemberStats> {
        let Some(room) = self.rooms.lock().expect("rooms").get(&channel).cloned() else {
            return Vec::new();
        };
        let mut out: Vec<MemberStats> = room
            .members
            .lock()
            .expect("members")
            .values()
            .map(|m| m.stats.lock().expect("stats").clone())
            .collect();
        out.sort_by_key(|m| m.user_id);
        out
    }

    /// Each room's call quality, from its participants' latest RTCP samples, into the
    /// room-level histograms: one observation per room (the mean over its participants), so
    /// a dashboard's p95 says how bad the worst rooms are without a series per room.
    pub fn record_room_quality(&self) {
        let rooms: Vec<Arc<Room>> = self
            .rooms
            .lock()
            .expect("rooms")
            .values()
            .cloned()
            .collect();
        for room in rooms {
            let samples: Vec<MemberStats> = room
                .members
                .lock()
                .expect("members")
                .values()
                .map(|m| m.stats.lock().expect("stats").clone())
                .collect();
            let Some(quality) = RoomQuality::of(&samples) else {
                continue;
            };
            metrics::histogram!("concord_sfu_room_loss_ratio").record(quality.loss);
            metrics::histogram!("concord_sfu_room_jitter_seconds")
                .record(quality.jitter_ms / 1000.0);
            if let Some(rtt) = quality.rtt_ms {
                metrics::histogram!("concord_sfu_room_rtt_seconds").record(rtt / 1000.0);
            }
        }
    }

    pub fn room_count(&self) -> usize {
        self.rooms.lock().expect("rooms").len()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_rooms_quality_is_the_mean_of_its_participants() {
        use super::{MemberStats, RoomQuality};
        let member = |up: f64, down: f64, jitter: f64, rtt: Option<f64>| MemberStats {
            upstream_loss: up,
            downstream_loss: down,
            upstream_jitter_ms: jitter,
            rtt_ms: rtt,
            ..MemberStats::default()
        };
        assert_eq!(RoomQuality::of(&[]), None);
        let q = RoomQuality::of(&[
            member(0.02, 0.0, 10.0, Some(20.0)),
            member(0.0, 0.04, 20.0, None),
        ])
        .unwrap();
        assert!((q.loss - 0.03).abs() < 1e-9);
        assert!((q.jitter_ms - 15.0).abs() < 1e-9);
        assert_eq!(q.rtt_ms, Some(20.0));
    }

    #[test]
    fn audio_source_is_fnv1a_of_the_decimal_id() {
        // The same vector is checked by the web client's test (web/js/voice.js).
        let user: concord_proto::Id = "123456789012345678".parse().unwrap();
        assert_eq!(super::audio_source(user), 3_650_211_932);
    }
}
