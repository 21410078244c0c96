//! The control API for the CLI (and the node-served web client, `ui.rs`): HTTP on 127.0.0.1 only, a bearer token
//! from a 0600 file in the data dir, and requests whose Host or Origin is not this loopback
//! origin are refused (DNS rebinding, CSRF).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use concord_proto::Id;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::Inner;

pub const CONTROL_ADDR_FILE: &str = "control.addr";
pub const CONTROL_TOKEN_FILE: &str = "control.token";

pub(super) struct Control {
    pub inner: Arc<Inner>,
    token: String,
    pub addr: SocketAddr,
    /// Node-served web client: one-time tickets and browser sessions.
    pub ui: super::ui::UiAuth,
}

pub(super) type Shared = Arc<Control>;

pub(super) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "code": code, "message": message.into() })),
    )
        .into_response()
}

fn bad(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, "refused", message)
}

/// Host must name this loopback listener; Origin, when present, must be its origin.
pub(super) fn local_request(headers: &HeaderMap, addr: SocketAddr) -> bool {
    let port = addr.port();
    let allowed_hosts = [format!("127.0.0.1:{port}"), format!("localhost:{port}")];
    let host_ok = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| allowed_hosts.iter().any(|a| a == h));
    let origin_ok = match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        None => true,
        Some(o) => allowed_hosts.iter().any(|a| o == format!("http://{a}")),
    };
    host_ok && origin_ok
}

async fn guard(State(control): State<Shared>, req: Request, next: Next) -> Response {
    if !local_request(req.headers(), control.addr) {
        return error(
            StatusCode::FORBIDDEN,
            "not_local",
            "the control API answers only its own loopback origin",
        );
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time enough: both sides are short random strings of equal length.
    if token.map(str::as_bytes) != Some(control.token.as_bytes()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong control token",
        );
    }
    next.run(req).await
}

pub async fn spawn(inner: Arc<Inner>) -> std::io::Result<(JoinHandle<()>, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(inner.config.control_listen).await?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::other(
            "the control API listens on loopback only",
        ));
    }
    let token = crate::relay_http_token();
    let dir = &inner.config.data_dir;
    let _ = std::fs::remove_file(dir.join(CONTROL_TOKEN_FILE));
    crate::identity::write_private(&dir.join(CONTROL_TOKEN_FILE), token.as_bytes())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    // Written whole, then renamed: a reader never sees a half-written address.
    let tmp = dir.join(format!("{CONTROL_ADDR_FILE}.tmp"));
    std::fs::write(&tmp, addr.to_string())?;
    std::fs::rename(&tmp, dir.join(CONTROL_ADDR_FILE))?;
    let control = Arc::new(Control {
        inner: inner.clone(),
        token,
        addr,
        ui: super::ui::UiAuth::default(),
    });
    let router = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/join", post(join))
        .route("/v1/guilds", get(guilds))
        .route("/v1/guilds/{id}/channels", get(channels))
        .route("/v1/channels/{id}/messages", get(history).post(send))
        .route("/v1/channels/{id}/tail", get(tail))
        .route("/v1/search", get(search))
        .route("/v1/dms", post(dm))
        .route("/v1/peers", get(peers))
        .route("/v1/members", get(members))
        .route("/v1/devices", get(devices).post(link_device))
        .route("/v1/devices/{key}", axum::routing::delete(revoke_device))
        .route("/v1/voice", get(voice_status))
        .route("/v1/voice/join", post(voice_join))
        .route("/v1/voice/leave", post(voice_leave))
        .route("/v1/voice/mute", post(voice_mute))
        .route("/v1/voice/deafen", post(voice_deafen))
        .route("/v1/ui/ticket", post(super::ui::ticket))
        .layer(middleware::from_fn_with_state(control.clone(), guard))
        .merge(super::ui::router(control.clone()))
        .with_state(control);
    let shutdown = inner.shutdown.clone();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok((task, addr))
}

