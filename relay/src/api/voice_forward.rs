//! Sends a voice channel's requests to the instance that owns the room
//! (`voice/placement.rs`): joins, leaves, state changes, the participant list and the SFU
//! offer/answer/stats. The owner authenticates the caller itself (the token travels as it
//! came); the request carries the cluster's forwarding secret so the owner serves it
//! instead of forwarding it again, and skips the rate limit this instance already applied.
//! On a single instance (no Redis) this layer passes everything through.
//!
//! The instance the client asked signs the join's grant again with its own key (the key
//! the client knows). Once the owner's liveness key is gone, the next request fails over
//! to a new owner (`testkit/tests/voice_placement.rs`: SIGKILL of the owner).
//! `leave_other_owner` takes a joining user out of a room another owner holds.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use concord_proto::Id;

use super::error::ApiError;
use crate::app::App;
use crate::voice::placement::{Owner, Placement};

/// Marks a request one instance forwarded to another; the value is the cluster's secret.
pub const FORWARDED: &str = "x-concord-voice-forwarded";
/// On voice responses in a cluster: the instance that served the room.
pub const SERVED_BY: &str = "x-concord-voice-instance";

/// A forwarded request's body at most (an SDP is a few kilobytes).
const MAX_FORWARD_BODY: usize = 64 * 1024;

/// The voice channel a path is about: `/api/v1/voice/channels/{id}[/…]`.
fn voice_channel(path: &str) -> Option<Id> {
    let rest = path.strip_prefix("/api/v1/voice/channels/")?;
    rest.split('/').next()?.parse().ok()
}

/// True when the request was forwarded by another instance of this cluster.
pub fn is_forwarded(app: &App, headers: &HeaderMap) -> bool {
    let Some(placement) = app.voice.placement.get() else {
        return false;
    };
    let (Some(secret), Some(sent)) = (placement.secret(), headers.get(FORWARDED)) else {
        return false;
    };
    // Constant time: the secret guards a way around the owner's placement and rate limit.
    let sent = sent.as_bytes();
    sent.len() == secret.len()
        && sent
            .iter()
            .zip(secret.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

pub async fn route(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(placement) = app.voice.placement.get().cloned() else {
        return next.run(req).await;
    };
    let Some(channel) = voice_channel(req.uri().path()) else {
        return next.run(req).await;
    };
    if is_forwarded(&app, req.headers()) {
        return served_here(&placement, next.run(req).await);
    }
    // Only a join places a room; anything else about a room nobody holds is answered here
    // (an empty list, or "not in this channel").
    let joins = req.uri().path().ends_with("/join");
    let mut owner = lookup(&placement, channel, joins).await;
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_FORWARD_BODY).await {
        Ok(b) => b,
        Err(_) => return ApiError::PayloadTooLarge(MAX_FORWARD_BODY).into_response(),
    };
    // Twice at most: the owner may turn out dead, and the room is then placed again.
    for _ in 0..2 {
        let Owner::There { instance, url } = owner else {
            let req = Request::from_parts(parts, Body::from(body));
            return served_here(&placement, next.run(req).await);
        };
        let path = parts
            .uri
            .path_and_query()
            .map_or(parts.uri.path(), |p| p.as_str());
        match forward(&placement, &parts.method, path, &parts.headers, &body, &url).await {
            Ok(response) if joins => {
                metrics::counter!("concord_cluster_voice_forwarded_total", "result" => "ok")
                    .increment(1);
                return vouch(&app, response).await;
            }
            Ok(response) => {
                metrics::counter!("concord_cluster_voice_forwarded_total", "result" => "ok")
                    .increment(1);
                return response;
            }
            Err(e) => {
                metrics::counter!("concord_cluster_voice_forwarded_total", "result" => "unreachable")
                    .increment(1);
                tracing::warn!(%instance, %url, error = %e, %channel, "voice room owner unreachable");
                if !placement.wait_dead(&instance).await {
                    break;
                }
                owner = lookup(&placement, channel, joins).await;
            }
        }
    }
    ApiError::Unavailable("the instance holding this voice channel does not answer; try again")
        .into_response()
}

/// The room's owner; with Redis unreachable the request is served here (voice keeps working
/// on each instance, at the risk of one channel's participants splitting until it is back).
async fn lookup(placement: &Placement, channel: Id, claim: bool) -> Owner {
    let found = if claim {
        placement.claim(channel).await.map(Some)
    } else {
        placement.owner(channel).await
    };
    match found {
        Ok(owner) => owner.unwrap_or(Owner::Here),
        Err(e) => {
            metrics::counter!("concord_cluster_voice_forwarded_total", "result" => "redis_down")
                .increment(1);
            tracing::warn!(error = %e, %channel, "voice placement unavailable; serving here");
            Owner::Here
        }
    }
}

/// A join answered by another instance carries its grant, signed with that instance's
/// key; the client knows this instance's key (it verifies the grant, and so do mesh peers
/// on this instance), so the grant is signed again here, unchanged. The owner already
/// decided; this instance only vouches for its answer.
async fn vouch(app: &App, response: Response) -> Response {
    if response.status() != StatusCode::OK {
        return response;
    }
    let Some(key) = app.p2p.get().map(|p| p.key.clone()) else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORWARD_BODY).await else {
        return ApiError::Unavailable("the voice channel's instance sent an oversized answer")
            .into_response();
    };
    let Ok(mut joined) = serde_json::from_slice::<concord_proto::api::VoiceJoined>(&bytes) else {
        return ApiError::Unavailable("the voice channel's instance sent an unreadable answer")
            .into_response();
    };
    let g = &joined.grant;
    joined.grant = concord_proto::signed::VoiceGrant::sign(
        &key,
        g.channel_id,
        g.user_id,
        &g.device_key,
        g.speak,
        g.expires_at,
    );
    let body = serde_json::to_vec(&joined).expect("a voice answer serialises");
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

fn served_here(placement: &Placement, mut response: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&placement.instance) {
        response.headers_mut().insert(SERVED_BY, v);
    }
    response
}

