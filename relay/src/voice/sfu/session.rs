//! The SFU's API: rooms by channel, each run by its own task (`room.rs`) that owns the
//! participants' sans-IO peer connections (`peer.rs`) and its UDP sockets. The relay offers
//! each participant one receive-only audio transceiver (their voice) and N send-only slots
//! (the loudest other speakers, chosen by the forwarder); a participant that asks for video
//! (browsers) also gets one video m-line both ways: their screen or camera up, and whoever
//! they watch down (`video.rs` decides); a viewer's keyframe requests and each new viewer
//! turn into a PLI to the publisher. Complete SDP: the room's host candidates are in the
//! offer.
//!
//! Limits: `voice.sfu_max_rooms` and `voice.sfu_max_upstream_kbps`. Per-participant RTCP
//! statistics feed `…/sfu/stats`; metrics are `concord_sfu_*`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use concord_proto::Id;
use rtc::statistics::report::{RTCStatsReport, RTCStatsReportEntry};
use tokio::sync::{mpsc, oneshot};

use super::room::{Command, MemberInfo, Shared};

/// Commands queued to one room's task at most (offers, answers, leaves, keyframe requests).
const ROOM_COMMANDS: usize = 64;

/// One sample of a participant's statistics: their upstream audio from the relay's own
/// reception statistics (`upstream`: received, lost, jitter in ms; the connection no longer
/// sees those packets), the rest from the connection's report. `last` carries (received,
/// lost) of the upstream between samples so the loss is that of the last interval. The
/// round trip is RTCP's (`rtcp_rtt`, from their reception blocks on the relay's sender
/// reports) when they have sent one, else the ICE consent checks'.
pub(super) fn sample_stats(
    user: Id,
    report: &RTCStatsReport,
    upstream: Option<(u64, i64, f64)>,
    rtcp_rtt: Option<std::time::Duration>,
    last: &mut (u64, i64),
) -> MemberStats {
    let mut out = MemberStats {
        user_id: user,
        ..MemberStats::default()
    };
    if let Some((received, lost, jitter_ms)) = upstream {
        let got = received.saturating_sub(last.0);
        let lost_now = (lost - last.1).max(0);
        *last = (received, lost);
        let total = got as f64 + lost_now as f64;
        if total > 0.0 {
            out.upstream_loss = lost_now as f64 / total;
        }
        out.upstream_jitter_ms = jitter_ms;
    }
    let (mut down_loss, mut down_n) = (0.0, 0u32);
    for entry in report.iter() {
        match entry {
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
                    out.rtt_from = Some("ice".to_owned());
                }
            }
            _ => {}
        }
    }
    if down_n > 0 {
        out.downstream_loss = down_loss / f64::from(down_n);
    }
    if let Some(rtt) = rtcp_rtt {
        out.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
        out.rtt_from = Some("rtcp".to_owned());
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
    /// Round-trip time to the participant, ms: from RTCP (their reception blocks' LSR and
    /// DLSR on the relay's sender reports) once they have reported, else from the ICE
    /// consent checks on the selected pair.
    pub rtt_ms: Option<f64>,
    /// Where `rtt_ms` comes from: `rtcp` or `ice`.
    pub rtt_from: Option<String>,
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

/// Why a watch request failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("no SFU session with video: ask for an offer with video first")]
    NoVideo,
}

/// One voice channel on the SFU: what the API shares with the room's task, and the way to
/// it. Dropping the last handle closes the channel, which ends the task.
struct Room {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    /// Offers being made (changed under the rooms lock): a room with one is not empty,
    /// even before its first member is in.
    pending: AtomicUsize,
}

impl Room {
    fn is_empty(&self) -> bool {
        self.shared.members.lock().expect("members").is_empty()
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| "the SFU room has stopped".to_owned())?;
        rx.await.map_err(|_| "the SFU room has stopped".to_owned())
    }
}

/// All SFU rooms of this instance.
pub struct Sfu {
    limits: SfuLimits,
    rooms: Mutex<HashMap<Id, Arc<Room>>>,
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

    /// The channel's room, made (sockets bound, task started) if there is room for one more.
    fn room(&self, channel: Id) -> Result<Arc<Room>, OfferError> {
        let mut rooms = self.rooms.lock().expect("rooms");
        let room = match rooms.get(&channel) {
            Some(room) => room.clone(),
            None => {
                if rooms.len() >= self.limits.max_rooms {
                    metrics::counter!("concord_sfu_refused_total", "reason" => "rooms")
                        .increment(1);
                    return Err(OfferError::Full(self.limits.max_rooms));
                }
                let sockets =
                    super::room::bind_sockets().map_err(|e| format!("SFU sockets: {e}"))?;
                let shared = Arc::new(Shared::new(self.limits));
                let (commands, rx) = mpsc::channel(ROOM_COMMANDS);
                tokio::spawn(super::room::run(shared.clone(), sockets, rx));
                let room = Arc::new(Room {
                    shared,
                    commands,
                    pending: AtomicUsize::new(0),
                });
                rooms.insert(channel, room.clone());
                metrics::gauge!("concord_sfu_rooms").increment(1.0);
                room
            }
        };
        room.pending.fetch_add(1, Ordering::Relaxed);
        Ok(room)
    }

