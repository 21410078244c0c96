//! Voice rooms across two relay instances on one PostgreSQL and one Redis. A room belongs to
//! the instance it was placed on when its first participant joined; an instance that starts
//! later does not take it, and participants who talk to the other instance land on the
//! owner's SFU anyway (their requests are forwarded). When the owner is SIGKILLed, the
//! participants' SFU links go quiet, they ask their instance again, the room is placed on
//! a live instance and the audio comes back. Nodes that talk to different instances meet on
//! the room owner's SFU even in a channel small enough for a mesh.

use std::time::{Duration, Instant};

use concord_node::identity;
use concord_node::relay_http::RelayHttp;
use concord_proto::Id;
use concord_testkit::procs;
use concord_testkit::{TestRelay, fresh_postgres_url, redis_url, wait_for};
use serde_json::{Value, json};

mod common;
use common::{Speaker, frames_played, hears_all_others, speaker, wait_on_sfu};

fn user_id(s: &Speaker) -> Id {
    s.node
        .node
        .with_cache(|c| c.me().ok().flatten().map(|u| u.id))
        .expect("own user")
}

/// Whether `s` hears `other` now: a slot of its SFU link carries `other`'s voice.
fn hears(s: &Speaker, other: Id) -> bool {
    s.node.node.voice_status().is_some_and(|v| {
        v.peers.iter().all(|p| p.link.state == "connected")
            && v.slots.iter().any(|slot| {
                slot.user_id == Some(other) && slot.audio.as_ref().is_some_and(|a| a.speaking)
            })
    })
}

