//! Voice channels through the API: a relay-signed grant (verified with the relay key from
//! /.well-known/concord) only with connect, speaking only with speak; state changes reach
//! everyone who can see the channel; a moderator server-mutes; leaving, moving and a grant
//! that is not renewed all end the participant's place.

mod common;

use std::time::Duration;

use common::client::{Backend, TestRelay, relaxed};
use concord_proto::permissions::OverwriteKind;
use concord_proto::signed::{VoiceGrant, parse_public_key};
use concord_proto::{Id, Permissions};
use serde_json::{Value, json};

fn id(v: &Value) -> Id {
    serde_json::from_value(v.clone()).unwrap()
}

#[tokio::test]
async fn joining_speaking_muting_and_leaving_a_voice_channel() {
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.voice.mesh_size = 2;
        c.voice.grant_ttl_secs = 5;
    })
    .await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let cat = relay.register("cat").await;
    let (guild, text) = ana.create_guild("talkers").await;
    let code = ana.invite(guild).await;
    bob.join(&code).await;
    cat.join(&code).await;
    let voice = ana.voice_channel(guild, "lounge").await;
    let path = |what: &str| format!("/api/v1/voice/channels/{voice}/{what}");
    let well_known: Value = relay
        .http
        .get(format!("{}/.well-known/concord", relay.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let relay_key = parse_public_key(well_known["relay_key"].as_str().unwrap(), "relay").unwrap();

    // Not a voice channel; unknown input.
    let r = ana
        .post(&format!("/api/v1/voice/channels/{text}/join"), json!({}))
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("not_a_voice_channel"))
    );
    assert_eq!(
        ana.post(&path("join"), json!({ "client": "fridge" }))
            .await
            .status,
        400
    );

    // Bob may not speak here; cat may not connect.
    for (user, deny) in [(&bob, Permissions::SPEAK), (&cat, Permissions::CONNECT)] {
        ana.put(
            &format!("/api/v1/channels/{voice}/permissions/{}", user.id),
            Some(json!({ "kind": OverwriteKind::Member, "allow": 0, "deny": deny })),
        )
        .await
        .ok(204);
    }
    assert_eq!(cat.post(&path("join"), json!({})).await.status, 403);

    let mut cat_gw = cat.gateway().await;
    let joined = ana.post(&path("join"), json!({})).await.ok(200);
    let grant: VoiceGrant = serde_json::from_value(joined["grant"].clone()).unwrap();
    let now = concord_relay::app::now_ms();
    grant.verify(&relay_key, now).unwrap();
    assert!(grant.speak);
    assert_eq!((grant.channel_id, grant.user_id), (voice, ana.id));
    assert!(grant.expires_at > now + 4_000 && grant.expires_at <= now + 6_000);
    assert_eq!(joined["mode"], "mesh");
    // Those who can see the channel hear about it (cat sees it, only cannot connect).
    let seen = cat_gw.event("voice_state_update").await;
    assert_eq!(id(&seen["user_id"]), ana.id);
    assert_eq!(id(&seen["channel_id"]), voice);

    let joined = bob
        .post(&path("join"), json!({ "self_mute": true }))
        .await
        .ok(200);
    let grant: VoiceGrant = serde_json::from_value(joined["grant"].clone()).unwrap();
    assert!(
        !grant.speak,
        "no speak permission: a grant that does not allow speaking"
    );
    assert_eq!(joined["participants"].as_array().unwrap().len(), 2);
    assert_eq!(joined["state"]["self_mute"], true);
    cat_gw
        .event_where("voice_state_update", |d| d["user_id"] == json!(bob.id))
        .await;

    // Self deafen; a moderator's server mute (bob cannot mute ana).
    let state = ana
        .patch(&path("state"), json!({ "self_deaf": true }))
        .await
        .ok(200);
    assert_eq!(state["self_deaf"], true);
    cat_gw
        .event_where("voice_state_update", |d| d["self_deaf"] == true)
        .await;
    let mute_path = |u: Id| format!("/api/v1/guilds/{guild}/voice-states/{u}");
    assert_eq!(
        bob.patch(&mute_path(ana.id), json!({ "server_mute": true }))
            .await
            .status,
        403
    );
    let muted = ana
        .patch(&mute_path(bob.id), json!({ "server_mute": true }))
        .await
        .ok(200);
    assert_eq!(
        (muted["server_mute"].clone(), muted["speak"].clone()),
        (json!(true), json!(false))
    );
    cat_gw
        .event_where("voice_state_update", |d| d["server_mute"] == true)
        .await;
    // A renewal keeps the server mute.
    let renewed = bob.post(&path("join"), json!({})).await.ok(200);
    assert_eq!(renewed["state"]["server_mute"], true);
    let log = ana
        .get(&format!("/api/v1/guilds/{guild}/audit-log"))
        .await
        .ok(200);
    assert_eq!(log[0]["action"], "voice_server_mute");

    // A browser moves the channel to the SFU; so does a channel past the mesh size.
    let list = cat
        .get(&format!("/api/v1/voice/channels/{voice}"))
        .await
        .ok(200);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let again = ana
        .post(&path("join"), json!({ "client": "browser" }))
        .await
        .ok(200);
    assert_eq!(again["mode"], "sfu");

    // Leaving tells the others (channel_id absent); leaving twice is 404.
    ana.post(&path("leave"), json!({})).await;
    let left = cat_gw
        .event_where("voice_state_update", |d| {
            d["user_id"] == json!(ana.id) && d["channel_id"].is_null()
        })
        .await;
    assert!(left["channel_id"].is_null());
    assert_eq!(ana.post(&path("leave"), json!({})).await.status, 404);
    assert_eq!(
        ana.patch(&path("state"), json!({ "self_mute": true }))
            .await
            .status,
        404
    );

    // Moving to another voice channel leaves the first.
    let other = ana.voice_channel(guild, "other").await;
    bob.post(&format!("/api/v1/voice/channels/{other}/join"), json!({}))
        .await
        .ok(200);
    assert!(
        ana.get(&format!("/api/v1/voice/channels/{voice}"))
            .await
            .ok(200)
            .as_array()
            .unwrap()
            .is_empty()
    );

    let moved = cat_gw
        .event_where("voice_state_update", |d| {
            d["user_id"] == json!(bob.id) && d["channel_id"].is_null()
        })
        .await;
    assert!(moved["channel_id"].is_null());
    cat_gw
        .event_where("voice_state_update", |d| {
            d["user_id"] == json!(bob.id) && d["channel_id"] == json!(other)
        })
        .await;

    // A grant that is not renewed runs out: the participant leaves by itself.
    let started = std::time::Instant::now();
    cat_gw
        .event_where("voice_state_update", |d| {
            d["user_id"] == json!(bob.id) && d["channel_id"].is_null()
        })
        .await;
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(
        ana.get(&format!("/api/v1/voice/channels/{other}"))
            .await
            .ok(200)
            .as_array()
            .unwrap()
            .is_empty()
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn a_full_voice_channel_refuses_newcomers() {
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.voice.max_participants = 1;
    })
    .await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let (guild, _) = ana.create_guild("tiny").await;
    bob.join(&ana.invite(guild).await).await;
    let voice = ana.voice_channel(guild, "booth").await;
    let join = format!("/api/v1/voice/channels/{voice}/join");
    ana.post(&join, json!({})).await.ok(200);
    let r = bob.post(&join, json!({})).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (409, Some("voice_channel_full"))
    );
    // The one inside still renews.
    ana.post(&join, json!({})).await.ok(200);
    relay.shutdown().await;
}

