//! What the relay refuses over libp2p: forged and tampered envelopes, unknown and revoked
//! devices, non-members, banned users, oversized and malformed requests. A refused request
//! changes nothing, and the relay keeps serving.

use std::time::Duration;

use concord_net::protocol::{Request, Response};
use concord_proto::Id;
use concord_proto::signed::Envelope;
use concord_testkit::raw::{RawClient, code, second_device, tcp_addr};
use concord_testkit::{TestNode, TestRelay};
use ed25519_dalek::SigningKey;
use serde_json::json;

#[tokio::test]
async fn the_relay_refuses_bad_requests_and_keeps_serving() {
    let relay = TestRelay::start().await;
    let ana = TestNode::start("ana").await;
    let (guild, general, _code) = ana.create_guild(&relay, "lab").await;
    let ana_key = ana.node.identity().device.clone();

    // An unregistered device is refused everything.
    let stranger = SigningKey::from_bytes(&[9u8; 32]);
    let mut raw = RawClient::connect(&stranger, &tcp_addr(&relay)).await;
    assert_eq!(
        code(&raw.call(Request::Hello { allow_direct: true }).await),
        "unknown_device"
    );

    // ana's own device, through a raw client.
    let mut raw = RawClient::connect(&ana_key, &tcp_addr(&relay)).await;
    let good = Envelope::sign(&ana_key, general, "good-1", "fine", None, 1_700_000_000_000);
    assert!(matches!(
        raw.call(Request::Submit { envelope: good }).await,
        Ok(Response::Ack { .. })
    ));

    // Forged: signed by another key but claiming ana's device; or claiming another device.
    let mut forged = Envelope::sign(
        &stranger,
        general,
        "forged-1",
        "not ana",
        None,
        1_700_000_000_000,
    );
    forged.device_key = ana.node.identity().device_key();
    assert_eq!(
        code(&raw.call(Request::Submit { envelope: forged }).await),
        "bad_envelope"
    );
    let other_device = Envelope::sign(
        &stranger,
        general,
        "forged-2",
        "someone else",
        None,
        1_700_000_000_000,
    );
    assert_eq!(
        code(
            &raw.call(Request::Submit {
                envelope: other_device
            })
            .await
        ),
        "wrong_device"
    );
    // Tampered after signing.
    let mut tampered = Envelope::sign(
        &ana_key,
        general,
        "t-1",
        "original",
        None,
        1_700_000_000_000,
    );
    tampered.content = "changed".into();
    assert_eq!(
        code(&raw.call(Request::Submit { envelope: tampered }).await),
        "bad_envelope"
    );
    // Malformed: a signature that is not base64url of 64 bytes.
    let mut garbled = Envelope::sign(&ana_key, general, "g-1", "garbled", None, 1_700_000_000_000);
    garbled.signature = "%%%".into();
    assert_eq!(
        code(&raw.call(Request::Submit { envelope: garbled }).await),
        "bad_envelope"
    );
    // Too long content (validated like HTTP), and bad sync arguments.
    let long = Envelope::sign(
        &ana_key,
        general,
        "long-1",
        &"x".repeat(4_001),
        None,
        1_700_000_000_000,
    );
    assert_eq!(
        code(&raw.call(Request::Submit { envelope: long }).await),
        "bad_envelope"
    );
    assert_eq!(
        code(
            &raw.call(Request::Sync {
                channel_id: general,
                after_seq: -1,
                limit: 10
            })
            .await
        ),
        "validation_failed"
    );
    assert_eq!(
        code(
            &raw.call(Request::Sync {
                channel_id: general,
                after_seq: 0,
                limit: 1_000
            })
            .await
        ),
        "validation_failed"
    );
    assert_eq!(
        code(
            &raw.call(Request::Sync {
                channel_id: Id(12345),
                after_seq: 0,
                limit: 10
            })
            .await
        ),
        "unknown_channel"
    );
    // Relays do not take pushes.
    assert_eq!(
        code(&raw.call(Request::Push { events: vec![] }).await),
        "unsupported"
    );

    // An oversized request is cut off by the codec before it is parsed.
    let huge = Envelope {
        content: "y".repeat(600 * 1024),
        ..Envelope::sign(&ana_key, general, "huge", "x", None, 1)
    };
    assert!(raw.call(Request::Submit { envelope: huge }).await.is_err());

    // A non-member and a banned member cannot post.
    let bob = TestNode::start("bob").await;
    let http_bob = concord_node::relay_http::RelayHttp::new(&relay.url);
    http_bob
        .login(bob.node.identity(), Some("bob"))
        .await
        .unwrap();
    let bob_key = bob.node.identity().device.clone();
    let mut raw_bob = RawClient::connect(&bob_key, &tcp_addr(&relay)).await;
    let env = Envelope::sign(
        &bob_key,
        general,
        "b-1",
        "let me in",
        None,
        1_700_000_000_000,
    );
    assert_eq!(
        code(
            &raw_bob
                .call(Request::Submit {
                    envelope: env.clone()
                })
                .await
        ),
        "missing_access"
    );
    assert_eq!(
        code(
            &raw_bob
                .call(Request::Sync {
                    channel_id: general,
                    after_seq: 0,
                    limit: 10
                })
                .await
        ),
        "missing_access"
    );
    let http_ana = concord_node::relay_http::RelayHttp::new(&relay.url);
    http_ana.login(ana.node.identity(), None).await.unwrap();
    let invite: serde_json::Value = http_ana
        .authed(
            ana.node.identity(),
            reqwest::Method::POST,
            &format!("/api/v1/guilds/{guild}/invites"),
            Some(json!({})),
        )
        .await
        .unwrap();
    let _: serde_json::Value = http_bob
        .authed(
            bob.node.identity(),
            reqwest::Method::POST,
            &format!(
                "/api/v1/invites/{}/accept",
                invite["code"].as_str().unwrap()
            ),
            Some(json!({})),
        )
        .await
        .unwrap();
    assert!(matches!(
        raw_bob.call(Request::Submit { envelope: env }).await,
        Ok(Response::Ack { .. })
    ));
    let bob_id: Id = http_bob
        .authed::<serde_json::Value>(
            bob.node.identity(),
            reqwest::Method::GET,
            "/api/v1/users/@me",
            None,
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let _: serde_json::Value = http_ana
        .authed(
            ana.node.identity(),
            reqwest::Method::PUT,
            &format!("/api/v1/guilds/{guild}/bans/{bob_id}"),
            Some(json!({})),
        )
        .await
        .unwrap();
    let env = Envelope::sign(
        &bob_key,
        general,
        "b-2",
        "after the ban",
        None,
        1_700_000_000_000,
    );
    assert_eq!(
        code(&raw_bob.call(Request::Submit { envelope: env }).await),
        "missing_access"
    );

    // Nothing refused was stored: two messages (ana's and bob's first), and the relay serves
    // new connections.
    let events = relay
        .server()
        .app()
        .store
        .events(general, 0, 100)
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    let mut raw = RawClient::connect(&ana_key, &tcp_addr(&relay)).await;
    let sync = raw
        .call(Request::Sync {
            channel_id: general,
            after_seq: 0,
            limit: 10,
        })
        .await;
    assert!(
        matches!(sync, Ok(Response::Events { ref events }) if events.len() == 2),
        "{sync:?}"
    );
}

#[tokio::test]
async fn revoked_devices_are_disconnected_and_refused() {
    let relay = TestRelay::start().await;
    let ana = TestNode::start("ana").await;
    let (_guild, general, _code) = ana.create_guild(&relay, "lab").await;
    // A second device of ana's account, linked with her account key.
    let phone = SigningKey::from_bytes(&[7u8; 32]);
    let cert = concord_node::identity::certify(
        ana.node.identity(),
        &concord_proto::signed::public_key_string(&phone.verifying_key()),
        "phone",
    )
    .unwrap();
    let http = concord_node::relay_http::RelayHttp::new(&relay.url);
    http.login(ana.node.identity(), None).await.unwrap();
    let _: serde_json::Value = http
        .authed(
            ana.node.identity(),
            reqwest::Method::POST,
            "/api/v1/users/@me/devices",
            Some(json!({ "certificate": cert })),
        )
        .await
        .unwrap();
    let mut raw = RawClient::connect(&phone, &tcp_addr(&relay)).await;
    assert!(matches!(
        raw.call(Request::Hello {
            allow_direct: false
        })
        .await,
        Ok(Response::State { .. })
    ));
    let _: serde_json::Value = http
        .authed(
            ana.node.identity(),
            reqwest::Method::DELETE,
            &format!(
                "/api/v1/users/@me/devices/{}",
                concord_proto::signed::public_key_string(&phone.verifying_key())
            ),
            None,
        )
        .await
        .unwrap();
    let env = Envelope::sign(
        &phone,
        general,
        "p-1",
        "from a revoked phone",
        None,
        1_700_000_000_000,
    );
    let r = raw.call(Request::Submit { envelope: env }).await;
    assert!(r.is_err() || code(&r) == "device_revoked", "{r:?}");
}

/// A suspended account is refused over libp2p as over HTTP (`domain::access`): hello and
/// submit answer `account_suspended`, and nothing it submits is stored.
#[tokio::test]
async fn a_suspended_account_is_refused_over_libp2p() {
    let relay = TestRelay::start().await;
    let ana = TestNode::start("ana").await;
    let (_guild, general, invite) = ana.create_guild(&relay, "lab").await;
    let bob = TestNode::start("bob").await;
    bob.join(&relay, &invite).await;
    let bob_key = second_device(&bob, &relay, 11).await;
    let mut raw = RawClient::connect(&bob_key, &tcp_addr(&relay)).await;
    let before = Envelope::sign(&bob_key, general, "b-1", "before", None, 1_700_000_000_000);
    assert!(matches!(
        raw.call(Request::Submit { envelope: before }).await,
        Ok(Response::Ack { .. })
    ));

    // Ana becomes an instance admin (what `concord-relay admin grant` does) and suspends bob.
    let http = concord_node::relay_http::RelayHttp::new(&relay.url);
    let find = |name: &'static str| {
        let http = &http;
        let ana = &ana;
        async move {
            let found: serde_json::Value = http
                .authed(
                    ana.node.identity(),
                    reqwest::Method::GET,
                    &format!("/api/v1/admin/users?q={name}"),
                    None,
                )
                .await
                .unwrap();
            serde_json::from_value::<Id>(found[0]["id"].clone()).unwrap()
        }
    };
    let app = relay.server().app();
    let ana_id = ana
        .node
        .with_cache(|c| c.me().ok().flatten().map(|u| u.id))
        .expect("ana knows her id");
    assert!(app.store.set_instance_admin(ana_id, true).await.unwrap());
    let bob_id = find("bob").await;
    let _: serde_json::Value = http
        .authed(
            ana.node.identity(),
            reqwest::Method::POST,
            &format!("/api/v1/admin/users/{bob_id}/suspend"),
            None,
        )
        .await
        .unwrap_or(serde_json::Value::Null);

    // Bob's node is shut out (its push session closes); a new connection is refused too.
    let mut raw = RawClient::connect(&bob_key, &tcp_addr(&relay)).await;
    let after = Envelope::sign(&bob_key, general, "b-2", "after", None, 1_700_000_000_000);
    assert_eq!(
        code(&raw.call(Request::Submit { envelope: after }).await),
        "account_suspended"
    );
    assert_eq!(
        code(
            &raw.call(Request::Hello {
                allow_direct: false
            })
            .await
        ),
        "account_suspended"
    );
    let history: serde_json::Value = http
        .authed(
            ana.node.identity(),
            reqwest::Method::GET,
            &format!("/api/v1/channels/{general}/messages?limit=50"),
            None,
        )
        .await
        .unwrap();
    let contents: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["author"] == serde_json::json!(bob_id))
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(contents, ["before"], "{history}");
}

