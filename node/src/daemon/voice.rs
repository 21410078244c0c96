//! Voice in the node: joining a voice channel through the relay (a relay-signed grant,
//! checked against the relay key this node trusts), renewing it before it ends, self mute,
//! leaving, and the participant list kept current from `voice_state_update` pushes; and the
//! mesh's signalling: for every other node in the channel, the side with the smaller device
//! key (or a relay-only node, which nobody can reach) offers a WebRTC link over libp2p with
//! its grant; the answerer checks the grant before it looks at the offer, and so does the
//! offerer with the answer. Dead links are rebuilt with backoff, disconnected ones get an ICE
//! restart; a peer is reached through the relay's circuit when no address of it works.
//!
//! The move to the SFU: the relay's rule applied to `voice_state_update`s, sticky for the
//! session: mesh links close, mesh offers are refused, and `sfu_tick` keeps one link to the
//! relay's SFU, rebuilt when the relay has been silent for 2 s (`peer::SFU_DISCONNECTED`),
//! with a join again when the room's instance does not know this node (the owner died and
//! the room moved). Reached through the control API (`/v1/voice…`) and `concord voice …`.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_net::Request;
use concord_net::identity::{device_key, peer_id_of_device_key};
use concord_net::protocol::{MAX_SDP_BYTES, Response};
use concord_proto::Id;
use concord_proto::api::VoiceJoined;
use concord_proto::model::VoiceState;
use concord_proto::signed::VoiceGrant;
use libp2p::PeerId;
use libp2p::multiaddr::{Multiaddr, Protocol};
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinHandle;

use super::{Inner, LocalEvent};
use crate::relay_http::HttpError;
use crate::voice_mesh::peer::IceConfig;
use crate::voice_mesh::{Mesh, MeshConfig, PeerStatus, SFU_KEY};

/// The node's place in a voice channel.
pub(crate) struct Session {
    pub channel_id: Id,
    pub grant: VoiceGrant,
    /// `mesh` or `sfu`; once `sfu`, it stays so for this session (as on the relay).
    pub mode: String,
    pub mesh_size: u32,
    pub self_mute: bool,
    pub self_deaf: bool,
    pub participants: Vec<VoiceState>,
    pub mesh: Arc<Mesh>,
    renew: JoinHandle<()>,
    signalling: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.renew.abort();
        self.signalling.abort();
        let mesh = self.mesh.clone();
        // The clock and the peer connections stop with the session, however it ends.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { mesh.stop().await });
        }
    }
}

/// What `concord voice status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct VoiceStatus {
    pub channel_id: Id,
    pub mode: String,
    pub speak: bool,
    pub self_mute: bool,
    pub self_deaf: bool,
    pub grant_expires_at: i64,
    pub participants: Vec<VoiceState>,
    /// One entry per mesh link (on the SFU: the one link to the relay): state, path
    /// (direct / turn), RTT, loss, jitter.
    pub peers: Vec<PeerStatus>,
    /// On the SFU: each slot the relay forwards, who spoke on it last, and its audio.
    pub slots: Vec<SlotStatus>,
    pub packets_sent: u64,
    pub frames_played: u64,
}

/// One SFU slot as `concord voice status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    pub ssrc: u32,
    /// The participant whose voice the slot carried last (from the packets' CSRC).
    pub user_id: Option<Id>,
    pub audio: Option<crate::voice_mesh::media::SpeakerStats>,
}

fn http_error(e: HttpError) -> String {
    e.to_string()
}

/// Asks the relay for a place (or a renewal) and checks the grant it signed.
async fn request(inner: &Inner, channel_id: Id, self_mute: bool) -> Result<VoiceJoined, String> {
    let http = inner.http().ok_or("join a guild on a relay first")?;
    let relay_key = inner
        .relay()
        .and_then(|r| r.verifying_key())
        .ok_or("the relay's key is not known yet")?;
    let joined: VoiceJoined = http
        .authed(
            &inner.identity,
            reqwest::Method::POST,
            &format!("/api/v1/voice/channels/{channel_id}/join"),
            Some(json!({ "self_mute": self_mute, "client": "node" })),
        )
        .await
        .map_err(http_error)?;
    joined
        .grant
        .verify(&relay_key, super::now_ms())
        .map_err(|e| format!("the relay's voice grant does not verify: {e}"))?;
    if joined.grant.channel_id != channel_id
        || joined.grant.device_key != inner.identity.device_key()
    {
        return Err("the voice grant names another channel or device".into());
    }
    Ok(joined)
}

