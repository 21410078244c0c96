//! The whole user story over real HTTP and WebSockets, on SQLite and on PostgreSQL: two
//! accounts register by device key, build a guild, talk in public and private channels, and
//! see everything arrive on the gateway.

mod common;

use std::time::Duration;

use common::client::{Backend, TestRelay};
use concord_proto::Id;
use serde_json::{Value, json};

fn id(v: &Value) -> Id {
    serde_json::from_value(v.clone()).unwrap()
}

async fn scenario(backend: Backend) {
    let relay = TestRelay::start(backend).await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    assert_eq!(
        ana.get("/api/v1/users/@me").await.ok(200)["username"],
        "ana"
    );

    let (guild, general) = ana.create_guild("Rustaceans").await;
    let code = ana.invite(guild).await;
    let mut bob_gw = bob.gateway().await;
    assert_eq!(bob_gw.ready["guilds"].as_array().unwrap().len(), 0);
    bob.join(&code).await;
    let created = bob_gw.event("guild_create").await;
    assert_eq!(id(&created["id"]), guild);
    let mut ana_gw = ana.gateway().await;
    assert_eq!(ana_gw.ready["guilds"][0]["name"], "Rustaceans");

    // A private channel only ana (the owner) sees.
    let secret = ana
        .post(
            &format!("/api/v1/guilds/{guild}/channels"),
            json!({ "name": "staff", "kind": "text", "private": true }),
        )
        .await
        .ok(201);
    let secret = id(&secret["id"]);
    let visible: Vec<Id> = bob
        .get(&format!("/api/v1/guilds/{guild}/channels"))
        .await
        .ok(200)
        .as_array()
        .unwrap()
        .iter()
        .map(|c| id(&c["id"]))
        .collect();
    assert!(visible.contains(&general) && !visible.contains(&secret));
    assert_eq!(
        bob.get(&format!("/api/v1/channels/{secret}/messages"))
            .await
            .status,
        403
    );

    // Public channel: send, edit, react, delete, each pushed to bob.
    let first = ana.say(general, "hello world from ana").await;
    let first_id = id(&first["id"]);
    assert_eq!(first["seq"], 1);
    let pushed = bob_gw.event("message_create").await;
    assert_eq!(pushed["content"], "hello world from ana");
    let edited = ana
        .patch(
            &format!("/api/v1/channels/{general}/messages/{first_id}"),
            json!({ "content": "hello brave world" }),
        )
        .await
        .ok(200);
    assert_eq!(edited["content"], "hello brave world");
    assert_eq!(bob_gw.event("message_update").await["seq"], 2);
    bob.put(
        &format!("/api/v1/channels/{general}/messages/{first_id}/reactions/%F0%9F%91%8D"),
        None,
    )
    .await
    .ok(204);
    let reaction = ana_gw.event("reaction_add").await;
    assert_eq!(reaction["emoji"], "👍");
    assert_eq!(reaction["seq"], 3);
    // bob may not edit ana's message, nor delete it
    assert_eq!(
        bob.patch(
            &format!("/api/v1/channels/{general}/messages/{first_id}"),
            json!({ "content": "x" })
        )
        .await
        .status,
        403
    );
    assert_eq!(
        bob.delete(&format!("/api/v1/channels/{general}/messages/{first_id}"))
            .await
            .status,
        403
    );

    // A message in the private channel never reaches bob.
    ana.say(secret, "secret plans").await;
    bob_gw
        .no_event("message_create", Duration::from_millis(300))
        .await;

    // The same nonce twice gives the first message, no new seq.
    let again = ana
        .post(
            &format!("/api/v1/channels/{general}/messages"),
            json!({ "content": "once", "nonce": "fixed-nonce" }),
        )
        .await
        .ok(201);
    let dup = ana
        .post(
            &format!("/api/v1/channels/{general}/messages"),
            json!({ "content": "twice", "nonce": "fixed-nonce" }),
        )
        .await
        .ok(200);
    assert_eq!(again["id"], dup["id"]);
    assert_eq!(dup["content"], "once");
    // The same nonce in another channel finds nothing of the first: a clear refusal.
    let r = ana
        .post(
            &format!("/api/v1/channels/{secret}/messages"),
            json!({ "content": "elsewhere", "nonce": "fixed-nonce" }),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (409, Some("nonce_reused")),
        "{}",
        r.body
    );
    assert!(r.body.get("content").is_none(), "{}", r.body);

    for i in 0..30 {
        bob.say(general, &format!("message number {i} about ferris"))
            .await;
    }
    ana.delete(&format!("/api/v1/channels/{general}/messages/{first_id}"))
        .await
        .ok(204);
    let deleted = bob_gw.event("message_delete").await;
    assert_eq!(id(&deleted["id"]), first_id);

    // History pages: 31 live messages (first was deleted), oldest first within a page.
    let page1 = bob
        .get(&format!("/api/v1/channels/{general}/messages?limit=20"))
        .await
        .ok(200);
    let page1 = page1.as_array().unwrap();
    assert_eq!(page1.len(), 20);
    let oldest = id(&page1[0]["id"]);
    let page2 = bob
        .get(&format!(
            "/api/v1/channels/{general}/messages?before={oldest}&limit=20"
        ))
        .await
        .ok(200);
    assert_eq!(page2.as_array().unwrap().len(), 11);
    assert_eq!(page2[0]["content"], "once");

    // Events: gapless seq from 1, the deleted message's content redacted.
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = bob
            .get(&format!(
                "/api/v1/channels/{general}/events?after_seq={after}&limit=7"
            ))
            .await
            .ok(200);
        let page = page.as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        for e in &page {
            seqs.push(e["seq"].as_i64().unwrap());
            if e["kind"] == "message_create" && id(&e["message_id"]) == first_id {
                assert_eq!(e["data"]["content"], "");
                assert_eq!(e["data"]["deleted"], true);
            }
        }
        after = *seqs.last().unwrap();
    }
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert_eq!(seqs.len(), 3 + 1 + 30 + 1);

    // Search finds only what bob may see, with highlights.
    let hits = bob
        .get(&format!("/api/v1/guilds/{guild}/search?q=ferris+number"))
        .await
        .ok(200);
    assert_eq!(hits["hits"].as_array().unwrap().len(), 25);
    assert!(
        hits["hits"][0]["highlight"]
            .as_str()
            .unwrap()
            .contains("<mark>ferris</mark>")
    );
    let secret_hits = bob
        .get(&format!("/api/v1/guilds/{guild}/search?q=secret"))
        .await
        .ok(200);
    assert!(secret_hits["hits"].as_array().unwrap().is_empty());
    let ana_hits = ana
        .get(&format!("/api/v1/guilds/{guild}/search?q=secret"))
        .await
        .ok(200);
    assert_eq!(ana_hits["hits"].as_array().unwrap().len(), 1);
    let brave = ana
        .get(&format!("/api/v1/guilds/{guild}/search?q=brave"))
        .await
        .ok(200);
    assert!(
        brave["hits"].as_array().unwrap().is_empty(),
        "deleted messages leave search"
    );

    // Unread counts and read state.
    let states = ana.get("/api/v1/users/@me/read-states").await.ok(200);
    let general_state = states
        .as_array()
        .unwrap()
        .iter()
        .find(|s| id(&s["channel_id"]) == general)
        .unwrap()
        .clone();
    assert_eq!(general_state["unread_count"], 30);
    let last = bob
        .get(&format!("/api/v1/channels/{general}/messages?limit=1"))
        .await
        .ok(200)[0]["id"]
        .clone();
    ana.post(
        &format!("/api/v1/channels/{general}/ack"),
        json!({ "message_id": last }),
    )
    .await
    .ok(204);
    let states = ana.get("/api/v1/users/@me/read-states").await.ok(200);
    let general_state = states
        .as_array()
        .unwrap()
        .iter()
        .find(|s| id(&s["channel_id"]) == general)
        .unwrap()
        .clone();
    assert_eq!(general_state["unread_count"], 0);

    // DMs: same message API, only the two participants see them.
    let dm = bob
        .post("/api/v1/users/@me/dms", json!({ "recipient": ana.id }))
        .await
        .ok(200);
    let dm_id = id(&dm["id"]);
    bob.say(dm_id, "psst ana").await;
    let psst = ana_gw
        .event_where("message_create", |d| d["channel_id"] == dm["id"])
        .await;
    assert_eq!(psst["content"], "psst ana");
    let carol = relay.register("carol").await;
    assert_eq!(
        carol
            .get(&format!("/api/v1/channels/{dm_id}/messages"))
            .await
            .status,
        403
    );

    // Typing reaches the other member, not the typist.
    ana_gw
        .send_json(json!({ "op": "typing", "d": { "channel_id": general } }))
        .await;
    assert_eq!(id(&bob_gw.event("typing_start").await["user_id"]), ana.id);

    relay.shutdown().await;
}

#[tokio::test]
async fn whole_story_on_sqlite() {
    scenario(Backend::Sqlite).await;
}

#[tokio::test]
async fn whole_story_on_postgres() {
    scenario(Backend::Postgres).await;
}
