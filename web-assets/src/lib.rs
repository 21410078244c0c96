//! The web client's files (`web/`: plain ES modules and CSS, no build step), embedded by
//! `build.rs`, and what both servers of the client (the relay, and the node in node-served
//! mode) need to serve them the same way: lookup by URL path, client routes, content types
//! and ETag revalidation.

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
pub fn is_client_route(path: &str) -> bool {
    if path == "/" || path == "/setup" {
        return true;
    }
    path.strip_prefix("/invite/")
        .is_some_and(|code| !code.is_empty() && !code.contains('/'))
}

/// The file a GET of `path` serves: an embedded file, or `index.html` for a client route.
pub fn lookup(path: &str) -> Option<&'static Asset> {
    asset(path).or_else(|| {
        is_client_route(path)
            .then(|| asset("/index.html"))
            .flatten()
    })
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

/// Whether an `If-None-Match` header value matches `etag` (weak comparison, RFC 9110
/// §13.1.2: the opaque tags match, `W/` or not).
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let ours = etag.trim_start_matches("W/");
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == ours)
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
        assert_eq!(lookup("/invite/x").map(|a| a.path), Some("/index.html"));
        assert!(lookup("/nope").is_none());
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("/index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("/js/app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("/app.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("/favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("/x"), "application/octet-stream");
    }

    #[test]
    fn etags_compare_weakly() {
        assert!(etag_matches("W/\"ab\"", "W/\"ab\""));
        assert!(etag_matches("\"x\", \"ab\"", "W/\"ab\""));
        assert!(etag_matches("*", "W/\"ab\""));
        assert!(!etag_matches("W/\"ac\"", "W/\"ab\""));
    }
}