/// A request about a member's voice state that this instance cannot serve (a moderator's
/// server mute when the member's room lives on another instance): replayed on the owners
/// of the rooms of `channels`, the first answer other than 404 wins. None on a single
/// instance, for a request that was itself forwarded, or when no other instance knows.
pub async fn to_room_owners(
    app: &App,
    channels: impl Iterator<Item = Id>,
    method: &axum::http::Method,
    path: &str,
    headers: &HeaderMap,
    body: axum::body::Bytes,
) -> Option<Response> {
    let placement = app.voice.placement.get()?;
    if is_forwarded(app, headers) {
        return None;
    }
    for channel in channels {
        let Ok(Some(Owner::There { url, .. })) = placement.owner(channel).await else {
            continue;
        };
        match forward(placement, method, path, headers, &body, &url).await {
            Ok(response) if response.status() != StatusCode::NOT_FOUND => {
                metrics::counter!("concord_cluster_voice_forwarded_total", "result" => "ok")
                    .increment(1);
                return Some(response);
            }
            Ok(_) => {}
            Err(e) => {
                metrics::counter!("concord_cluster_voice_forwarded_total", "result" => "unreachable")
                    .increment(1);
                tracing::warn!(%url, error = %e, %channel, "voice room owner unreachable");
            }
        }
    }
    None
}

/// Takes `user` out of the voice channel another instance holds for them before they join
/// `joining` here (the owner of a room only knows its own rooms). The leave is sent on the
/// user's behalf with their own credentials; if that instance does not answer, the join
/// goes on (its room drops the user when their grant runs out).
pub async fn leave_other_owner(app: &App, user: Id, joining: Id, headers: &HeaderMap) {
    let Some(placement) = app.voice.placement.get() else {
        return;
    };
    let (entry, url) = match placement.elsewhere(user).await {
        Ok(Some(found)) => found,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, %user, "voice directory unavailable; not leaving other rooms");
            return;
        }
    };
    let Some(old) = entry.state.channel_id.filter(|c| *c != joining) else {
        return;
    };
    let path = format!("/api/v1/voice/channels/{old}/leave");
    let method = axum::http::Method::POST;
    match forward(
        placement,
        &method,
        &path,
        headers,
        &Default::default(),
        &url,
    )
    .await
    {
        Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_FOUND => {
            metrics::counter!("concord_cluster_voice_forwarded_total", "result" => "ok")
                .increment(1);
        }
        Ok(r) => {
            tracing::warn!(status = %r.status(), %url, %old, "leaving a room on another instance refused");
        }
        Err(e) => {
            metrics::counter!("concord_cluster_voice_forwarded_total", "result" => "unreachable")
                .increment(1);
            tracing::warn!(%url, error = %e, %old, "voice room owner unreachable; joining anyway");
        }
    }
}

/// Replays the request on the owner and hands its answer back as it came.
async fn forward(
    placement: &Placement,
    method: &axum::http::Method,
    path: &str,
    headers: &HeaderMap,
    body: &axum::body::Bytes,
    owner_url: &str,
) -> Result<Response, reqwest::Error> {
    let mut request = placement
        .http
        .request(method.clone(), format!("{owner_url}{path}"))
        .body(body.clone());
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = headers.get(&name) {
            request = request.header(name, v);
        }
    }
    if let Some(secret) = placement.secret() {
        request = request.header(FORWARDED, secret);
    }
    let answer = request.send().await?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
        if let Some(v) = answer.headers().get(name.as_str())
            && let Ok(v) = HeaderValue::from_bytes(v.as_bytes())
        {
            headers.insert(name, v);
        }
    }
    if let Some(v) = answer.headers().get(SERVED_BY)
        && let Ok(v) = HeaderValue::from_bytes(v.as_bytes())
    {
        headers.insert(SERVED_BY, v);
    }
    let bytes = answer.bytes().await?;
    Ok((status, headers, bytes).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_voice_channel_paths_name_a_room() {
        assert_eq!(
            voice_channel("/api/v1/voice/channels/42/join"),
            Some(Id(42))
        );
        assert_eq!(voice_channel("/api/v1/voice/channels/42"), Some(Id(42)));
        assert_eq!(voice_channel("/api/v1/voice/channels/x/join"), None);
        assert_eq!(voice_channel("/api/v1/voice/ice-servers"), None);
        assert_eq!(voice_channel("/api/v1/channels/42"), None);
    }
}
