//! Relay and nodes in one process: messages submitted over libp2p are stored once, pushed to
//! every online authorised node, and caught up by seq after downtime.

use concord_testkit::{TestNode, TestRelay};

#[tokio::test]
async fn a_message_reaches_every_member_through_the_relay() {
    let relay = TestRelay::start().await;
    let ana = TestNode::start("ana").await;
    let bob = TestNode::start("bob").await;
    let (_guild, general, code) = ana.create_guild(&relay, "lab").await;
    bob.join(&relay, &code).await;
    ana.wait_connected().await;
    bob.wait_connected().await;

    let sent = ana
        .node
        .send(general, "hello over libp2p", true)
        .await
        .expect("sent");
    assert!(sent.acknowledged, "the relay acked");
    let message = sent.message.expect("acked message");
    assert_eq!(message.seq, 1);
    let page = bob
        .wait_history(general, |h| {
            h.iter()
                .any(|m| m.content == "hello over libp2p" && m.confirmed)
        })
        .await;
    assert_eq!(
        page.iter()
            .filter(|m| m.content == "hello over libp2p")
            .count(),
        1
    );
    // The sender's own copy is confirmed too (one row, not two).
    let mine = ana
        .wait_history(general, |h| {
            h.iter()
                .any(|m| m.confirmed && m.content == "hello over libp2p")
        })
        .await;
    assert_eq!(mine.len(), 1);
    assert_eq!(ana.node.outbox_len(), 0);
}

use std::time::Duration;

use concord_proto::Id;
use serde_json::{Value, json};

/// Owner's HTTP client (for moderation steps in tests).
async fn owner_http(relay: &TestRelay, node: &TestNode) -> concord_node::relay_http::RelayHttp {
    let http = concord_node::relay_http::RelayHttp::new(&relay.url);
    http.login(node.node.identity(), None).await.expect("login");
    http
}

#[tokio::test]
async fn a_public_message_arrives_directly_while_the_relay_holds_its_commit() {
    let relay = TestRelay::start().await;
    let ana = TestNode::start("ana").await;
    let bob = TestNode::start("bob").await;
    let (_guild, general, code) = ana.create_guild(&relay, "lab").await;
    bob.join(&relay, &code).await;
    ana.wait_connected().await;
    bob.wait_connected().await;
    // Direct connection between the two nodes, so GossipSub has a path.
    for addr in bob.node.listen_addrs() {
        ana.node.dial(addr.clone()).await;
    }
    concord_testkit::wait_for(Duration::from_secs(10), || {
        ana.node
            .connections()
            .iter()
            .any(|c| c.peer_id == bob.node.peer_id().to_string())
    })
    .await;
    // Let the GossipSub mesh form (heartbeat 0.7 s).
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    let held = relay.server().app().commit_gate.write().await;
    ana.node
        .send(general, "straight to you", false)
        .await
        .expect("queued");
    let page = bob
        .wait_history(general, |h| {
            h.iter().any(|m| m.content == "straight to you")
        })
        .await;
    let unconfirmed = page
        .iter()
        .find(|m| m.content == "straight to you")
        .unwrap();
    assert!(!unconfirmed.confirmed, "seen before the relay stored it");
    drop(held);
    // After the commit, both have the same ordered, confirmed history.
    let b = bob
        .wait_history(general, |h| h.len() == 1 && h[0].confirmed)
        .await;
    let a = ana
        .wait_history(general, |h| h.len() == 1 && h[0].confirmed)
        .await;
    assert_eq!(a[0].id, b[0].id);
    assert_eq!(a[0].seq, Some(1));
}

