//! Invites, roles, kicks and bans through the API, with the gateway events they cause.

mod common;

use common::client::{Backend, TestRelay};
use concord_proto::model::Invite;
use concord_proto::{Id, Permissions};
use serde_json::{Value, json};

fn id(v: &Value) -> Id {
    serde_json::from_value(v.clone()).unwrap()
}

#[tokio::test]
async fn invites_expire_run_out_and_can_be_revoked() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let carol = relay.register("carol").await;
    let (guild, _) = ana.create_guild("g").await;

    let once = ana
        .post(
            &format!("/api/v1/guilds/{guild}/invites"),
            json!({ "max_uses": 1 }),
        )
        .await
        .ok(201);
    let code = once["code"].as_str().unwrap();
    let preview = bob.get(&format!("/api/v1/invites/{code}")).await.ok(200);
    assert_eq!(preview["guild_name"], "g");
    assert_eq!(preview["member_count"], 1);
    bob.join(code).await;
    // Accepting again as a member does not use the invite.
    bob.join(code).await;
    let r = carol
        .post(&format!("/api/v1/invites/{code}/accept"), json!({}))
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (410, Some("invite_used_up"))
    );

    let revocable = ana.invite(guild).await;
    ana.delete(&format!("/api/v1/guilds/{guild}/invites/{revocable}"))
        .await
        .ok(204);
    let r = carol
        .post(&format!("/api/v1/invites/{revocable}/accept"), json!({}))
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (410, Some("invite_revoked"))
    );

    // An invite whose time has passed (written straight to the store: the API's minimum
    // lifetime is a minute).
    let expired = Invite {
        code: "oldcode".into(),
        guild_id: guild,
        inviter_id: ana.id,
        max_uses: None,
        uses: 0,
        expires_at: Some(1_000),
        revoked: false,
        created_at: 500,
    };
    relay
        .server()
        .app()
        .store
        .create_invite(&expired)
        .await
        .unwrap();
    let r = carol
        .post("/api/v1/invites/oldcode/accept", json!({}))
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (410, Some("invite_expired"))
    );
    assert_eq!(carol.get("/api/v1/invites/oldcode").await.status, 410);
    assert_eq!(
        carol
            .post("/api/v1/invites/nosuchcode/accept", json!({}))
            .await
            .status,
        404
    );
    assert_eq!(
        carol
            .post("/api/v1/invites/bad%20code/accept", json!({}))
            .await
            .status,
        400
    );
    let listed = ana
        .get(&format!("/api/v1/guilds/{guild}/invites"))
        .await
        .ok(200);
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert!(carol.get(&format!("/api/v1/guilds/{guild}")).await.status == 403);
}