/// One message budget per account, whatever the transport: submits over libp2p spend the
/// budget HTTP sends spend, and past it both are refused with `rate_limited`.
#[tokio::test]
async fn the_message_budget_holds_over_libp2p_and_is_shared_with_http() {
    let relay = TestRelay::start_with(tempfile::tempdir().unwrap(), |c| {
        c.rate_limits.message_send.requests = 5;
        c.rate_limits.message_send.window_secs = 60;
    })
    .await;
    let ana = TestNode::start("ana").await;
    let (_guild, general, _code) = ana.create_guild(&relay, "lab").await;
    let key = second_device(&ana, &relay, 12).await;
    let mut raw = RawClient::connect(&key, &tcp_addr(&relay)).await;
    let mut codes = Vec::new();
    for i in 0..8 {
        let env = Envelope::sign(
            &key,
            general,
            &format!("burst-{i}"),
            "spam",
            None,
            1_700_000_000_000,
        );
        let r = raw.call(Request::Submit { envelope: env }).await;
        codes.push(match r {
            Ok(Response::Ack { .. }) => "ack".to_owned(),
            other => code(&other),
        });
    }
    assert_eq!(
        codes,
        [
            "ack",
            "ack",
            "ack",
            "ack",
            "ack",
            "rate_limited",
            "rate_limited",
            "rate_limited"
        ]
    );
    // The same account over HTTP finds the budget spent.
    let http = concord_node::relay_http::RelayHttp::new(&relay.url);
    let r: Result<serde_json::Value, _> = http
        .authed(
            ana.node.identity(),
            reqwest::Method::POST,
            &format!("/api/v1/channels/{general}/messages"),
            Some(json!({ "content": "over http", "nonce": "http-1" })),
        )
        .await;
    let err = r.expect_err("the budget is shared");
    assert_eq!(err.code(), Some("rate_limited"), "{err:?}");
}

