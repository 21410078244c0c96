//! Nodes enter the DHT through concord-bootstrap: servers from their own config and from the
//! relay's `/.well-known/concord`; relay-only nodes never contact one.

use std::sync::atomic::Ordering;
use std::time::Duration;

use concord_bootstrap::{Bootstrap, BootstrapConfig};
use concord_testkit::{TestNode, TestRelay, wait_for};

async fn bootstrap(dir: &std::path::Path) -> Bootstrap {
    Bootstrap::spawn(BootstrapConfig {
        data_dir: dir.to_owned(),
        p2p_listen: vec![
            "/ip4/127.0.0.1/tcp/0".into(),
            "/ip4/127.0.0.1/udp/0/quic-v1".into(),
        ],
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        autonat_only_global_ips: false,
        ..BootstrapConfig::default()
    })
    .await
    .expect("bootstrap starts")
}

fn find_node_queries(b: &Bootstrap) -> u64 {
    b.stats().queries[0].load(Ordering::Relaxed)
}

#[tokio::test]
async fn nodes_use_configured_and_well_known_bootstrap_servers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let configured = bootstrap(&dir.path().join("a")).await;
    let advertised = bootstrap(&dir.path().join("b")).await;

    // A node started with --bootstrap looks itself up through the server at once.
    let addrs = configured.multiaddrs();
    let ana = TestNode::start_with("ana", |c| c.bootstrap = addrs).await;
    wait_for(Duration::from_secs(10), || {
        find_node_queries(&configured) >= 1
    })
    .await;
    assert!(
        find_node_queries(&configured) >= 1,
        "DHT bootstrap reached the server"
    );

    // The relay names its bootstrap servers; a node joining it enters the DHT there too.
    let advertised_addrs: Vec<String> = advertised
        .multiaddrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    let relay = TestRelay::start_with(tempfile::tempdir().expect("temp dir"), |c| {
        c.p2p.bootstrap_peers = advertised_addrs;
    })
    .await;
    let (_, _, code) = ana.create_guild(&relay, "lab").await;
    wait_for(Duration::from_secs(10), || {
        find_node_queries(&advertised) >= 1
    })
    .await;
    assert!(
        find_node_queries(&advertised) >= 1,
        "well-known bootstrap used"
    );

    // A relay-only node joins the same relay but never contacts a bootstrap server.
    let before = advertised.stats().connections.load(Ordering::Relaxed);
    let bob = TestNode::start_with("bob", |c| c.relay_only = true).await;
    bob.join(&relay, &code).await;
    bob.wait_connected().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        advertised.stats().connections.load(Ordering::Relaxed),
        before,
        "relay-only nodes keep their IP away from bootstrap servers"
    );

    relay.stop().await;
    configured.shutdown().await;
    advertised.shutdown().await;
}
