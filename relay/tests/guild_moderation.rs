//! Guild moderation through the API, on both backends: timeouts take sending away until they
//! end, slow mode spaces a member's messages, a moderator bulk-deletes a member's recent
//! messages, members report messages and moderators close the reports, and every one of these
//! actions (plus role, channel, kick, ban and invite changes) lands in the guild audit log,
//! which only view_audit_log may read and which retention purges.

mod common;

use std::time::Duration;

use common::client::{Backend, TestRelay, TestUser};
use concord_proto::{Id, Permissions};
use serde_json::{Value, json};

fn id(v: &Value) -> Id {
    serde_json::from_value(v.clone()).unwrap()
}

fn send_body(content: &str, nonce: &str) -> Value {
    json!({ "content": content, "nonce": nonce })
}

/// The guild's audit log, newest first, as (action, actor, target) triples.
async fn audit(owner: &TestUser, guild: Id) -> Vec<(String, Id, Option<Id>)> {
    owner
        .get(&format!("/api/v1/guilds/{guild}/audit-log?limit=100"))
        .await
        .ok(200)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                id(&e["actor_id"]),
                e["target_id"]
                    .as_i64()
                    .map(|_| id(&e["target_id"]))
                    .or_else(|| e["target_id"].as_str().map(|s| Id(s.parse().unwrap()))),
            )
        })
        .collect()
}

fn has(log: &[(String, Id, Option<Id>)], action: &str, actor: Id, target: Option<Id>) -> bool {
    log.iter()
        .any(|(a, who, t)| a == action && *who == actor && (target.is_none() || *t == target))
}