#[tokio::test]
async fn bans_keep_people_out_and_kicks_do_not() {
    let relay = TestRelay::start(Backend::Postgres).await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let carol = relay.register("carol").await;
    let (guild, channel) = ana.create_guild("g").await;
    let code = ana.invite(guild).await;
    bob.join(&code).await;
    carol.join(&code).await;
    let mut ana_gw = ana.gateway().await;

    // Kick: gone, but may come back.
    ana.delete(&format!("/api/v1/guilds/{guild}/members/{}", carol.id))
        .await
        .ok(204);
    assert_eq!(
        id(&ana_gw.event("member_remove").await["user"]["id"]),
        carol.id
    );
    assert_eq!(
        carol
            .get(&format!("/api/v1/channels/{channel}/messages"))
            .await
            .status,
        403
    );
    carol.join(&code).await;
    assert_eq!(
        id(&ana_gw.event("member_add").await["user"]["id"]),
        carol.id
    );

    // Ban: gone, and no invite brings them back.
    ana.put(
        &format!("/api/v1/guilds/{guild}/bans/{}", bob.id),
        Some(json!({ "reason": "spam" })),
    )
    .await
    .ok(204);
    let bans = ana
        .get(&format!("/api/v1/guilds/{guild}/bans"))
        .await
        .ok(200);
    assert_eq!(bans[0]["reason"], "spam");
    let r = bob
        .post(
            &format!("/api/v1/invites/{}/accept", ana.invite(guild).await),
            json!({}),
        )
        .await;
    assert_eq!((r.status, r.body["code"].as_str()), (403, Some("banned")));
    assert_eq!(
        bob.post(
            &format!("/api/v1/channels/{channel}/messages"),
            json!({ "content": "hi", "nonce": "x" })
        )
        .await
        .status,
        403
    );
    ana.delete(&format!("/api/v1/guilds/{guild}/bans/{}", bob.id))
        .await
        .ok(204);
    bob.join(&code).await;

    // Nobody moderates the owner, and members cannot moderate.
    assert_eq!(
        carol
            .delete(&format!("/api/v1/guilds/{guild}/members/{}", bob.id))
            .await
            .status,
        403
    );
    // Leaving works for members, not for the owner.
    carol
        .delete(&format!("/api/v1/users/@me/guilds/{guild}"))
        .await
        .ok(204);
    assert_eq!(
        ana.delete(&format!("/api/v1/users/@me/guilds/{guild}"))
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn roles_grant_permissions_and_cannot_escalate() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let carol = relay.register("carol").await;
    let (guild, channel) = ana.create_guild("g").await;
    let code = ana.invite(guild).await;
    bob.join(&code).await;
    carol.join(&code).await;
    let msg = carol.say(channel, "carol's words").await;
    let msg_id = id(&msg["id"]);

    // bob cannot delete others' messages until he holds manage_messages.
    assert_eq!(
        bob.delete(&format!("/api/v1/channels/{channel}/messages/{msg_id}"))
            .await
            .status,
        403
    );
    let mods = Permissions::MANAGE_MESSAGES | Permissions::MANAGE_ROLES | Permissions::KICK_MEMBERS;
    let role = ana
        .post(
            &format!("/api/v1/guilds/{guild}/roles"),
            json!({ "name": "mods", "permissions": mods.0 }),
        )
        .await
        .ok(201);
    let role_id = id(&role["id"]);
    ana.put(
        &format!("/api/v1/guilds/{guild}/members/{}/roles/{role_id}", bob.id),
        None,
    )
    .await
    .ok(204);
    let member = bob
        .get(&format!("/api/v1/guilds/{guild}/members/{}", bob.id))
        .await
        .ok(200);
    assert_eq!(member["roles"], json!([role_id.to_string()]));
    bob.delete(&format!("/api/v1/channels/{channel}/messages/{msg_id}"))
        .await
        .ok(204);

    // bob may manage roles but cannot create or hand out anything stronger than his own.
    let admin = Permissions::ADMINISTRATOR.0;
    let r = bob
        .post(
            &format!("/api/v1/guilds/{guild}/roles"),
            json!({ "name": "boss", "permissions": admin }),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("permission_escalation"))
    );
    let boss = ana
        .post(
            &format!("/api/v1/guilds/{guild}/roles"),
            json!({ "name": "boss", "permissions": admin }),
        )
        .await
        .ok(201);
    let r = bob
        .put(
            &format!(
                "/api/v1/guilds/{guild}/members/{}/roles/{}",
                bob.id,
                boss["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    let r = bob
        .patch(
            &format!("/api/v1/guilds/{guild}/roles/{role_id}"),
            json!({ "permissions": admin }),
        )
        .await;
    assert_eq!(r.status, 403);
    // Unknown permission bits are a validation error; @everyone cannot be deleted.
    assert_eq!(
        ana.post(
            &format!("/api/v1/guilds/{guild}/roles"),
            json!({ "name": "x", "permissions": 1u64 << 40 })
        )
        .await
        .status,
        400
    );
    assert_eq!(
        ana.delete(&format!("/api/v1/guilds/{guild}/roles/{guild}"))
            .await
            .status,
        400
    );

    // Deleting the role takes its permissions away.
    ana.delete(&format!("/api/v1/guilds/{guild}/roles/{role_id}"))
        .await
        .ok(204);
    let again = carol.say(channel, "again").await;
    assert_eq!(
        bob.delete(&format!(
            "/api/v1/channels/{channel}/messages/{}",
            again["id"].as_str().unwrap()
        ))
        .await
        .status,
        403
    );

    // Guild settings: only with manage_guild; deletion only by the owner.
    assert_eq!(
        bob.patch(
            &format!("/api/v1/guilds/{guild}"),
            json!({ "name": "mine" })
        )
        .await
        .status,
        403
    );
    ana.patch(
        &format!("/api/v1/guilds/{guild}"),
        json!({ "name": "renamed" }),
    )
    .await
    .ok(200);
    ana.put(
        &format!(
            "/api/v1/guilds/{guild}/members/{}/roles/{}",
            bob.id,
            boss["id"].as_str().unwrap()
        ),
        None,
    )
    .await
    .ok(204);
    assert_eq!(
        bob.delete(&format!("/api/v1/guilds/{guild}")).await.status,
        403,
        "administrators are not owners"
    );
    ana.delete(&format!("/api/v1/guilds/{guild}")).await.ok(204);
    assert_eq!(
        bob.get(&format!("/api/v1/guilds/{guild}")).await.status,
        404
    );
}

/// Moderators act only below their own highest role and only on bits they hold.
#[tokio::test]
async fn moderators_cannot_climb_the_hierarchy() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let owner = relay.register("owner").await;
    let moderator = relay.register("moderator").await;
    let admin = relay.register("admin").await;
    let plain = relay.register("plain").await;
    let (guild, general) = owner.create_guild("g").await;
    let code = owner.invite(guild).await;
    for u in [&moderator, &admin, &plain] {
        u.join(&code).await;
    }
    let mods = Permissions::MANAGE_ROLES
        | Permissions::KICK_MEMBERS
        | Permissions::BAN_MEMBERS
        | Permissions::VIEW_CHANNEL;
    let mod_role = owner
        .post(
            &format!("/api/v1/guilds/{guild}/roles"),
            json!({ "name": "mods", "permissions": mods.0 }),
        )
        .await
        .ok(201);
    let admin_role = owner
        .post(
            &format!("/api/v1/guilds/{guild}/roles"),
            json!({ "name": "admins", "permissions": Permissions::ADMINISTRATOR.0 }),
        )
        .await
        .ok(201);
    assert!(admin_role["position"].as_i64() > mod_role["position"].as_i64());
    let (mod_role, admin_role) = (id(&mod_role["id"]), id(&admin_role["id"]));
    owner
        .put(
            &format!(
                "/api/v1/guilds/{guild}/members/{}/roles/{mod_role}",
                moderator.id
            ),
            None,
        )
        .await
        .ok(204);
    owner
        .put(
            &format!(
                "/api/v1/guilds/{guild}/members/{}/roles/{admin_role}",
                admin.id
            ),
            None,
        )
        .await
        .ok(204);

    // @everyone may not send in general; the moderator cannot lift that, by replacing or
    // deleting the overwrite, because he does not hold send_messages there himself.
    owner
        .put(
            &format!("/api/v1/channels/{general}/permissions/{guild}"),
            Some(json!({ "kind": "role", "deny": Permissions::SEND_MESSAGES.0 })),
        )
        .await
        .ok(204);
    assert_eq!(
        moderator
            .post(
                &format!("/api/v1/channels/{general}/messages"),
                json!({ "content": "x", "nonce": "a" })
            )
            .await
            .status,
        403
    );
    let r = moderator
        .put(
            &format!("/api/v1/channels/{general}/permissions/{guild}"),
            Some(json!({ "kind": "role" })),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("permission_escalation"))
    );
    let r = moderator
        .delete(&format!("/api/v1/channels/{general}/permissions/{guild}"))
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("permission_escalation"))
    );
    assert_eq!(
        moderator
            .post(
                &format!("/api/v1/channels/{general}/messages"),
                json!({ "content": "x", "nonce": "b" })
            )
            .await
            .status,
        403
    );

    // Roles above his own are out of reach: no weakening, no deleting, no assigning.
    let r = moderator
        .patch(
            &format!("/api/v1/guilds/{guild}/roles/{admin_role}"),
            json!({ "permissions": 0 }),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        moderator
            .delete(&format!("/api/v1/guilds/{guild}/roles/{admin_role}"))
            .await
            .status,
        403
    );
    assert_eq!(
        moderator
            .put(
                &format!(
                    "/api/v1/guilds/{guild}/members/{}/roles/{admin_role}",
                    plain.id
                ),
                None
            )
            .await
            .status,
        403
    );
    let r = moderator
        .patch(
            &format!("/api/v1/guilds/{guild}/roles/{mod_role}"),
            json!({ "position": 50 }),
        )
        .await;
    assert_eq!(r.status, 403, "no moving his own role up");

    // Members ranked at or above him cannot be kicked or banned; those below can.
    let r = moderator
        .delete(&format!("/api/v1/guilds/{guild}/members/{}", admin.id))
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("role_hierarchy"))
    );
    assert_eq!(
        moderator
            .put(
                &format!("/api/v1/guilds/{guild}/bans/{}", admin.id),
                Some(json!({}))
            )
            .await
            .status,
        403
    );
    moderator
        .delete(&format!("/api/v1/guilds/{guild}/members/{}", plain.id))
        .await
        .ok(204);

    // A role he creates lands below his own, so he can still manage it.
    let helper = moderator
        .post(
            &format!("/api/v1/guilds/{guild}/roles"),
            json!({ "name": "helpers", "permissions": Permissions::KICK_MEMBERS.0 }),
        )
        .await
        .ok(201);
    let helper_id = id(&helper["id"]);
    moderator
        .patch(
            &format!("/api/v1/guilds/{guild}/roles/{helper_id}"),
            json!({ "name": "helpers2" }),
        )
        .await
        .ok(200);
    // The admin outranks the moderator and may kick him.
    admin
        .delete(&format!("/api/v1/guilds/{guild}/members/{}", moderator.id))
        .await
        .ok(204);
}
