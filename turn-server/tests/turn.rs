//! TURN with a real client (webrtc-rs `rtc-turn`) over UDP, TCP and TLS on loopback:
//! allocate, permission, send, channel bind, refresh, expiry, credentials, quotas, policy.

mod common;

use std::time::Duration;

use common::*;
use concord_turn::core::{AllocFailure, BadMessage, DropReason, Transport};
use concord_turn::rest_credentials;
use rtc_stun::message::*;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The whole path over one transport: STUN binding, allocate, permission, Send indication,
/// channel binding and ChannelData both ways, refresh, delete.
async fn full_flow(kind: Kind) {
    let s = start(|_| {}).await;
    let link = Link::open(&s, kind).await;
    let local = link.local;
    let mut client = TurnClient::new(link, "ana", "pw").await;
    assert_eq!(client.binding().await, local, "{kind:?}: reflexive address");

    let relay = client.allocate().await.expect("allocation");
    assert_eq!(relay.ip(), s.relay_ip());
    assert!((20000..=29999).contains(&relay.port()), "{relay}");
    assert_eq!(s.allocation_count(), 1);

    let peer = Peer::new().await;
    client.create_permission(peer.addr).await.unwrap();
    // First send: a Send indication (and a ChannelBind request behind it).
    client.send_to(peer.addr, b"first").await;
    let (from, data) = peer
        .recv(wait())
        .await
        .expect("peer gets the first datagram");
    assert_eq!((from, data.as_slice()), (relay, &b"first"[..]));
    client.settle(Duration::from_millis(300)).await;
    // Second send: ChannelData on the bound channel.
    client.send_to(peer.addr, b"second").await;
    let (_, data) = peer
        .recv(wait())
        .await
        .expect("peer gets the second datagram");
    assert_eq!(data, b"second");

    // Peer to client: ChannelData on the channel (any size, padded over streams).
    for len in [1usize, 5, 1200] {
        let payload = vec![len as u8; len];
        peer.socket.send_to(&payload, relay).await.unwrap();
        let (from, got, channel) = client.recv_data(wait()).await.expect("data back");
        assert_eq!(from, peer.addr);
        assert_eq!(got, payload, "{kind:?} {len}");
        assert!(channel.is_some(), "bound peers answer over the channel");
    }
    // A port without a channel arrives as a Data indication (same IP: permitted).
    let other = Peer::new().await;
    other.socket.send_to(b"data-ind", relay).await.unwrap();
    let (from, got, channel) = client.recv_data(wait()).await.expect("data indication");
    assert_eq!(
        (from, got.as_slice(), channel),
        (other.addr, &b"data-ind"[..], None)
    );

    client.refresh().await;
    assert_eq!(s.allocation_count(), 1);
    let stats = s.stats();
    let transport = match kind {
        Kind::Udp => Transport::Udp,
        Kind::Tcp => Transport::Tcp,
        Kind::Tls => Transport::Tls,
    };
    assert_eq!(stats.created(transport), 1);
    assert!(stats.relayed_packets.iter().all(|n| *n >= 2), "{stats:?}");

    // Refresh with lifetime 0 deletes the allocation and its relay.
    client.close().await;
    assert!(eventually(wait(), || s.allocation_count() == 0).await);
    peer.socket.send_to(b"gone", relay).await.unwrap();
    assert!(client.recv_data(Duration::from_millis(300)).await.is_none());
    s.server.shutdown().await;
}

#[tokio::test]
async fn full_flow_over_udp() {
    full_flow(Kind::Udp).await;
}

#[tokio::test]
async fn full_flow_over_tcp() {
    full_flow(Kind::Tcp).await;
}

#[tokio::test]
async fn full_flow_over_tls() {
    full_flow(Kind::Tls).await;
}

