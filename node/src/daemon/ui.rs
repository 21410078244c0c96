//! Node-served mode of the web client (`concord ui`): the relay's client, served on the
//! control API's loopback listener, talking to this node instead of the relay.
//!
//! - `concord ui` asks for a one-time URL (`POST /v1/ui/ticket`, control token); opening it
//!   (`GET /ui/open?ticket=…`) spends the ticket and sets an HttpOnly, SameSite=Strict
//!   session cookie. Every `/api/…` call needs that cookie; Host and Origin must be this
//!   loopback origin, as for the rest of the control API.
//! - The page holds no key and no token: the node speaks for it with its own device key.
//!   Messages go out through the node's send path (signed envelope, outbox, gossip, the
//!   relay link); history falls back to the cache's newest page while the relay is away; the
//!   gateway WebSocket is piped to the relay's, with the node's token put into `identify`
//!   and `resume`; every other API call is forwarded on the node's session
//!   (`relay_http.rs::forward`); `/api/v1/auth/…` is refused.
//! - The embedded client is served with a CSP for this loopback origin, and `index.html`
//!   says `concord-backend: node`. Tickets and sessions are bounded.

use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use concord_proto::Id;
use concord_proto::model::Message;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::control::{Shared, error, local_request};
use crate::relay_http::HttpError;

const COOKIE: &str = "concord_ui";
/// A `concord ui` link is for opening now, not for keeping.
const TICKET_TTL: Duration = Duration::from_secs(120);
const MAX_TICKETS: usize = 16;
/// Open browser sessions kept; the oldest is signed out past this.
const MAX_SESSIONS: usize = 32;
/// Request bodies the page may send (the relay's own limit is lower or equal).
const MAX_BODY_BYTES: usize = 1 << 20;
/// A page's gateway frames are small; the relay's (a `ready` with every guild) are not.
const MAX_CLIENT_FRAME_BYTES: usize = 64 * 1024;
const MAX_RELAY_FRAME_BYTES: usize = 16 << 20;
/// How long a send waits for the relay's ack before the node's outbox takes it over.
const UI_ACK_WAIT: Duration = Duration::from_secs(10);

/// One-time tickets and the sessions they opened (both bounded, oldest dropped first).
#[derive(Default)]
pub struct UiAuth {
    tickets: Mutex<VecDeque<(String, Instant)>>,
    sessions: Mutex<VecDeque<String>>,
}

impl UiAuth {
    pub fn new_ticket(&self) -> String {
        let ticket = crate::relay_http_token();
        let mut tickets = self.tickets.lock().expect("tickets lock");
        tickets.retain(|(_, at)| at.elapsed() < TICKET_TTL);
        if tickets.len() >= MAX_TICKETS {
            tickets.pop_front();
        }
        tickets.push_back((ticket.clone(), Instant::now()));
        ticket
    }

    /// Spends a ticket: a new session id, or None for an unknown, used or expired one.
    fn redeem(&self, ticket: &str) -> Option<String> {
        let mut tickets = self.tickets.lock().expect("tickets lock");
        let i = tickets.iter().position(|(t, _)| t == ticket)?;
        let (_, at) = tickets.remove(i)?;
        if at.elapsed() >= TICKET_TTL {
            return None;
        }
        let session = crate::relay_http_token();
        let mut sessions = self.sessions.lock().expect("sessions lock");
        if sessions.len() >= MAX_SESSIONS {
            sessions.pop_front();
        }
        sessions.push_back(session.clone());
        Some(session)
    }

