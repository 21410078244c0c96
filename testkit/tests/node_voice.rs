//! Voice signalling between nodes and the relay: two nodes join a voice channel with
//! relay-signed grants they verify, see each other in the participant list through pushed
//! `voice_state_update`s, mute, keep their place past the grant's lifetime by renewing it, and
//! leave. (Media comes with the node's voice engine.)

use std::time::Duration;

use concord_node::relay_http::RelayHttp;
use concord_testkit::{TestNode, TestRelay, wait_for};
use serde_json::{Value, json};

#[tokio::test]
async fn two_nodes_join_renew_mute_and_leave_a_voice_channel() {
    let relay = TestRelay::start_with(tempfile::tempdir().expect("temp dir"), |c| {
        c.voice.grant_ttl_secs = 5;
    })
    .await;
    let ana = TestNode::start("ana").await;
    let bob = TestNode::start("bob").await;
    let (guild, _, code) = ana.create_guild(&relay, "voice guild").await;
    bob.join(&relay, &code).await;
    ana.wait_connected().await;
    bob.wait_connected().await;
    let http = RelayHttp::new(&relay.url);
    let voice: Value = http
        .authed(
            ana.node.identity(),
            reqwest::Method::POST,
            &format!("/api/v1/guilds/{guild}/channels"),
            Some(json!({ "name": "lounge", "kind": "voice" })),
        )
        .await
        .expect("voice channel");
    let voice: concord_proto::Id = serde_json::from_value(voice["id"].clone()).unwrap();

    let joined = ana.node.voice_join(voice, false).await.expect("ana joins");
    assert!(joined.speak);
    assert_eq!(joined.mode, "mesh");
    assert_eq!(joined.participants.len(), 1);
    let joined = bob.node.voice_join(voice, true).await.expect("bob joins");
    assert_eq!(joined.participants.len(), 2);
    // Ana learns about bob from the relay's push, muted.
    wait_for(Duration::from_secs(10), || {
        ana.node.voice_status().is_some_and(|s| {
            s.participants.len() == 2 && s.participants.iter().any(|p| p.self_mute)
        })
    })
    .await;
    // Bob unmutes; ana sees it.
    bob.node.voice_mute(false).await.expect("unmute");
    wait_for(Duration::from_secs(10), || {
        ana.node
            .voice_status()
            .is_some_and(|s| s.participants.iter().all(|p| !p.self_mute))
    })
    .await;

    // Past the grant's 5 s life both are still in: the nodes renew it.
    let first_expiry = ana.node.voice_status().unwrap().grant_expires_at;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let status = ana.node.voice_status().expect("still in voice");
    assert!(
        status.grant_expires_at > first_expiry,
        "the grant was renewed"
    );
    let listed: Value = http
        .authed(
            ana.node.identity(),
            reqwest::Method::GET,
            &format!("/api/v1/voice/channels/{voice}"),
            None,
        )
        .await
        .expect("participants");
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    // The control API shows the same.
    let addr = ana.node.control_addr();
    let token = std::fs::read_to_string(
        ana.dir
            .path()
            .join(concord_node::daemon::CONTROL_TOKEN_FILE),
    )
    .unwrap();
    let shown: Value = reqwest::Client::new()
        .get(format!("http://{addr}/v1/voice"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["voice"]["channel_id"], voice.to_string());

    bob.node.voice_leave().await.expect("bob leaves");
    assert!(bob.node.voice_status().is_none());
    assert!(
        bob.node.voice_leave().await.is_err(),
        "not in voice any more"
    );
    wait_for(Duration::from_secs(10), || {
        ana.node
            .voice_status()
            .is_some_and(|s| s.participants.len() == 1)
    })
    .await;
    ana.node.voice_leave().await.expect("ana leaves");
}