async fn status(State(c): State<Shared>) -> Response {
    let inner = &c.inner;
    let cache = inner.cache();
    Json(json!({
        "peer_id": inner.peer_id.to_string(),
        "device_key": inner.identity.device_key(),
        "account_key": inner.identity.account_key(),
        "user": cache.me().ok().flatten(),
        "relay": inner.relay().map(|r| json!({ "url": r.url, "peer_id": r.peer_id, "connected": inner.is_relay_connected(), "ready": inner.relay_ready.load(std::sync::atomic::Ordering::Relaxed), "reserved": inner.relay_reserved.load(std::sync::atomic::Ordering::Relaxed), "reserved_at_ms": *inner.relay_reserved_at_ms.lock().expect("reserved lock") })),
        "outbox": cache.outbox_len().unwrap_or(0),
        "connections": inner.connections.lock().expect("connections lock").list().len(),
        "relay_only": inner.config.relay_only,
        "allow_direct": inner.allow_direct(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct JoinBody {
    relay_url: String,
    invite: String,
    username: Option<String>,
}

async fn join(State(c): State<Shared>, Json(body): Json<JoinBody>) -> Response {
    match super::relay_link::join(
        &c.inner,
        &body.relay_url,
        &body.invite,
        body.username.as_deref(),
    )
    .await
    {
        Ok(guild) => Json(guild).into_response(),
        Err(e) => bad(e),
    }
}

async fn guilds(State(c): State<Shared>) -> Response {
    match c.inner.cache().guilds() {
        Ok(g) => Json(g).into_response(),
        Err(e) => bad(e.to_string()),
    }
}

async fn channels(State(c): State<Shared>, Path(id): Path<Id>) -> Response {
    match c.inner.cache().channels(id) {
        Ok(ch) => Json(ch).into_response(),
        Err(e) => bad(e.to_string()),
    }
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn history(State(c): State<Shared>, Path(id): Path<Id>, Query(q): Query<Limit>) -> Response {
    match c
        .inner
        .cache()
        .history(id, None, q.limit.unwrap_or(50).min(500))
    {
        Ok(m) => Json(m).into_response(),
        Err(e) => bad(e.to_string()),
    }
}

#[derive(Deserialize)]
struct SendBody {
    content: String,
    #[serde(default = "yes")]
    wait: bool,
}

fn yes() -> bool {
    true
}

async fn send(State(c): State<Shared>, Path(id): Path<Id>, Json(body): Json<SendBody>) -> Response {
    match super::send::send(&c.inner, id, &body.content, None, body.wait).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => bad(e),
    }
}

#[derive(Deserialize)]
struct DmBody {
    user_id: Id,
    content: String,
    #[serde(default = "yes")]
    wait: bool,
}

async fn dm(State(c): State<Shared>, Json(body): Json<DmBody>) -> Response {
    match super::send::send_dm(&c.inner, body.user_id, &body.content, body.wait).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => bad(e),
    }
}

#[derive(Deserialize)]
struct SearchQuery {
    q: String,
    limit: Option<usize>,
}

async fn search(State(c): State<Shared>, Query(q): Query<SearchQuery>) -> Response {
    match c.inner.cache().search(&q.q, q.limit.unwrap_or(25).min(100)) {
        Ok(m) => Json(m).into_response(),
        Err(e) => bad(e.to_string()),
    }
}

async fn peers(State(c): State<Shared>) -> Response {
    Json(c.inner.connections.lock().expect("connections lock").list()).into_response()
}

/// Guild members' devices the relay reported, with their addresses while fresh.
async fn members(State(c): State<Shared>) -> Response {
    let now = super::now_ms();
    Json(
        c.inner
            .directory
            .lock()
            .expect("directory lock")
            .members(now),
    )
    .into_response()
}

/// Live events of one channel as JSON lines, until the client goes away.
async fn tail(State(c): State<Shared>, Path(id): Path<Id>) -> Response {
    let rx = c.inner.events.subscribe();
    let stream = futures_util::stream::unfold(rx, move |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) => {
                    let relevant = match &event {
                        super::LocalEvent::Message { message } => message.channel_id == id,
                        super::LocalEvent::MessageDeleted { channel_id, .. }
                        | super::LocalEvent::Typing { channel_id, .. } => *channel_id == id,
                        _ => false,
                    };
                    if relevant {
                        let mut line = serde_json::to_vec(&event).expect("events serialise");
                        line.push(b'\n');
                        return Some((Ok::<_, std::convert::Infallible>(line), rx));
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

async fn devices(State(c): State<Shared>) -> Response {
    let Some(http) = c.inner.http() else {
        return bad("join a relay first".into());
    };
    match http
        .authed::<Value>(
            &c.inner.identity,
            reqwest::Method::GET,
            "/api/v1/users/@me/devices",
            None,
        )
        .await
    {
        Ok(v) => Json(v).into_response(),
        Err(e) => bad(e.to_string()),
    }
}

#[derive(Deserialize)]
struct LinkBody {
    device_key: String,
    label: String,
}

/// Certifies another device with this device's account key and registers it at the relay.
async fn link_device(State(c): State<Shared>, Json(body): Json<LinkBody>) -> Response {
    let Some(http) = c.inner.http() else {
        return bad("join a relay first".into());
    };
    let cert = match crate::identity::certify(&c.inner.identity, &body.device_key, &body.label) {
        Ok(cert) => cert,
        Err(e) => return bad(e),
    };
    match http
        .authed::<Value>(
            &c.inner.identity,
            reqwest::Method::POST,
            "/api/v1/users/@me/devices",
            Some(json!({ "certificate": cert })),
        )
        .await
    {
        Ok(v) => Json(v).into_response(),
        Err(e) => bad(e.to_string()),
    }
}

async fn revoke_device(State(c): State<Shared>, Path(key): Path<String>) -> Response {
    let Some(http) = c.inner.http() else {
        return bad("join a relay first".into());
    };
    match http
        .authed::<Value>(
            &c.inner.identity,
            reqwest::Method::DELETE,
            &format!("/api/v1/users/@me/devices/{key}"),
            None,
        )
        .await
    {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => bad(e.to_string()),
    }
}

#[derive(Deserialize)]
struct VoiceJoinBody {
    channel_id: Id,
    #[serde(default)]
    self_mute: bool,
}

async fn voice_join(State(c): State<Shared>, Json(body): Json<VoiceJoinBody>) -> Response {
    match super::voice::join(&c.inner, body.channel_id, body.self_mute).await {
        Ok(status) => Json(status).into_response(),
        Err(e) => bad(e),
    }
}

async fn voice_leave(State(c): State<Shared>) -> Response {
    match super::voice::leave(&c.inner).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => bad(e),
    }
}

#[derive(Deserialize)]
struct VoiceMuteBody {
    mute: bool,
}

async fn voice_mute(State(c): State<Shared>, Json(body): Json<VoiceMuteBody>) -> Response {
    match super::voice::set_mute(&c.inner, body.mute).await {
        Ok(status) => Json(status).into_response(),
        Err(e) => bad(e),
    }
}

#[derive(Deserialize)]
struct VoiceDeafenBody {
    deafen: bool,
}

async fn voice_deafen(State(c): State<Shared>, Json(body): Json<VoiceDeafenBody>) -> Response {
    match super::voice::set_deaf(&c.inner, body.deafen).await {
        Ok(status) => Json(status).into_response(),
        Err(e) => bad(e),
    }
}

async fn voice_status(State(c): State<Shared>) -> Response {
    Json(json!({ "voice": super::voice::status(&c.inner) })).into_response()
}
