//! Account deletion (by the user and by an instance admin), guild hand-over first, both
//! message policies, and the one-time setup link that makes the first instance admin.

mod common;

use std::time::Duration;

use common::client::{Backend, Got, TestRelay, login, relaxed};
use concord_proto::Id;
use concord_proto::gateway::close;
use concord_relay::config::DeletedMessages;
use serde_json::{Value, json};

fn id(v: &Value) -> Id {
    serde_json::from_value(v.clone()).unwrap()
}

#[tokio::test]
async fn a_user_deletes_their_account_and_their_messages_stay_as_a_deleted_users() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let (guild, channel) = ana.create_guild("ana's").await;
    bob.join(&ana.invite(guild).await).await;
    let said = ana.say(channel, "words that stay").await;
    ana.put(
        &format!(
            "/api/v1/channels/{channel}/messages/{}/reactions/%F0%9F%91%8D",
            id(&said["id"])
        ),
        None,
    )
    .await
    .ok(204);
    // History says which reactions are the reader's own.
    let path = format!("/api/v1/channels/{channel}/messages");
    let r = ana.get(&path).await;
    // The page is current up to the channel's seq: the message (1) and the reaction (2).
    assert_eq!(r.header("concord-channel-seq"), Some("2"));
    let mine = r.ok(200);
    assert_eq!(mine[0]["reactions"][0]["me"], true);
    assert_eq!(mine[0]["reactions"][0]["count"], 1);
    let theirs = bob.get(&path).await.ok(200);
    assert_eq!(theirs[0]["reactions"][0].get("me"), None);
    let one = ana
        .get(&format!(
            "/api/v1/channels/{channel}/messages/{}",
            id(&said["id"])
        ))
        .await
        .ok(200);
    assert_eq!(one["reactions"][0]["me"], true);

    // The owner of a guild must hand it over first.
    let r = ana.delete("/api/v1/users/@me").await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (409, Some("owns_guilds"))
    );
    // Only the owner hands over, and only to a member.
    assert_eq!(
        bob.patch(
            &format!("/api/v1/guilds/{guild}"),
            json!({ "owner_id": bob.id })
        )
        .await
        .status,
        403
    );
    assert_eq!(
        ana.patch(
            &format!("/api/v1/guilds/{guild}"),
            json!({ "owner_id": Id(999) })
        )
        .await
        .status,
        404
    );
    let g = ana
        .patch(
            &format!("/api/v1/guilds/{guild}"),
            json!({ "owner_id": bob.id }),
        )
        .await
        .ok(200);
    assert_eq!(id(&g["owner_id"]), bob.id);

    let mut ana_gw = ana.gateway().await;
    let mut bob_gw = bob.gateway().await;
    ana.delete("/api/v1/users/@me").await.ok(204);
    // Her socket closes, her token and her device are refused.
    let closed = loop {
        match ana_gw.next(Duration::from_secs(5)).await {
            Got::Frame(_) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(closed, Got::Closed(Some(code)) if code == close::SESSION_REVOKED),
        "{closed:?}"
    );
    assert_eq!(ana.get("/api/v1/users/@me").await.status, 401);
    // Her device is gone: the relay asks for a certificate as for a device it never saw.
    let (status, body) = login(&relay.http, &relay.url, &ana.device, None, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("certificate_required")),
        "{body}"
    );
    // The others see her leave, under her new name.
    let removed = bob_gw.event("member_remove").await;
    assert_eq!(removed["user"]["username"], format!("deleted-{}", ana.id.0));
    let gone = bob.get(&format!("/api/v1/users/{}", ana.id)).await.ok(200);
    assert_eq!(gone["username"], format!("deleted-{}", ana.id.0));
    // Her message is kept (policy "keep") with her reaction gone.
    let history = bob
        .get(&format!("/api/v1/channels/{channel}/messages"))
        .await
        .ok(200);
    let kept = history
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == said["id"])
        .expect("the message stays");
    assert_eq!(kept["content"], "words that stay");
    assert_eq!(kept["reactions"], json!([]));
    let members = bob
        .get(&format!("/api/v1/guilds/{guild}/members"))
        .await
        .ok(200);
    assert_eq!(members.as_array().unwrap().len(), 1);
    // The username is free again.
    relay.register("ana").await;
    relay.shutdown().await;
}

