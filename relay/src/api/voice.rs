//! Voice: ICE servers for WebRTC (STUN, and TURN with ephemeral credentials: TURN REST
//! scheme, shared secret with concord-turn); joining a voice channel (a relay-signed grant,
//! renewed by joining again), leaving, self mute/deafen, server mute by moderators, and the
//! participant list. State changes go to everyone who can see the channel as
//! `voice_state_update`. The grant is `concord_proto::signed::VoiceGrant`. The SFU's routes
//! are here too: `POST /api/v1/voice/channels/{id}/sfu` (the relay's offer), `…/sfu/answer`,
//! `…/sfu/watch` and `…/sfu/stats`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use concord_proto::api::{
    ErrorBody, JoinVoice, ServerMute, SfuOfferRequest, UpdateVoiceState, VoiceJoined, WatchVideo,
};
use concord_proto::model::{ChannelKind, VoiceState};
use concord_proto::signed::VoiceGrant;
use concord_proto::{Id, Permissions};
use serde::Serialize;

use super::error::{ApiError, ApiResult};
use super::extract::{PathParams, Valid};
use crate::app::{App, now_ms};
use crate::auth::Caller;
use crate::perms::ChannelAccess;
use crate::voice::sfu::session::{MemberStats, OfferError};
use crate::voice::{self, rooms::JoinError};

/// One entry of WebRTC's `RTCConfiguration.iceServers`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct IceServers {
    pub ice_servers: Vec<IceServer>,
    /// Seconds the TURN credentials stay valid.
    pub ttl_secs: u64,
}

#[utoipa::path(get, path = "/api/v1/voice/ice-servers", tag = "voice", security(("bearer" = [])),
    responses((status = 200, body = IceServers), (status = 401, body = ErrorBody)))]
pub async fn ice_servers(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> ApiResult<Json<IceServers>> {
    let voice = &app.config.voice;
    let mut servers = Vec::new();
    if !voice.stun_urls.is_empty() {
        servers.push(IceServer {
            urls: voice.stun_urls.clone(),
            username: None,
            credential: None,
        });
    }
    if let Some(secret) = voice.turn_secret.as_deref().filter(|s| !s.is_empty())
        && !voice.turn_urls.is_empty()
    {
        let now = (now_ms() / 1000) as u64;
        let (username, credential) = concord_proto::turn_rest::credentials(
            secret,
            &caller.user_id.to_string(),
            voice.credential_ttl_secs,
            now,
        );
        servers.push(IceServer {
            urls: voice.turn_urls.clone(),
            username: Some(username),
            credential: Some(credential),
        });
    }
    Ok(Json(IceServers {
        ice_servers: servers,
        ttl_secs: voice.credential_ttl_secs,
    }))
}

/// A voice channel the caller may see, with their permissions there.
async fn voice_channel(
    app: &App,
    caller: &Caller,
    channel_id: Id,
    needed: Permissions,
) -> ApiResult<ChannelAccess> {
    let access = app
        .perms
        .require_channel(channel_id, caller.user_id, needed)
        .await?;
    if access.channel.kind != ChannelKind::Voice {
        return Err(ApiError::BadRequest(
            "not_a_voice_channel",
            "this is not a voice channel".into(),
        ));
    }
    Ok(access)
}

fn not_in_voice() -> ApiError {
    ApiError::NotFound("voice_state")
}

#[utoipa::path(post, path = "/api/v1/voice/channels/{channel_id}/join", tag = "voice", security(("bearer" = [])),
    params(("channel_id" = Id, Path)), request_body = JoinVoice,
    responses((status = 200, body = VoiceJoined, description = "in the channel (or renewed): a grant valid voice.grant_ttl_secs; join again before it ends"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "voice_channel_full"), (status = 503, body = ErrorBody)))]