/// Renews the grant at a third of its life until the session ends or a renewal fails.
fn spawn_renewal(inner: Arc<Inner>, channel_id: Id, expires_at: i64) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut expires_at = expires_at;
        loop {
            let left = (expires_at - super::now_ms()).max(0) as u64;
            tokio::select! {
                _ = inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(left / 3)) => {}
            }
            let self_mute = inner
                .voice
                .lock()
                .expect("voice lock")
                .as_ref()
                .map(|s| s.self_mute)
                .unwrap_or(false);
            match request(&inner, channel_id, self_mute).await {
                Ok(joined) => {
                    expires_at = joined.grant.expires_at;
                    if let Some(s) = inner.voice.lock().expect("voice lock").as_mut() {
                        s.grant = joined.grant;
                        if joined.mode == "sfu" {
                            s.mode = joined.mode;
                        }
                        s.participants = joined.participants;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, %channel_id, "voice grant renewal failed; leaving");
                    if expires_at <= super::now_ms() {
                        let gone = inner.voice.lock().expect("voice lock").take();
                        // Dropping the session aborts this task: do it last.
                        inner.emit(LocalEvent::StateChanged);
                        drop(gone);
                        return;
                    }
                }
            }
        }
    })
}

pub(crate) async fn join(
    inner: &Arc<Inner>,
    channel_id: Id,
    self_mute: bool,
) -> Result<VoiceStatus, String> {
    if inner.voice.lock().expect("voice lock").is_some() {
        leave(inner).await?;
    }
    let joined = request(inner, channel_id, self_mute).await?;
    let ice = ice_config(inner).await;
    let me = joined.grant.user_id;
    let mesh = Mesh::start(
        me,
        MeshConfig {
            ice,
            max_links: joined.mesh_size.saturating_sub(1).max(1) as usize,
            source: inner.config.voice.source.clone(),
            sink: inner.config.voice.sink.clone(),
            speaker: inner.config.voice.speaker,
            probe: inner.config.voice.probe.clone(),
        },
    )?;
    mesh.set_muted(self_mute || !joined.grant.speak);
    let renew = spawn_renewal(inner.clone(), channel_id, joined.grant.expires_at);
    let signalling = tokio::spawn(signal(inner.clone(), mesh.clone()));
    let session = Session {
        channel_id,
        grant: joined.grant,
        mode: joined.mode,
        mesh_size: joined.mesh_size,
        self_mute,
        self_deaf: false,
        participants: joined.participants,
        mesh,
        renew,
        signalling,
    };
    let status = status_of(&session);
    *inner.voice.lock().expect("voice lock") = Some(session);
    inner.emit(LocalEvent::StateChanged);
    Ok(status)
}

