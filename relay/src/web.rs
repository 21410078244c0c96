//! The web client: the files of `web/` (plain ES modules and CSS, no build step), embedded in
//! the binary by `build.rs` and served outside `/api` by the router's fallback.
//!
//! - An embedded file is served at its path (`/index.html`, `/js/app.js`, …) with its content
//!   type, `Cache-Control: no-cache` and a content-hash `ETag` (so a browser revalidates and
//!   gets `304` until the relay is upgraded), and a strict CSP (no inline script, no eval).
//! - Client routes (`/`, `/invite/{code}`, `/setup`) serve `index.html`; the client reads the
//!   path (and the setup link's token from the fragment, which never reaches the server).
//! - Anything else, and every unknown `/api/…` path, stays the API's JSON `404`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::error::ApiError;
use crate::app::App;

/// One embedded file of `web/`.
#[derive(Debug)]
pub struct Asset {
    /// URL path, e.g. `/js/app.js`.
    pub path: &'static str,
    pub body: &'static [u8],
    /// Weak validator from the content hash, `W/"…"` (the body may be served compressed).
    pub etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The embedded file at a URL path.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// Paths the client routes itself: they all serve `index.html`.
fn is_client_route(path: &str) -> bool {
    if path == "/" || path == "/setup" {
        return true;
    }
    path.strip_prefix("/invite/")
        .is_some_and(|code| !code.is_empty() && !code.contains('/'))
}

pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

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
        asset(path).or_else(|| {
            is_client_route(path)
                .then(|| asset("/index.html"))
                .flatten()
        })
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
        .is_some_and(|tags| {
            // Weak comparison (RFC 9110 §13.1.2): the opaque tags match, W/ or not.
            let ours = file.etag.trim_start_matches("W/");
            tags.split(',')
                .map(|t| t.trim())
                .any(|t| t == "*" || t.trim_start_matches("W/") == ours)
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_embedded() {
        let index = asset("/index.html").expect("web/index.html is embedded");
        let text = std::str::from_utf8(index.body).expect("utf-8");
        assert!(text.contains("<script type=\"module\""));
        assert!(asset("/js/app.js").is_some());
        assert!(ASSETS.iter().all(|a| a.etag.starts_with("W/\"")));
    }

    #[test]
    fn client_routes() {
        assert!(is_client_route("/"));
        assert!(is_client_route("/invite/AbC-12_x"));
        assert!(is_client_route("/setup"));
        assert!(!is_client_route("/invite/"));
        assert!(!is_client_route("/invite/a/b"));
        assert!(!is_client_route("/nope"));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("/index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("/js/app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("/app.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("/favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("/x"), "application/octet-stream");
    }
}
