//! Login by device key, refresh rotation, logout, device linking and revocation.

mod common;

use std::time::Duration;

use common::client::{Backend, Gateway, TestRelay, login, random_key, relaxed, send};
use concord_proto::gateway::close;
use concord_proto::signed::{self, DeviceCertificate};
use reqwest::Method;
use serde_json::{Value, json};

async fn refresh(relay: &TestRelay, token: &str) -> (u16, Value) {
    let r = send(
        &relay.http,
        Method::POST,
        format!("{}/api/v1/auth/refresh", relay.url),
        None,
        Some(json!({ "refresh_token": token })),
    )
    .await;
    (r.status, r.body)
}

#[tokio::test]
async fn registration_and_login() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let account = random_key();
    let device = random_key();
    let cert = DeviceCertificate::sign(&account, &device.verifying_key(), "laptop", 1_700_000_000);

    // Unknown device without a certificate, then without a username: clear errors.
    let (status, body) = login(&relay.http, &relay.url, &device, None, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("certificate_required"))
    );
    let (status, body) = login(&relay.http, &relay.url, &device, Some(&cert), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("username_required"))
    );
    let (status, body) = login(
        &relay.http,
        &relay.url,
        &device,
        Some(&cert),
        Some("Bad Name"),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("validation_failed"))
    );

    let (status, first) = login(&relay.http, &relay.url, &device, Some(&cert), Some("dora")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["user"]["username"], "dora");
    // Known device: neither certificate nor username needed; same account.
    let (status, second) = login(&relay.http, &relay.url, &device, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(second["user"]["id"], first["user"]["id"]);

    // Another account cannot take the username.
    let other = random_key();
    let other_device = random_key();
    let other_cert = DeviceCertificate::sign(&other, &other_device.verifying_key(), "x", 1);
    let (status, body) = login(
        &relay.http,
        &relay.url,
        &other_device,
        Some(&other_cert),
        Some("dora"),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("username_taken"))
    );

    // A certificate for another device key is refused.
    let (status, _) = login(
        &relay.http,
        &relay.url,
        &other_device,
        Some(&cert),
        Some("zed"),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn challenges_are_single_use_and_bound_to_audience_and_key() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let user = relay.register("eve").await;
    let device_key = signed::public_key_string(&user.device.verifying_key());
    let challenge = send(
        &relay.http,
        Method::POST,
        format!("{}/api/v1/auth/challenge", relay.url),
        None,
        Some(json!({ "device_key": device_key })),
    )
    .await
    .ok(200);
    let c = challenge["challenge"].as_str().unwrap();
    let audience = challenge["audience"].as_str().unwrap();
    assert_eq!(audience, relay.url);
    let post_login = |signature: String| {
        let body = json!({ "device_key": device_key, "challenge": c, "signature": signature });
        send(
            &relay.http,
            Method::POST,
            format!("{}/api/v1/auth/login", relay.url),
            None,
            Some(body),
        )
    };
    // Signed for another relay: refused, and the challenge is spent.
    let r = post_login(signed::sign_auth(&user.device, "https://evil.example", c)).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (401, Some("bad_signature"))
    );
    let r = post_login(signed::sign_auth(&user.device, audience, c)).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (401, Some("invalid_challenge"))
    );

    // A challenge issued to one key cannot be used by another.
    let stranger = random_key();
    let stranger_key = signed::public_key_string(&stranger.verifying_key());
    let challenge = send(
        &relay.http,
        Method::POST,
        format!("{}/api/v1/auth/challenge", relay.url),
        None,
        Some(json!({ "device_key": stranger_key })),
    )
    .await
    .ok(200);
    let c2 = challenge["challenge"].as_str().unwrap();
    let body = json!({ "device_key": device_key, "challenge": c2, "signature": signed::sign_auth(&user.device, audience, c2) });
    let r = send(
        &relay.http,
        Method::POST,
        format!("{}/api/v1/auth/login", relay.url),
        None,
        Some(body),
    )
    .await;
    assert_eq!(r.status, 401);

    // Malformed keys never reach the store.
    let r = send(
        &relay.http,
        Method::POST,
        format!("{}/api/v1/auth/challenge", relay.url),
        None,
        Some(json!({ "device_key": "abc" })),
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("validation_failed"))
    );
}