    fn is_session(&self, id: &str) -> bool {
        self.sessions
            .lock()
            .expect("sessions lock")
            .iter()
            .any(|s| s == id)
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The routes of node-served mode (the ticket route sits with the token-guarded ones).
pub fn router(control: Shared) -> Router<Shared> {
    Router::new()
        .route("/ui/open", get(open))
        .route("/api/v1/gateway", get(gateway))
        .route("/api/v1/auth/{*rest}", any(auth_refused))
        .route(
            "/api/v1/channels/{id}/messages",
            get(history).post(send_message),
        )
        .route("/api", any(forward))
        .route("/api/{*rest}", any(forward))
        .fallback(assets)
        .layer(middleware::from_fn_with_state(control, guard))
}

/// Loopback origin for everything; the session cookie for the API.
async fn guard(State(c): State<Shared>, req: Request, next: Next) -> Response {
    if !local_request(req.headers(), c.addr) {
        return error(
            StatusCode::FORBIDDEN,
            "not_local",
            "the node answers only its own loopback origin",
        );
    }
    let path = req.uri().path();
    if (path == "/api" || path.starts_with("/api/"))
        && !cookie(req.headers(), COOKIE).is_some_and(|s| c.ui.is_session(s))
    {
        return error(
            StatusCode::UNAUTHORIZED,
            "ui_signed_out",
            "this page is not signed in to the node: run `concord ui` to open it",
        );
    }
    next.run(req).await
}

/// `POST /v1/ui/ticket` (control token): the one-time URL `concord ui` opens.
pub async fn ticket(State(c): State<Shared>) -> Response {
    let ticket = c.ui.new_ticket();
    Json(json!({
        "url": format!("http://127.0.0.1:{}/ui/open?ticket={ticket}", c.addr.port()),
        "expires_in": TICKET_TTL.as_secs(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct OpenQuery {
    ticket: String,
}

async fn open(State(c): State<Shared>, Query(q): Query<OpenQuery>) -> Response {
    let Some(session) = c.ui.redeem(&q.ticket) else {
        return (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "This link was already used or has expired. Run `concord ui` for a new one.\n",
        )
            .into_response();
    };
    let cookie = format!("{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/".to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

async fn auth_refused() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "node_served",
        "this page is served by a node, which signs in to the relay with its own device key",
    )
}

/// A call the node could not make for the page: the relay refused the node's own login
/// (its status and code), or could not be reached (502).
fn relay_error(e: HttpError) -> Response {
    match e {
        HttpError::Api {
            status,
            code,
            message,
        } => error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            &code,
            message,
        ),
        e => error(StatusCode::BAD_GATEWAY, "relay_unreachable", e.to_string()),
    }
}

/// The page's Content-Type, passed on with its body.
fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned()
}

fn no_relay() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_relay",
        "this node has not joined a relay yet: run `concord join <invite>`",
    )
}

/// Any other API call, on the node's session at its relay.
async fn forward(State(c): State<Shared>, req: Request) -> Response {
    let Some(http) = c.inner.http() else {
        return no_relay();
    };
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let content_type = content_type(req.headers());
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request bodies are at most {MAX_BODY_BYTES} bytes"),
            );
        }
    };
    let Ok(method) = reqwest::Method::from_bytes(method.as_str().as_bytes()) else {
        return error(StatusCode::METHOD_NOT_ALLOWED, "method", "unknown method");
    };
    let body = (!body.is_empty()).then_some((content_type, body));
    http.forward(&c.inner.identity, method, &path, body)
        .await
        .map_or_else(relay_error, relay_answer)
}

fn relay_answer(answer: crate::relay_http::Forwarded) -> Response {
    let mut resp = Response::new(axum::body::Body::from(answer.body));
    *resp.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in answer.headers {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            resp.headers_mut().insert(n, v);
        }
    }
    resp
}

#[derive(Deserialize)]
struct SendBody {
    content: String,
    nonce: String,
    #[serde(default)]
    reply_to: Option<Id>,
}

/// Sends through this node (signed by its device key, kept in its outbox until the relay
/// acks); a channel the node's cache does not know yet goes to the relay as it is.
async fn send_message(
    State(c): State<Shared>,
    Path(id): Path<Id>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let known = c.inner.cache().channel(id).ok().flatten().is_some();
    if !known {
        let Some(http) = c.inner.http() else {
            return no_relay();
        };
        let path = format!("/api/v1/channels/{id}/messages");
        return http
            .forward(
                &c.inner.identity,
                reqwest::Method::POST,
                &path,
                Some((content_type(&headers), body)),
            )
            .await
            .map_or_else(relay_error, relay_answer);
    }
    let body: SendBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "validation_failed",
                format!("bad message body: {e}"),
            );
        }
    };
    match super::send::send_with_nonce(
        &c.inner,
        id,
        &body.content,
        body.reply_to,
        &body.nonce,
        Some(UI_ACK_WAIT),
    )
    .await
    {
        Ok(outcome) => match outcome.message {
            Some(message) => Json(message).into_response(),
            // The node's outbox delivers it when the relay is back.
            None => (
                StatusCode::ACCEPTED,
                Json(json!({ "queued": true, "nonce": outcome.nonce })),
            )
                .into_response(),
        },
        Err(refusal) => error(StatusCode::BAD_REQUEST, "refused", refusal),
    }
}

