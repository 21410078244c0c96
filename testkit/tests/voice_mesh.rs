//! Voice between nodes over real WebRTC: every pair of nodes in a voice channel gets a peer
//! connection (offer and answer over libp2p, each side checking the other's relay-signed
//! grant), Opus RTP flows with the audio level, and each node's sink (a WAV file) holds the
//! others' tones and not its own, checked by FFT. Muting silences a speaker; a member without
//! `speak` is heard by nobody; one without `connect` cannot join; with ICE forced to relay
//! candidates, the call goes through concord-turn.

use std::time::Duration;

use concord_node::relay_http::RelayHttp;
use concord_proto::{Id, Permissions};
use concord_testkit::audio::{read_wav, rms, strength};
use concord_testkit::{TestRelay, wait_for};
use serde_json::{Value, json};

mod common;
use common::{
    FRAME, Speaker, frames_played, hears_all_others, relay_with_turn, speaker, speaker_with,
    turn_server, wait_on_sfu, window,
};

/// A guild owned by the first speaker, the others in it, and a voice channel.
async fn voice_guild(relay: &TestRelay, speakers: &[&Speaker]) -> (Id, Id) {
    let (guild, _, code) = speakers[0].node.create_guild(relay, "voice").await;
    for s in &speakers[1..] {
        s.node.join(relay, &code).await;
    }
    for s in speakers {
        s.node.wait_connected().await;
    }
    let channel = speakers[0]
        .node
        .create_voice_channel(relay, guild, "lounge")
        .await;
    (guild, channel)
}

async fn deny(relay: &TestRelay, owner: &Speaker, channel: Id, who: &Speaker, deny: Permissions) {
    let user = owner_view_user_id(who);
    let _: Value = RelayHttp::new(&relay.url)
        .authed(
            owner.node.node.identity(),
            reqwest::Method::PUT,
            &format!("/api/v1/channels/{channel}/permissions/{user}"),
            Some(json!({ "kind": "member", "allow": 0, "deny": deny.0 })),
        )
        .await
        .or_else(|e| match e {
            // 204: no body.
            concord_node::relay_http::HttpError::Protocol(_) => Ok(Value::Null),
            e => Err(e),
        })
        .expect("overwrite");
}

fn owner_view_user_id(s: &Speaker) -> Id {
    s.node
        .node
        .with_cache(|c| c.me().ok().flatten().map(|u| u.id))
        .expect("own user")
}