    fn get(&self, channel: Id) -> Option<Arc<Room>> {
        self.rooms.lock().expect("rooms").get(&channel).cloned()
    }

    /// An offer into `room` is done (made or failed): a room left empty goes.
    fn settle(&self, channel: Id, room: &Arc<Room>) {
        let mut rooms = self.rooms.lock().expect("rooms");
        room.pending.fetch_sub(1, Ordering::Relaxed);
        if room.pending.load(Ordering::Relaxed) == 0
            && room.is_empty()
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
            let now = room.shared.now_ms();
            room.shared
                .video
                .lock()
                .expect("video")
                .watch(user, watched, now);
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
        let offered = room
            .ask(|reply| Command::Offer { user, video, reply })
            .await??;
        {
            let mut f = room.shared.forwarder.lock().expect("forwarder");
            f.add_listener(user, &offered.slot_ssrcs);
            f.set_muted(user, !speak);
        }
        if let Some(ssrc) = offered.video_ssrc {
            room.shared
                .video
                .lock()
                .expect("video")
                .add_viewer(user, ssrc);
        }
        room.shared.members.lock().expect("members").insert(
            user,
            MemberInfo {
                stats: MemberStats {
                    user_id: user,
                    ..MemberStats::default()
                },
                video,
            },
        );
        metrics::gauge!("concord_sfu_participants").increment(1.0);
        Ok(offered.sdp)
    }

    /// The participant's answer to the relay's offer.
    pub async fn answer(&self, channel: Id, user: Id, sdp: String) -> Result<(), String> {
        let room = self
            .get(channel)
            .filter(|r| {
                r.shared
                    .members
                    .lock()
                    .expect("members")
                    .contains_key(&user)
            })
            .ok_or("no SFU session: ask for an offer first")?;
        room.ask(|reply| Command::Answer { user, sdp, reply })
            .await?
    }

    /// Whom `user` watches in `channel`, if anyone.
    pub fn watching(&self, channel: Id, user: Id) -> Option<Id> {
        let room = self.get(channel)?;
        room.shared.video.lock().expect("video").watching(user)
    }

    /// `viewer` watches `target`'s screen or camera on their video slot (None: nobody); the
    /// target is asked for a keyframe so the picture starts at once.
    pub async fn watch(
        &self,
        channel: Id,
        viewer: Id,
        target: Option<Id>,
    ) -> Result<(), WatchError> {
        let room = self.get(channel).ok_or(WatchError::NoVideo)?;
        let has_slot = room
            .shared
            .members
            .lock()
            .expect("members")
            .get(&viewer)
            .is_some_and(|m| m.video);
        if !has_slot {
            return Err(WatchError::NoVideo);
        }
        let now = room.shared.now_ms();
        let ask = room
            .shared
            .video
            .lock()
            .expect("video")
            .watch(viewer, target, now);
        if let Some(publisher) = ask {
            let _ = room
                .commands
                .send(Command::Keyframe {
                    publisher,
                    reason: "new_viewer",
                })
                .await;
        }
        Ok(())
    }

    /// Server mute / speak permission changes.
    pub fn set_muted(&self, channel: Id, user: Id, muted: bool) {
        if let Some(room) = self.get(channel) {
            room.shared
                .forwarder
                .lock()
                .expect("forwarder")
                .set_muted(user, muted);
        }
    }

    pub async fn leave(&self, channel: Id, user: Id) {
        let (room, was_member) = {
            let mut rooms = self.rooms.lock().expect("rooms");
            let Some(room) = rooms.get(&channel).cloned() else {
                return;
            };
            let was_member = room
                .shared
                .members
                .lock()
                .expect("members")
                .remove(&user)
                .is_some();
            room.shared
                .forwarder
                .lock()
                .expect("forwarder")
                .remove(user);
            room.shared.video.lock().expect("video").remove(user);
            // Not while another participant's offer is on its way in (it holds the room).
            if room.is_empty() && room.pending.load(Ordering::Relaxed) == 0 {
                rooms.remove(&channel);
                metrics::gauge!("concord_sfu_rooms").decrement(1.0);
            }
            (room, was_member)
        };
        // The task closes the connection (DTLS close out); a room that left the map stops
        // once this last handle goes.
        let _ = room.commands.send(Command::Leave { user }).await;
        if was_member {
            metrics::gauge!("concord_sfu_participants").decrement(1.0);
        }
    }

    fn member_stats(room: &Room) -> Vec<MemberStats> {
        room.shared
            .members
            .lock()
            .expect("members")
            .values()
            .map(|m| m.stats.clone())
            .collect()
    }

    /// Every participant's latest statistics in a room (empty when it is not on the SFU).
    pub fn room_stats(&self, channel: Id) -> Vec<MemberStats> {
        let Some(room) = self.get(channel) else {
            return Vec::new();
        };
        let mut out = Self::member_stats(&room);
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
            let Some(quality) = RoomQuality::of(&Self::member_stats(&room)) else {
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