pub async fn join(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(channel_id): PathParams<Id>,
    headers: axum::http::HeaderMap,
    Valid(body): Valid<JoinVoice>,
) -> ApiResult<Json<VoiceJoined>> {
    let access = voice_channel(
        &app,
        &caller,
        channel_id,
        Permissions::VIEW_CHANNEL | Permissions::CONNECT,
    )
    .await?;
    let max = app.config.voice.max_participants as usize;
    let (elsewhere, full) = app.voice.with(|r| {
        (
            r.channel_of(caller.user_id) != Some(channel_id),
            r.len_of(channel_id) >= max,
        )
    });
    // One voice channel per user: out of a room another instance holds, first (not for a
    // join that is refused as full: as on one instance, the user then stays where they are).
    if elsewhere && !full {
        super::voice_forward::leave_other_owner(&app, caller.user_id, channel_id, &headers).await;
    }
    let key = app
        .p2p
        .get()
        .map(|p| p.key.clone())
        .ok_or(ApiError::Unavailable(
            "voice needs the relay's identity (p2p)",
        ))?;
    let now = now_ms();
    let expires_at = now + app.config.voice.grant_ttl_secs as i64 * 1000;
    let wanted = VoiceState {
        guild_id: access.channel.guild_id,
        channel_id: Some(channel_id),
        user_id: caller.user_id,
        device_key: caller.device_key.clone(),
        self_mute: body.self_mute,
        self_deaf: body.self_deaf,
        server_mute: false,
        speak: access.perms.contains(Permissions::SPEAK),
        client: body.client.unwrap_or_else(|| "node".into()),
        joined_at: now,
        self_video: false,
        cross_instance: super::voice_forward::is_forwarded(&app, &headers),
    };
    let mesh_size = app.config.voice.mesh_size;
    let (joined, participants, mode) = app
        .voice
        .with(|r| {
            let joined = r.join(wanted, expires_at, max)?;
            let mode = r.mode(channel_id, mesh_size);
            Ok::<_, JoinError>((joined, r.participants(channel_id), mode))
        })
        .map_err(|JoinError::Full| {
            ApiError::Conflict("voice_channel_full", "this voice channel is full")
        })?;
    if let Some(left) = joined.left {
        voice::announce_left(&app, left).await;
    }
    if !joined.renewed {
        voice::announce(&app, channel_id, &joined.state).await;
        metrics::counter!("concord_voice_joins_total").increment(1);
    } else if let Some(placement) = app.voice.placement.get() {
        // Written again on each renewal: an entry a reader dropped while this instance's
        // liveness key lagged comes back within a grant's lifetime.
        if let Err(e) = placement.record(&joined.state).await {
            tracing::warn!(error = %e, channel = %channel_id, "voice state not written to the cluster directory");
        }
    }
    let grant = VoiceGrant::sign(
        &key,
        channel_id,
        caller.user_id,
        &caller.device_key,
        joined.state.speak,
        expires_at,
    );
    Ok(Json(VoiceJoined {
        grant,
        mode: mode.to_owned(),
        mesh_size: app.config.voice.mesh_size,
        state: joined.state,
        participants,
    }))
}

#[utoipa::path(post, path = "/api/v1/voice/channels/{channel_id}/leave", tag = "voice", security(("bearer" = [])),
    params(("channel_id" = Id, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody, description = "not in this channel")))]
pub async fn leave(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(channel_id): PathParams<Id>,
) -> ApiResult<StatusCode> {
    let left = app.voice.with(|r| {
        (r.channel_of(caller.user_id) == Some(channel_id))
            .then(|| r.leave(caller.user_id))
            .flatten()
    });
    let left = left.ok_or_else(not_in_voice)?;
    voice::announce_left(&app, left).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(patch, path = "/api/v1/voice/channels/{channel_id}/state", tag = "voice", security(("bearer" = [])),
    params(("channel_id" = Id, Path)), request_body = UpdateVoiceState,
    responses((status = 200, body = VoiceState), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "self_video without the right to speak (speak permission, no server mute)"),
        (status = 404, body = ErrorBody, description = "not in this channel")))]
pub async fn update_state(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(channel_id): PathParams<Id>,
    Valid(body): Valid<UpdateVoiceState>,
) -> ApiResult<Json<VoiceState>> {
    let current = app
        .voice
        .with(|r| r.state_in(channel_id, caller.user_id).cloned())
        .ok_or_else(not_in_voice)?;
    // Sharing a screen is speaking to the channel: the same right.
    if body.self_video == Some(true) && !current.speak {
        return Err(ApiError::Forbidden(
            "missing_permissions",
            "sharing video needs the speak permission and no server mute",
        ));
    }
    let state = app
        .voice
        .with(|r| {
            r.update(channel_id, caller.user_id, |s| {
                if let Some(m) = body.self_mute {
                    s.self_mute = m;
                }
                if let Some(d) = body.self_deaf {
                    s.self_deaf = d;
                }
                if let Some(v) = body.self_video {
                    s.self_video = v && s.speak;
                }
            })
        })
        .ok_or_else(not_in_voice)?;
    voice::announce(&app, channel_id, &state).await;
    Ok(Json(state))
}