#[tokio::test]
async fn static_and_ephemeral_credentials() {
    let s = start(|_| {}).await;
    for kind in ALL_KINDS {
        // Static user with the wrong password: 401.
        let mut wrong = TurnClient::new(Link::open(&s, kind).await, "ana", "nope").await;
        let err = wrong.allocate().await.unwrap_err();
        assert!(err.contains("401"), "{kind:?}: {err}");
        // REST credentials from the shared secret work.
        let (user, pass) = rest_credentials(SECRET, "user-42", 600, unix_now());
        let mut rest = TurnClient::new(Link::open(&s, kind).await, &user, &pass).await;
        rest.allocate()
            .await
            .expect("ephemeral credentials allocate");
        // Expired ones are refused with 401.
        let (user, pass) = rest_credentials(SECRET, "user-42", 0, unix_now() - 10);
        let mut expired = TurnClient::new(Link::open(&s, kind).await, &user, &pass).await;
        let err = expired.allocate().await.unwrap_err();
        assert!(err.contains("401"), "{kind:?}: {err}");
        // A password from another secret too.
        let (user, pass) = rest_credentials("other-secret", "user-42", 600, unix_now());
        let mut forged = TurnClient::new(Link::open(&s, kind).await, &user, &pass).await;
        assert!(forged.allocate().await.unwrap_err().contains("401"));
    }
    let stats = s.stats();
    assert_eq!(
        stats.auth_failed(concord_turn::auth::AuthFailure::Expired),
        3
    );
    assert_eq!(
        stats.auth_failed(concord_turn::auth::AuthFailure::BadIntegrity),
        6
    );
    // One REST allocation per transport (those on TCP and TLS ended with their connections).
    assert_eq!(stats.allocations_created.iter().sum::<u64>(), 3);
    s.server.shutdown().await;
}

#[tokio::test]
async fn error_codes_over_the_wire() {
    let s = start(|c| c.limits.user_quota = 1).await;
    for kind in ALL_KINDS {
        let mut raw = RawClient::new(Link::open(&s, kind).await, "bob", "pw2");
        // No credentials: 401 with REALM and NONCE.
        let m = raw.unsigned(METHOD_ALLOCATE, vec![udp_transport()]).await;
        assert_eq!(error_code(&m), Some(401));
        let realm =
            rtc_stun::textattrs::TextAttribute::get_from_as(&m, rtc_stun::attributes::ATTR_REALM)
                .unwrap();
        assert_eq!(realm.text, REALM);
        assert!(raw.nonce.is_some());

        // Unknown comprehension-required attribute: 420 listing it.
        let mut m = build(METHOD_ALLOCATE, CLASS_REQUEST, vec![udp_transport()]);
        m.add(rtc_stun::attributes::AttrType(0x7F01), b"what");
        let reply = raw.exchange(&m.raw, m.transaction_id).await.unwrap();
        assert_eq!(error_code(&reply), Some(420), "{kind:?}");
        let mut unknown = rtc_stun::uattrs::UnknownAttributes(Vec::new());
        unknown.get_from(&reply).unwrap();
        assert_eq!(unknown.0, vec![rtc_stun::attributes::AttrType(0x7F01)]);

        // A nonce this server never issued: 438 with a fresh one.
        raw.nonce = Some("1.00000000000000000000".into());
        let m = raw.signed(METHOD_ALLOCATE, vec![udp_transport()]).await;
        assert_eq!(error_code(&m), Some(438), "{kind:?}");
        assert_ne!(raw.nonce.as_deref(), Some("1.00000000000000000000"));

        // Wrong password: 401.
        raw.password = "nope".into();
        let m = raw.signed(METHOD_ALLOCATE, vec![udp_transport()]).await;
        assert_eq!(error_code(&m), Some(401));
        raw.password = "pw2".into();

        // Refresh without an allocation: 437.
        let m = raw.signed(METHOD_REFRESH, vec![]).await;
        assert_eq!(error_code(&m), Some(437));
    }
    // Quota of one allocation per user: the second gets 486.
    let mut first = TurnClient::new(Link::open(&s, Kind::Udp).await, "bob", "pw2").await;
    first.allocate().await.unwrap();
    let mut second = TurnClient::new(Link::open(&s, Kind::Tcp).await, "bob", "pw2").await;
    let err = second.allocate().await.unwrap_err();
    assert!(err.contains("486"), "{err}");
    assert_eq!(s.stats().failed(AllocFailure::Quota), 1);
    // Another user is not affected.
    let mut other = TurnClient::new(Link::open(&s, Kind::Udp).await, "ana", "pw").await;
    other.allocate().await.unwrap();
    s.server.shutdown().await;
}

#[tokio::test]
async fn total_allocation_cap() {
    let s = start(|c| c.limits.max_allocations = 2).await;
    let mut a = TurnClient::new(Link::open(&s, Kind::Udp).await, "ana", "pw").await;
    let mut b = TurnClient::new(Link::open(&s, Kind::Udp).await, "ana", "pw").await;
    let mut c = TurnClient::new(Link::open(&s, Kind::Udp).await, "bob", "pw2").await;
    a.allocate().await.unwrap();
    b.allocate().await.unwrap();
    let err = c.allocate().await.unwrap_err();
    assert!(err.contains("508"), "{err}");
    a.close().await;
    c.allocate().await.unwrap();
    s.server.shutdown().await;
}

