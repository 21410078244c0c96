//! Input validation, rate limits with their headers, and the security headers.

mod common;

use common::client::{Backend, TestRelay, relaxed, send};
use concord_proto::Id;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let ana = relay.register("ana").await;
    let (guild, channel) = ana.create_guild("g").await;
    ana.say(channel, "the only message").await;
    let path = format!("/api/v1/channels/{channel}/messages");

    let too_long = ana
        .post(&path, json!({ "content": "é".repeat(4_001), "nonce": "a" }))
        .await;
    assert_eq!(
        (too_long.status, too_long.body["code"].as_str()),
        (400, Some("validation_failed"))
    );
    assert!(
        too_long.body["message"]
            .as_str()
            .unwrap()
            .contains("content")
    );
    let ok_len = ana
        .post(&path, json!({ "content": "é".repeat(4_000), "nonce": "b" }))
        .await;
    assert_eq!(ok_len.status, 201);
    let empty = ana
        .post(&path, json!({ "content": "   ", "nonce": "c" }))
        .await;
    assert_eq!(empty.status, 400);
    let unknown_field = ana
        .post(
            &path,
            json!({ "content": "x", "nonce": "d", "admin": true }),
        )
        .await;
    assert_eq!(
        (unknown_field.status, unknown_field.body["code"].as_str()),
        (400, Some("bad_json"))
    );
    let wrong_type = ana.post(&path, json!({ "content": 5, "nonce": "e" })).await;
    assert_eq!(wrong_type.status, 400);
    let bad_nonce = ana
        .post(&path, json!({ "content": "x", "nonce": "has space" }))
        .await;
    assert_eq!(bad_nonce.status, 400);
    let bad_reply = ana
        .post(
            &path,
            json!({ "content": "x", "nonce": "f", "reply_to": "123" }),
        )
        .await;
    assert_eq!(
        (bad_reply.status, bad_reply.body["code"].as_str()),
        (400, Some("unknown_reply"))
    );

    // Raw bodies: not JSON, wrong content type, too large.
    let url = format!("{}{path}", relay.url);
    let r = relay
        .http
        .post(&url)
        .bearer_auth(&ana.access)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = relay
        .http
        .post(&url)
        .bearer_auth(&ana.access)
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let huge = format!(
        r#"{{"content":"x","nonce":"g","pad":"{}"}}"#,
        "y".repeat(70 * 1024)
    );
    let r = relay
        .http
        .post(&url)
        .bearer_auth(&ana.access)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large");

    // Ids and pages.
    assert_eq!(ana.get("/api/v1/channels/abc/messages").await.status, 400);
    assert_eq!(ana.get("/api/v1/channels/-1/messages").await.status, 400);
    assert_eq!(ana.get(&format!("{path}?limit=101")).await.status, 400);
    assert_eq!(ana.get(&format!("{path}?limit=0")).await.status, 400);
    assert_eq!(
        ana.get(&format!("{path}?before=1&after=2")).await.status,
        400
    );
    assert_eq!(
        ana.get("/api/v1/channels/999999/messages").await.status,
        404
    );
    assert_eq!(
        ana.get(&format!("/api/v1/guilds/{guild}/search?q=%21%21"))
            .await
            .status,
        400
    );

    // Names.
    let long_name = ana
        .post("/api/v1/guilds", json!({ "name": "n".repeat(101) }))
        .await;
    assert_eq!(long_name.status, 400);
    let newline = ana
        .post(
            &format!("/api/v1/guilds/{guild}/channels"),
            json!({ "name": "a\nb", "kind": "text" }),
        )
        .await;
    assert_eq!(newline.status, 400);
    let dm_kind = ana
        .post(
            &format!("/api/v1/guilds/{guild}/channels"),
            json!({ "name": "x", "kind": "dm" }),
        )
        .await;
    assert_eq!(dm_kind.status, 400);

    // Nothing of the refused requests was stored: two messages, seq 2.
    let history = ana.get(&path).await.ok(200);
    assert_eq!(history.as_array().unwrap().len(), 2);
    let events = ana
        .get(&format!("/api/v1/channels/{channel}/events"))
        .await
        .ok(200);
    assert_eq!(events.as_array().unwrap().len(), 2);
    let guilds = ana.get("/api/v1/users/@me/guilds").await.ok(200);
    assert_eq!(guilds.as_array().unwrap().len(), 1);
    let channels = ana
        .get(&format!("/api/v1/guilds/{guild}/channels"))
        .await
        .ok(200);
    assert_eq!(channels.as_array().unwrap().len(), 2);
    let unknown: Id = Id(5);
    assert_eq!(
        ana.get(&format!("/api/v1/guilds/{unknown}")).await.status,
        404
    );
    assert_eq!(ana.get("/api/v1/nope").await.status, 404);
}