/// History from the relay; the newest page from the node's cache while the relay is away.
async fn history(
    State(c): State<Shared>,
    Path(id): Path<Id>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(http) = c.inner.http() else {
        return no_relay();
    };
    let path = match &query {
        Some(q) => format!("/api/v1/channels/{id}/messages?{q}"),
        None => format!("/api/v1/channels/{id}/messages"),
    };
    match http
        .forward(&c.inner.identity, reqwest::Method::GET, &path, None)
        .await
    {
        Ok(answer) => relay_answer(answer),
        Err(e @ HttpError::Unreachable(..)) => {
            let newest = !query.as_deref().unwrap_or("").contains("before=");
            match newest.then(|| cached_page(&c, id)).flatten() {
                Some(page) => page,
                None => relay_error(e),
            }
        }
        Err(e) => relay_error(e),
    }
}

/// The newest confirmed messages the node holds, shaped as the relay's history page.
fn cached_page(c: &Shared, channel_id: Id) -> Option<Response> {
    let cache = c.inner.cache();
    let channel = cache.channel(channel_id).ok().flatten()?;
    let mut page: Vec<Message> = cache
        .history(channel_id, None, 50)
        .ok()?
        .into_iter()
        .filter_map(|m| {
            Some(Message {
                id: m.id?,
                channel_id,
                guild_id: channel.guild_id,
                author: m.author?,
                device: m.device,
                nonce: m.nonce,
                content: m.content,
                created_at: m.created_at,
                edited_at: m.edited_at,
                seq: m.seq?,
                reply_to: m.reply_to,
                mentions: m.mentions,
                reactions: m.reactions,
                deleted: false,
            })
        })
        .collect();
    page.sort_by_key(|m| std::cmp::Reverse(m.seq));
    let seq = page.first().map_or(0, |m| m.seq);
    Some(([("concord-channel-seq", seq.to_string())], Json(page)).into_response())
}

/// The gateway, piped to the relay's with this node's token.
async fn gateway(State(c): State<Shared>, upgrade: WebSocketUpgrade) -> Response {
    let Some(http) = c.inner.http() else {
        return no_relay();
    };
    let url = format!(
        "{}/api/v1/gateway",
        http.url
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1)
    );
    upgrade
        .max_message_size(MAX_CLIENT_FRAME_BYTES)
        .max_frame_size(MAX_CLIENT_FRAME_BYTES)
        .on_upgrade(move |page| async move {
            if let Err(e) = pipe(page, &url, &c, &http).await {
                tracing::debug!(error = %e, "node-served gateway closed");
            }
        })
}

async fn pipe(
    mut page: WebSocket,
    url: &str,
    c: &Shared,
    http: &crate::relay_http::RelayHttp,
) -> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::Message as Up;
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_RELAY_FRAME_BYTES))
        .max_frame_size(Some(MAX_RELAY_FRAME_BYTES));
    let relay = match tokio_tungstenite::connect_async_with_config(url, Some(config), false).await {
        Ok((socket, _)) => socket,
        Err(e) => {
            // 1013: try again later (the client reconnects with backoff).
            let _ = page
                .send(ws::Message::Close(Some(ws::CloseFrame {
                    code: 1013,
                    reason: "the relay cannot be reached".into(),
                })))
                .await;
            return Err(e.into());
        }
    };
    let (mut up_tx, mut up_rx) = relay.split();
    loop {
        tokio::select! {
            from_page = page.recv() => {
                let Some(Ok(msg)) = from_page else { break };
                let up = match msg {
                    ws::Message::Text(text) => {
                        Up::text(with_node_token(text.as_str(), c, http).await?)
                    }
                    ws::Message::Binary(b) => Up::binary(b),
                    ws::Message::Ping(_) | ws::Message::Pong(_) => continue,
                    ws::Message::Close(_) => break,
                };
                up_tx.send(up).await?;
            }
            from_relay = up_rx.next() => {
                let Some(Ok(msg)) = from_relay else { break };
                let down = match msg {
                    Up::Text(text) => ws::Message::Text(text.as_str().into()),
                    Up::Binary(b) => ws::Message::Binary(b),
                    Up::Close(frame) => {
                        // The relay's close code (e.g. 4003 signed out) reaches the page.
                        let frame = frame.map(|f| ws::CloseFrame {
                            code: f.code.into(),
                            reason: f.reason.as_str().into(),
                        });
                        let _ = page.send(ws::Message::Close(frame)).await;
                        return Ok(());
                    }
                    _ => continue,
                };
                page.send(down).await?;
            }
            () = c.inner.shutdown.cancelled() => break,
        }
    }
    let _ = up_tx.send(Up::Close(None)).await;
    let _ = page.send(ws::Message::Close(None)).await;
    Ok(())
}

