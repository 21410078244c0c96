//! Who may create an account: open (the default), invite-only (the first login carries a
//! guild invite and joins that guild) or closed; and at most N sign-ups per IP per window.
//! Existing accounts log in whatever the policy.

mod common;

use common::client::{Backend, TestRelay, login, random_key, relaxed};
use common::db::fresh_postgres_url;
use concord_proto::signed::DeviceCertificate;
use concord_relay::config::Registration;
use serde_json::Value;

/// A first login of a new account key, optionally with an invite: (status, body).
async fn sign_up(relay: &TestRelay, username: &str, invite: Option<&str>) -> (u16, Value) {
    let account = random_key();
    let device = random_key();
    let cert = DeviceCertificate::sign(&account, &device.verifying_key(), "dev", 1_700_000_000);
    common::client::login_with(
        &relay.http,
        &relay.url,
        &device,
        Some(&cert),
        Some(username),
        invite,
    )
    .await
}

#[tokio::test]
async fn closed_registration_refuses_new_accounts() {
    for tweak in [
        (|c: &mut concord_relay::RelayConfig| c.auth.registration = Registration::Closed)
            as fn(&mut concord_relay::RelayConfig),
        // The older switch still closes it.
        |c| c.auth.open_registration = false,
    ] {
        let relay = TestRelay::start_with(Backend::Sqlite, move |c| {
            relaxed(c);
            tweak(c);
        })
        .await;
        let (status, body) = sign_up(&relay, "nobody", None).await;
        assert_eq!(status, 403);
        assert_eq!(body["code"], "registration_closed");
        relay.shutdown().await;
    }
}

#[tokio::test]
async fn invite_only_registration_needs_a_usable_invite_and_joins_its_guild() {
    let db = fresh_postgres_url().await;
    // Ana signs up while registration is open and makes an invite.
    let open = {
        let db = db.clone();
        TestRelay::start_with(Backend::Sqlite, move |c| {
            relaxed(c);
            c.database_url = Some(db);
        })
        .await
    };
    let ana = open.register("ana").await;
    let (guild, _) = ana.create_guild("members only").await;
    let code = ana.invite(guild).await;
    let ana_device = ana.device.clone();
    open.shutdown().await;

    let relay = TestRelay::start_with(Backend::Sqlite, move |c| {
        relaxed(c);
        c.database_url = Some(db);
        c.auth.registration = Registration::InviteOnly;
    })
    .await;
    let (status, body) = sign_up(&relay, "bob", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("invite_required"))
    );
    let (status, _) = sign_up(&relay, "bob", Some("nosuchinvite")).await;
    assert_eq!(status, 404);
    let (status, body) = sign_up(&relay, "bob", Some("bad code!")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_invite_code"))
    );
    // Nothing was created by the refused attempts: the username is still free.
    let (status, body) = sign_up(&relay, "bob", Some(&code)).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let guilds: Value = relay
        .http
        .get(format!("{}/api/v1/users/@me/guilds", relay.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        guilds
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == guild.to_string()),
        "bob joined the invite's guild: {guilds}"
    );
    // Existing accounts log in without an invite.
    let (status, _) = login(&relay.http, &relay.url, &ana_device, None, None).await;
    assert_eq!(status, 200);
    relay.shutdown().await;
}

#[tokio::test]
async fn sign_ups_are_limited_per_ip() {
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.rate_limits.signup.requests = 2;
        c.rate_limits.signup.window_secs = 3600;
    })
    .await;
    let ana = relay.register("ana").await;
    assert_eq!(sign_up(&relay, "bob", None).await.0, 200);
    let (status, body) = sign_up(&relay, "carol", None).await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")));
    // Logging in is not signing up.
    let (status, _) = login(&relay.http, &relay.url, &ana.device, None, None).await;
    assert_eq!(status, 200);
    relay.shutdown().await;
}