async fn moderation_flow(backend: Backend) {
    let relay = TestRelay::start(backend).await;
    let owner = relay.register("owner").await;
    let modr = relay.register("modr").await;
    let troll = relay.register("troll").await;
    let bystander = relay.register("bystander").await;
    let (guild, general) = owner.create_guild("moderated").await;
    let code = owner.invite(guild).await;
    for u in [&modr, &troll, &bystander] {
        u.join(&code).await;
    }
    let base = format!("/api/v1/guilds/{guild}");

    // A moderator role: timeouts, reports, messages, audit log; not an administrator.
    let mods = owner
        .post(
            &format!("{base}/roles"),
            json!({ "name": "mods", "permissions":
                Permissions::MODERATE_MEMBERS | Permissions::MANAGE_MESSAGES
                | Permissions::VIEW_AUDIT_LOG | Permissions::MANAGE_CHANNELS }),
        )
        .await
        .ok(201);
    let mods = id(&mods["id"]);
    owner
        .put(&format!("{base}/members/{}/roles/{mods}", modr.id), None)
        .await
        .ok(204);

    // Only view_audit_log reads the audit log.
    assert_eq!(
        bystander.get(&format!("{base}/audit-log")).await.status,
        403
    );
    assert_eq!(
        modr.get(&format!("{base}/audit-log?action=NOPE"))
            .await
            .status,
        400
    );

    // --- Timeouts: the troll cannot send, react or type; reading still works. ---
    let msg_path = format!("/api/v1/channels/{general}/messages");
    let before = bystander.say(general, "before the timeout").await;
    modr.put(
        &format!("{base}/members/{}/timeout", troll.id),
        Some(json!({ "duration_secs": 600, "reason": "spam" })),
    )
    .await
    .ok(204);
    let member = troll
        .get(&format!("{base}/members/{}", troll.id))
        .await
        .ok(200);
    assert!(member["timeout_until"].as_i64().unwrap() > 0, "{member}");
    let r = troll.post(&msg_path, send_body("let me speak", "t1")).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("missing_permissions"))
    );
    let r = troll
        .put(
            &format!("{msg_path}/{}/reactions/%F0%9F%91%8D", id(&before["id"])),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    troll.get(&msg_path).await.ok(200);
    // Not on the owner, not on yourself, not on someone of equal rank, and in range.
    assert_eq!(
        modr.put(
            &format!("{base}/members/{}/timeout", owner.id),
            Some(json!({ "duration_secs": 60 }))
        )
        .await
        .status,
        403
    );
    assert_eq!(
        modr.put(
            &format!("{base}/members/{}/timeout", bystander.id),
            Some(json!({ "duration_secs": 0 }))
        )
        .await
        .status,
        400
    );
    assert_eq!(
        bystander
            .put(
                &format!("{base}/members/{}/timeout", modr.id),
                Some(json!({ "duration_secs": 60 }))
            )
            .await
            .status,
        403
    );
    // Ended early: sending works again.
    modr.delete(&format!("{base}/members/{}/timeout", troll.id))
        .await
        .ok(204);
    troll
        .post(&msg_path, send_body("thanks", "t2"))
        .await
        .ok(201);
    // A short timeout ends by itself.
    modr.put(
        &format!("{base}/members/{}/timeout", troll.id),
        Some(json!({ "duration_secs": 1 })),
    )
    .await
    .ok(204);
    assert_eq!(
        troll.post(&msg_path, send_body("x", "t3")).await.status,
        403
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    troll.post(&msg_path, send_body("back", "t3")).await.ok(201);

    // --- Slow mode: one message per 2 s for members; moderators are not limited. ---
    let channel = modr
        .patch(
            &format!("/api/v1/channels/{general}"),
            json!({ "slowmode_secs": 2 }),
        )
        .await
        .ok(200);
    assert_eq!(channel["slowmode_secs"], 2);
    assert_eq!(
        modr.patch(
            &format!("/api/v1/channels/{general}"),
            json!({ "slowmode_secs": 100_000 })
        )
        .await
        .status,
        400
    );
    // (The cooldown counts from a member's last message, even one from before slow mode.)
    let quiet = relay.register("quiet").await;
    quiet.join(&code).await;
    let first = quiet.post(&msg_path, send_body("one", "s1")).await.ok(201);
    let r = quiet.post(&msg_path, send_body("two", "s2")).await;
    assert_eq!((r.status, r.body["code"].as_str()), (429, Some("slowmode")));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    // The same nonce again is a retry, not a second message.
    let again = quiet.post(&msg_path, send_body("one", "s1")).await;
    assert!(again.status < 300, "{}", again.body);
    assert_eq!(again.body["id"], first["id"]);
    modr.say(general, "mods are not slowed").await;
    modr.say(general, "at all").await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    quiet.post(&msg_path, send_body("two", "s2")).await.ok(201);
    modr.patch(
        &format!("/api/v1/channels/{general}"),
        json!({ "slowmode_secs": 0 }),
    )
    .await
    .ok(200);

    // --- Bulk delete: the troll's recent messages in every channel, nobody else's. ---
    let other = owner
        .post(
            &format!("{base}/channels"),
            json!({ "name": "other", "kind": "text" }),
        )
        .await
        .ok(201);
    let other = id(&other["id"]);
    for (i, ch) in [general, general, other].into_iter().enumerate() {
        troll
            .post(
                &format!("/api/v1/channels/{ch}/messages"),
                send_body(&format!("spam {i}"), &format!("b{i}")),
            )
            .await
            .ok(201);
    }
    let kept = bystander.say(other, "innocent").await;
    assert_eq!(
        bystander
            .post(
                &format!("{base}/members/{}/messages/bulk-delete", troll.id),
                json!({ "within_secs": 3600 })
            )
            .await
            .status,
        403
    );
    let done = modr
        .post(
            &format!("{base}/members/{}/messages/bulk-delete", troll.id),
            json!({ "within_secs": 3600, "reason": "spam wave" }),
        )
        .await
        .ok(200);
    // spam 0..2, "thanks" and "back" from the timeout part.
    assert_eq!(done["deleted"], 5);
    for ch in [general, other] {
        let history = bystander
            .get(&format!("/api/v1/channels/{ch}/messages?limit=100"))
            .await
            .ok(200);
        let authors: Vec<Id> = history
            .as_array()
            .unwrap()
            .iter()
            .map(|m| id(&m["author"]))
            .collect();
        assert!(!authors.contains(&troll.id), "{history}");
    }
    bystander
        .get(&format!(
            "/api/v1/channels/{other}/messages/{}",
            id(&kept["id"])
        ))
        .await
        .ok(200);

    // --- Reports: a member reports a message; the evidence outlives the message. ---
    let bad = bystander.say(general, "a message someone dislikes").await;
    let bad_id = id(&bad["id"]);
    let report = troll
        .post(
            &format!("{base}/reports"),
            json!({ "channel_id": general, "message_id": bad_id, "reason": "rude" }),
        )
        .await
        .ok(201);
    assert_eq!(id(&report["user_id"]), bystander.id);
    let report_id = id(&report["id"]);
    assert_eq!(
        troll
            .post(
                &format!("{base}/reports"),
                json!({ "user_id": troll.id, "reason": "me" })
            )
            .await
            .status,
        400
    );
    assert_eq!(
        troll
            .post(&format!("{base}/reports"), json!({ "reason": "nothing" }))
            .await
            .status,
        400
    );
    assert_eq!(troll.get(&format!("{base}/reports")).await.status, 403);
    modr.delete(&format!("{msg_path}/{bad_id}")).await.ok(204);
    let queue = modr.get(&format!("{base}/reports")).await.ok(200);
    let queued = &queue.as_array().unwrap()[0];
    assert_eq!(id(&queued["id"]), report_id);
    assert_eq!(queued["status"], "open");
    assert_eq!(queued["message_content"], "a message someone dislikes");
    let closed = modr
        .patch(
            &format!("{base}/reports/{report_id}"),
            json!({ "status": "resolved", "action": "message deleted" }),
        )
        .await
        .ok(200);
    assert_eq!(closed["status"], "resolved");
    assert_eq!(closed["action"], "message deleted");
    assert_eq!(id(&closed["handled_by"]), modr.id);
    let r = modr
        .patch(
            &format!("{base}/reports/{report_id}"),
            json!({ "status": "dismissed" }),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(
        modr.patch(
            &format!("{base}/reports/{report_id}"),
            json!({ "status": "maybe" })
        )
        .await
        .status,
        400
    );
    assert!(
        modr.get(&format!("{base}/reports"))
            .await
            .ok(200)
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        modr.get(&format!("{base}/reports?status=resolved"))
            .await
            .ok(200)
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A report cannot be closed through another guild.
    let (elsewhere, _) = modr.create_guild("elsewhere").await;
    assert_eq!(
        modr.patch(
            &format!("/api/v1/guilds/{elsewhere}/reports/{report_id}"),
            json!({ "status": "dismissed" })
        )
        .await
        .status,
        404
    );

    // --- Kick, ban, unban, roles, channels, overwrites, invites. ---
    let role = owner
        .post(
            &format!("{base}/roles"),
            json!({ "name": "temp", "permissions": 0 }),
        )
        .await
        .ok(201);
    let role = id(&role["id"]);
    owner
        .patch(&format!("{base}/roles/{role}"), json!({ "name": "temp2" }))
        .await
        .ok(200);
    owner.delete(&format!("{base}/roles/{role}")).await.ok(204);
    owner
        .put(
            &format!("/api/v1/channels/{other}/permissions/{mods}"),
            Some(json!({ "kind": "role", "allow": Permissions::VIEW_CHANNEL, "deny": 0 })),
        )
        .await
        .ok(204);
    owner
        .delete(&format!("/api/v1/channels/{other}/permissions/{mods}"))
        .await
        .ok(204);
    owner
        .delete(&format!("/api/v1/channels/{other}"))
        .await
        .ok(204);
    owner
        .delete(&format!("{base}/members/{}", troll.id))
        .await
        .ok(204);
    owner
        .put(
            &format!("{base}/bans/{}", troll.id),
            Some(json!({ "reason": "again" })),
        )
        .await
        .ok(204);
    owner
        .delete(&format!("{base}/bans/{}", troll.id))
        .await
        .ok(204);
    owner
        .delete(&format!("{base}/invites/{code}"))
        .await
        .ok(204);

    let log = audit(&owner, guild).await;
    let t = Some(troll.id);
    for (action, actor, target) in [
        ("role_create", owner.id, Some(mods)),
        ("member_role_add", owner.id, Some(modr.id)),
        ("invite_create", owner.id, None),
        ("member_timeout", modr.id, t),
        ("member_timeout_end", modr.id, t),
        ("channel_update", modr.id, Some(general)),
        ("channel_create", owner.id, Some(other)),
        ("message_bulk_delete", modr.id, t),
        ("message_delete", modr.id, Some(bystander.id)),
        ("report_resolved", modr.id, Some(bystander.id)),
        ("role_update", owner.id, Some(role)),
        ("role_delete", owner.id, Some(role)),
        ("overwrite_update", owner.id, Some(mods)),
        ("overwrite_delete", owner.id, Some(mods)),
        ("channel_delete", owner.id, Some(other)),
        ("member_kick", owner.id, t),
        ("member_ban", owner.id, t),
        ("member_unban", owner.id, t),
        ("invite_revoke", owner.id, Some(owner.id)),
    ] {
        assert!(
            has(&log, action, actor, target),
            "no {action} by {actor} on {target:?} in {log:?}"
        );
    }
    // Newest first, and filtered by action.
    assert_eq!(log[0].0, "invite_revoke");
    let bans = owner
        .get(&format!("{base}/audit-log?action=member_ban"))
        .await
        .ok(200);
    assert_eq!(bans.as_array().unwrap().len(), 1);
    assert_eq!(bans[0]["detail"], "again");
    // The moderator can read it too (view_audit_log), page by page.
    let page = modr.get(&format!("{base}/audit-log?limit=2")).await.ok(200);
    assert_eq!(page.as_array().unwrap().len(), 2);
    let older = modr
        .get(&format!(
            "{base}/audit-log?limit=2&before={}",
            page[1]["id"].as_str().unwrap()
        ))
        .await
        .ok(200);
    assert_ne!(older[0]["id"], page[0]["id"]);

    // Retention: entries older than the cut are deleted (guild and instance logs alike).
    let store = relay.server().app().store.clone();
    let purged = store
        .purge_audit(concord_relay::app::now_ms() + 1)
        .await
        .unwrap();
    assert!(purged as usize >= log.len());
    assert!(audit(&owner, guild).await.is_empty());
    relay.shutdown().await;
}

#[tokio::test]
async fn moderation_on_sqlite() {
    moderation_flow(Backend::Sqlite).await;
}

#[tokio::test]
async fn moderation_on_postgres() {
    moderation_flow(Backend::Postgres).await;
}

#[tokio::test]
async fn reports_to_the_instance_admins() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let admin = relay.register("admin").await;
    let ana = relay.register("ana").await;
    let eve = relay.register("eve").await;
    let store = relay.server().app().store.clone();
    assert!(store.set_instance_admin(admin.id, true).await.unwrap());

    let report = ana
        .post(
            "/api/v1/reports",
            json!({ "user_id": eve.id, "reason": "spam account" }),
        )
        .await
        .ok(201);
    assert!(report["guild_id"].is_null());
    // A message the reporter cannot read cannot be reported.
    let (guild, channel) = eve.create_guild("eve's").await;
    let secret = eve.say(channel, "hidden").await;
    let r = ana
        .post(
            "/api/v1/reports",
            json!({ "channel_id": channel, "message_id": secret["id"], "reason": "?" }),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        ana.post(
            "/api/v1/reports",
            json!({ "user_id": Id(12345), "reason": "ghost" })
        )
        .await
        .status,
        404
    );
    // Guild reports stay with the guild; the admins' queue has only theirs.
    let queue = admin.get("/api/v1/admin/reports").await.ok(200);
    assert_eq!(queue.as_array().unwrap().len(), 1);
    assert_eq!(ana.get("/api/v1/admin/reports").await.status, 403);
    let rid = report["id"].as_str().unwrap();
    admin
        .patch(
            &format!("/api/v1/admin/reports/{rid}"),
            json!({ "status": "resolved", "action": "account suspended" }),
        )
        .await
        .ok(200);
    let log = admin.get("/api/v1/admin/audit").await.ok(200);
    assert_eq!(log[0]["action"], "report_resolved");
    assert_eq!(log[0]["target_id"], json!(eve.id));

    // Admins remove a guild: its members are told, the guild is gone, the action audited.
    let mut eve_gw = eve.gateway().await;
    admin
        .delete(&format!("/api/v1/admin/guilds/{guild}"))
        .await
        .ok(204);
    let gone = eve_gw.event("guild_delete").await;
    assert_eq!(id(&gone["id"]), guild);
    assert_eq!(
        eve.get(&format!("/api/v1/guilds/{guild}")).await.status,
        404
    );
    assert_eq!(
        admin
            .delete(&format!("/api/v1/admin/guilds/{guild}"))
            .await
            .status,
        404
    );
    let log = admin.get("/api/v1/admin/audit").await.ok(200);
    assert_eq!(log[0]["action"], "guild_delete");
    relay.shutdown().await;
}
