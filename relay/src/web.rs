//! The web client: the files of `web/` (plain ES modules and CSS, no build step), embedded in
//! the binary by the `concord-web-assets` crate and served outside `/api` by the router's fallback.
//!
//! - An embedded file is served at its path (`/index.html`, `/js/app.js`, …) with its content
//!   type, `Cache-Control: no-cache` and a content-hash `ETag` (so a browser revalidates and
//!   gets `304` until the relay is upgraded), and a strict CSP (no inline script, no eval).
//! - Client routes (`/`, `/invite/{code}`, `/setup`) serve `index.html`; the client reads the
//!   path (and the setup link's token from the fragment, which never reaches the server).
//! - Anything else, and every unknown `/api/…` path, stays the API's JSON `404`.
//!
//! Lookup, client routes, content types and ETag comparison live in `concord-web-assets`,
//! shared with the node's `daemon/ui.rs`. Not in the OpenAPI document, so these routes have
//! no row in the authorization matrix.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::error::ApiError;
use crate::app::App;

pub use concord_web_assets::{ASSETS, Asset, asset, content_type};

/// The policy of the client's pages: the API's (`default-src 'self'`, the relay's own
/// WebSocket origins, no framing) plus no plugins, no `<base>`, forms only to the relay.
pub fn content_security_policy(audiences: &[String]) -> String {
    format!(
        "{}; object-src 'none'; base-uri 'none'; form-action 'self'",
        crate::api::content_security_policy(audiences)
    )
}

/// The router's fallback: an embedded file, the client for a client route, or the JSON 404.
pub async fn serve(State(app): State<Arc<App>>, req: Request) -> Response {
    let path = req.uri().path();
    let readable = req.method() == Method::GET || req.method() == Method::HEAD;
    let api = path == "/api" || path.starts_with("/api/") || path.starts_with("/.well-known/");
    let found = if readable && !api {
        concord_web_assets::lookup(path)
    } else {
        None
    };
    let Some(file) = found else {
        return ApiError::NotFound("route").into_response();
    };
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| concord_web_assets::etag_matches(tags, file.etag));
    let csp = HeaderValue::from_str(&content_security_policy(&app.audiences))
        .expect("CSP is a valid header value");
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(file.path)),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, HeaderValue::from_static(file.etag)),
        (header::CONTENT_SECURITY_POLICY, csp),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    if req.method() == Method::HEAD {
        return (headers, ()).into_response();
    }
    (headers, file.body).into_response()
}