/// STUN and TURN servers from the relay (with this user's ephemeral TURN credentials). None
/// is fine on a LAN or loopback: host candidates connect.
async fn ice_config(inner: &Inner) -> IceConfig {
    #[derive(serde::Deserialize)]
    struct Server {
        urls: Vec<String>,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        credential: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Servers {
        ice_servers: Vec<Server>,
    }
    let relay_only = inner.config.relay_only || inner.config.voice.force_turn;
    let mut servers = Vec::new();
    if let Some(http) = inner.http() {
        match http
            .authed::<Servers>(
                &inner.identity,
                reqwest::Method::GET,
                "/api/v1/voice/ice-servers",
                None,
            )
            .await
        {
            Ok(answer) => {
                servers = answer
                    .ice_servers
                    .into_iter()
                    .map(|s| webrtc::peer_connection::RTCIceServer {
                        urls: s.urls,
                        username: s.username.unwrap_or_default(),
                        credential: s.credential.unwrap_or_default(),
                    })
                    .collect();
            }
            Err(e) => tracing::warn!(error = %e, "no ICE servers from the relay"),
        }
    }
    if relay_only
        && !servers
            .iter()
            .any(|s| s.urls.iter().any(|u| u.starts_with("turn")))
    {
        tracing::warn!(
            "relay-only voice needs a TURN server from the relay; links will not connect"
        );
    }
    IceConfig {
        servers,
        relay_only,
    }
}

pub(crate) async fn leave(inner: &Inner) -> Result<(), String> {
    let Some(session) = inner.voice.lock().expect("voice lock").take() else {
        return Err("not in a voice channel".into());
    };
    // Peers close their side at once instead of waiting for ICE to time out.
    let channel_id = session.channel_id;
    for key in session.mesh.live() {
        if let Some(peer) = peer_id_of_device_key(&key) {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                inner.rpc(peer, Request::VoiceBye { channel_id }),
            )
            .await;
        }
    }
    session.mesh.stop().await;
    let http = inner.http().ok_or("no relay")?;
    let answer: Result<serde_json::Value, HttpError> = http
        .authed(
            &inner.identity,
            reqwest::Method::POST,
            &format!("/api/v1/voice/channels/{}/leave", session.channel_id),
            None,
        )
        .await;
    inner.emit(LocalEvent::StateChanged);
    match answer {
        // 204 has no body; a grant that already ran out is gone too.
        Ok(_) | Err(HttpError::Protocol(_)) => Ok(()),
        Err(e) if e.code() == Some("unknown_voice_state") => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) async fn set_mute(inner: &Inner, mute: bool) -> Result<VoiceStatus, String> {
    set_state(inner, json!({ "self_mute": mute })).await
}

/// Deafened: nothing is played, and (as in every voice app) the microphone is muted too.
pub(crate) async fn set_deaf(inner: &Inner, deaf: bool) -> Result<VoiceStatus, String> {
    set_state(inner, json!({ "self_deaf": deaf, "self_mute": deaf })).await
}

async fn set_state(inner: &Inner, body: serde_json::Value) -> Result<VoiceStatus, String> {
    let channel_id = inner
        .voice
        .lock()
        .expect("voice lock")
        .as_ref()
        .map(|s| s.channel_id)
        .ok_or("not in a voice channel")?;
    let http = inner.http().ok_or("no relay")?;
    let state: VoiceState = http
        .authed(
            &inner.identity,
            reqwest::Method::PATCH,
            &format!("/api/v1/voice/channels/{channel_id}/state"),
            Some(body),
        )
        .await
        .map_err(http_error)?;
    let mut guard = inner.voice.lock().expect("voice lock");
    let session = guard.as_mut().ok_or("not in a voice channel")?;
    session.self_mute = state.self_mute;
    session.self_deaf = state.self_deaf;
    session.mesh.set_muted(state.self_mute || !state.speak);
    session.mesh.set_deafened(state.self_deaf);
    upsert(&mut session.participants, state);
    Ok(status_of(session))
}

pub(crate) fn status(inner: &Inner) -> Option<VoiceStatus> {
    inner
        .voice
        .lock()
        .expect("voice lock")
        .as_ref()
        .map(status_of)
}

fn status_of(s: &Session) -> VoiceStatus {
    VoiceStatus {
        channel_id: s.channel_id,
        mode: s.mode.clone(),
        speak: s.grant.speak,
        self_mute: s.self_mute,
        self_deaf: s.self_deaf,
        grant_expires_at: s.grant.expires_at,
        participants: s.participants.clone(),
        peers: s.mesh.status(),
        slots: s
            .mesh
            .media()
            .slots()
            .into_iter()
            .map(|(slot, source, audio)| SlotStatus {
                ssrc: crate::voice_mesh::peer::slot_ssrc(slot),
                user_id: s
                    .participants
                    .iter()
                    .map(|p| p.user_id)
                    .find(|u| concord_media::audio_source(u.0) == source),
                audio,
            })
            .collect(),
        packets_sent: s
            .mesh
            .media()
            .packets_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        frames_played: s
            .mesh
            .media()
            .frames_played
            .load(std::sync::atomic::Ordering::Relaxed),
    }
}

fn upsert(list: &mut Vec<VoiceState>, state: VoiceState) {
    list.retain(|p| p.user_id != state.user_id);
    list.push(state);
    list.sort_by_key(|p| p.user_id);
}

/// A `voice_state_update` pushed by the relay: keeps the open session's participant list
/// current (a participant whose `channel_id` is absent or elsewhere left it).
pub(crate) fn on_voice_state(inner: &Inner, state: VoiceState) {
    let mut guard = inner.voice.lock().expect("voice lock");
    let Some(session) = guard.as_mut() else {
        return;
    };
    if state.channel_id == Some(session.channel_id) {
        // Server mute (or a lost speak permission) takes effect on both sides at once: the
        // others drop this speaker's packets, and the speaker stops sending.
        session.mesh.set_allowed(state.user_id, state.speak);
        if state.user_id == session.grant.user_id {
            session.mesh.set_muted(session.self_mute || !state.speak);
        }
        upsert(&mut session.participants, state);
        // Past the mesh size, a browser, or someone on another instance of a cluster: the
        // channel moves to the SFU (the relay's rule).
        if wants_sfu(&session.participants, session.channel_id, session.mesh_size) {
            session.mode = "sfu".into();
        }
    } else {
        session.participants.retain(|p| p.user_id != state.user_id);
    }
}

/// The relay's rule for a channel on the SFU: more than `mesh_size` people, a browser, or
/// someone who talks to another instance than the room's.
fn wants_sfu(participants: &[VoiceState], channel_id: Id, mesh_size: u32) -> bool {
    let here: Vec<&VoiceState> = participants
        .iter()
        .filter(|p| p.channel_id == Some(channel_id))
        .collect();
    here.len() > mesh_size as usize
        || here
            .iter()
            .any(|p| p.client == "browser" || p.cross_instance)
}

/// A grant a peer presented: signed by our relay, for our channel, naming the device at the
/// other end of the libp2p connection, not expired.
fn check_grant(
    inner: &Inner,
    grant: &VoiceGrant,
    channel_id: Id,
    device: &str,
) -> Result<(), String> {
    let relay_key = inner
        .relay()
        .and_then(|r| r.verifying_key())
        .ok_or("the relay's key is not known")?;
    grant
        .verify(&relay_key, super::now_ms())
        .map_err(|e| format!("voice grant: {e}"))?;
    if grant.channel_id != channel_id {
        return Err("the voice grant is for another channel".into());
    }
    if grant.device_key != device {
        return Err("the voice grant names another device".into());
    }
    Ok(())
}

/// What this node knows of its session, without holding the lock across awaits.
struct Snapshot {
    channel_id: Id,
    sfu: bool,
    grant: VoiceGrant,
    participants: Vec<VoiceState>,
    mesh: Arc<Mesh>,
}

fn snapshot(inner: &Inner) -> Option<Snapshot> {
    inner
        .voice
        .lock()
        .expect("voice lock")
        .as_ref()
        .map(|s| Snapshot {
            channel_id: s.channel_id,
            sfu: s.mode == "sfu",
            grant: s.grant.clone(),
            participants: s.participants.clone(),
            mesh: s.mesh.clone(),
        })
}

/// A `voice_offer` from a peer: the grant first, then the SDP.
pub(crate) async fn on_offer(
    inner: &Arc<Inner>,
    peer: PeerId,
    grant: VoiceGrant,
    sdp: String,
    restart: bool,
) -> Response {
    if sdp.len() > MAX_SDP_BYTES {
        return Response::refused(
            "too_large",
            format!("an SDP offer is at most {MAX_SDP_BYTES} bytes"),
        );
    }
    let Some(device) = device_key(&peer) else {
        return Response::refused("bad_peer", "the peer has no Ed25519 device key");
    };
    let Some(s) = snapshot(inner) else {
        return Response::refused("not_in_voice", "this node is not in a voice channel");
    };
    if let Err(e) = check_grant(inner, &grant, s.channel_id, &device) {
        tracing::info!(%peer, error = %e, "voice offer refused");
        return Response::refused("bad_grant", e);
    }
    if s.sfu {
        return Response::refused("sfu", "this channel is on the relay's SFU now");
    }
    // Crossed offers (a relay-only peer offers to everyone): the side with the smaller
    // device key keeps its own link; the other side answers that one.
    if !restart && inner.identity.device_key() < device && s.mesh.live().contains(&device) {
        return Response::refused("glare", "our offer to you stands; answer it");
    }
    let speaks = grant.speak
        && s.participants
            .iter()
            .find(|p| p.user_id == grant.user_id)
            .is_none_or(|p| p.speak);
    s.mesh.set_allowed(grant.user_id, speaks);
    match s.mesh.answer(grant.user_id, &device, sdp, restart).await {
        Ok(sdp) => Response::VoiceAnswer {
            grant: s.grant,
            sdp,
        },
        Err(e) => Response::refused("voice_link", e),
    }
}

/// A `voice_bye`: the peer left; its link goes now.
pub(crate) async fn on_bye(inner: &Arc<Inner>, peer: PeerId, channel_id: Id) -> Response {
    if let (Some(s), Some(device)) = (snapshot(inner), device_key(&peer))
        && s.channel_id == channel_id
    {
        s.mesh.close_link(&device).await;
    }
    Response::Received
}

/// Whether we open the link to `other` (else we wait for its offer).
fn we_offer(inner: &Inner, me: &str, other: &str) -> bool {
    inner.config.relay_only || me < other
}

/// How often the signalling loop looks at the participants and the links.
const SIGNAL_TICK: Duration = Duration::from_millis(500);
/// Failed attempts to reach a peer back off up to this long.
const MAX_RETRY: Duration = Duration::from_secs(15);

/// Keeps the mesh matching the participant list for the session's life.
async fn signal(inner: Arc<Inner>, mesh: Arc<Mesh>) {
    let me = inner.identity.device_key();
    let mut retry: HashMap<String, (Instant, Duration)> = HashMap::new();
    let mut in_flight: HashMap<String, JoinHandle<Result<(), String>>> = HashMap::new();
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(SIGNAL_TICK) => {}
        }
        let Some(s) = snapshot(&inner) else { return };
        if s.sfu {
            sfu_tick(&inner, &mesh, &s, &mut in_flight, &mut retry).await;
            continue;
        }
        // Finished attempts: success clears the backoff, failure doubles it.
        let done: Vec<String> = in_flight
            .iter()
            .filter(|(_, h)| h.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        for key in done {
            let Some(handle) = in_flight.remove(&key) else {
                continue;
            };
            match handle.await {
                Ok(Ok(())) => {
                    retry.remove(&key);
                }
                Ok(Err(e)) => {
                    let delay = back_off(&mut retry, &key);
                    tracing::info!(peer = %key, error = %e, retry_in = ?delay, "voice link failed");
                }
                Err(_) => {}
            }
        }
        let others: Vec<&VoiceState> = s
            .participants
            .iter()
            .filter(|p| {
                p.channel_id == Some(s.channel_id) && p.client == "node" && p.device_key != me
            })
            .collect();
        // Links to devices that left the channel close.
        for key in mesh.live() {
            if !others.iter().any(|p| p.device_key == key) {
                mesh.close_link(&key).await;
            }
        }
        mesh.drop_dead().await;
        let live = mesh.live();
        let now = Instant::now();
        // Disconnected links (a network change): the offerer restarts ICE.
        for key in mesh.disconnected() {
            if we_offer(&inner, &me, &key) && !in_flight.contains_key(&key) {
                let task = offer_to(
                    inner.clone(),
                    mesh.clone(),
                    s.grant.clone(),
                    None,
                    key.clone(),
                );
                in_flight.insert(key, tokio::spawn(task));
            }
        }
        for p in others {
            mesh.set_allowed(p.user_id, p.speak);
            if live.contains(&p.device_key)
                || in_flight.contains_key(&p.device_key)
                || !we_offer(&inner, &me, &p.device_key)
                || retry.get(&p.device_key).is_some_and(|(at, _)| *at > now)
            {
                continue;
            }
            let task = offer_to(
                inner.clone(),
                mesh.clone(),
                s.grant.clone(),
                Some(p.user_id),
                p.device_key.clone(),
            );
            in_flight.insert(p.device_key.clone(), tokio::spawn(task));
        }
    }
}