#[tokio::test]
async fn denied_peers_are_refused_with_403() {
    // The default policy: no allow list.
    let s = start(|c| c.allow_peers.clear()).await;
    let mut raw = RawClient::new(Link::open(&s, Kind::Udp).await, "ana", "pw");
    let m = raw.signed(METHOD_ALLOCATE, vec![udp_transport()]).await;
    assert_eq!(error_code(&m), None);
    let udp = s.udp_addr();
    for peer in [
        "127.0.0.1:9".parse().unwrap(),
        "10.1.2.3:5000".parse().unwrap(),
        "192.168.0.1:5000".parse().unwrap(),
        "169.254.0.1:5000".parse().unwrap(),
        "224.0.0.251:5353".parse().unwrap(),
        udp,
    ] {
        let m = raw
            .signed(METHOD_CREATE_PERMISSION, vec![peer_attr(peer)])
            .await;
        assert_eq!(error_code(&m), Some(403), "{peer}");
        let m = raw
            .signed(
                METHOD_CHANNEL_BIND,
                vec![
                    Box::new(rtc_turn::proto::channum::ChannelNumber(0x4000)),
                    peer_attr(peer),
                ],
            )
            .await;
        assert_eq!(error_code(&m), Some(403), "{peer}");
    }
    assert!(s.stats().peers_denied.iter().sum::<u64>() >= 12);

    // Two clients relayed by this server still reach each other (relay ports are not
    // "own addresses"), though both relays are on loopback.
    let mut a = TurnClient::new(Link::open(&s, Kind::Udp).await, "ana", "pw").await;
    let mut b = TurnClient::new(Link::open(&s, Kind::Tcp).await, "bob", "pw2").await;
    let ra = a.allocate().await.unwrap();
    let rb = b.allocate().await.unwrap();
    a.create_permission(rb).await.unwrap();
    b.create_permission(ra).await.unwrap();
    a.send_to(rb, b"relay to relay").await;
    let (from, data, _) = b.recv_data(wait()).await.expect("relayed twice");
    assert_eq!((from, data.as_slice()), (ra, &b"relay to relay"[..]));
    s.server.shutdown().await;
}

#[tokio::test]
async fn allocations_expire_unless_refreshed() {
    let s = start(|c| c.limits.max_lifetime_secs = 2).await;
    let mut client = TurnClient::new(Link::open(&s, Kind::Udp).await, "ana", "pw").await;
    let relay = client.allocate().await.unwrap();
    let peer = Peer::new().await;
    client.create_permission(peer.addr).await.unwrap();
    // Refreshed at 1.2 s, it lives to 3.2 s.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    client.refresh().await;
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(
        s.allocation_count(),
        1,
        "refreshed: still alive after 2.5 s"
    );
    peer.socket.send_to(b"alive", relay).await.unwrap();
    assert!(client.recv_data(wait()).await.is_some());
    // Not refreshed again: gone by about 3.2 s (+ the 1 s timer tick).
    assert!(eventually(Duration::from_secs(3), || s.allocation_count() == 0).await);
    assert_eq!(
        s.stats().closed(concord_turn::core::CloseReason::Expired),
        1
    );
    peer.socket.send_to(b"late", relay).await.unwrap();
    assert!(client.recv_data(Duration::from_millis(300)).await.is_none());
    s.server.shutdown().await;
}