/// The SFU rooms an instance reports in its metrics.
async fn sfu_rooms(url: &str) -> f64 {
    concord_testkit::metric(url, "concord_sfu_rooms").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_stays_on_its_owner_and_moves_when_the_owner_is_killed() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("relay.toml");
    std::fs::write(
        &config,
        "[voice]\nmesh_size = 1\n[rate_limits.general]\nrequests = 100000\nwindow_secs = 10\n",
    )
    .unwrap();
    let db = fresh_postgres_url();
    let prefix = format!("placement{}", std::process::id());
    let (proc_a, url_a) = procs::cluster_relay(&root.path().join("a"), &config, &db, &prefix);

    // The room's first participant joins through A while A is the only instance.
    let host = identity::init(&root.path().join("host"), "host").unwrap();
    let http_a = RelayHttp::new(&url_a);
    http_a.login(&host, Some("host")).await.unwrap();
    let post = |path: String, body: Value| {
        let (http, host) = (&http_a, &host);
        async move {
            http.authed::<Value>(host, reqwest::Method::POST, &path, Some(body))
                .await
                .unwrap()
        }
    };
    let guild = post("/api/v1/guilds".into(), json!({ "name": "placement" })).await;
    let guild: Id = serde_json::from_value(guild["id"].clone()).unwrap();
    let channel = post(
        format!("/api/v1/guilds/{guild}/channels"),
        json!({ "name": "stage", "kind": "voice" }),
    )
    .await;
    let channel: Id = serde_json::from_value(channel["id"].clone()).unwrap();
    let invite = post(format!("/api/v1/guilds/{guild}/invites"), json!({})).await;
    let code = invite["code"].as_str().unwrap().to_owned();
    post(
        format!("/api/v1/voice/channels/{channel}/join"),
        json!({ "client": "node" }),
    )
    .await;

    // B starts later; bob and cat only ever talk to B.
    let b = TestRelay::start_with(tempfile::tempdir().unwrap(), |c| {
        c.database_url = Some(db.clone());
        c.redis.url = Some(redis_url());
        c.redis.prefix = prefix.clone();
        c.voice.mesh_size = 1;
    })
    .await;
    let b_app = b.server().app().clone();
    wait_for(Duration::from_secs(10), || b_app.redis_ok()).await;
    let bob = speaker("bob", 500.0, false).await;
    let cat = speaker("cat", 900.0, false).await;
    for s in [&bob, &cat] {
        s.node.join(&b, &code).await;
        s.node.wait_connected().await;
    }
    let (bob_id, cat_id) = (user_id(&bob), user_id(&cat));
    for s in [&bob, &cat] {
        let joined = s.node.node.voice_join(channel, false).await.expect("joins");
        assert_eq!(joined.mode, "sfu");
        // Everyone in the room, whichever instance they came through.
        assert!(joined.participants.iter().any(|p| p.user_id == bob_id));
    }
    wait_on_sfu(&bob).await;
    wait_on_sfu(&cat).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(hears(&bob, cat_id) && hears(&cat, bob_id)) {
        assert!(
            Instant::now() < deadline,
            "bob and cat never heard each other"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every participant landed on the owner, A: B holds no room of its own.
    assert_eq!(sfu_rooms(&url_a).await, 1.0);
    assert_eq!(b_app.voice.sfu.room_count(), 0);
    assert_eq!(b_app.voice.with(|r| r.room_count()), 0);
    let before = (frames_played(&bob), frames_played(&cat));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = (before, (frames_played(&bob), frames_played(&cat)));

    // Kill the owner.
    drop(proc_a);
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(20);
    while hears(&bob, cat_id) || hears(&cat, bob_id) {
        assert!(Instant::now() < deadline, "audio went on after the kill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let silent_after = killed.elapsed();
    while !(hears(&bob, cat_id) && hears(&cat, bob_id)) {
        assert!(
            Instant::now() < deadline,
            "audio did not come back after the owner was killed: bob's links {}, cat's links {}, \
             B's SFU rooms {}, its members {}",
            serde_json::to_string_pretty(&bob.node.node.voice_status().map(|v| v.peers)).unwrap(),
            serde_json::to_string_pretty(&cat.node.node.voice_status().map(|v| v.peers)).unwrap(),
            b_app.voice.sfu.room_count(),
            serde_json::to_string(&b_app.voice.sfu.room_stats(channel)).unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resumed = killed.elapsed();
    eprintln!("owner killed: audio stopped after {silent_after:?}, came back after {resumed:?}");
    // The target is 5 s; the bound here leaves room for a loaded test machine.
    assert!(
        resumed < Duration::from_secs(10),
        "audio back after {resumed:?}"
    );
    assert_eq!(b_app.voice.sfu.room_count(), 1, "B holds the room now");
    assert_eq!(b_app.voice.with(|r| r.participants(channel).len()), 2);

    let from = (frames_played(&bob), frames_played(&cat));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let to = (frames_played(&bob), frames_played(&cat));
    for s in [&bob, &cat] {
        s.node.node.voice_leave().await.expect("leaves");
    }
    let both = [&bob, &cat];
    // On A before the kill, and on B after it.
    hears_all_others(&bob, &both, before.0.0, before.1.0, 0.05);
    hears_all_others(&cat, &both, before.0.1, before.1.1, 0.05);
    hears_all_others(&bob, &both, from.0, to.0, 0.05);
    hears_all_others(&cat, &both, from.1, to.1, 0.05);
    b.stop().await;
}

/// Two nodes that talk to different instances share a small channel. Nodes of different
/// instances cannot count on reaching each other (each instance knows the addresses of its
/// own nodes only), so the channel runs on its owner's SFU, which both reach: whichever of
/// them came through the instance that does not hold the room moves it there, and the other
/// follows on that participant's `voice_state_update`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_on_different_instances_meet_on_the_owners_sfu() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (a, b) = TestRelay::cluster_pair("crossmesh").await;
    for relay in [&a, &b] {
        let app = relay.server().app().clone();
        wait_for(Duration::from_secs(10), || {
            app.voice.placement.get().and_then(|p| p.secret()).is_some()
        })
        .await;
    }
    let bob = speaker("bob", 500.0, false).await;
    let cat = speaker("cat", 900.0, false).await;
    let (guild, _, code) = bob.node.create_guild(&a, "cross").await;
    cat.node.join(&b, &code).await;
    for s in [&bob, &cat] {
        s.node.wait_connected().await;
    }
    let channel = bob.node.create_voice_channel(&a, guild, "lounge").await;
    bob.node
        .node
        .voice_join(channel, false)
        .await
        .expect("joins");
    let joined = cat
        .node
        .node
        .voice_join(channel, false)
        .await
        .expect("joins");
    // Two nodes, mesh size 4 by default: only the instances make it the SFU.
    assert_eq!(joined.mode, "sfu");
    assert!(joined.participants.iter().any(|p| p.cross_instance));
    wait_on_sfu(&bob).await;
    wait_on_sfu(&cat).await;
    let (bob_id, cat_id) = (user_id(&bob), user_id(&cat));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(hears(&bob, cat_id) && hears(&cat, bob_id)) {
        assert!(
            Instant::now() < deadline,
            "bob and cat never heard each other across instances"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in [&bob, &cat] {
        s.node.node.voice_leave().await.expect("leaves");
    }
    a.stop().await;
    b.stop().await;
}
