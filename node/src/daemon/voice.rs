//! Voice in the node, signalling part: joining a voice channel through the relay (a
//! relay-signed grant, checked against the relay key this node trusts), renewing it before it
//! ends, self mute, leaving, and the participant list kept current from `voice_state_update`
//! pushes. The media engine (Opus, WebRTC mesh) builds on this session.

use std::sync::Arc;
use std::time::Duration;

use concord_proto::Id;
use concord_proto::api::VoiceJoined;
use concord_proto::model::VoiceState;
use concord_proto::signed::VoiceGrant;
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinHandle;

use super::{Inner, LocalEvent};
use crate::relay_http::HttpError;

/// The node's place in a voice channel.
pub(crate) struct Session {
    pub channel_id: Id,
    pub grant: VoiceGrant,
    pub mode: String,
    pub self_mute: bool,
    pub participants: Vec<VoiceState>,
    renew: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

/// What `concord voice status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct VoiceStatus {
    pub channel_id: Id,
    pub mode: String,
    pub speak: bool,
    pub self_mute: bool,
    pub grant_expires_at: i64,
    pub participants: Vec<VoiceState>,
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
                        s.mode = joined.mode;
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
    let joined = request(inner, channel_id, self_mute).await?;
    let renew = spawn_renewal(inner.clone(), channel_id, joined.grant.expires_at);
    let session = Session {
        channel_id,
        grant: joined.grant,
        mode: joined.mode,
        self_mute,
        participants: joined.participants,
        renew,
    };
    let status = status_of(&session);
    *inner.voice.lock().expect("voice lock") = Some(session);
    inner.emit(LocalEvent::StateChanged);
    Ok(status)
}

pub(crate) async fn leave(inner: &Inner) -> Result<(), String> {
    let Some(session) = inner.voice.lock().expect("voice lock").take() else {
        return Err("not in a voice channel".into());
    };
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
            Some(json!({ "self_mute": mute })),
        )
        .await
        .map_err(http_error)?;
    let mut guard = inner.voice.lock().expect("voice lock");
    let session = guard.as_mut().ok_or("not in a voice channel")?;
    session.self_mute = mute;
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
        grant_expires_at: s.grant.expires_at,
        participants: s.participants.clone(),
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
        upsert(&mut session.participants, state);
    } else {
        session.participants.retain(|p| p.user_id != state.user_id);
    }
}