#[tokio::test]
async fn with_the_erase_policy_an_admin_deletes_an_account_and_its_messages() {
    let relay = TestRelay::start_with(Backend::Postgres, |c| {
        relaxed(c);
        c.auth.deleted_account_messages = DeletedMessages::Erase;
    })
    .await;
    let admin = relay.register("admin").await;
    let eve = relay.register("eve").await;
    let store = relay.server().app().store.clone();
    assert!(store.set_instance_admin(admin.id, true).await.unwrap());
    let (guild, channel) = admin.create_guild("g").await;
    eve.join(&admin.invite(guild).await).await;
    for i in 0..3 {
        eve.say(channel, &format!("spam {i}")).await;
    }
    let mine = admin.say(channel, "the admin's").await;
    let mut gw = admin.gateway().await;

    assert_eq!(
        eve.delete(&format!("/api/v1/admin/users/{}", admin.id))
            .await
            .status,
        403
    );
    assert_eq!(
        admin
            .delete(&format!("/api/v1/admin/users/{}", admin.id))
            .await
            .status,
        400
    );
    admin
        .delete(&format!("/api/v1/admin/users/{}", eve.id))
        .await
        .ok(204);
    for _ in 0..3 {
        gw.event("message_delete").await;
    }
    let history = admin
        .get(&format!("/api/v1/channels/{channel}/messages"))
        .await
        .ok(200);
    let left: Vec<&Value> = history.as_array().unwrap().iter().collect();
    assert_eq!(left.len(), 1, "{history}");
    assert_eq!(left[0]["id"], mine["id"]);
    assert_eq!(eve.get("/api/v1/users/@me").await.status, 401);
    let account = admin
        .get(&format!("/api/v1/admin/users/{}", eve.id))
        .await
        .ok(200);
    assert_eq!(account["username"], format!("deleted-{}", eve.id.0));
    let log = admin.get("/api/v1/admin/audit").await.ok(200);
    assert_eq!(log[0]["action"], "account_delete");
    assert_eq!(log[0]["detail"], "3 messages erased");
    assert_eq!(
        admin
            .delete(&format!("/api/v1/admin/users/{}", eve.id))
            .await
            .status,
        404
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn the_setup_link_makes_the_first_admin_once() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let app = relay.server().app().clone();
    let link = concord_relay::api::admin::setup_link(&app)
        .await
        .unwrap()
        .expect("no admin yet: a link");
    assert!(link.starts_with(&format!("{}/setup#", relay.url)), "{link}");
    let token = link.split('#').nth(1).unwrap();
    // The same link until it is used.
    assert_eq!(
        concord_relay::api::admin::setup_link(&app)
            .await
            .unwrap()
            .as_deref(),
        Some(link.as_str())
    );

    let r = bob
        .post("/api/v1/admin/setup", json!({ "token": "guess" }))
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("bad_setup_token"))
    );
    assert_eq!(bob.get("/api/v1/admin/stats").await.status, 403);
    ana.post("/api/v1/admin/setup", json!({ "token": token }))
        .await
        .ok(204);
    ana.get("/api/v1/admin/stats").await.ok(200);
    // Used up: nobody else gets in with it, and no link is offered any more.
    let r = bob
        .post("/api/v1/admin/setup", json!({ "token": token }))
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (409, Some("already_set_up"))
    );
    assert!(
        concord_relay::api::admin::setup_link(&app)
            .await
            .unwrap()
            .is_none()
    );
    let log = ana.get("/api/v1/admin/audit").await.ok(200);
    assert_eq!(log[0]["action"], "admin_grant");
    assert_eq!(log[0]["detail"], "setup link");
    relay.shutdown().await;
}