/// A failed attempt on `key`: no new one before the returned delay (1 s, doubling up to
/// `MAX_RETRY`).
fn back_off(retry: &mut HashMap<String, (Instant, Duration)>, key: &str) -> Duration {
    let delay = retry
        .get(key)
        .map(|(_, d)| (*d * 2).min(MAX_RETRY))
        .unwrap_or(Duration::from_secs(1));
    retry.insert(key.to_owned(), (Instant::now() + delay, delay));
    delay
}

/// On the SFU: no mesh links; one link to the relay, rebuilt with backoff if it fails.
async fn sfu_tick(
    inner: &Arc<Inner>,
    mesh: &Arc<Mesh>,
    s: &Snapshot,
    in_flight: &mut HashMap<String, JoinHandle<Result<(), String>>>,
    retry: &mut HashMap<String, (Instant, Duration)>,
) {
    for key in mesh.live() {
        if key != SFU_KEY {
            mesh.close_link(&key).await;
        }
    }
    // No word from the relay for a while: it may have died, and the room moved to another
    // instance; a new link asks the relay where the room is now.
    if mesh.disconnected().iter().any(|k| k == SFU_KEY) {
        tracing::info!("the SFU link went quiet; reconnecting");
        mesh.close_link(SFU_KEY).await;
    }
    mesh.drop_dead().await;
    if mesh.live().iter().any(|k| k == SFU_KEY)
        || retry
            .get(SFU_KEY)
            .is_some_and(|(at, _)| *at > Instant::now())
    {
        return;
    }
    let done = in_flight.get(SFU_KEY).is_some_and(|h| h.is_finished());
    if done
        && let Some(handle) = in_flight.remove(SFU_KEY)
        && let Ok(Err(e)) = handle.await
    {
        let delay = back_off(retry, SFU_KEY);
        tracing::info!(error = %e, retry_in = ?delay, "SFU link failed");
        return;
    }
    if !in_flight.contains_key(SFU_KEY) {
        let task = sfu_connect(inner.clone(), mesh.clone(), s.channel_id, s.grant.user_id);
        in_flight.insert(SFU_KEY.to_owned(), tokio::spawn(task));
    }
}

