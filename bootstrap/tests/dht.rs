//! concord-bootstrap over real libp2p connections on loopback: a peer finds another's
//! addresses by PeerId through the DHT and dials it; relay reservations work when enabled;
//! `/healthz` and `/metrics` answer; the identity survives a restart.

use std::time::Duration;

use concord_bootstrap::{Bootstrap, BootstrapConfig};
use futures_util::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad, noise, relay, tcp, yamux};

fn config(dir: &std::path::Path) -> BootstrapConfig {
    BootstrapConfig {
        data_dir: dir.to_owned(),
        p2p_listen: vec![
            "/ip4/127.0.0.1/tcp/0".into(),
            "/ip4/127.0.0.1/udp/0/quic-v1".into(),
        ],
        http_listen: "127.0.0.1:0".parse().unwrap(),
        autonat_only_global_ips: false,
        ..BootstrapConfig::default()
    }
}

/// A plain Kademlia peer (rust-libp2p's own behaviours): what any DHT client looks like.
#[derive(NetworkBehaviour)]
struct Peer {
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    relay_client: relay::client::Behaviour,
}

fn peer(mode: kad::Mode) -> Swarm<Peer> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|kp, relay_client| {
            let id = kp.public().to_peer_id();
            let mut kad = kad::Behaviour::new(id, kad::store::MemoryStore::new(id));
            kad.set_mode(Some(mode));
            Peer {
                identify: identify::Behaviour::new(identify::Config::new(
                    "/concord/id/1".into(),
                    kp.public(),
                )),
                kad,
                relay_client,
            }
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    swarm
}

async fn listen_addr(swarm: &mut Swarm<Peer>) -> Multiaddr {
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

fn tcp_addr(b: &Bootstrap) -> Multiaddr {
    b.multiaddrs()
        .into_iter()
        .find(|a| a.to_string().contains("/tcp/"))
        .expect("a TCP address")
}

/// Drives both swarms until `done` says so, or panics after 15 s.
async fn drive<T>(
    a: &mut Swarm<Peer>,
    b: &mut Swarm<Peer>,
    mut done: impl FnMut(&mut Swarm<Peer>, SwarmEvent<PeerEvent>) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        tokio::select! {
            e = a.select_next_some() => if let Some(t) = done(a, e) { return t },
            _ = b.select_next_some() => {}
            _ = tokio::time::sleep_until(deadline) => panic!("timed out"),
        }
    }
}

#[tokio::test]
async fn a_peer_is_found_by_id_through_the_dht_and_dialed() {
    let dir = tempfile::tempdir().unwrap();
    let boot = Bootstrap::spawn(config(dir.path())).await.expect("starts");
    let boot_addr = tcp_addr(&boot);

    // B serves the DHT and announces itself to the bootstrap.
    let mut b = peer(kad::Mode::Server);
    let b_addr = listen_addr(&mut b).await;
    let b_id = *b.local_peer_id();
    b.dial(boot_addr.clone()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while boot
        .stats()
        .routing_peers
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        tokio::select! {
            _ = b.select_next_some() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = tokio::time::sleep_until(deadline) => panic!("B never entered the routing table"),
        }
    }

    // A knows only the bootstrap and B's PeerId.
    let mut a = peer(kad::Mode::Client);
    let _ = listen_addr(&mut a).await;
    a.behaviour_mut()
        .kad
        .add_address(&boot.peer_id(), boot_addr.clone());
    a.behaviour_mut().kad.get_closest_peers(b_id);
    let found: Vec<Multiaddr> = drive(&mut a, &mut b, |_, e| match e {
        SwarmEvent::Behaviour(PeerEvent::Kad(kad::Event::OutboundQueryProgressed {
            result: kad::QueryResult::GetClosestPeers(Ok(ok)),
            ..
        })) => Some(
            ok.peers
                .into_iter()
                .find(|p| p.peer_id == b_id)
                .map(|p| p.addrs)
                .unwrap_or_default(),
        ),
        SwarmEvent::Behaviour(PeerEvent::Kad(kad::Event::OutboundQueryProgressed {
            result: kad::QueryResult::GetClosestPeers(Err(e)),
            ..
        })) => panic!("lookup failed: {e:?}"),
        _ => None,
    })
    .await;
    let with_id = b_addr.clone().with_p2p(b_id).unwrap();
    assert!(
        found.iter().any(|a| *a == b_addr || *a == with_id),
        "B's address {b_addr} in {found:?}"
    );

    a.dial(with_id).unwrap();
    let connected: PeerId = drive(&mut a, &mut b, |_, e| match e {
        SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == b_id => Some(peer_id),
        _ => None,
    })
    .await;
    assert_eq!(connected, b_id);
    // A in client mode never enters the routing table; the lookup was counted.
    assert_eq!(
        boot.stats()
            .routing_peers
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(boot.stats().queries_total() >= 1);
    boot.shutdown().await;
}

#[tokio::test]
async fn relay_reservations_when_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.relay.enabled = true;
    let boot = Bootstrap::spawn(c).await.expect("starts");
    let mut a = peer(kad::Mode::Client);
    let mut b = peer(kad::Mode::Client);
    let circuit = tcp_addr(&boot).with(libp2p::multiaddr::Protocol::P2pCircuit);
    a.listen_on(circuit).unwrap();
    drive(&mut a, &mut b, |_, e| match e {
        SwarmEvent::Behaviour(PeerEvent::RelayClient(
            relay::client::Event::ReservationReqAccepted { .. },
        )) => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(
        boot.stats().reservations[0].load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    boot.shutdown().await;
}

#[tokio::test]
async fn health_metrics_and_a_stable_identity() {
    let dir = tempfile::tempdir().unwrap();
    let boot = Bootstrap::spawn(config(dir.path())).await.expect("starts");
    assert_eq!(boot.multiaddrs().len(), 2, "TCP and QUIC");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let base = format!("http://{}", boot.http_addr());
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (name, _, _) in concord_bootstrap::metrics::METRICS {
        assert!(metrics.contains(name), "{name}");
    }
    let id = boot.peer_id();
    boot.shutdown().await;
    let again = Bootstrap::spawn(config(dir.path()))
        .await
        .expect("restarts");
    assert_eq!(again.peer_id(), id, "bootstrap.key is reused");
    again.shutdown().await;
    // Without relay, reservations are refused (no circuit relay protocol at all).
    let bad = BootstrapConfig {
        p2p_listen: vec!["/ip4/127.0.0.1/tcp/nope".into()],
        ..config(dir.path())
    };
    assert!(Bootstrap::spawn(bad).await.is_err());
}