#[tokio::test]
async fn private_messages_never_reach_a_member_without_view() {
    let relay = TestRelay::start().await;
    let ana = TestNode::start("ana").await;
    let bob = TestNode::start("bob").await;
    let (guild, general, code) = ana.create_guild(&relay, "lab").await;
    bob.join(&relay, &code).await;
    ana.wait_connected().await;
    bob.wait_connected().await;
    for addr in bob.node.listen_addrs() {
        ana.node.dial(addr.clone()).await;
    }
    let http = owner_http(&relay, &ana).await;
    let private: Value = http
        .authed(
            ana.node.identity(),
            reqwest::Method::POST,
            &format!("/api/v1/guilds/{guild}/channels"),
            Some(json!({ "name": "staff", "kind": "text", "private": true })),
        )
        .await
        .unwrap();
    let private: Id = serde_json::from_value(private["id"].clone()).unwrap();
    concord_testkit::wait_for(Duration::from_secs(10), || {
        ana.node
            .with_cache(|c| c.channel(private).unwrap().is_some())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    ana.node
        .send(private, "eyes only", true)
        .await
        .expect("sent");
    ana.node
        .send(general, "for everyone", true)
        .await
        .expect("sent");
    bob.wait_history(general, |h| {
        h.iter().any(|m| m.content == "for everyone" && m.confirmed)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Not in bob's cache under any channel, not findable, and the relay refuses a sync.
    assert!(bob.node.history(private, 100).unwrap().is_empty());
    assert!(bob.node.search("eyes", 10).unwrap().is_empty());
    assert!(
        bob.node
            .with_cache(|c| c.channel(private).unwrap())
            .is_none()
    );
}

#[tokio::test]
async fn an_offline_node_catches_up_exactly_once_in_order() {
    let relay = TestRelay::start().await;
    let ana = TestNode::start("ana").await;
    let bob = TestNode::start("bob").await;
    let (_guild, general, code) = ana.create_guild(&relay, "lab").await;
    bob.join(&relay, &code).await;
    bob.wait_connected().await;
    ana.node.send(general, "before", true).await.unwrap();
    bob.wait_history(general, |h| h.len() == 1 && h[0].confirmed)
        .await;

    // bob goes offline (shut down) while ana writes 1,000 messages, edits 50, deletes 20.
    let bob_dir_node = bob;
    let TestNode { node, name, dir } = bob_dir_node;
    node.shutdown().await;
    let http = owner_http(&relay, &ana).await;
    let mut ids = Vec::new();
    for i in 0..1_000 {
        let m: Value = http
            .authed(
                ana.node.identity(),
                reqwest::Method::POST,
                &format!("/api/v1/channels/{general}/messages"),
                Some(json!({ "content": format!("m{i}"), "nonce": format!("n{i}") })),
            )
            .await
            .unwrap();
        ids.push(m["id"].as_str().unwrap().to_owned());
    }
    for id in &ids[..50] {
        let _: Value = http
            .authed(
                ana.node.identity(),
                reqwest::Method::PATCH,
                &format!("/api/v1/channels/{general}/messages/{id}"),
                Some(json!({ "content": format!("edited {id}") })),
            )
            .await
            .unwrap();
    }
    for id in &ids[50..70] {
        let _: Value = http
            .authed(
                ana.node.identity(),
                reqwest::Method::DELETE,
                &format!("/api/v1/channels/{general}/messages/{id}"),
                None,
            )
            .await
            .unwrap();
    }
    let bob = TestNode {
        node: concord_node::Node::spawn(concord_testkit::node_config(dir.path()))
            .await
            .unwrap(),
        name,
        dir,
    };
    let expected_cursor = 1 + 1_000 + 50 + 20;
    concord_testkit::wait_for(Duration::from_secs(30), || {
        bob.node.with_cache(|c| c.cursor(general).unwrap()) == expected_cursor
    })
    .await;
    let page = all_history(&bob, general);
    assert_eq!(page.len(), 1 + 1_000 - 20);
    // In seq order, each message once, edits applied, deletes gone.
    let seqs: Vec<i64> = page.iter().map(|m| m.seq.unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        page.iter()
            .filter(|m| m.content.starts_with("edited "))
            .count(),
        50
    );
    assert!(page.iter().all(|m| m.confirmed));
    assert!(
        !page
            .iter()
            .any(|m| ids[50..70].contains(&m.id.unwrap().to_string()))
    );
}

/// Every cached message of a channel, oldest first, paging backwards.
fn all_history(node: &TestNode, channel: Id) -> Vec<concord_node::cache::CachedMessage> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = node
            .node
            .with_cache(|c| c.history(channel, before.clone(), 200).unwrap());
        if page.is_empty() {
            break;
        }
        before = Some(page[0].history_key());
        let mut page = page;
        page.extend(all);
        all = page;
    }
    all
}

#[tokio::test]
async fn a_message_written_while_the_relay_is_down_is_delivered_once_after_restart() {
    let relay = TestRelay::start().await;
    let ana = TestNode::start("ana").await;
    let bob = TestNode::start("bob").await;
    let (_guild, general, code) = ana.create_guild(&relay, "lab").await;
    bob.join(&relay, &code).await;
    ana.wait_connected().await;
    let dir = relay.stop().await;
    concord_testkit::wait_for(Duration::from_secs(10), || !ana.node.is_relay_connected()).await;

    let outcome = ana
        .node
        .send(general, "written offline", false)
        .await
        .expect("queued");
    assert!(!outcome.acknowledged);
    assert_eq!(ana.node.outbox_len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ana.node.outbox_len(),
        1,
        "still queued while the relay is down"
    );

    // Same data dir: same database and libp2p identity; new ports are found through the
    // relay's well-known on restart? No: nodes keep the addresses from join, so restart on
    // the same ports.
    let relay = TestRelay::start_with(dir, |c| {
        let addrs = ana.node.relay_info().unwrap().addrs;
        c.p2p.listen = addrs
            .iter()
            .map(|a| a.rsplit_once("/p2p/").unwrap().0.to_owned())
            .collect();
    })
    .await;
    ana.wait_connected().await;
    concord_testkit::wait_for(Duration::from_secs(20), || ana.node.outbox_len() == 0).await;
    bob.wait_connected().await;
    let page = bob
        .wait_history(general, |h| {
            h.iter()
                .any(|m| m.content == "written offline" && m.confirmed)
        })
        .await;
    assert_eq!(
        page.iter()
            .filter(|m| m.content == "written offline")
            .count(),
        1
    );
    drop(relay);
}

#[tokio::test]
async fn a_gap_in_seq_triggers_catch_up() {
    let relay = TestRelay::start().await;
    let ana = TestNode::start("ana").await;
    let bob = TestNode::start("bob").await;
    let (_guild, general, code) = ana.create_guild(&relay, "lab").await;
    bob.join(&relay, &code).await;
    bob.wait_connected().await;
    ana.node.send(general, "one", true).await.unwrap();
    bob.wait_history(general, |h| h.len() == 1 && h[0].confirmed)
        .await;
    // The relay "loses" the next pushed event; the one after it reveals the gap.
    relay
        .server()
        .app()
        .p2p
        .get()
        .unwrap()
        .drop_next_pushes
        .lock()
        .unwrap()
        .insert(bob.node.peer_id(), 1);
    ana.node.send(general, "two", true).await.unwrap();
    ana.node.send(general, "three", true).await.unwrap();
    let page = bob
        .wait_history(general, |h| h.len() == 3 && h.iter().all(|m| m.confirmed))
        .await;
    assert_eq!(
        page.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
}

#[tokio::test]
async fn members_learn_each_others_addresses_only_when_allowed() {
    let relay = TestRelay::start().await;
    let ana = TestNode::start("ana").await;
    let bob = TestNode::start("bob").await;
    let shy = TestNode::start_with("shy", |c| c.relay_only = true).await;
    let (guild, _general, code) = ana.create_guild(&relay, "lab").await;
    bob.join(&relay, &code).await;
    shy.join(&relay, &code).await;
    for n in [&ana, &bob, &shy] {
        n.wait_connected().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let relay_peer = ana.node.relay_info().unwrap().peer().unwrap();
    let answer = ana
        .node
        .rpc(relay_peer, concord_net::Request::Peers { guild_id: guild })
        .await
        .unwrap();
    let concord_net::protocol::Response::Peers { peers } = answer else {
        panic!("{answer:?}")
    };
    let ids: Vec<String> = peers.iter().map(|p| p.peer_id.clone()).collect();
    assert!(
        ids.contains(&bob.node.peer_id().to_string()),
        "bob allows direct connections"
    );
    assert!(
        !ids.contains(&shy.node.peer_id().to_string()),
        "relay-only nodes stay private"
    );
    assert!(
        !ids.contains(&ana.node.peer_id().to_string()),
        "not yourself"
    );
    assert!(
        peers
            .iter()
            .all(|p| p.addrs.iter().all(|a| a.contains("127.0.0.1")))
    );
    // A stranger to the guild learns nothing.
    let eve = TestNode::start("eve").await;
    let http = concord_node::relay_http::RelayHttp::new(&relay.url);
    http.login(eve.node.identity(), Some("eve")).await.unwrap();
    for addr in relay.server().p2p_addrs() {
        eve.node.dial(addr.parse().unwrap()).await;
    }
    concord_testkit::wait_for(Duration::from_secs(10), || {
        eve.node
            .connections()
            .iter()
            .any(|c| c.peer_id == relay_peer.to_string())
    })
    .await;
    let answer = eve
        .node
        .rpc(relay_peer, concord_net::Request::Peers { guild_id: guild })
        .await
        .unwrap();
    assert!(
        matches!(answer, concord_net::protocol::Response::Refused { ref code, .. } if code == "missing_access"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn presence_counts_node_connections() {
    let relay = TestRelay::start().await;
    let ana = TestNode::start("ana").await;
    let (_guild, _general, _code) = ana.create_guild(&relay, "lab").await;
    ana.wait_connected().await;
    // The hello answer (with the user) follows the connection.
    concord_testkit::wait_for(Duration::from_secs(10), || {
        ana.node.with_cache(|c| c.me().unwrap().is_some())
    })
    .await;
    let me = ana.node.with_cache(|c| c.me().unwrap().unwrap().id);
    let hub = &relay.server().app().hub;
    concord_testkit::wait_for(Duration::from_secs(10), || {
        hub.presence(me) == concord_proto::gateway::PresenceStatus::Online
    })
    .await;
    let TestNode { node, .. } = ana;
    node.shutdown().await;
    concord_testkit::wait_for(Duration::from_secs(10), || {
        hub.presence(me) == concord_proto::gateway::PresenceStatus::Offline
    })
    .await;
}

#[tokio::test]
async fn a_relay_only_node_keeps_its_address_private_and_still_gets_everything() {
    let relay = TestRelay::start().await;
    let ana = TestNode::start("ana").await;
    let shy = TestNode::start_with("shy", |c| c.relay_only = true).await;
    assert!(
        shy.node.listen_addrs().is_empty(),
        "relay-only nodes do not listen"
    );
    let (_guild, general, code) = ana.create_guild(&relay, "lab").await;
    shy.join(&relay, &code).await;
    ana.wait_connected().await;
    shy.wait_connected().await;
    ana.node
        .send(general, "to the private one", true)
        .await
        .unwrap();
    shy.wait_history(general, |h| {
        h.iter()
            .any(|m| m.content == "to the private one" && m.confirmed)
    })
    .await;
    shy.node.send(general, "and back", true).await.unwrap();
    ana.wait_history(general, |h| {
        h.iter().any(|m| m.content == "and back" && m.confirmed)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Its only connection is the relay.
    let relay_peer = shy.node.relay_info().unwrap().peer_id;
    assert!(
        shy.node
            .connections()
            .iter()
            .all(|c| c.peer_id == relay_peer),
        "{:?}",
        shy.node.connections()
    );
}

/// A channel some member may not view never goes on GossipSub, whatever hides it (here a
/// member overwrite; `permissions::gossip_eligible`): a subscriber to its topic, connected to
/// the sender's node, gets the sender's #general message by gossip and nothing of the gated
/// channel's.
#[tokio::test]
async fn a_channel_hidden_from_some_member_never_goes_on_gossipsub() {
    use futures_util::StreamExt;
    use libp2p::swarm::SwarmEvent;
    use libp2p::{gossipsub, noise, tcp, yamux};
    let relay = TestRelay::start().await;
    let ana = TestNode::start("ana").await;
    let bob = TestNode::start("bob").await;
    let (guild, general, code) = ana.create_guild(&relay, "lab").await;
    bob.join(&relay, &code).await;
    ana.wait_connected().await;
    bob.wait_connected().await;
    let bob_id = bob
        .node
        .with_cache(|c| c.me().unwrap().map(|u| u.id))
        .expect("bob knows his id");
    let http = owner_http(&relay, &ana).await;
    let staff: Value = http
        .authed(
            ana.node.identity(),
            reqwest::Method::POST,
            &format!("/api/v1/guilds/{guild}/channels"),
            Some(json!({ "name": "staff", "kind": "text" })),
        )
        .await
        .unwrap();
    let staff: Id = serde_json::from_value(staff["id"].clone()).unwrap();
    let _: Value = http
        .authed(
            ana.node.identity(),
            reqwest::Method::PUT,
            &format!("/api/v1/channels/{staff}/permissions/{bob_id}"),
            Some(json!({ "kind": "member", "allow": 0, "deny": concord_proto::Permissions::VIEW_CHANNEL })),
        )
        .await
        .unwrap_or(Value::Null);
    concord_testkit::wait_for(Duration::from_secs(10), || {
        ana.node.with_cache(|c| {
            c.channel(staff)
                .unwrap()
                .is_some_and(|ch| !ch.overwrites.is_empty())
        })
    })
    .await;

    // A subscriber to both topics (with the nodes' own GossipSub settings), connected to ana.
    let key = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    let keypair = concord_net::identity::keypair(&key);
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|kp| concord_net::behaviour::gossipsub(kp))
        .unwrap()
        .build();
    for ch in [general, staff] {
        swarm
            .behaviour_mut()
            .subscribe(&concord_net::topics::channel_topic(ch))
            .unwrap();
    }
    let tcp_addr = ana
        .node
        .listen_addrs()
        .into_iter()
        .find(|a| a.to_string().contains("/tcp/"))
        .expect("ana listens on TCP")
        .clone();
    swarm.dial(tcp_addr).unwrap();
    // Drive the subscriber while the mesh forms and ana sends.
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let driver = {
        let received = received.clone();
        tokio::spawn(async move {
            loop {
                if let SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) =
                    swarm.select_next_some().await
                {
                    let env: concord_proto::signed::Envelope =
                        serde_json::from_slice(&message.data).unwrap();
                    received.lock().unwrap().push(env.content);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    ana.node
        .send(staff, "staff only", true)
        .await
        .expect("sent");
    ana.node
        .send(general, "for everyone", true)
        .await
        .expect("sent");
    concord_testkit::wait_for(Duration::from_secs(10), || {
        received.lock().unwrap().iter().any(|c| c == "for everyone")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    driver.abort();
    let received = received.lock().unwrap().clone();
    assert_eq!(
        received,
        ["for everyone"],
        "only #general went on GossipSub"
    );
}