/// Takes the session's place in the channel again (the room's instance lost it) and keeps
/// the new grant.
async fn rejoin(inner: &Inner, channel_id: Id) -> Result<(), String> {
    let self_mute = inner
        .voice
        .lock()
        .expect("voice lock")
        .as_ref()
        .is_some_and(|s| s.self_mute);
    let joined = request(inner, channel_id, self_mute).await?;
    tracing::info!(%channel_id, "joined the voice channel again on its instance");
    if let Some(s) = inner.voice.lock().expect("voice lock").as_mut()
        && s.channel_id == channel_id
    {
        s.grant = joined.grant;
        s.participants = joined.participants;
    }
    Ok(())
}

/// Asks the relay for its SFU offer and answers it.
async fn sfu_connect(
    inner: Arc<Inner>,
    mesh: Arc<Mesh>,
    channel_id: Id,
    me: Id,
) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Sdp {
        sdp: String,
    }
    let http = inner.http().ok_or("no relay")?;
    let path = format!("/api/v1/voice/channels/{channel_id}/sfu");
    let offer: Sdp = match http
        .authed(&inner.identity, reqwest::Method::POST, &path, None)
        .await
    {
        Ok(offer) => offer,
        // The room's instance does not know us: it is a new owner after a failover (or our
        // place ran out). Join again there, then ask once more.
        Err(e) if e.code() == Some("unknown_voice_state") => {
            rejoin(&inner, channel_id).await?;
            http.authed(&inner.identity, reqwest::Method::POST, &path, None)
                .await
                .map_err(http_error)?
        }
        Err(e) => return Err(http_error(e)),
    };
    if offer.sdp.len() > MAX_SDP_BYTES {
        return Err("the relay's SFU offer is too large".into());
    }
    let answer = mesh.answer_sfu(me, offer.sdp).await?;
    let _: serde_json::Value = http
        .authed(
            &inner.identity,
            reqwest::Method::POST,
            &format!("/api/v1/voice/channels/{channel_id}/sfu/answer"),
            Some(json!({ "sdp": answer })),
        )
        .await
        .map_err(http_error)?;
    Ok(())
}