/// `identify` and `resume` carry the node's access token in place of the page's
/// placeholder; other frames pass as they are.
async fn with_node_token(
    text: &str,
    c: &Shared,
    http: &crate::relay_http::RelayHttp,
) -> anyhow::Result<String> {
    let Ok(mut frame) = serde_json::from_str::<Value>(text) else {
        return Ok(text.to_owned());
    };
    if matches!(frame["op"].as_str(), Some("identify" | "resume")) && frame["d"].is_object() {
        frame["d"]["token"] = Value::String(http.token(&c.inner.identity).await?);
        return Ok(frame.to_string());
    }
    Ok(text.to_owned())
}

/// `index.html` says it is node-served (the client reads the meta tag).
static NODE_INDEX: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let index = concord_web_assets::asset("/index.html").map_or(&[][..], |a| a.body);
    String::from_utf8_lossy(index)
        .replacen(
            r#"<meta name="concord-backend" content="relay">"#,
            r#"<meta name="concord-backend" content="node">"#,
            1,
        )
        .into_bytes()
});

/// The client's files, as the relay serves them, with a CSP for this loopback origin.
async fn assets(State(c): State<Shared>, req: Request) -> Response {
    let (method, headers, path) = (req.method(), req.headers(), req.uri().path());
    let readable = method == Method::GET || method == Method::HEAD;
    let Some(file) = readable.then(|| concord_web_assets::lookup(path)).flatten() else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such page");
    };
    let port = c.addr.port();
    let csp = format!(
        "default-src 'self'; connect-src 'self' ws://127.0.0.1:{port} ws://localhost:{port}; \
         frame-ancestors 'none'; object-src 'none'; base-uri 'none'; form-action 'self'"
    );
    let index = file.path == "/index.html";
    let etag = if index {
        format!("{}-node", file.etag.trim_end_matches('"')) + "\""
    } else {
        file.etag.to_owned()
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| concord_web_assets::etag_matches(tags, &etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else if method == Method::HEAD {
        ().into_response()
    } else if index {
        NODE_INDEX.clone().into_response()
    } else {
        file.body.into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(concord_web_assets::content_type(file.path)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_spent_once() {
        let auth = UiAuth::default();
        let t = auth.new_ticket();
        let session = auth.redeem(&t).expect("a fresh ticket opens a session");
        assert!(auth.is_session(&session));
        assert!(auth.redeem(&t).is_none(), "a ticket works once");
        assert!(auth.redeem("made-up").is_none());
        assert!(!auth.is_session("made-up"));
    }

    #[test]
    fn tickets_and_sessions_are_bounded() {
        let auth = UiAuth::default();
        let first = auth.new_ticket();
        for _ in 0..MAX_TICKETS {
            auth.new_ticket();
        }
        assert!(
            auth.redeem(&first).is_none(),
            "the oldest ticket was dropped"
        );
        let sessions: Vec<String> = (0..=MAX_SESSIONS)
            .map(|_| auth.redeem(&auth.new_ticket()).expect("session"))
            .collect();
        assert!(
            !auth.is_session(&sessions[0]),
            "the oldest session was signed out"
        );
        assert!(auth.is_session(&sessions[MAX_SESSIONS]));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; concord_ui=xyz; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "nope"), None);
    }

    #[test]
    fn the_node_index_says_node() {
        let text = String::from_utf8_lossy(&NODE_INDEX);
        assert!(text.contains(r#"<meta name="concord-backend" content="node">"#));
    }
}