#[tokio::test]
async fn rate_limits_carry_headers_and_refuse_with_retry_after() {
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.rate_limits.message_send.requests = 3;
        c.rate_limits.auth.requests = 4;
        c.rate_limits.general.requests = 50;
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let ana = relay.register("ana").await;
    let (_, channel) = ana.create_guild("g").await;
    let path = format!("/api/v1/channels/{channel}/messages");
    for (i, remaining) in [2, 1, 0].into_iter().enumerate() {
        let r = ana
            .post(&path, json!({ "content": "hi", "nonce": format!("n{i}") }))
            .await;
        assert_eq!(r.status, 201);
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some(remaining.to_string().as_str())
        );
        let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=10).contains(&reset));
    }
    let refused = ana
        .post(&path, json!({ "content": "hi", "nonce": "n9" }))
        .await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert!(
        refused
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    // Reading is another class: still allowed, with its own headers.
    let r = ana.get(&path).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit"), Some("50"));
    // Non-API routes carry no limit.
    let r = send(
        &relay.http,
        Method::GET,
        format!("{}/healthz", relay.url),
        None,
        None,
    )
    .await;
    assert!(r.header("x-ratelimit-limit").is_none());

    // Auth is per client IP; a trusted proxy's X-Forwarded-For names the client.
    let challenge = |ip: &'static str| {
        relay
            .http
            .post(format!("{}/api/v1/auth/challenge", relay.url))
            .header("x-forwarded-for", ip)
            .json(&json!({ "device_key": "gTl3Dqh9F19Wo1Rmw0x-zMuNipG07jeiXfYPW4_Js5Q" }))
            .send()
    };
    for _ in 0..4 {
        assert_eq!(challenge("203.0.113.1").await.unwrap().status(), 200);
    }
    assert_eq!(challenge("203.0.113.1").await.unwrap().status(), 429);
    assert_eq!(challenge("203.0.113.2").await.unwrap().status(), 200);
}

#[tokio::test]
async fn untrusted_forwarded_for_is_ignored() {
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.rate_limits.auth.requests = 2;
    })
    .await;
    for (i, ip) in ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        .into_iter()
        .enumerate()
    {
        let r = relay
            .http
            .post(format!("{}/api/v1/auth/challenge", relay.url))
            .header("x-forwarded-for", ip)
            .json(&json!({ "device_key": "gTl3Dqh9F19Wo1Rmw0x-zMuNipG07jeiXfYPW4_Js5Q" }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            if i < 2 { 200 } else { 429 },
            "spoofed headers share the peer's bucket"
        );
    }
}

#[tokio::test]
async fn security_headers_cors_and_compression() {
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.cors_origins = vec!["https://app.example".into()];
        c.public_url = vec!["https://chat.example".into()];
    })
    .await;
    // A client that leaves compressed bodies alone, so the encoding is visible.
    let raw = reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .build()
        .unwrap();
    let r = raw
        .get(format!(
            "http://{}/api/v1/openapi.json",
            relay.server().http_addr()
        ))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    let h = r.headers();
    assert_eq!(
        h["content-security-policy"],
        "default-src 'self'; connect-src 'self' wss://chat.example; frame-ancestors 'none'"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["content-encoding"], "gzip");
    let br = raw
        .get(format!(
            "http://{}/api/v1/openapi.json",
            relay.server().http_addr()
        ))
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(br.headers()["content-encoding"], "br");
    // A small answer is not worth a compressor's setup: it goes out as is.
    let small = raw
        .get(format!("http://{}/healthz", relay.server().http_addr()))
        .header("accept-encoding", "br, gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), StatusCode::OK);
    assert!(
        small.headers().get("content-encoding").is_none(),
        "{:?}",
        small.headers()
    );
    assert!(small.bytes().await.unwrap().len() < 1024);
    let preflight = relay
        .http
        .request(
            Method::OPTIONS,
            format!("http://{}/api/v1/users/@me", relay.server().http_addr()),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let other = relay
        .http
        .get(format!("http://{}/healthz", relay.server().http_addr()))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