/// Offers a link (or, with no `user_id`, an ICE restart of the live one) and applies the
/// answer once its grant checks out.
async fn offer_to(
    inner: Arc<Inner>,
    mesh: Arc<Mesh>,
    grant: VoiceGrant,
    user_id: Option<Id>,
    device: String,
) -> Result<(), String> {
    let peer = peer_id_of_device_key(&device).ok_or("not a device key")?;
    reach(&inner, peer).await?;
    let (generation, sdp) = match user_id {
        Some(user_id) => mesh.offer(user_id, &device).await?,
        None => {
            tracing::info!(peer = %device, "voice link disconnected: ICE restart");
            mesh.restart(&device).await?
        }
    };
    let channel_id = grant.channel_id;
    let answer = inner
        .rpc(
            peer,
            Request::VoiceOffer {
                grant,
                sdp,
                restart: user_id.is_none(),
            },
        )
        .await;
    let result = match answer {
        Ok(Response::VoiceAnswer { grant, sdp }) if sdp.len() <= MAX_SDP_BYTES => {
            match check_grant(&inner, &grant, channel_id, &device) {
                Ok(()) => {
                    if !grant.speak {
                        mesh.set_allowed(grant.user_id, false);
                    }
                    mesh.accept(&device, generation, sdp).await
                }
                Err(e) => Err(e),
            }
        }
        Ok(Response::Refused { code, message }) => Err(format!("{code}: {message}")),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(e),
    };
    if result.is_err() && user_id.is_some() {
        mesh.close_generation(&device, generation).await;
    }
    result
}

