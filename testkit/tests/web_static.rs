//! The relay serves the embedded web client over plain HTTP: content types, the strict CSP,
//! revalidation by ETag, client routes (`/`, `/invite/CODE`) falling back to `index.html`,
//! and unknown paths (under `/api` or not) still answered with the API's JSON 404.

use concord_testkit::TestRelay;
use reqwest::{Method, StatusCode, header};
use serde_json::Value;

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.expect("request")
}

#[tokio::test]
async fn relay_serves_the_web_client() {
    let relay = TestRelay::start().await;
    let base = &relay.url;

    let index = get(&format!("{base}/")).await;
    assert_eq!(index.status(), StatusCode::OK);
    let h = index.headers().clone();
    assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii");
    assert!(
        csp.starts_with("default-src 'self'; connect-src 'self' ws://127.0.0.1:"),
        "{csp}"
    );
    for part in [
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "{csp} lacks {part}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    let etag = h[header::ETAG].to_str().expect("etag").to_owned();
    let html = index.text().await.expect("body");
    assert!(html.contains(r#"<script type="module" src="/js/app.js">"#));
    // No inline script: every <script> has a src.
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script type=\"module\" src=").count()
    );

    // The same document for client routes; revalidation answers 304.
    let invite = get(&format!("{base}/invite/AbC-12_x")).await;
    assert_eq!(invite.status(), StatusCode::OK);
    assert_eq!(invite.headers()[header::ETAG].to_str().unwrap(), etag);
    assert_eq!(invite.text().await.unwrap(), html);
    let client = reqwest::Client::new();
    let again = client
        .get(format!("{base}/index.html"))
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert!(again.bytes().await.unwrap().is_empty());

    for (path, ty) in [
        ("/js/app.js", "text/javascript; charset=utf-8"),
        ("/js/api.js", "text/javascript; charset=utf-8"),
        ("/app.css", "text/css; charset=utf-8"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let r = get(&format!("{base}{path}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()[header::CONTENT_TYPE], ty, "{path}");
        assert!(r.headers().contains_key(header::ETAG), "{path}");
    }
    let head = client
        .request(Method::HEAD, format!("{base}/js/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);

    // Anything else is the API's JSON 404, and the API itself is untouched.
    for path in [
        "/api/v1/nope",
        "/api/v1/invite/x",
        "/api",
        "/nope",
        "/nope.js",
        "/invite/",
        "/invite/a/b",
        "/.well-known/nope",
    ] {
        let r = get(&format!("{base}{path}")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = r.json().await.expect("JSON 404");
        assert_eq!(body["code"], "unknown_route", "{path}");
    }
    let post = client.post(format!("{base}/")).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::NOT_FOUND);
    let health = get(&format!("{base}/healthz")).await;
    assert_eq!(health.status(), StatusCode::OK);
    let well_known = get(&format!("{base}/.well-known/concord")).await;
    assert_eq!(well_known.status(), StatusCode::OK);

    // Compressed when the browser asks; the whole client (every embedded file, so more than
    // a first load fetches) stays within the first-load budget of 200 KB compressed.
    let raw = reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .build()
        .unwrap();
    let mut total = 0;
    for asset in concord_relay::web::ASSETS {
        let r = raw
            .get(format!("{base}{}", asset.path))
            .header(header::ACCEPT_ENCODING, "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", asset.path);
        if asset.body.len() > 1024 {
            assert_eq!(
                r.headers()[header::CONTENT_ENCODING],
                "gzip",
                "{}",
                asset.path
            );
        }
        total += r.bytes().await.unwrap().len();
    }
    assert!(total < 200 * 1024, "the client is {total} bytes compressed");
    println!(
        "web client: {} files, {total} bytes compressed",
        concord_relay::web::ASSETS.len()
    );
}
