//! `/healthz` answers, and a session moves every metric in `concord_turn::metrics::METRICS`
//! (except `concord_turn_slow_clients_total`, which `tests/turn.rs`
//! `slow_tcp_client_is_disconnected` moves and scrapes).

mod common;

use std::time::Duration;

use common::*;

async fn scrape(s: &TestServer) -> String {
    reqwest::get(format!("http://{}/metrics", s.http_addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The largest value among the samples of a metric.
fn max_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(f64::max)
}

#[tokio::test]
async fn healthz_and_every_metric_moves() {
    let s = start(|c| {
        c.limits.user_quota = 1;
        c.limits.max_connections = 1;
    })
    .await;
    let health = reqwest::get(format!("http://{}/healthz", s.http_addr()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // A relayed session over UDP: binding, challenge, allocation, permission, data both ways.
    let mut client = TurnClient::new(Link::open(&s, Kind::Udp).await, "ana", "pw").await;
    client.binding().await;
    let relay = client.allocate().await.unwrap();
    let peer = Peer::new().await;
    client.create_permission(peer.addr).await.unwrap();
    client.send_to(peer.addr, b"to peer").await;
    peer.recv(wait()).await.unwrap();
    peer.socket.send_to(b"to client", relay).await.unwrap();
    client.recv_data(wait()).await.unwrap();
    let text = scrape(&s).await;
    assert_eq!(max_value(&text, "concord_turn_allocations"), Some(1.0));

    // Failures: wrong password, quota, denied peer, garbage, data without an allocation.
    let mut wrong = TurnClient::new(Link::open(&s, Kind::Udp).await, "bob", "nope").await;
    assert!(wrong.allocate().await.is_err());
    let mut second = TurnClient::new(Link::open(&s, Kind::Udp).await, "ana", "pw").await;
    assert!(second.allocate().await.unwrap_err().contains("486"));
    assert!(
        client
            .create_permission("10.0.0.1:5000".parse().unwrap())
            .await
            .is_err()
    );
    let mut junk = Link::open(&s, Kind::Udp).await;
    junk.send(&[0xff; 40]).await;
    junk.send(&[0x40, 0x00, 0x00, 0x01, 1, 0, 0, 0]).await;

    // Connections: one TCP client is the cap, the next is refused.
    let tcp = Link::open(&s, Kind::Tcp).await;
    assert!(eventually(wait(), || s.connection_count() == 1).await);
    let mut refused = Link::open(&s, Kind::Tcp).await;
    assert!(refused.closed_by_server(wait()).await);
    let text = scrape(&s).await;
    assert_eq!(max_value(&text, "concord_turn_connections"), Some(1.0));
    drop(tcp);

    // The allocation ends.
    client.close().await;
    assert!(eventually(wait(), || s.allocation_count() == 0).await);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let text = scrape(&s).await;
    for (name, _) in concord_turn::metrics::METRICS {
        if *name == "concord_turn_slow_clients_total" {
            continue;
        }
        let value = max_value(&text, name);
        assert!(value.is_some(), "{name} is missing from /metrics:\n{text}");
        if name.ends_with("_total") {
            assert!(value.unwrap() > 0.0, "{name} did not move:\n{text}");
        }
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no help"
        );
    }
    for needle in [
        "concord_turn_allocations_failed_total{reason=\"quota\"} 1",
        "concord_turn_allocations_failed_total{reason=\"unauthorized\"} 1",
        "concord_turn_auth_failures_total{reason=\"bad_integrity\"} 1",
        "concord_turn_peers_denied_total{reason=\"private\"} 1",
        "concord_turn_allocations_closed_total{reason=\"deleted\"} 1",
        "concord_turn_relayed_bytes_total{direction=\"to_peer\"} 7",
        "concord_turn_relayed_bytes_total{direction=\"to_client\"} 9",
        "concord_turn_dropped_packets_total{reason=\"no_allocation\"} 1",
        "concord_turn_bad_messages_total{reason=\"not_stun\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
    assert_eq!(max_value(&text, "concord_turn_allocations"), Some(0.0));
    s.server.shutdown().await;
}
