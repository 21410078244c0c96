//! `GET /api/v1/voice/ice-servers`: STUN URLs, TURN URLs and ephemeral TURN credentials that
//! concord-turn (or coturn with use-auth-secret) accepts.

mod common;

use common::client::{Backend, TestRelay, relaxed};

#[tokio::test]
async fn ice_servers_carry_ephemeral_turn_credentials() {
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.voice.stun_urls = vec!["stun:turn.example.org:3478".into()];
        c.voice.turn_urls = vec![
            "turn:turn.example.org:3478?transport=udp".into(),
            "turns:turn.example.org:5349?transport=tcp".into(),
        ];
        c.voice.turn_secret = Some("s3cret".into());
        c.voice.credential_ttl_secs = 600;
    })
    .await;
    let ana = relay.register("ana").await;
    let v = ana.get("/api/v1/voice/ice-servers").await.ok(200);
    assert_eq!(v["ttl_secs"], 600);
    let servers = v["ice_servers"].as_array().unwrap();
    assert_eq!(servers[0]["urls"][0], "stun:turn.example.org:3478");
    assert!(servers[0].get("username").is_none());
    let turn = &servers[1];
    let username = turn["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, ana.id.to_string());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!((now + 590..=now + 610).contains(&expiry));
    assert_eq!(
        turn["credential"],
        concord_proto::turn_rest::password("s3cret", username)
    );
    // The well-known document lists the same URLs for nodes.
    let wk = common::client::send(
        &relay.http,
        reqwest::Method::GET,
        format!("{}/.well-known/concord", relay.url),
        None,
        None,
    )
    .await
    .ok(200);
    assert_eq!(wk["turn_urls"].as_array().unwrap().len(), 2);
    // Anonymous callers get nothing.
    let anon = common::client::send(
        &relay.http,
        reqwest::Method::GET,
        format!("{}/api/v1/voice/ice-servers", relay.url),
        None,
        None,
    )
    .await;
    assert_eq!(anon.status, 401);
}

#[tokio::test]
async fn without_a_secret_only_stun_is_offered() {
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.voice.stun_urls = vec!["stun:turn.example.org:3478".into()];
        c.voice.turn_urls = vec!["turn:turn.example.org:3478".into()];
    })
    .await;
    let ana = relay.register("ana").await;
    let v = ana.get("/api/v1/voice/ice-servers").await.ok(200);
    assert_eq!(v["ice_servers"].as_array().unwrap().len(), 1);
}