/// A seat lasts only while its holder may be in the channel: a kicked member, and one whose
/// view of the channel an overwrite removed, lose it within about a second, everyone who can
/// see the channel gets the `voice_state_update`, and the seat's calls answer 404 after.
#[tokio::test]
async fn kicked_or_view_less_members_lose_their_voice_seat() {
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.voice.grant_ttl_secs = 600;
    })
    .await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let cat = relay.register("cat").await;
    let (guild, _text) = ana.create_guild("seats").await;
    let code = ana.invite(guild).await;
    bob.join(&code).await;
    cat.join(&code).await;
    let voice = ana.voice_channel(guild, "lounge").await;
    let path = |what: &str| format!("/api/v1/voice/channels/{voice}/{what}");
    bob.post(&path("join"), json!({})).await.ok(200);
    cat.post(&path("join"), json!({})).await.ok(200);
    let mut ana_gw = ana.gateway().await;
    let left = |gw_event: Value, who: Id| {
        gw_event["user_id"] == json!(who) && gw_event["channel_id"].is_null()
    };

    // Bob is kicked.
    let started = std::time::Instant::now();
    ana.delete(&format!("/api/v1/guilds/{guild}/members/{}", bob.id))
        .await
        .ok(204);
    let e = ana_gw
        .event_where("voice_state_update", |d| d["user_id"] == json!(bob.id))
        .await;
    assert!(left(e, bob.id));
    let kicked_ms = started.elapsed().as_millis();
    assert_eq!(
        bob.patch(&path("state"), json!({ "self_mute": true }))
            .await
            .status,
        404
    );

    // Cat loses view of the channel through a member overwrite.
    let started = std::time::Instant::now();
    ana.put(
        &format!("/api/v1/channels/{voice}/permissions/{}", cat.id),
        Some(
            json!({ "kind": OverwriteKind::Member, "allow": 0, "deny": Permissions::VIEW_CHANNEL }),
        ),
    )
    .await
    .ok(204);
    let e = ana_gw
        .event_where("voice_state_update", |d| d["user_id"] == json!(cat.id))
        .await;
    assert!(left(e, cat.id));
    let hidden_ms = started.elapsed().as_millis();
    assert_eq!(
        cat.patch(&path("state"), json!({ "self_mute": true }))
            .await
            .status,
        404
    );
    let participants = ana
        .get(&format!("/api/v1/voice/channels/{voice}"))
        .await
        .ok(200);
    assert_eq!(
        participants.as_array().map(Vec::len),
        Some(0),
        "{participants}"
    );
    eprintln!("voice seat dropped {kicked_ms} ms after a kick, {hidden_ms} ms after losing view");
}
