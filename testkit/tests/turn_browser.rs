//! Interop with Chromium's ICE: a WebRTC call forced to `iceTransportPolicy: "relay"`
//! connects through concord-turn over UDP, TCP and TLS, with the ephemeral credentials the
//! relay hands a logged-in user (`GET /api/v1/voice/ice-servers`); a wrong credential does not.

use std::time::Duration;

use concord_testkit::{TestNode, TestRelay, browser};
use concord_turn::{TurnConfig, TurnServer, config::TlsConfig};
use serde_json::{Value, json};

const SECRET: &str = "browser-secret";

async fn turn_server(dir: &std::path::Path) -> TurnServer {
    concord_turn::tls::install_crypto_provider();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    TurnServer::spawn(TurnConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tls: Some(TlsConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            cert: cert_path,
            key: key_path,
        }),
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        realm: "concord.test".into(),
        auth_secret: Some(SECRET.into()),
        // Both browser peers live on loopback: allow it explicitly (denied by default).
        allow_peers: vec!["127.0.0.0/8".parse().expect("net")],
        shutdown_grace_secs: 1,
        ..TurnConfig::default()
    })
    .await
    .expect("turn server starts")
}

/// The TURN entry of the relay's ice-servers answer for one URL.
fn turn_entry(answer: &Value, url: &str) -> Value {
    answer["ice_servers"]
        .as_array()
        .expect("ice_servers")
        .iter()
        .find(|s| {
            s["urls"]
                .as_array()
                .is_some_and(|u| u.iter().any(|u| u == url))
        })
        .map(|s| json!([{ "urls": url, "username": s["username"], "credential": s["credential"] }]))
        .unwrap_or_else(|| panic!("{url} not offered: {answer}"))
}

async fn call(servers: &Value, timeout_ms: u64) -> Value {
    browser::run(
        "tests/turn-relay-call.mjs",
        &[servers.to_string(), timeout_ms.to_string()],
        Duration::from_secs(90),
    )
    .await
}

#[tokio::test]
async fn chromium_relay_only_call_connects_through_concord_turn() {
    let certs = tempfile::tempdir().expect("temp dir");
    let turn = turn_server(certs.path()).await;
    let udp = format!("turn:127.0.0.1:{}?transport=udp", turn.udp_addr().port());
    let tcp = format!(
        "turn:127.0.0.1:{}?transport=tcp",
        turn.tcp_addr().expect("tcp").port()
    );
    let urls = vec![udp.clone(), tcp.clone()];
    let relay = TestRelay::start_with(tempfile::tempdir().expect("temp dir"), |c| {
        c.voice.turn_urls = urls;
        c.voice.turn_secret = Some(SECRET.into());
    })
    .await;
    let ana = TestNode::start("ana").await;
    let http = concord_node::relay_http::RelayHttp::new(&relay.url);
    http.login(ana.node.identity(), Some("ana"))
        .await
        .expect("login");
    let answer: Value = http
        .authed(
            ana.node.identity(),
            reqwest::Method::GET,
            "/api/v1/voice/ice-servers",
            None,
        )
        .await
        .expect("ice servers");

    for (url, protocol) in [(&udp, "udp"), (&tcp, "tcp")] {
        let before = turn.stats().relayed_packets;
        let result = call(&turn_entry(&answer, url), 20_000).await;
        assert_eq!(result["ok"], true, "{url}: {result}");
        assert_eq!(result["local"], "relay", "{url}: {result}");
        assert_eq!(result["relayProtocol"], protocol, "{url}: {result}");
        let after = turn.stats().relayed_packets;
        assert!(
            after[0] > before[0] && after[1] > before[1],
            "{url}: media crossed concord-turn both ways ({before:?} -> {after:?})"
        );
    }

    // A credential the server did not issue: Chromium gathers no relay candidate and the
    // call cannot connect; the server counts the failures.
    let mut forged = turn_entry(&answer, &udp);
    forged[0]["credential"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let failures_before: u64 = turn.stats().auth_failures.iter().sum();
    let result = call(&forged, 4_000).await;
    assert_eq!(result["ok"], false, "{result}");
    assert_eq!(result["candidates"]["a"], json!([]), "{result}");
    let failures_after: u64 = turn.stats().auth_failures.iter().sum();
    assert!(failures_after > failures_before, "auth failures counted");

    turn.shutdown().await;
    relay.stop().await;
}