#[utoipa::path(get, path = "/api/v1/voice/channels/{channel_id}", tag = "voice", security(("bearer" = [])),
    params(("channel_id" = Id, Path)),
    responses((status = 200, body = Vec<VoiceState>, description = "who is in the channel"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn participants(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(channel_id): PathParams<Id>,
) -> ApiResult<Json<Vec<VoiceState>>> {
    voice_channel(&app, &caller, channel_id, Permissions::VIEW_CHANNEL).await?;
    Ok(Json(app.voice.with(|r| r.participants(channel_id))))
}

#[utoipa::path(patch, path = "/api/v1/guilds/{guild_id}/voice-states/{user_id}", tag = "voice", security(("bearer" = [])),
    params(("guild_id" = Id, Path), ("user_id" = Id, Path)), request_body = ServerMute,
    responses((status = 200, body = VoiceState), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "the user is in none of this guild's voice channels")))]
pub async fn server_mute(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((guild_id, user_id)): PathParams<(Id, Id)>,
    headers: axum::http::HeaderMap,
    Valid(body): Valid<ServerMute>,
) -> ApiResult<axum::response::Response> {
    let (snapshot, _) = app
        .perms
        .require_guild(guild_id, caller.user_id, Permissions::MUTE_MEMBERS)
        .await?;
    if user_id != caller.user_id {
        app.perms
            .require_outrank(&snapshot, caller.user_id, user_id)
            .await?;
    }
    let local = app
        .voice
        .with(|r| r.channel_of(user_id))
        .filter(|c| snapshot.channels.iter().any(|sc| sc.id == *c));
    let Some(channel) = local else {
        // In a cluster the member's room may live on another instance: its owner decides
        // (and checks the caller's rights again).
        let voice_channels = snapshot
            .channels
            .iter()
            .filter(|c| c.kind == ChannelKind::Voice)
            .map(|c| c.id);
        let path = format!("/api/v1/guilds/{guild_id}/voice-states/{user_id}");
        let json = serde_json::to_vec(&body).expect("a mute serialises");
        return super::voice_forward::to_room_owners(
            &app,
            voice_channels,
            &axum::http::Method::PATCH,
            &path,
            &headers,
            json.into(),
        )
        .await
        .ok_or_else(not_in_voice);
    };
    let state = app
        .voice
        .with(|r| {
            r.update(channel, user_id, |s| {
                s.server_mute = body.server_mute;
                // A muted member's screen share stops too (the SFU drops it).
                s.self_video &= !body.server_mute;
                // Unmuting gives speaking back only with the permission: the next renewal
                // (a join) recomputes it from the member's permissions.
            })
        })
        .ok_or_else(not_in_voice)?;
    voice::announce(&app, channel, &state).await;
    super::moderation::audit_guild(
        &app,
        guild_id,
        caller.user_id,
        if body.server_mute {
            "voice_server_mute"
        } else {
            "voice_server_unmute"
        },
        Some(user_id),
        format!("channel {channel}"),
    )
    .await?;
    Ok(Json(state).into_response())
}

/// An SDP offer or answer for the SFU.
#[derive(Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SfuSdp {
    pub sdp: String,
}

/// An SDP is a few kilobytes; more is refused.
const MAX_SDP_BYTES: usize = 16 * 1024;

#[utoipa::path(post, path = "/api/v1/voice/channels/{channel_id}/sfu", tag = "voice", security(("bearer" = [])),
    params(("channel_id" = Id, Path)), request_body(content = Option<SfuOfferRequest>, description = "optional: {\"video\": true} adds the video transceivers"),
    responses((status = 200, body = SfuSdp, description = "the relay's offer: audio m-lines for the loudest other speakers (answer the first one sendrecv: the caller's voice goes up on it); with video, then one video m-line both ways (the caller's screen or camera up, whom they watch down)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody, description = "not in this channel"),
        (status = 409, body = ErrorBody, description = "sfu_full: the instance holds voice.sfu_max_rooms rooms")))]
