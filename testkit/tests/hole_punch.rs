//! A node behind its relay: it holds a circuit relay reservation at the relay, a member
//! reaches it through the relay, and DCUtR upgrades the relayed connection to a direct one
//! (on loopback the "hole punch" always succeeds; the NAT lab covers real NATs).

use std::time::Duration;

use concord_testkit::{TestNode, TestRelay, wait_for};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

#[tokio::test]
async fn relayed_connection_is_upgraded_by_dcutr() {
    let relay = TestRelay::start().await;
    let ana = TestNode::start("ana").await;
    // Bob listens on QUIC only: hole punching needs the dialing socket to be the listening one.
    let bob = TestNode::start_with("bob", |c| {
        c.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr")];
    })
    .await;
    // Separate guilds: the relay hands neither the other's direct addresses, so the only way
    // between them is through the relay.
    ana.create_guild(&relay, "ana's").await;
    bob.create_guild(&relay, "bob's").await;
    ana.wait_connected().await;
    bob.wait_connected().await;

    wait_for(Duration::from_secs(10), || bob.node.has_relay_reservation()).await;
    assert!(
        bob.node.has_relay_reservation(),
        "bob reserved a slot at the relay"
    );

    let relay_quic: Multiaddr = relay
        .server()
        .p2p_addrs()
        .iter()
        .filter_map(|a| a.parse::<Multiaddr>().ok())
        .find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)))
        .expect("relay QUIC address");
    let circuit = relay_quic
        .with(Protocol::P2pCircuit)
        .with(Protocol::P2p(bob.node.peer_id()));
    ana.node.dial(circuit).await;

    let bob_id = bob.node.peer_id().to_string();
    let kinds = |n: &TestNode| -> Vec<&'static str> {
        n.node
            .connections()
            .into_iter()
            .filter(|c| c.peer_id == bob_id)
            .map(|c| c.kind)
            .collect()
    };
    let mut seen = Vec::new();
    wait_for(Duration::from_secs(15), || {
        for k in kinds(&ana) {
            if !seen.contains(&k) {
                seen.push(k);
            }
        }
        seen.contains(&"hole_punched")
    })
    .await;
    // A hole-punched connection only exists after a relayed one (DCUtR runs over it); on
    // loopback the punch is so quick that a poll may never see the relayed one.
    assert!(
        seen.contains(&"hole_punched"),
        "DCUtR made it direct: {seen:?}"
    );
    // The direct connection replaces the relayed one for every protocol.
    wait_for(Duration::from_secs(10), || {
        !kinds(&ana).contains(&"relayed")
    })
    .await;
    let now = kinds(&ana);
    assert!(
        now.contains(&"hole_punched") && !now.contains(&"relayed"),
        "only the direct connection remains: {now:?}"
    );
    relay.stop().await;
}
