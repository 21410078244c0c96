//! Set-ups shared by the voice tests (mesh between nodes, browsers on the SFU).

use concord_testkit::TestRelay;

const TURN_SECRET: &str = "voice-test-secret";

/// concord-turn on loopback (loopback and private peers allowed: every participant lives
/// on this machine).
pub async fn turn_server() -> concord_turn::TurnServer {
    concord_turn::TurnServer::spawn(concord_turn::TurnConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        realm: "concord.test".into(),
        auth_secret: Some(TURN_SECRET.into()),
        // The relay's SFU gathers on every interface, so its candidates can be this
        // machine's private addresses too.
        allow_peers: [
            "127.0.0.0/8",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
        ]
        .iter()
        .map(|n| n.parse().expect("net"))
        .collect(),
        shutdown_grace_secs: 1,
        ..concord_turn::TurnConfig::default()
    })
    .await
    .expect("turn server starts")
}

/// A relay whose ice-servers answer sends clients to TURN at `addr` (the server itself, or
/// a shim in front of it) with ephemeral credentials.
pub async fn relay_with_turn(addr: std::net::SocketAddr) -> TestRelay {
    TestRelay::start_with(tempfile::tempdir().expect("temp dir"), |c| {
        c.voice.turn_urls = vec![format!("turn:{addr}?transport=udp")];
        c.voice.turn_secret = Some(TURN_SECRET.into());
    })
    .await
}