/// Makes sure there is a libp2p connection to `peer`: its known addresses, and its circuit
/// through our relay (a relay-only node is reachable only that way, and reaches others that
/// way).
async fn reach(inner: &Arc<Inner>, peer: PeerId) -> Result<(), String> {
    let connected = |inner: &Inner| {
        inner
            .connections
            .lock()
            .expect("connections lock")
            .peers()
            .contains(&peer)
    };
    if connected(inner) {
        return Ok(());
    }
    // A relay-only node dials nobody directly: only the circuit, which hides its address.
    let addrs: Vec<Multiaddr> = if inner.config.relay_only {
        Vec::new()
    } else {
        inner
            .directory
            .lock()
            .expect("directory lock")
            .members(super::now_ms())
            .into_iter()
            .filter(|m| m.peer_id == peer.to_string())
            .flat_map(|m| m.record.map(|r| r.addrs).unwrap_or_default())
            .filter_map(|a| a.parse().ok())
            .collect()
    };
    let mut addrs = addrs;
    if !addrs.is_empty() {
        let _ = inner
            .commands
            .send(super::swarm::Command::DialPeer {
                peer,
                addrs: std::mem::take(&mut addrs),
            })
            .await;
    }
    // The circuit is dialed explicitly (not subject to the address backoff): the peer may
    // have taken its reservation only a moment ago.
    if let Some(relay) = inner.relay() {
        let relay_addrs: Vec<Multiaddr> =
            relay.addrs.iter().filter_map(|a| a.parse().ok()).collect();
        if let Some(base) = relay_addrs
            .iter()
            .find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)))
            .or(relay_addrs.first())
        {
            let circuit = base
                .clone()
                .with(Protocol::P2pCircuit)
                .with(Protocol::P2p(peer));
            let _ = inner
                .commands
                .send(super::swarm::Command::Dial(circuit))
                .await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        if connected(inner) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("cannot reach {peer}"))
}