pub async fn sfu_offer(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(channel_id): PathParams<Id>,
    body: Option<Valid<SfuOfferRequest>>,
) -> ApiResult<Json<SfuSdp>> {
    let video = body.is_some_and(|Valid(b)| b.video);
    let state = app
        .voice
        .with(|r| r.state_in(channel_id, caller.user_id).cloned())
        .ok_or_else(not_in_voice)?;
    // Whoever asks the SFU puts the room there (after a failover, the new owner learns the
    // room's mode from its participants coming back).
    app.voice.with(|r| r.set_sfu(channel_id));
    let sdp = app
        .voice
        .sfu
        .offer(channel_id, caller.user_id, state.speak, video)
        .await
        .map_err(|e| match e {
            OfferError::Full(_) => ApiError::Conflict(
                "sfu_full",
                "this relay's SFU is full; try again later or use another channel",
            ),
            OfferError::Failed(e) => ApiError::Internal(e),
        })?;
    Ok(Json(SfuSdp { sdp }))
}

#[utoipa::path(post, path = "/api/v1/voice/channels/{channel_id}/sfu/answer", tag = "voice", security(("bearer" = [])),
    params(("channel_id" = Id, Path)), request_body = SfuSdp,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not in this channel, or no offer asked for")))]
pub async fn sfu_answer(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(channel_id): PathParams<Id>,
    Json(body): Json<SfuSdp>,
) -> ApiResult<StatusCode> {
    app.voice
        .with(|r| r.state_in(channel_id, caller.user_id).cloned())
        .ok_or_else(not_in_voice)?;
    if body.sdp.len() > MAX_SDP_BYTES {
        return Err(ApiError::PayloadTooLarge(MAX_SDP_BYTES));
    }
    app.voice
        .sfu
        .answer(channel_id, caller.user_id, body.sdp)
        .await
        .map_err(|e| ApiError::BadRequest("bad_sdp", e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/voice/channels/{channel_id}/sfu/watch", tag = "voice", security(("bearer" = [])),
    params(("channel_id" = Id, Path)), request_body = WatchVideo,
    responses((status = 204, description = "the caller's video slot now carries that participant's screen or camera, from their next keyframe (asked for at once)"),
        (status = 400, body = ErrorBody, description = "watching oneself, or a user not in this channel"), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not in this channel, or no SFU session with video (ask for an offer with video first)")))]
pub async fn sfu_watch(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(channel_id): PathParams<Id>,
    Valid(body): Valid<WatchVideo>,
) -> ApiResult<StatusCode> {
    let in_channel = app.voice.with(|r| {
        let me = r.state_in(channel_id, caller.user_id).is_some();
        let target = body
            .user_id
            .is_none_or(|t| r.state_in(channel_id, t).is_some());
        (me, target)
    });
    match in_channel {
        (false, _) => return Err(not_in_voice()),
        (true, false) => {
            return Err(ApiError::BadRequest(
                "bad_user",
                "that user is not in this voice channel".into(),
            ));
        }
        _ => {}
    }
    if body.user_id == Some(caller.user_id) {
        return Err(ApiError::BadRequest(
            "bad_user",
            "watch someone else's screen, not your own".into(),
        ));
    }
    app.voice
        .sfu
        .watch(channel_id, caller.user_id, body.user_id)
        .await
        .map_err(|_| ApiError::NotFound("sfu_video_session"))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/voice/channels/{channel_id}/sfu/stats", tag = "voice", security(("bearer" = [])),
    params(("channel_id" = Id, Path)),
    responses((status = 200, body = Vec<MemberStats>, description = "call quality of each participant on the SFU from RTCP (sampled every 5 s; empty when the channel is not on this instance's SFU)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn sfu_stats(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(channel_id): PathParams<Id>,
) -> ApiResult<Json<Vec<MemberStats>>> {
    voice_channel(&app, &caller, channel_id, Permissions::VIEW_CHANNEL).await?;
    Ok(Json(app.voice.sfu.room_stats(channel_id)))
}
