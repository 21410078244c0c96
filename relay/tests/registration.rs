//! Who may create an account: open (the default), invite-only (the first login carries a
//! guild invite and joins that guild) or closed; and at most N sign-ups per IP per window.
//! Existing accounts log in whatever the policy.

mod common;

use common::client::{Backend, TestRelay, TestUser, login, random_key, relaxed};
use common::db::fresh_postgres_url;
use concord_proto::signed::DeviceCertificate;
use concord_relay::config::Registration;
use ed25519_dalek::SigningKey;
use serde_json::Value;

/// A first login of new account and device keys, optionally with an invite:
/// (status, body, account key, device key).
async fn first_login(
    relay: &TestRelay,
    username: &str,
    invite: Option<&str>,
) -> (u16, Value, SigningKey, SigningKey) {
    let account = random_key();
    let device = random_key();
    let cert = DeviceCertificate::sign(&account, &device.verifying_key(), "dev", 1_700_000_000);
    let (status, body) = common::client::login_with(
        &relay.http,
        &relay.url,
        &device,
        Some(&cert),
        Some(username),
        invite,
    )
    .await;
    (status, body, account, device)
}

/// A first login of a new account key, optionally with an invite: (status, body).
async fn sign_up(relay: &TestRelay, username: &str, invite: Option<&str>) -> (u16, Value) {
    let (status, body, _, _) = first_login(relay, username, invite).await;
    (status, body)
}

/// A new account signed up with an invite, as a `TestUser`.
async fn sign_up_user(relay: &TestRelay, username: &str, invite: &str) -> TestUser {
    let (status, body, account, device) = first_login(relay, username, Some(invite)).await;
    assert_eq!(status, 200, "{body}");
    TestUser {
        id: serde_json::from_value(body["user"]["id"].clone()).unwrap(),
        username: username.to_owned(),
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        session_id: serde_json::from_value(body["session_id"].clone()).unwrap(),
        account,
        device,
        url: relay.url.clone(),
        http: relay.http.clone(),
    }
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

#[tokio::test]
async fn instance_invites_let_new_accounts_in_without_a_guild() {
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.auth.registration = Registration::InviteOnly;
    })
    .await;
    // The first admin comes from the command line (no sign-up possible without an invite).
    let store = relay.server().app().store.clone();
    let admin_invite = concord_relay::store::InstanceInvite {
        code: "bootstrapcode".into(),
        created_by: concord_proto::Id(0),
        max_uses: Some(1),
        uses: 0,
        expires_at: None,
        revoked: false,
        created_at: concord_relay::app::now_ms(),
    };
    store.create_instance_invite(&admin_invite).await.unwrap();
    let root = sign_up_user(&relay, "root", "bootstrapcode").await;
    // Used up after one account.
    let (status, body) = sign_up(&relay, "second", Some("bootstrapcode")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (410, Some("invite_used_up"))
    );
    assert_eq!(root.get("/api/v1/admin/invites").await.status, 403);
    assert!(store.set_instance_admin(root.id, true).await.unwrap());

    // An admin makes invites through the API.
    let made = root
        .post(
            "/api/v1/admin/invites",
            serde_json::json!({ "max_uses": 2 }),
        )
        .await
        .ok(201);
    let code = made["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 12);
    let (status, body) = sign_up(&relay, "carol", Some(&code)).await;
    assert_eq!(status, 200, "{body}");
    let carol_token = body["access_token"].as_str().unwrap().to_owned();
    let guilds: Value = relay
        .http
        .get(format!("{}/api/v1/users/@me/guilds", relay.url))
        .bearer_auth(&carol_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        guilds,
        serde_json::json!([]),
        "an instance invite joins no guild"
    );
    let listed = root.get("/api/v1/admin/invites").await.ok(200);
    let found = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["code"] == code.as_str())
        .unwrap()
        .clone();
    assert_eq!(found["uses"], 1);
    root.delete(&format!("/api/v1/admin/invites/{code}"))
        .await
        .ok(204);
    let (status, body) = sign_up(&relay, "dave", Some(&code)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (410, Some("invite_revoked"))
    );
    assert_eq!(
        root.delete("/api/v1/admin/invites/nosuch").await.status,
        404
    );
    let log = root.get("/api/v1/admin/audit").await.ok(200);
    assert_eq!(log[0]["action"], "instance_invite_revoke");
    assert_eq!(log[1]["action"], "instance_invite_create");
    relay.shutdown().await;
}
