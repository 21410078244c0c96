//! The gateway: one WebSocket per client, JSON frames (docs/protocols/gateway.md). The socket
//! task reads client frames and drains the session's event buffer; the hub fills that buffer
//! from any task without waiting on the socket. The connection (`connection.rs`) does
//! identify and resume, heartbeats, the client-frame rate limit and the close codes.

mod connection;

pub use connection::open_connections;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use concord_proto::gateway::MAX_CLIENT_FRAME_BYTES;

use crate::api::error::ApiError;
use crate::app::App;

/// Opens a gateway connection. Authentication happens in the first frame (identify or
/// resume), not in the upgrade request, so browsers need no custom headers.
#[utoipa::path(get, path = "/api/v1/gateway", tag = "gateway",
    responses((status = 101, description = "WebSocket upgrade; see docs/protocols/gateway.md"),
        (status = 400, body = concord_proto::api::ErrorBody), (status = 503, body = concord_proto::api::ErrorBody)))]
pub async fn upgrade(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return ApiError::BadRequest("websocket_required", e.to_string()).into_response(),
    };
    if app.is_draining() {
        return ApiError::Unavailable("the relay is shutting down").into_response();
    }
    if connection::open_connections() >= app.config.gateway.max_connections {
        return ApiError::Unavailable("too many gateway connections").into_response();
    }
    let ip = crate::api::ratelimit::client_ip(peer.ip(), &headers, &app.config.trusted_proxies);
    // Small buffers keep idle sockets cheap; client frames are tiny.
    let sizes = &app.config.gateway;
    ws.read_buffer_size(sizes.read_buffer_bytes)
        .write_buffer_size(sizes.write_buffer_bytes)
        .max_write_buffer_size(sizes.max_write_buffer_bytes)
        .max_message_size(MAX_CLIENT_FRAME_BYTES * 4)
        .max_frame_size(MAX_CLIENT_FRAME_BYTES * 4)
        .on_upgrade(move |socket| connection::run(app, socket, ip))
}