/// A node takes a direct DM envelope only from a device the relay certified for one of the
/// DM's participants: a stranger's key and a fellow member who is not in the DM are refused
/// `not_a_participant`, and nothing they sent is shown.
#[tokio::test]
async fn a_node_refuses_direct_dm_envelopes_from_non_participants() {
    let relay = TestRelay::start().await;
    let ana = TestNode::start("ana").await;
    let bob = TestNode::start("bob").await;
    let carl = TestNode::start("carl").await;
    let (_guild, _general, invite) = ana.create_guild(&relay, "lab").await;
    bob.join(&relay, &invite).await;
    carl.join(&relay, &invite).await;
    bob.wait_connected().await;
    let bob_id = bob
        .node
        .with_cache(|c| c.me().unwrap().map(|u| u.id))
        .expect("bob knows his id");
    let http = concord_node::relay_http::RelayHttp::new(&relay.url);
    http.login(ana.node.identity(), None).await.unwrap();
    let dm: serde_json::Value = http
        .authed(
            ana.node.identity(),
            reqwest::Method::POST,
            "/api/v1/users/@me/dms",
            Some(json!({ "recipient": bob_id })),
        )
        .await
        .unwrap();
    let dm: Id = serde_json::from_value(dm["id"].clone()).unwrap();
    concord_testkit::wait_for(Duration::from_secs(10), || {
        bob.node.with_cache(|c| c.channel(dm).unwrap().is_some())
    })
    .await;

    let bob_addr = format!(
        "{}/p2p/{}",
        bob.node
            .listen_addrs()
            .iter()
            .find(|a| a.to_string().contains("/tcp/"))
            .expect("bob listens on TCP"),
        bob.node.peer_id()
    );
    let stranger = SigningKey::from_bytes(&[21u8; 32]);
    let carls_phone = second_device(&carl, &relay, 22).await;
    for (who, key) in [("stranger", &stranger), ("carl", &carls_phone)] {
        let mut raw = RawClient::connect(key, &bob_addr).await;
        let env = Envelope::sign(
            key,
            dm,
            &format!("{who}-1"),
            &format!("from {who}"),
            None,
            1_700_000_000_000,
        );
        assert_eq!(
            code(&raw.call(Request::Direct { envelope: env }).await),
            "not_a_participant",
            "{who}"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let shown = bob.node.history(dm, 50).unwrap();
    assert!(shown.is_empty(), "{shown:?}");
}