#[tokio::test]
async fn stale_nonce_is_retried_by_the_client() {
    let s = start(|c| c.limits.nonce_ttl_secs = 1).await;
    let mut client = TurnClient::new(Link::open(&s, Kind::Tcp).await, "ana", "pw").await;
    client.allocate().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let peer = Peer::new().await;
    // The client gets 438, takes the new nonce, and succeeds on the retry.
    let err = client.create_permission(peer.addr).await.unwrap_err();
    assert!(err.contains("try again") || err.contains("438"), "{err}");
    client.create_permission(peer.addr).await.unwrap();
    assert_eq!(
        s.stats()
            .auth_failed(concord_turn::auth::AuthFailure::StaleNonce),
        1
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn malformed_input_never_crashes_and_is_counted() {
    let s = start(|_| {}).await;
    let mut udp = Link::open(&s, Kind::Udp).await;
    let binding = build(METHOD_BINDING, CLASS_REQUEST, vec![]);
    let mut truncated = binding.raw.clone();
    truncated[3] = 8; // claims an attribute that is not there
    let mut bad_cookie = binding.raw.clone();
    bad_cookie[5] ^= 0xff;
    for junk in [
        vec![],
        vec![0u8; 3],
        vec![0xffu8; 100],
        binding.raw[..12].to_vec(),
        truncated,
        bad_cookie,
        vec![0x40, 0x00, 0x10, 0x00, 1, 2, 3],
    ] {
        udp.send(&junk).await;
    }
    // Still answering.
    let mut raw = RawClient::new(udp, "ana", "pw");
    let m = raw.unsigned(METHOD_BINDING, vec![]).await;
    assert_eq!(m.typ, BINDING_SUCCESS);
    let stats = s.stats();
    assert!(stats.bad(BadMessage::TooShort) >= 2, "{stats:?}");
    assert!(stats.bad(BadMessage::NotStun) >= 2, "{stats:?}");
    assert!(stats.bad(BadMessage::BadLength) >= 1, "{stats:?}");
    assert!(stats.bad(BadMessage::BadChannelData) >= 1, "{stats:?}");

    // Over TCP, a frame that cannot be delimited closes the connection.
    let mut tcp = Link::open(&s, Kind::Tcp).await;
    tcp.send(&[0xc0, 0, 0, 4, 1, 2, 3, 4]).await;
    assert!(tcp.closed_by_server(wait()).await);
    // Truncated input followed by a close: nothing breaks.
    let mut tcp = Link::open(&s, Kind::Tcp).await;
    tcp.send(&binding.raw[..10]).await;
    drop(tcp);
    // ChannelData without an allocation: dropped and counted.
    let mut tcp = Link::open(&s, Kind::Tcp).await;
    tcp.send(&[0x40, 0x00, 0x00, 0x02, 9, 9, 0, 0]).await;
    let mut raw = RawClient::new(tcp, "ana", "pw");
    let m = raw.unsigned(METHOD_BINDING, vec![]).await;
    assert_eq!(m.typ, BINDING_SUCCESS);
    assert!(s.stats().drops(DropReason::NoAllocation) >= 1);
    s.server.shutdown().await;
}

#[tokio::test]
async fn slow_tcp_client_is_disconnected() {
    let s = start(|c| {
        c.limits.stream_queue = 4;
        c.limits.bandwidth_bytes_per_sec = 0;
    })
    .await;
    // A client with a tiny receive buffer that stops reading.
    let link = Link::tcp_small_buffer(s.tcp_addr().unwrap()).await;
    let mut client = TurnClient::new(link, "ana", "pw").await;
    let relay = client.allocate().await.unwrap();
    let peer = Peer::new().await;
    client.create_permission(peer.addr).await.unwrap();
    assert_eq!(s.connection_count(), 1);
    // The client no longer reads; the peer keeps sending.
    let payload = vec![7u8; 1_200];
    let mut sent = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while s.connection_count() > 0 && std::time::Instant::now() < deadline && sent < 200_000 {
        for _ in 0..100 {
            let _ = peer.socket.send_to(&payload, relay).await;
            sent += 1;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        eventually(wait(), || s.connection_count() == 0).await,
        "a client that does not read is disconnected (sent {sent})"
    );
    eprintln!("disconnected after {sent} datagrams");
    let metrics = reqwest::get(format!("http://{}/metrics", s.http_addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("concord_turn_slow_clients_total"),
        "{metrics}"
    );
    assert!(eventually(wait(), || s.allocation_count() == 0).await);
    s.server.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_drains_allocations() {
    let s = start(|c| c.shutdown_grace_secs = 2).await;
    let TestServer { server, cert } = s;
    let mut client = TurnClient::new(Link::udp(server.udp_addr()).await, "ana", "pw").await;
    let _relay = client.allocate().await.unwrap();
    let peer = Peer::new().await;
    client.create_permission(peer.addr).await.unwrap();
    let udp = server.udp_addr();
    let tcp = server.tcp_addr().unwrap();
    let started = std::time::Instant::now();
    let shutdown = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New allocations are refused; new TCP connections are not accepted.
    let mut late = TurnClient::new(Link::udp(udp).await, "bob", "pw2").await;
    let err = late.allocate().await.unwrap_err();
    assert!(err.contains("508"), "{err}");
    let refused = match tokio::net::TcpStream::connect(tcp).await {
        Err(_) => true,
        Ok(mut s) => {
            use tokio::io::AsyncReadExt;
            let mut b = [0u8; 1];
            matches!(
                tokio::time::timeout(Duration::from_secs(1), s.read(&mut b)).await,
                Ok(Ok(0)) | Ok(Err(_)) | Err(_)
            )
        }
    };
    assert!(refused);
    // The existing allocation still relays.
    client.send_to(peer.addr, b"during drain").await;
    assert_eq!(peer.recv(wait()).await.unwrap().1, b"during drain");
    shutdown.await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1_900) && took < Duration::from_secs(8),
        "{took:?}"
    );
    drop(cert);
}
