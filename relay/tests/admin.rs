//! Instance administration through the API: only instance admins get in; an admin finds
//! accounts, suspends one (its sockets close, its tokens and logins are refused), lifts the
//! suspension, revokes sessions, reads statistics; every action lands in the audit log.

mod common;

use std::time::Duration;

use common::client::{Backend, Got, TestRelay, login};
use concord_proto::gateway::close;
use serde_json::Value;

#[tokio::test]
async fn an_instance_admin_suspends_and_restores_an_account_with_an_audit_trail() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;

    // Not an admin yet: refused.
    let r = ana.get("/api/v1/admin/stats").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["code"], "not_instance_admin");
    // What `concord-relay admin grant --username ana` does.
    let store = relay.server().app().store.clone();
    assert!(store.set_instance_admin(ana.id, true).await.unwrap());

    let stats = ana.get("/api/v1/admin/stats").await.ok(200);
    assert_eq!(stats["accounts"], 2);
    assert_eq!(stats["suspended_accounts"], 0);
    let found = ana.get("/api/v1/admin/users?q=BO").await.ok(200);
    let names: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob"]);
    assert_eq!(
        ana.get("/api/v1/admin/users?q=%25").await.ok(200),
        Value::Array(vec![])
    );
    assert_eq!(ana.get("/api/v1/admin/users?limit=500").await.status, 400);
    let bob_path = format!("/api/v1/admin/users/{}", bob.id);
    assert_eq!(ana.get(&bob_path).await.ok(200)["instance_admin"], false);

    // Suspending bob ends his session at once and refuses him.
    let mut bob_gw = bob.gateway().await;
    ana.call(reqwest::Method::POST, &format!("{bob_path}/suspend"), None)
        .await
        .ok(204);
    let closed = loop {
        match bob_gw.next(Duration::from_secs(5)).await {
            Got::Frame(_) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(closed, Got::Closed(Some(code)) if code == close::SESSION_REVOKED),
        "{closed:?}"
    );
    assert_eq!(bob.get("/api/v1/users/@me").await.status, 401);
    let (status, body) = login(&relay.http, &relay.url, &bob.device, None, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("account_suspended"))
    );
    // Nor can a new device of his account be added by logging in with its certificate.
    let phone = common::client::random_key();
    let cert = concord_proto::signed::DeviceCertificate::sign(
        &bob.account,
        &phone.verifying_key(),
        "phone",
        1_700_000_000,
    );
    let (status, body) = login(&relay.http, &relay.url, &phone, Some(&cert), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("account_suspended")),
        "{body}"
    );
    assert_eq!(
        ana.get(&format!("{bob_path}/devices"))
            .await
            .ok(200)
            .as_array()
            .map(Vec::len),
        Some(1),
        "no device was added"
    );
    assert!(ana.get(&bob_path).await.ok(200)["suspended_at"].is_i64());
    assert_eq!(
        ana.get("/api/v1/admin/stats").await.ok(200)["suspended_accounts"],
        1
    );
    let own = format!("/api/v1/admin/users/{}/suspend", ana.id);
    assert_eq!(
        ana.call(reqwest::Method::POST, &own, None).await.status,
        400
    );

    // Lifted: bob logs in again; then all his sessions are revoked by the admin.
    ana.delete(&format!("{bob_path}/suspend")).await.ok(204);
    let (status, body) = login(&relay.http, &relay.url, &bob.device, None, None).await;
    assert_eq!(status, 200);
    let token = body["access_token"].as_str().unwrap().to_owned();
    ana.call(
        reqwest::Method::POST,
        &format!("{bob_path}/sessions/revoke"),
        None,
    )
    .await
    .ok(204);
    let me = relay
        .http
        .get(format!("{}/api/v1/users/@me", relay.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);

    // The audit log, newest first.
    let log = ana.get("/api/v1/admin/audit").await.ok(200);
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["sessions_revoke", "account_unsuspend", "account_suspend"]
    );
    for entry in log.as_array().unwrap() {
        assert_eq!(entry["actor_id"], ana.id.to_string());
        assert_eq!(entry["target_id"], bob.id.to_string());
    }
    // Devices: an admin lists bob's and revokes one; that device's session ends.
    let (status, body) = login(&relay.http, &relay.url, &bob.device, None, None).await;
    assert_eq!(status, 200, "{body}");
    let bob_token = body["access_token"].as_str().unwrap().to_owned();
    let devices = ana.get(&format!("{bob_path}/devices")).await.ok(200);
    let key = devices[0]["device_key"].as_str().unwrap().to_owned();
    assert_eq!(devices.as_array().unwrap().len(), 1);
    ana.delete(&format!("{bob_path}/devices/{key}"))
        .await
        .ok(204);
    let me = relay
        .http
        .get(format!("{}/api/v1/users/@me", relay.url))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);
    assert_eq!(
        ana.delete(&format!("{bob_path}/devices/not-a-key"))
            .await
            .status,
        400
    );
    let log = ana.get("/api/v1/admin/audit").await.ok(200);
    assert_eq!(log[0]["action"], "device_revoke");
    assert_eq!(
        ana.get("/api/v1/admin/users/4242/devices").await.status,
        404
    );
    // Unknown accounts are 404, not 500.
    let nobody = "/api/v1/admin/users/4242/suspend";
    assert_eq!(
        ana.call(reqwest::Method::POST, nobody, None).await.status,
        404
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn the_first_admin_is_made_on_the_command_line() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let (bobs_guild, _) = bob.create_guild("bob's").await;
    assert_eq!(ana.get("/api/v1/admin/stats").await.status, 403);
    let db = relay.server().app().config.database_url();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_concord-relay"))
            .args(["--database-url", &db, "admin"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Before any admin exists, the setup link is there to print.
    let (ok, link, stderr) = run(&["setup-link"]);
    assert!(ok, "{stderr}");
    assert!(link.trim().contains("/setup#"), "{link}");
    let (ok, stdout, stderr) = run(&["grant", "--username", "ana"]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = run(&["setup-link"]);
    assert!(
        !ok && stderr.contains("already has an instance admin"),
        "{stderr}"
    );
    assert!(stdout.contains("ana"), "{stdout}");
    let (ok, _, stderr) = run(&["grant", "--username", "nobody"]);
    assert!(!ok);
    assert!(stderr.contains("no account named"), "{stderr}");
    let (_, listed, _) = run(&["list"]);
    assert!(listed.contains(&ana.id.to_string()), "{listed}");

    ana.get("/api/v1/admin/stats").await.ok(200);
    let log = ana.get("/api/v1/admin/audit").await.ok(200);
    assert_eq!(log[0]["action"], "admin_grant");
    assert_eq!(log[0]["actor_id"], Value::Null);

    // Deleting: an owner of guilds is refused until the guild is gone.
    let (ok, _, stderr) = run(&["delete-user", "--username", "bob"]);
    assert!(!ok && stderr.contains("owns guilds"), "{stderr}");
    let (ok, _, stderr) = run(&["delete-guild", "--guild-id", &bobs_guild.to_string()]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = run(&["delete-guild", "--guild-id", &bobs_guild.to_string()]);
    assert!(!ok && stderr.contains("no guild"), "{stderr}");
    let (ok, stdout, stderr) = run(&["delete-user", "--username", "bob"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("deleted"), "{stdout}");
    let account = ana
        .get(&format!("/api/v1/admin/users/{}", bob.id))
        .await
        .ok(200);
    assert_eq!(account["username"], format!("deleted-{}", bob.id.0));
    let log = ana.get("/api/v1/admin/audit").await.ok(200);
    assert_eq!(log[0]["action"], "account_delete");
    assert_eq!(log[1]["action"], "guild_delete");
    relay.shutdown().await;
}

#[tokio::test]
async fn a_user_exports_their_own_data_and_nobody_elses() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let (guild, channel) = ana.create_guild("exported").await;
    bob.join(&ana.invite(guild).await).await;
    ana.say(channel, "mine one").await;
    bob.say(channel, "not ana's").await;
    ana.say(channel, "mine two").await;

    let r = relay
        .http
        .get(format!("{}/api/v1/users/@me/export", relay.url))
        .bearer_auth(&ana.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let disposition = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    let export: Value = r.json().await.unwrap();
    assert_eq!(export["account"]["username"], "ana");
    assert_eq!(export["devices"].as_array().unwrap().len(), 1);
    assert!(
        export["guilds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == guild.to_string())
    );
    let contents: Vec<&str> = export["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["mine one", "mine two"]);
    relay.shutdown().await;
}
