//! Transport parity: a message send through HTTP and through libp2p (a node's `submit`) meets
//! the same rules (`messaging::send`), so each caller state gets the same answer on both:
//! allowed, no send permission, no view, slow mode, timed out, kicked, banned, over the
//! message budget. The gateway carries no sends. Every state is a row; the table printed
//! shows both transports' answers.

use std::time::Duration;

use concord_net::protocol::{Request, Response};
use concord_node::relay_http::RelayHttp;
use concord_proto::signed::Envelope;
use concord_proto::{Id, Permissions};
use concord_testkit::raw::{RawClient, code, second_device, tcp_addr};
use concord_testkit::{TestNode, TestRelay};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

/// Bob's two ways in: his node's identity over HTTP, a second device of his over libp2p.
struct Bob<'a> {
    node: &'a TestNode,
    http: RelayHttp,
    raw: RawClient,
    phone: SigningKey,
    channel: Id,
    n: usize,
}

impl Bob<'_> {
    async fn over_http(&mut self) -> String {
        self.n += 1;
        let r: Result<Value, _> = self
            .http
            .authed(
                self.node.node.identity(),
                reqwest::Method::POST,
                &format!("/api/v1/channels/{}/messages", self.channel),
                Some(json!({ "content": "hi", "nonce": format!("h{}", self.n) })),
            )
            .await;
        match r {
            Ok(_) => "ok".into(),
            Err(e) => e.code().unwrap_or("?").to_owned(),
        }
    }

    async fn over_libp2p(&mut self) -> String {
        self.n += 1;
        let env = Envelope::sign(
            &self.phone,
            self.channel,
            &format!("p{}", self.n),
            "hi",
            None,
            1_700_000_000_000,
        );
        match self.raw.call(Request::Submit { envelope: env }).await {
            Ok(Response::Ack { .. }) => "ok".into(),
            other => code(&other),
        }
    }
}

/// Ana's moderation calls.
async fn ana_does(
    http: &RelayHttp,
    ana: &TestNode,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) {
    let _: Value = http
        .authed(ana.node.identity(), method.clone(), path, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
}

#[tokio::test]
async fn a_send_meets_the_same_rules_over_http_and_libp2p() {
    let relay = TestRelay::start_with(tempfile::tempdir().unwrap(), |c| {
        c.rate_limits.message_send.requests = 30;
        c.rate_limits.message_send.window_secs = 3;
    })
    .await;
    let ana = TestNode::start("ana").await;
    let bob_node = TestNode::start("bob").await;
    let (guild, general, invite) = ana.create_guild(&relay, "parity").await;
    bob_node.join(&relay, &invite).await;
    bob_node.wait_connected().await;
    let bob_id = bob_node
        .node
        .with_cache(|c| c.me().unwrap().map(|u| u.id))
        .expect("bob knows his id");
    let ana_http = RelayHttp::new(&relay.url);
    ana_http.login(ana.node.identity(), None).await.unwrap();
    let phone = second_device(&bob_node, &relay, 31).await;
    let raw = RawClient::connect(&phone, &tcp_addr(&relay)).await;
    let http = RelayHttp::new(&relay.url);
    http.login(bob_node.node.identity(), None).await.unwrap();
    let mut bob = Bob {
        node: &bob_node,
        http,
        raw,
        phone,
        channel: general,
        n: 0,
    };
    let overwrite = format!("/api/v1/channels/{general}/permissions/{bob_id}");
    let mut rows: Vec<(&str, String, String)> = Vec::new();

    rows.push(("member", bob.over_http().await, bob.over_libp2p().await));

    let deny = |p: Permissions| json!({ "kind": "member", "allow": 0, "deny": p });
    ana_does(
        &ana_http,
        &ana,
        reqwest::Method::PUT,
        &overwrite,
        Some(deny(Permissions::SEND_MESSAGES)),
    )
    .await;
    rows.push((
        "no send permission",
        bob.over_http().await,
        bob.over_libp2p().await,
    ));
    ana_does(
        &ana_http,
        &ana,
        reqwest::Method::PUT,
        &overwrite,
        Some(deny(Permissions::VIEW_CHANNEL)),
    )
    .await;
    rows.push(("no view", bob.over_http().await, bob.over_libp2p().await));
    ana_does(&ana_http, &ana, reqwest::Method::DELETE, &overwrite, None).await;

    // Slow mode: bob sent in the last 600 s (the first row).
    let channel = format!("/api/v1/channels/{general}");
    ana_does(
        &ana_http,
        &ana,
        reqwest::Method::PATCH,
        &channel,
        Some(json!({ "slowmode_secs": 600 })),
    )
    .await;
    rows.push(("slow mode", bob.over_http().await, bob.over_libp2p().await));
    ana_does(
        &ana_http,
        &ana,
        reqwest::Method::PATCH,
        &channel,
        Some(json!({ "slowmode_secs": 0 })),
    )
    .await;

    let timeout = format!("/api/v1/guilds/{guild}/members/{bob_id}/timeout");
    ana_does(
        &ana_http,
        &ana,
        reqwest::Method::PUT,
        &timeout,
        Some(json!({ "duration_secs": 600 })),
    )
    .await;
    rows.push(("timed out", bob.over_http().await, bob.over_libp2p().await));
    ana_does(&ana_http, &ana, reqwest::Method::DELETE, &timeout, None).await;

    // Over the budget: HTTP spends it to the end, then both are refused.
    let mut spent = 0;
    while bob.over_http().await == "ok" {
        spent += 1;
        assert!(spent < 40, "the budget never ran out");
    }
    rows.push((
        "over the message budget",
        bob.over_http().await,
        bob.over_libp2p().await,
    ));
    // The budget comes back with the next window; the rows below see the rules only.
    tokio::time::sleep(Duration::from_millis(3_500)).await;

    ana_does(
        &ana_http,
        &ana,
        reqwest::Method::DELETE,
        &format!("/api/v1/guilds/{guild}/members/{bob_id}"),
        None,
    )
    .await;
    rows.push(("kicked", bob.over_http().await, bob.over_libp2p().await));
    ana_does(
        &ana_http,
        &ana,
        reqwest::Method::PUT,
        &format!("/api/v1/guilds/{guild}/bans/{bob_id}"),
        Some(json!({})),
    )
    .await;
    rows.push(("banned", bob.over_http().await, bob.over_libp2p().await));

    let table: Vec<String> = rows
        .iter()
        .map(|(state, h, p)| format!("{state:<24} http {h:<22} libp2p {p}"))
        .collect();
    eprintln!("{}", table.join("\n"));
    for (state, h, p) in &rows {
        assert_eq!(
            h,
            p,
            "{state}: HTTP and libp2p disagree\n{}",
            table.join("\n")
        );
    }
    assert_eq!(rows[0].1, "ok");
    assert!(
        rows[1..].iter().all(|(_, h, _)| h != "ok"),
        "{}",
        table.join("\n")
    );
    assert!(
        rows.iter().filter(|(_, h, _)| h == "rate_limited").count() == 1,
        "each row shows its own rule\n{}",
        table.join("\n")
    );
}