#[tokio::test]
async fn refresh_rotates_with_grace_and_reuse_revokes_the_family() {
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.auth.refresh_grace_secs = 1;
    })
    .await;
    let user = relay.register("finn").await;
    let mut gw = user.gateway().await;

    let (status, a) = refresh(&relay, &user.refresh).await;
    assert_eq!(status, 200);
    let successor = a["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(successor, user.refresh);
    // Two tabs at once: the second gets the same successor.
    let (status, b) = refresh(&relay, &user.refresh).await;
    assert_eq!(status, 200);
    assert_eq!(b["refresh_token"], a["refresh_token"]);
    assert_eq!(b["session_id"], a["session_id"]);
    // The new access token works.
    let me = send(
        &relay.http,
        Method::GET,
        format!("{}/api/v1/users/@me", relay.url),
        a["access_token"].as_str(),
        None,
    )
    .await;
    assert_eq!(me.status, 200);

    // After the grace window, reuse of the old token kills the whole session.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let (status, body) = refresh(&relay, &user.refresh).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("refresh_reused"))
    );
    let (status, _) = refresh(&relay, &successor).await;
    assert_eq!(status, 401, "the successor belongs to the revoked family");
    let me = send(
        &relay.http,
        Method::GET,
        format!("{}/api/v1/users/@me", relay.url),
        a["access_token"].as_str(),
        None,
    )
    .await;
    assert_eq!(
        (me.status, me.body["code"].as_str()),
        (401, Some("session_revoked"))
    );
    assert_eq!(gw.closed().await, Some(close::SESSION_REVOKED));
}

#[tokio::test]
async fn logout_refuses_the_session_at_once_and_closes_its_sockets() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let user = relay.register("gus").await;
    let mut gw = user.gateway().await;
    let r = send(
        &relay.http,
        Method::POST,
        format!("{}/api/v1/auth/logout", relay.url),
        None,
        Some(json!({ "refresh_token": user.refresh })),
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(user.get("/api/v1/users/@me").await.status, 401);
    assert_eq!(gw.closed().await, Some(close::SESSION_REVOKED));
    // The same token can neither refresh nor resume.
    assert_eq!(refresh(&relay, &user.refresh).await.0, 401);
    let mut ws = Gateway::connect(&relay.url).await;
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({ "op": "identify", "d": { "token": user.access } }).to_string(),
    ))
    .await
    .unwrap();
    let got = common::client::read(&mut ws, Duration::from_secs(5)).await;
    assert!(
        matches!(
            got,
            common::client::Got::Closed(Some(close::SESSION_REVOKED))
        ),
        "{got:?}"
    );
}

#[tokio::test]
async fn devices_are_linked_listed_and_revoked() {
    let relay = TestRelay::start(Backend::Postgres).await;
    let user = relay.register("hana").await;
    let phone = random_key();
    let cert = DeviceCertificate::sign(
        &user.account,
        &phone.verifying_key(),
        "phone",
        1_700_000_100,
    );
    let added = user
        .post("/api/v1/users/@me/devices", json!({ "certificate": cert }))
        .await
        .ok(201);
    assert_eq!(added["label"], "phone");
    assert_eq!(
        user.post("/api/v1/users/@me/devices", json!({ "certificate": cert }))
            .await
            .status,
        409
    );
    let devices = user.get("/api/v1/users/@me/devices").await.ok(200);
    assert_eq!(devices.as_array().unwrap().len(), 2);

    // The linked device logs in without a certificate, into the same account.
    let (status, body) = login(&relay.http, &relay.url, &phone, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"]["id"], json!(user.id.to_string()));
    let phone_token = body["access_token"].as_str().unwrap().to_owned();

    // A certificate signed by another account key is refused.
    let foreign = DeviceCertificate::sign(&random_key(), &random_key().verifying_key(), "x", 1);
    let r = user
        .post(
            "/api/v1/users/@me/devices",
            json!({ "certificate": foreign }),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("foreign_certificate"))
    );
    // A tampered certificate is a validation error.
    let mut tampered = serde_json::to_value(&cert).unwrap();
    tampered["label"] = json!("tablet");
    assert_eq!(
        user.post(
            "/api/v1/users/@me/devices",
            json!({ "certificate": tampered })
        )
        .await
        .status,
        400
    );

    // Revoking the phone refuses its sessions and its future logins.
    let phone_key = signed::public_key_string(&phone.verifying_key());
    user.delete(&format!("/api/v1/users/@me/devices/{phone_key}"))
        .await
        .ok(204);
    let r = send(
        &relay.http,
        Method::GET,
        format!("{}/api/v1/users/@me", relay.url),
        Some(&phone_token),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    let (status, body) = login(&relay.http, &relay.url, &phone, None, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("device_revoked"))
    );
    assert_eq!(
        user.delete(&format!("/api/v1/users/@me/devices/{phone_key}"))
            .await
            .status,
        404
    );
    assert_eq!(
        user.delete("/api/v1/users/@me/devices/not-a-key")
            .await
            .status,
        400
    );
    // The first device is untouched.
    assert_eq!(user.get("/api/v1/users/@me").await.status, 200);
}