/// Waits until `s` has a connected link to `peers` others and has received audio from each.
async fn wait_linked(s: &Speaker, peers: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let status = s.node.node.voice_status();
        let ready = status.as_ref().is_some_and(|v| {
            v.peers.len() == peers
                && v.peers.iter().all(|p| {
                    p.link.state == "connected"
                        && p.link.path.is_some()
                        && p.audio.as_ref().is_some_and(|a| a.received >= 25)
                })
        });
        if ready {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} not linked to {peers} peers: {}",
            s.node.name,
            serde_json::to_string_pretty(&status.map(|v| v.peers)).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_hear_each_other_not_themselves_and_mute_silences() {
    let relay = TestRelay::start().await;
    let ana = speaker("ana", 440.0, false).await;
    let bob = speaker("bob", 1_000.0, false).await;
    let cat = speaker("cat", 700.0, false).await;
    let all = [&ana, &bob, &cat];
    let (guild, channel) = voice_guild(&relay, &all).await;
    for s in all {
        s.node.node.voice_join(channel, false).await.expect("joins");
    }
    for s in all {
        wait_linked(s, 2).await;
    }
    let status = ana.node.node.voice_status().unwrap();
    for p in &status.peers {
        assert_eq!(p.link.path.as_deref(), Some("direct"), "{p:?}");
    }
    // Two seconds of everyone speaking.
    let start: Vec<usize> = all.iter().map(|s| frames_played(s)).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_mute: Vec<usize> = all.iter().map(|s| frames_played(s)).collect();
    cat.node.node.voice_mute(true).await.expect("mute");
    // Let the jitter buffers drain cat's last packets.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let muted_from = frames_played(&ana);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let muted_to = frames_played(&ana);
    let status = ana.node.node.voice_status().unwrap();
    eprintln!(
        "ana's view: {}",
        serde_json::to_string_pretty(&status.peers).unwrap()
    );
    // Speaking indicators: bob is speaking, muted cat is not.
    let speaking = |user: Id| {
        status
            .peers
            .iter()
            .find(|p| p.link.user_id == user)
            .and_then(|p| p.audio.as_ref())
            .is_some_and(|a| a.speaking)
    };
    assert!(speaking(owner_view_user_id(&bob)), "bob speaks");
    assert!(!speaking(owner_view_user_id(&cat)), "cat is muted");
    // A moderator (ana owns the guild) server-mutes bob: bob's node stops sending and the
    // others drop whatever still comes from him.
    let bob_id = owner_view_user_id(&bob);
    let muted: Value = RelayHttp::new(&relay.url)
        .authed(
            ana.node.node.identity(),
            reqwest::Method::PATCH,
            &format!("/api/v1/guilds/{guild}/voice-states/{bob_id}"),
            Some(json!({ "server_mute": true })),
        )
        .await
        .expect("server mute");
    assert_eq!(muted["speak"], false);
    wait_for(Duration::from_secs(10), || {
        bob.node.node.voice_status().is_some_and(|v| {
            v.participants
                .iter()
                .any(|p| p.user_id == bob_id && p.server_mute)
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let sent = bob.node.node.voice_status().unwrap().packets_sent;
    let server_muted_from = frames_played(&ana);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server_muted_to = frames_played(&ana);
    assert_eq!(
        bob.node.node.voice_status().unwrap().packets_sent,
        sent,
        "server-muted bob sends nothing"
    );
    // Cat leaves: the others close their links to it at once (voice_bye), not after an ICE
    // timeout.
    cat.node.node.voice_leave().await.expect("cat leaves");
    for s in [&ana, &bob] {
        wait_for(Duration::from_secs(5), || {
            s.node
                .node
                .voice_status()
                .is_some_and(|v| v.peers.len() == 1)
        })
        .await;
    }
    for s in [&ana, &bob] {
        s.node.node.voice_leave().await.expect("leaves");
    }

    for (i, s) in all.iter().enumerate() {
        hears_all_others(s, &all, start[i], before_mute[i], 0.02);
    }
    // After cat muted, ana hears bob only.
    let samples = read_wav(&ana.sink);
    let quiet = window(&samples, muted_from, muted_to);
    let (bob_level, cat_level) = (strength(quiet, 1_000.0), strength(quiet, 700.0));
    eprintln!("ana after cat muted: bob {bob_level:.3}, cat {cat_level:.5}");
    assert!(bob_level > 0.9, "bob is the loudest: {bob_level}");
    assert!(cat_level < 0.02, "cat is muted: {cat_level}");
    // Bob server-muted (cat still self-muted): silence.
    let silent = window(&samples, server_muted_from, server_muted_to);
    assert!(rms(silent) < 1.0, "ana hears nobody: rms {}", rms(silent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_speak_nobody_hears_you_and_without_connect_you_cannot_join() {
    let relay = TestRelay::start().await;
    let ana = speaker("ana", 440.0, false).await;
    let bob = speaker("bob", 1_000.0, false).await;
    let cat = speaker("cat", 700.0, false).await;
    let (_, channel) = voice_guild(&relay, &[&ana, &bob, &cat]).await;
    deny(&relay, &ana, channel, &bob, Permissions::SPEAK).await;
    deny(&relay, &ana, channel, &cat, Permissions::CONNECT).await;

    let refused = cat.node.node.voice_join(channel, false).await;
    assert!(refused.is_err(), "no connect permission: {refused:?}");
    assert!(cat.node.node.voice_status().is_none());

    ana.node
        .node
        .voice_join(channel, false)
        .await
        .expect("ana joins");
    let joined = bob
        .node
        .node
        .voice_join(channel, false)
        .await
        .expect("bob joins");
    assert!(!joined.speak, "bob's grant does not allow speaking");
    // Bob hears ana; ana receives nothing from bob.
    wait_linked(&bob, 1).await;
    wait_for(Duration::from_secs(20), || {
        ana.node
            .node
            .voice_status()
            .is_some_and(|v| v.peers.len() == 1 && v.peers[0].link.state == "connected")
    })
    .await;
    let from = frames_played(&ana);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let to = frames_played(&ana);
    let ana_view = ana.node.node.voice_status().unwrap();
    assert_eq!(
        bob.node.node.voice_status().unwrap().packets_sent,
        0,
        "bob sends nothing"
    );
    // Offers are checked before anything else: a grant whose signature does not match
    // (bob claiming speak), bob's genuine grant presented by another device (cat), and an
    // oversized SDP are all refused, and ana's link to bob stays as it was.
    let joined: concord_proto::api::VoiceJoined = RelayHttp::new(&relay.url)
        .authed(
            bob.node.node.identity(),
            reqwest::Method::POST,
            &format!("/api/v1/voice/channels/{channel}/join"),
            Some(json!({ "client": "node" })),
        )
        .await
        .expect("bob's grant");
    let mut forged = joined.grant.clone();
    forged.speak = true;
    let offer = |grant, sdp: String| concord_net::Request::VoiceOffer {
        grant,
        sdp,
        restart: false,
    };
    let ana_peer = ana.node.node.peer_id();
    for (from, request, code) in [
        (&bob, offer(forged, "v=0".into()), "bad_grant"),
        (&cat, offer(joined.grant.clone(), "v=0".into()), "bad_grant"),
        (
            &bob,
            offer(joined.grant.clone(), "a".repeat(17 * 1024)),
            "too_large",
        ),
    ] {
        match from.node.node.rpc(ana_peer, request).await {
            Ok(concord_net::protocol::Response::Refused { code: got, .. }) => {
                assert_eq!(got, code)
            }
            other => panic!("expected {code}, got {other:?}"),
        }
    }
    assert_eq!(
        ana.node.node.voice_status().unwrap().peers[0].link.state,
        "connected"
    );
    // Bob deafens: he hears nothing from then on.
    let deaf = bob.node.node.voice_deafen(true).await.expect("deafen");
    assert!(deaf.self_deaf && deaf.self_mute);
    let deaf_from = frames_played(&bob);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deaf_to = frames_played(&bob);
    for s in [&ana, &bob] {
        s.node.node.voice_leave().await.expect("leaves");
    }
    let heard = read_wav(&ana.sink);
    let heard = window(&heard, from, to);
    assert!(rms(heard) < 1.0, "ana hears silence, rms {}", rms(heard));
    assert!(
        ana_view.peers[0]
            .audio
            .as_ref()
            .is_none_or(|a| a.received == 0),
        "{ana_view:?}"
    );
    let bob_heard = read_wav(&bob.sink);
    assert!(
        strength(window(&bob_heard, from, deaf_from), 440.0) > 0.9,
        "bob hears ana"
    );
    let deafened = window(&bob_heard, deaf_from, deaf_to);
    assert!(
        rms(deafened) < 1.0,
        "deafened bob hears nothing: rms {}",
        rms(deafened)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_ice_forced_to_relay_or_a_relay_only_node_the_call_goes_through_concord_turn() {
    let turn = turn_server().await;
    let relay = relay_with_turn(turn.udp_addr()).await;
    // Ana is relay-only: no direct libp2p connections (her offers reach bob through the
    // relay's circuit) and relay candidates only. Bob forces TURN himself.
    let ana = speaker_with("ana", 440.0, false, |c| c.relay_only = true).await;
    let bob = speaker("bob", 1_000.0, true).await;
    let (_, channel) = voice_guild(&relay, &[&ana, &bob]).await;
    let relayed_before = turn.stats().relayed_packets;
    for s in [&ana, &bob] {
        s.node.node.voice_join(channel, false).await.expect("joins");
    }
    for s in [&ana, &bob] {
        wait_linked(s, 1).await;
        let peer = &s.node.node.voice_status().unwrap().peers[0];
        assert_eq!(peer.link.path.as_deref(), Some("turn"), "{peer:?}");
    }
    let libp2p_to_bob: Vec<String> = ana
        .node
        .node
        .connections()
        .into_iter()
        .filter(|c| c.peer_id == bob.node.node.peer_id().to_string())
        .map(|c| c.kind.to_owned())
        .collect();
    assert!(
        !libp2p_to_bob.is_empty() && libp2p_to_bob.iter().all(|k| k == "relayed"),
        "relay-only ana reaches bob through the circuit only: {libp2p_to_bob:?}"
    );
    let from: Vec<usize> = [&ana, &bob].iter().map(|s| frames_played(s)).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let to: Vec<usize> = [&ana, &bob].iter().map(|s| frames_played(s)).collect();
    let relayed_after = turn.stats().relayed_packets;
    for s in [&ana, &bob] {
        s.node.node.voice_leave().await.expect("leaves");
    }
    eprintln!("relayed by concord-turn: {relayed_before:?} -> {relayed_after:?}");
    assert!(
        relayed_after.iter().sum::<u64>() >= relayed_before.iter().sum::<u64>() + 200,
        "media crossed concord-turn: {relayed_before:?} -> {relayed_after:?}"
    );
    for (i, (s, other)) in [(&ana, &bob), (&bob, &ana)].into_iter().enumerate() {
        let samples = read_wav(&s.sink);
        let heard = window(&samples, from[i], to[i]);
        let (theirs, own) = (strength(heard, other.hz), strength(heard, s.hz));
        eprintln!(
            "{} through TURN: {} Hz {theirs:.3}, own {own:.5}",
            s.node.name, other.hz
        );
        assert!(
            theirs > 0.9 && own < 0.02,
            "{}: {theirs} / {own}",
            s.node.name
        );
    }
    turn.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_percent_loss_keeps_audio_continuous() {
    let turn = turn_server().await;
    // Every packet a node sends crosses the shim once on its way to concord-turn; once the
    // call is up, 5 % of them are lost. (The link is set up without loss: the DTLS handshake
    // of webrtc-rs gave up once after 8 lost retransmissions of a flight under loss.)
    let shim = concord_testkit::lossy::LossyShim::start(turn.udp_addr(), 0, 11).await;
    let relay = relay_with_turn(shim.addr).await;
    let ana = speaker("ana", 440.0, true).await;
    let bob = speaker("bob", 1_000.0, true).await;
    let (_, channel) = voice_guild(&relay, &[&ana, &bob]).await;
    for s in [&ana, &bob] {
        s.node.node.voice_join(channel, false).await.expect("joins");
    }
    for s in [&ana, &bob] {
        wait_linked(s, 1).await;
    }
    use std::sync::atomic::Ordering::Relaxed;
    let counts = || (shim.forwarded.load(Relaxed), shim.dropped.load(Relaxed));
    let counted_from = counts();
    shim.loss_percent.store(5, Relaxed);
    let from: Vec<usize> = [&ana, &bob].iter().map(|s| frames_played(s)).collect();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let to: Vec<usize> = [&ana, &bob].iter().map(|s| frames_played(s)).collect();
    let counted_to = counts();
    let views: Vec<_> = [&ana, &bob]
        .iter()
        .map(|s| s.node.node.voice_status().unwrap().peers[0].clone())
        .collect();
    for s in [&ana, &bob] {
        s.node.node.voice_leave().await.expect("leaves");
    }
    // What the network lost (before NACK retransmissions and FEC repair it).
    let (forwarded, dropped) = (counted_to.0 - counted_from.0, counted_to.1 - counted_from.1);
    let network_loss = dropped as f64 / (forwarded + dropped) as f64;
    eprintln!("shim: {forwarded} forwarded, {dropped} dropped ({network_loss:.3})");
    assert!(
        (0.03..0.08).contains(&network_loss),
        "the shim lost {network_loss}"
    );
    for (i, (s, other)) in [(&ana, &bob), (&bob, &ana)].into_iter().enumerate() {
        // `loss` is what was still missing at playout: NACK retransmissions fill some gaps
        // in time, FEC rebuilds most of the rest.
        let audio = views[i].audio.clone().expect("audio stats");
        eprintln!("{} hears {}: {audio:?}", s.node.name, other.node.name);
        assert!(
            audio.longest_concealed_ms <= 60,
            "{}: longest concealed gap {} ms",
            s.node.name,
            audio.longest_concealed_ms
        );
        let samples = read_wav(&s.sink);
        let heard = window(&samples, from[i], to[i]);
        let theirs = strength(heard, other.hz);
        assert!(theirs > 0.9, "{}: {theirs}", s.node.name);
    }
    turn.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_comes_back_after_the_network_drops_out() {
    let turn = turn_server().await;
    let shim = concord_testkit::lossy::LossyShim::start(turn.udp_addr(), 0, 5).await;
    let relay = relay_with_turn(shim.addr).await;
    let ana = speaker("ana", 440.0, true).await;
    let bob = speaker("bob", 1_000.0, true).await;
    let (_, channel) = voice_guild(&relay, &[&ana, &bob]).await;
    for s in [&ana, &bob] {
        s.node.node.voice_join(channel, false).await.expect("joins");
    }
    for s in [&ana, &bob] {
        wait_linked(s, 1).await;
    }
    // Everything the nodes send is lost for a while (a network change): the link goes
    // disconnected (or failed); when the network is back, ICE restarts (or the link is
    // rebuilt) and audio flows again.
    shim.loss_percent
        .store(100, std::sync::atomic::Ordering::Relaxed);
    wait_for(Duration::from_secs(30), || {
        ana.node
            .node
            .voice_status()
            .is_some_and(|v| v.peers.iter().all(|p| p.link.state != "connected"))
    })
    .await;
    let received = |s: &Speaker| {
        s.node
            .node
            .voice_status()
            .and_then(|v| v.peers.first().and_then(|p| p.audio.clone()))
            .map(|a| a.received)
            .unwrap_or(0)
    };
    let before = (received(&ana), received(&bob));
    shim.loss_percent
        .store(0, std::sync::atomic::Ordering::Relaxed);
    wait_for(Duration::from_secs(60), || {
        [&ana, &bob].iter().all(|s| {
            s.node
                .node
                .voice_status()
                .is_some_and(|v| v.peers.len() == 1 && v.peers[0].link.state == "connected")
        }) && received(&ana) > before.0 + 50
            && received(&bob) > before.1 + 50
    })
    .await;
    for s in [&ana, &bob] {
        s.node.node.voice_leave().await.expect("leaves");
    }
    turn.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_mesh_moves_to_the_sfu_when_a_sixth_joins_and_audio_continues() {
    let relay = TestRelay::start_with(tempfile::tempdir().expect("temp dir"), |c| {
        c.voice.mesh_size = 5;
        c.voice.sfu_forwarded_speakers = 5;
    })
    .await;
    let mut speakers = Vec::new();
    for (i, hz) in [300.0, 500.0, 700.0, 900.0, 1_100.0, 1_300.0]
        .into_iter()
        .enumerate()
    {
        speakers.push(speaker(&format!("s{i}"), hz, false).await);
    }
    let all: Vec<&Speaker> = speakers.iter().collect();
    let (_, channel) = voice_guild(&relay, &all).await;
    for s in &all[..5] {
        let joined = s.node.node.voice_join(channel, false).await.expect("joins");
        assert_eq!(joined.mode, "mesh");
    }
    for s in &all[..5] {
        wait_linked(s, 4).await;
    }
    let mesh_from = frames_played(all[0]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mesh_to = frames_played(all[0]);
    // The sixth: past the mesh size, the channel moves to the SFU, everyone with it.
    let joined = all[5]
        .node
        .node
        .voice_join(channel, false)
        .await
        .expect("the sixth joins");
    assert_eq!(joined.mode, "sfu");
    let switched = std::time::Instant::now();
    for s in &all {
        wait_on_sfu(s).await;
    }
    eprintln!("all six on the SFU after {:?}", switched.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let from: Vec<usize> = all.iter().map(|s| frames_played(s)).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let to: Vec<usize> = all.iter().map(|s| frames_played(s)).collect();
    // The sinks are complete once the calls end.
    for s in &all {
        s.node.node.voice_leave().await.expect("leaves");
    }
    hears_all_others(all[0], &all[..5], mesh_from, mesh_to, 0.02);
    // Audio continued across the move: the longest silent stretch s0 heard from the mesh
    // window to the end of the SFU window.
    let samples = read_wav(&all[0].sink);
    let silent_frames = window(&samples, mesh_from, to[0])
        .chunks(FRAME)
        .fold((0usize, 0usize), |(run, longest), frame| {
            let run = if rms(frame) < 1.0 { run + 1 } else { 0 };
            (run, longest.max(run))
        })
        .1;
    eprintln!("longest silence across the move: {} ms", silent_frames * 20);
    assert!(
        silent_frames * 20 < 2_000,
        "{} ms of silence",
        silent_frames * 20
    );
    for (i, s) in all.iter().enumerate() {
        hears_all_others(s, &all, from[i], to[i], 0.1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_and_two_browsers_hear_each_other_on_the_sfu() {
    let relay = TestRelay::start().await;
    // 700 Hz: away from the fake microphones' beep (a 400 Hz square wave) and its harmonics.
    let nia = speaker("nia", 700.0, false).await;
    let (guild, _, code) = nia.node.create_guild(&relay, "mixed").await;
    nia.node.wait_connected().await;
    let channel = nia.node.create_voice_channel(&relay, guild, "Lounge").await;
    let joined = nia
        .node
        .node
        .voice_join(channel, false)
        .await
        .expect("the node joins");
    assert_eq!(joined.mode, "mesh", "alone, no browser yet");
    let args = vec![
        relay.url.clone(),
        format!("{}/invite/{code}", relay.url),
        owner_view_user_id(&nia).to_string(),
    ];
    let browsers = tokio::spawn(async move {
        concord_testkit::browser::run("tests/web-voice-node.mjs", &args, Duration::from_secs(180))
            .await
    });
    // The first browser moves the channel to the SFU; the node follows and hears them.
    wait_on_sfu(&nia).await;
    wait_for(Duration::from_secs(60), || {
        nia.node.node.voice_status().is_some_and(|v| {
            v.participants
                .iter()
                .filter(|p| p.client == "browser")
                .count()
                == 2
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = frames_played(&nia);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let to = frames_played(&nia);
    // `voice status` on the SFU: the slots name the browsers that spoke on them.
    let status = nia.node.node.voice_status().expect("in voice");
    let browsers_in: Vec<Id> = status
        .participants
        .iter()
        .filter(|p| p.client == "browser")
        .map(|p| p.user_id)
        .collect();
    let named: Vec<Id> = status.slots.iter().filter_map(|s| s.user_id).collect();
    eprintln!(
        "slots: {}",
        serde_json::to_string(&status.slots).expect("json")
    );
    assert!(
        browsers_in.iter().all(|b| named.contains(b)) && named.len() == 2,
        "slots name the two browsers: {named:?} vs {browsers_in:?}"
    );
    let result = browsers.await.expect("browser task");
    nia.node.node.voice_leave().await.expect("leaves");
    concord_testkit::browser::assert_checks(
        &result,
        &[
            "browsers_connected",
            "browsers_hear_node_and_each_other",
            "packets_keep_coming",
            "no_console_errors",
            "no_foreign_requests",
        ],
    );
    // The node hears the browsers' fake microphones (a beeping tone), not its own 700 Hz.
    let samples = read_wav(&nia.sink);
    let heard = window(&samples, from, to);
    eprintln!(
        "the node heard rms {:.0}, own tone {:.4}",
        rms(heard),
        strength(heard, 700.0)
    );
    assert!(rms(heard) > 20.0, "the node hears the browsers");
    assert!(
        strength(heard, 700.0) < 0.1,
        "and not itself (an echo would be the loudest tone)"
    );
}
