//! ICE servers for WebRTC: STUN URLs and TURN URLs with ephemeral credentials (TURN REST
//! scheme, shared secret with concord-turn), valid for a limited time.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use concord_proto::api::ErrorBody;
use serde::Serialize;

use super::error::ApiResult;
use crate::app::{App, now_ms};
use crate::auth::Caller;

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