#[tokio::test]
async fn expired_and_forged_tokens_are_refused() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let user = relay.register("ivy").await;
    let caller = concord_relay::auth::Caller {
        user_id: user.id,
        session_id: user.session_id,
        device_key: String::new(),
    };
    let expired = relay
        .server()
        .app()
        .tokens
        .issue_access_with_expiry(&caller, 1_000, 2_000);
    let r = send(
        &relay.http,
        Method::GET,
        format!("{}/api/v1/users/@me", relay.url),
        Some(&expired),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (401, Some("token_expired"))
    );
    // Flip one character in the middle of the signature (the last one carries padding bits).
    let mut forged: Vec<char> = user.access.chars().collect();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let r = send(
        &relay.http,
        Method::GET,
        format!("{}/api/v1/users/@me", relay.url),
        Some(&forged),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (401, Some("invalid_token"))
    );
    let r = send(
        &relay.http,
        Method::GET,
        format!("{}/api/v1/users/@me", relay.url),
        Some("garbage"),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
}

/// Only `Authorization: Bearer <token>` carries an access token: the same token under any
/// other scheme is refused on every authenticated route (message sends are rate-limited by
/// account, and that layer must not accept it either).
#[tokio::test]
async fn only_the_bearer_scheme_carries_an_access_token() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let ana = relay.register("ana").await;
    let (_, channel) = ana.create_guild("schemes").await;
    for scheme in ["Basic", "Token", "JWT", "bearer"] {
        for (method, path, body) in [
            (Method::GET, "/api/v1/users/@me".to_owned(), None),
            (
                Method::POST,
                format!("/api/v1/channels/{channel}/messages"),
                Some(json!({ "content": "x", "nonce": format!("n-{scheme}") })),
            ),
        ] {
            let r = relay
                .http
                .request(method.clone(), format!("{}{path}", relay.url))
                .header("authorization", format!("{scheme} {}", ana.access))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            if scheme == "bearer" {
                // The scheme is case-insensitive (RFC 9110 §11.1).
                assert!(status == 200 || status == 201, "{scheme} {path}: {status}");
            } else {
                let body: Value = r.json().await.unwrap();
                assert_eq!(
                    (status, body["code"].as_str()),
                    (401, Some("unauthorized")),
                    "{scheme} {method} {path}: {body}"
                );
            }
        }
    }
}

/// A resumed gateway session belongs to the token that resumed it: logging out that token's
/// session closes it; logging out the session that first identified it no longer does.
#[tokio::test]
async fn a_resumed_gateway_session_follows_the_token_that_resumed_it() {
    use common::client::Got;
    use futures_util::SinkExt;
    let relay = TestRelay::start(Backend::Sqlite).await;
    let ana = relay.register("ana").await;
    let gw = ana.gateway().await;
    let (session, seen) = (gw.session_id.clone(), gw.last_s);
    drop(gw);
    // A second login of the same device: another auth session, another token.
    let (status, second) = login(&relay.http, &relay.url, &ana.device, None, None).await;
    assert_eq!(status, 200, "{second}");
    let resume = |token: String| {
        let (url, session) = (relay.url.clone(), session.clone());
        async move {
            let mut ws = Gateway::connect(&url).await;
            ws.send(tokio_tungstenite::tungstenite::Message::text(
                json!({ "op": "resume", "d": { "token": token, "session_id": session, "seq": seen } })
                    .to_string(),
            ))
            .await
            .unwrap();
            let mut gw = Gateway {
                ws,
                ready: json!(null),
                session_id: session,
                last_s: seen,
            };
            match gw.next(Duration::from_secs(5)).await {
                Got::Frame(f) if f.op == "resumed" => gw,
                other => panic!("resume: {other:?}"),
            }
        }
    };
    let mut gw = resume(second["access_token"].as_str().unwrap().to_owned()).await;
    // The first session logs out: the resumed socket stays.
    let (status, _) = logout(&relay, &ana.refresh).await;
    assert_eq!(status, 204);
    gw.send_json(json!({ "op": "heartbeat" })).await;
    loop {
        match gw.next(Duration::from_secs(2)).await {
            Got::Frame(f) if f.op == "heartbeat_ack" => break,
            Got::Frame(_) => {}
            other => panic!("the resumed session survives the old token's logout: {other:?}"),
        }
    }
    // The session that resumed it logs out: the socket closes with session_revoked.
    let (status, _) = logout(&relay, second["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 204);
    assert_eq!(gw.closed().await, Some(close::SESSION_REVOKED));
}

async fn logout(relay: &TestRelay, refresh_token: &str) -> (u16, Value) {
    let r = send(
        &relay.http,
        Method::POST,
        format!("{}/api/v1/auth/logout", relay.url),
        None,
        Some(json!({ "refresh_token": refresh_token })),
    )
    .await;
    (r.status, r.body)
}
