//! The core driven with virtual time: no sockets, no clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc_stun::attributes::*;
use rtc_stun::error_code::ErrorCodeAttribute;
use rtc_stun::message::*;
use rtc_stun::textattrs::TextAttribute;
use rtc_stun::uattrs::UnknownAttributes;
use rtc_stun::xoraddr::XorMappedAddress;
use rtc_turn::proto::channum::ChannelNumber;
use rtc_turn::proto::data::Data;
use rtc_turn::proto::lifetime::Lifetime;
use rtc_turn::proto::peeraddr::PeerAddress;
use rtc_turn::proto::relayaddr::RelayedAddress;
use rtc_turn::proto::reqtrans::RequestedTransport;

use super::*;
use crate::auth::{long_term_key, rest_credentials};
use crate::policy::DenyReason;

const REALM: &str = "test.realm";
const UNIX0: u64 = 1_700_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn config() -> CoreConfig {
    CoreConfig {
        credentials: Credentials::new(REALM, [("ana", "pw"), ("bob", "pw2")], Some("s3cret")),
        policy: PeerPolicy {
            own_ips: vec!["192.0.2.10".parse().unwrap()],
            listeners: vec![addr("192.0.2.10:3478")],
            relay_ports: Some(49152..=65535),
            ..PeerPolicy::default()
        },
        limits: Limits {
            user_quota: 2,
            max_allocations: 3,
            ..Limits::default()
        },
        relay_family: Family::V4,
        software: "concord-turn".into(),
    }
}

struct Harness {
    core: TurnCore,
    now: Instant,
    next_port: u16,
}

/// A simulated client: its 5-tuple and credentials, the nonce it last saw.
#[derive(Clone)]
struct Client {
    tuple: FiveTuple,
    username: String,
    password: String,
    nonce: Option<String>,
}

fn tuple(transport: Transport, client: &str) -> FiveTuple {
    FiveTuple {
        transport,
        client: addr(client),
        server: addr("192.0.2.10:3478"),
    }
}

fn client(transport: Transport, at: &str, username: &str, password: &str) -> Client {
    Client {
        tuple: tuple(transport, at),
        username: username.into(),
        password: password.into(),
        nonce: None,
    }
}

fn build(method: Method, class: MessageClass, attrs: Vec<Box<dyn Setter>>) -> Message {
    let mut m = Message::new();
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(method, class)),
    ];
    setters.extend(attrs);
    m.build(&setters).unwrap();
    m
}

fn signed(c: &Client, method: Method, attrs: Vec<Box<dyn Setter>>) -> Vec<u8> {
    let mut all = attrs;
    all.push(Box::new(TextAttribute::new(
        ATTR_USERNAME,
        c.username.clone(),
    )));
    all.push(Box::new(TextAttribute::new(ATTR_REALM, REALM.into())));
    all.push(Box::new(TextAttribute::new(
        ATTR_NONCE,
        c.nonce.clone().unwrap_or_default(),
    )));
    let mut m = build(method, CLASS_REQUEST, all);
    wire::add_integrity(&mut m, &long_term_key(&c.username, REALM, &c.password));
    wire::add_fingerprint(&mut m);
    m.raw
}

fn peer_attr(peer: SocketAddr) -> Box<dyn Setter> {
    Box::new(PeerAddress {
        ip: peer.ip(),
        port: peer.port(),
    })
}

fn udp_transport() -> Box<dyn Setter> {
    Box::new(RequestedTransport {
        protocol: rtc_turn::proto::PROTO_UDP,
    })
}

fn error_code(m: &Message) -> Option<u16> {
    let mut e = ErrorCodeAttribute::default();
    e.get_from(m).ok().map(|_| e.code.0)
}

impl Harness {
    fn new() -> Harness {
        Harness::with(config())
    }

    fn with(config: CoreConfig) -> Harness {
        let now = Instant::now();
        Harness {
            core: TurnCore::new(config, [9; 32], now, UNIX0),
            now,
            next_port: 50_000,
        }
    }

    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.core.handle_timeout(self.now);
    }

    fn outputs(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.core.poll_output()).collect()
    }

    /// Sends bytes; binds relays on request (at 192.0.2.10:next_port); returns every
    /// response message to the client and every other output.
    fn send(&mut self, tuple: FiveTuple, data: &[u8]) -> (Vec<Message>, Vec<Output>) {
        self.core.handle_client(self.now, tuple, data);
        self.collect()
    }

    fn collect(&mut self) -> (Vec<Message>, Vec<Output>) {
        let mut msgs = Vec::new();
        let mut others = Vec::new();
        let mut queue = self.outputs();
        while !queue.is_empty() {
            for out in std::mem::take(&mut queue) {
                match out {
                    Output::BindRelay { alloc, .. } => {
                        let relay = SocketAddr::new("192.0.2.10".parse().unwrap(), self.next_port);
                        self.next_port += 1;
                        self.core.relay_bound(self.now, alloc, Some(relay));
                        queue.extend(self.outputs());
                        others.push(out);
                    }
                    Output::ToClient { ref data, .. }
                        if wire::classify(data) == PacketKind::Stun =>
                    {
                        msgs.push(wire::parse_stun(data).unwrap().msg);
                    }
                    other => others.push(other),
                }
            }
        }
        (msgs, others)
    }

    /// One request, one response.
    fn request(&mut self, c: &mut Client, method: Method, attrs: Vec<Box<dyn Setter>>) -> Message {
        let raw = signed(c, method, attrs);
        let (mut msgs, _) = self.send(c.tuple, &raw);
        assert_eq!(msgs.len(), 1, "one response");
        let m = msgs.remove(0);
        if let Ok(n) = TextAttribute::get_from_as(&m, ATTR_NONCE) {
            c.nonce = Some(n.text);
        }
        m
    }

    /// A request, retried once with the fresh nonce after a 438 (as clients do).
    fn call(
        &mut self,
        c: &mut Client,
        method: Method,
        attrs: impl Fn() -> Vec<Box<dyn Setter>>,
    ) -> Message {
        let m = self.request(c, method, attrs());
        if error_code(&m) == Some(438) {
            return self.request(c, method, attrs());
        }
        m
    }

    /// Fetches a nonce (the unauthenticated Allocate of every client), then allocates.
    fn allocate(&mut self, c: &mut Client) -> Result<SocketAddr, u16> {
        if c.nonce.is_none() {
            let m = build(METHOD_ALLOCATE, CLASS_REQUEST, vec![udp_transport()]);
            let (msgs, _) = self.send(c.tuple, &m.raw);
            assert_eq!(error_code(&msgs[0]), Some(401));
            let realm = TextAttribute::get_from_as(&msgs[0], ATTR_REALM).unwrap();
            assert_eq!(realm.text, REALM);
            c.nonce = Some(
                TextAttribute::get_from_as(&msgs[0], ATTR_NONCE)
                    .unwrap()
                    .text,
            );
        }
        let m = self.request(c, METHOD_ALLOCATE, vec![udp_transport()]);
        if let Some(code) = error_code(&m) {
            return Err(code);
        }
        assert_eq!(
            m.typ,
            MessageType::new(METHOD_ALLOCATE, CLASS_SUCCESS_RESPONSE)
        );
        let mut relayed = RelayedAddress::default();
        relayed.get_from(&m).unwrap();
        let mut mapped = XorMappedAddress::default();
        mapped.get_from(&m).unwrap();
        assert_eq!(SocketAddr::new(mapped.ip, mapped.port), c.tuple.client);
        // The response is integrity-protected with the client's key.
        let parsed = wire::parse_stun(&m.raw).unwrap();
        assert!(parsed.integrity_ok(&long_term_key(&c.username, REALM, &c.password)));
        Ok(SocketAddr::new(relayed.ip, relayed.port))
    }

    fn alloc_id(&self, c: &Client) -> AllocId {
        *self.core.by_tuple.get(&c.tuple).unwrap()
    }
}

fn ok(m: &Message) {
    assert_eq!(error_code(m), None, "expected success, got {m}");
    assert_eq!(m.typ.class, CLASS_SUCCESS_RESPONSE);
}

fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    build(
        METHOD_SEND,
        CLASS_INDICATION,
        vec![peer_attr(peer), Box::new(Data(data.to_vec()))],
    )
    .raw
}

const PEER: &str = "198.51.100.7:4000";

#[test]
fn binding_answers_with_the_mapped_address() {
    let mut h = Harness::new();
    let t = tuple(Transport::Udp, "203.0.113.5:7000");
    let m = build(METHOD_BINDING, CLASS_REQUEST, vec![]);
    let (msgs, _) = h.send(t, &m.raw);
    assert_eq!(msgs[0].typ, BINDING_SUCCESS);
    assert_eq!(msgs[0].transaction_id, m.transaction_id);
    let mut mapped = XorMappedAddress::default();
    mapped.get_from(&msgs[0]).unwrap();
    assert_eq!(SocketAddr::new(mapped.ip, mapped.port), t.client);
    assert_eq!(h.core.stats().binding_requests, 1);
}

#[test]
fn allocate_needs_credentials_and_answers_with_a_relay() {
    let mut h = Harness::new();
    let mut c = client(Transport::Udp, "203.0.113.5:7000", "ana", "pw");
    let relay = h.allocate(&mut c).unwrap();
    assert_eq!(relay, addr("192.0.2.10:50000"));
    assert_eq!(h.core.stats().auth_challenges, 1);
    assert_eq!(h.core.stats().created(Transport::Udp), 1);
    assert_eq!(h.core.stats().active_allocations, 1);
    assert_eq!(h.core.relay_addr(&c.tuple), Some(relay));
    // The lifetime is the default, 600 s.
    let raw = signed(&c, METHOD_REFRESH, vec![]);
    let (msgs, _) = h.send(c.tuple, &raw);
    let mut lifetime = Lifetime::default();
    lifetime.get_from(&msgs[0]).unwrap();
    assert_eq!(lifetime.0, DEFAULT_LIFETIME);
}

#[test]
fn wrong_password_unknown_user_and_wrong_realm_get_401() {
    let mut h = Harness::new();
    let mut c = client(Transport::Udp, "203.0.113.5:7000", "ana", "nope");
    assert_eq!(h.allocate(&mut c), Err(401));
    assert_eq!(h.core.stats().auth_failed(AuthFailure::BadIntegrity), 1);
    let mut c = client(Transport::Udp, "203.0.113.5:7001", "zed", "pw");
    assert_eq!(h.allocate(&mut c), Err(401));
    assert_eq!(h.core.stats().auth_failed(AuthFailure::UnknownUser), 1);
    // Wrong realm: the key is computed with the client's realm, which we do not accept.
    let mut c = client(Transport::Udp, "203.0.113.5:7002", "ana", "pw");
    h.allocate(&mut c).ok();
    let mut m = build(
        METHOD_REFRESH,
        CLASS_REQUEST,
        vec![
            Box::new(TextAttribute::new(ATTR_USERNAME, "ana".into())),
            Box::new(TextAttribute::new(ATTR_REALM, "other".into())),
            Box::new(TextAttribute::new(ATTR_NONCE, c.nonce.clone().unwrap())),
        ],
    );
    wire::add_integrity(&mut m, &long_term_key("ana", "other", "pw"));
    let (msgs, _) = h.send(c.tuple, &m.raw);
    assert_eq!(error_code(&msgs[0]), Some(401));
    assert_eq!(h.core.stats().auth_failed(AuthFailure::WrongRealm), 1);
    assert_eq!(h.core.stats().failed(AllocFailure::Unauthorized), 2);
    // MESSAGE-INTEGRITY without USERNAME: 400.
    let mut m = build(METHOD_REFRESH, CLASS_REQUEST, vec![]);
    wire::add_integrity(&mut m, &[0; 16]);
    let (msgs, _) = h.send(c.tuple, &m.raw);
    assert_eq!(error_code(&msgs[0]), Some(400));
}

#[test]
fn stale_nonces_get_438_with_a_fresh_nonce() {
    let mut h = Harness::new();
    let mut c = client(Transport::Udp, "203.0.113.5:7000", "ana", "pw");
    h.allocate(&mut c).unwrap();
    let old = c.nonce.clone();
    h.advance(599);
    ok(&h.request(&mut c, METHOD_REFRESH, vec![]));
    h.advance(1);
    let m = h.request(&mut c, METHOD_REFRESH, vec![]);
    assert_eq!(error_code(&m), Some(438));
    assert_ne!(c.nonce, old, "438 carries a new nonce");
    ok(&h.request(&mut c, METHOD_REFRESH, vec![]));
    // A nonce for another client address, or a forged one, is stale too.
    let mut other = c.clone();
    other.tuple.client = addr("203.0.113.5:7999");
    assert_eq!(
        error_code(&h.request(&mut other, METHOD_ALLOCATE, vec![udp_transport()])),
        Some(438)
    );
    c.nonce = Some("5.00112233445566778899".into());
    assert_eq!(
        error_code(&h.request(&mut c, METHOD_REFRESH, vec![])),
        Some(438)
    );
    assert_eq!(h.core.stats().auth_failed(AuthFailure::StaleNonce), 3);
}

#[test]
fn unknown_comprehension_required_attributes_get_420() {
    let mut h = Harness::new();
    let t = tuple(Transport::Udp, "203.0.113.5:7000");
    let mut m = build(METHOD_ALLOCATE, CLASS_REQUEST, vec![udp_transport()]);
    m.add(AttrType(0x7ABC), b"??");
    m.add(AttrType(0xC001), b"optional is fine");
    let (msgs, _) = h.send(t, &m.raw);
    assert_eq!(error_code(&msgs[0]), Some(420));
    let mut unknown = UnknownAttributes(Vec::new());
    unknown.get_from(&msgs[0]).unwrap();
    assert_eq!(unknown.0, vec![AttrType(0x7ABC)]);
    assert_eq!(h.core.stats().bad(BadMessage::UnknownAttribute), 1);
}

#[test]
fn quotas_and_caps() {
    let mut h = Harness::new();
    let mut a1 = client(Transport::Udp, "203.0.113.5:7000", "ana", "pw");
    let mut a2 = client(Transport::Tcp, "203.0.113.5:7001", "ana", "pw");
    let mut a3 = client(Transport::Udp, "203.0.113.5:7002", "ana", "pw");
    h.allocate(&mut a1).unwrap();
    h.allocate(&mut a2).unwrap();
    assert_eq!(h.allocate(&mut a3), Err(486), "user quota is 2");
    assert_eq!(h.core.stats().failed(AllocFailure::Quota), 1);
    // REST users count by user id, not by username.
    let (u, p) = rest_credentials("s3cret", "ana", 60, UNIX0);
    let mut r = client(Transport::Udp, "203.0.113.6:7000", &u, &p);
    assert_eq!(h.allocate(&mut r), Err(486));
    let mut b1 = client(Transport::Udp, "203.0.113.7:7000", "bob", "pw2");
    let mut b2 = client(Transport::Udp, "203.0.113.7:7001", "bob", "pw2");
    h.allocate(&mut b1).unwrap();
    assert_eq!(h.allocate(&mut b2), Err(508), "total cap is 3");
    assert_eq!(h.core.stats().failed(AllocFailure::Capacity), 1);
    // Deleting one frees both the user's quota and the total.
    ok(&h.request(
        &mut a1,
        METHOD_REFRESH,
        vec![Box::new(Lifetime(Duration::ZERO))],
    ));
    h.allocate(&mut a3).unwrap();
    // Draining: no new allocations.
    ok(&h.request(
        &mut b1,
        METHOD_REFRESH,
        vec![Box::new(Lifetime(Duration::ZERO))],
    ));
    h.core.start_draining();
    assert_eq!(h.allocate(&mut b2), Err(508));
    assert_eq!(h.core.stats().failed(AllocFailure::Draining), 1);
    ok(&h.request(&mut a2, METHOD_REFRESH, vec![]));
}

#[test]
fn rest_credentials_work_until_they_expire() {
    let mut h = Harness::new();
    let (u, p) = rest_credentials("s3cret", "carol", 60, UNIX0);
    let mut c = client(Transport::Udp, "203.0.113.5:7000", &u, &p);
    h.allocate(&mut c).unwrap();
    h.advance(60);
    let m = h.request(&mut c, METHOD_REFRESH, vec![]);
    assert_eq!(error_code(&m), Some(401));
    assert_eq!(h.core.stats().auth_failed(AuthFailure::Expired), 1);
    // The wall clock moving backwards (re-anchored) makes it valid again.
    h.core.set_unix_time(h.now, UNIX0);
    ok(&h.request(&mut c, METHOD_REFRESH, vec![]));
    // A password made with another secret fails.
    let (u2, p2) = rest_credentials("other", "carol", 60, UNIX0);
    let mut d = client(Transport::Udp, "203.0.113.5:7001", &u2, &p2);
    assert_eq!(h.allocate(&mut d), Err(401));
}

#[test]
fn retransmitted_allocate_gets_the_same_answer_and_others_437() {
    let mut h = Harness::new();
    let mut c = client(Transport::Udp, "203.0.113.5:7000", "ana", "pw");
    let m = build(METHOD_ALLOCATE, CLASS_REQUEST, vec![udp_transport()]);
    let (msgs, _) = h.send(c.tuple, &m.raw);
    c.nonce = Some(
        TextAttribute::get_from_as(&msgs[0], ATTR_NONCE)
            .unwrap()
            .text,
    );
    let raw = signed(&c, METHOD_ALLOCATE, vec![udp_transport()]);
    let (first, _) = h.send(c.tuple, &raw);
    ok(&first[0]);
    let (again, out) = h.send(c.tuple, &raw);
    assert_eq!(
        again[0].raw, first[0].raw,
        "a retransmission gets the same bytes"
    );
    assert!(out.is_empty(), "and no second relay");
    assert_eq!(h.core.allocation_count(), 1);
    let other = signed(&c, METHOD_ALLOCATE, vec![udp_transport()]);
    let (msgs, _) = h.send(c.tuple, &other);
    assert_eq!(error_code(&msgs[0]), Some(437));
    assert_eq!(h.core.stats().failed(AllocFailure::Mismatch), 1);
}

#[test]
fn allocate_attribute_checks() {
    let mut h = Harness::new();
    let mut c = client(Transport::Udp, "203.0.113.5:7000", "ana", "pw");
    assert!(h.allocate(&mut c).is_ok());
    let mut d = client(Transport::Udp, "203.0.113.5:7001", "bob", "pw2");
    let _ = h.allocate(&mut d).unwrap();
    ok(&h.request(
        &mut d,
        METHOD_REFRESH,
        vec![Box::new(Lifetime(Duration::ZERO))],
    ));
    // No REQUESTED-TRANSPORT: 400. TCP: 442. IPv6 family on an IPv4 relay: 440.
    assert_eq!(
        error_code(&h.request(&mut d, METHOD_ALLOCATE, vec![])),
        Some(400)
    );
    let tcp: Box<dyn Setter> = Box::new(RequestedTransport {
        protocol: rtc_turn::proto::PROTO_TCP,
    });
    assert_eq!(
        error_code(&h.request(&mut d, METHOD_ALLOCATE, vec![tcp])),
        Some(442)
    );
    let v6: Box<dyn Setter> = Box::new(rtc_turn::proto::reqfamily::REQUESTED_FAMILY_IPV6);
    assert_eq!(
        error_code(&h.request(&mut d, METHOD_ALLOCATE, vec![udp_transport(), v6])),
        Some(440)
    );
    let token: Box<dyn Setter> = Box::new(RawAttribute {
        typ: ATTR_RESERVATION_TOKEN,
        length: 8,
        value: vec![1; 8],
    });
    assert_eq!(
        error_code(&h.request(&mut d, METHOD_ALLOCATE, vec![udp_transport(), token])),
        Some(508)
    );
    assert_eq!(h.core.stats().failed(AllocFailure::UnsupportedTransport), 1);
    assert_eq!(h.core.stats().failed(AllocFailure::AddressFamily), 1);
    assert_eq!(h.core.stats().failed(AllocFailure::Reservation), 1);
    // The maximum lifetime caps what is asked for.
    let long: Box<dyn Setter> = Box::new(Lifetime(Duration::from_secs(100_000)));
    let m = h.request(&mut d, METHOD_ALLOCATE, vec![udp_transport(), long]);
    ok(&m);
    let mut lifetime = Lifetime::default();
    lifetime.get_from(&m).unwrap();
    assert_eq!(lifetime.0, Duration::from_secs(3_600));
    // Another user's request on this allocation: 441.
    let mut imposter = c.clone();
    imposter.tuple = d.tuple;
    imposter.nonce = d.nonce.clone();
    assert_eq!(
        error_code(&h.request(&mut imposter, METHOD_REFRESH, vec![])),
        Some(441)
    );
    assert_eq!(h.core.stats().auth_failed(AuthFailure::WrongCredentials), 1);
}

#[test]
fn permissions_relay_both_ways_and_expire_after_300s() {
    let mut h = Harness::new();
    let mut c = client(Transport::Udp, "203.0.113.5:7000", "ana", "pw");
    h.allocate(&mut c).unwrap();
    let id = h.alloc_id(&c);
    let peer = addr(PEER);
    // Without a permission, nothing goes either way.
    let (_, out) = h.send(c.tuple, &send_indication(peer, b"early"));
    assert!(out.is_empty());
    h.core.handle_peer(h.now, id, peer, b"early");
    assert!(h.outputs().is_empty());
    assert_eq!(h.core.stats().drops(DropReason::NoPermission), 2);

    ok(&h.request(&mut c, METHOD_CREATE_PERMISSION, vec![peer_attr(peer)]));
    let (_, out) = h.send(c.tuple, &send_indication(peer, b"hello"));
    assert_eq!(
        out,
        vec![Output::ToPeer {
            alloc: id,
            peer,
            data: b"hello".to_vec()
        }]
    );
    // Any port of a permitted IP may answer, as a Data indication.
    let other_port = addr("198.51.100.7:4001");
    h.core.handle_peer(h.now, id, other_port, b"back");
    let (msgs, _) = h.collect();
    assert_eq!(msgs[0].typ, MessageType::new(METHOD_DATA, CLASS_INDICATION));
    let mut from = PeerAddress::default();
    from.get_from(&msgs[0]).unwrap();
    assert_eq!(SocketAddr::new(from.ip, from.port), other_port);
    let mut data = Data::default();
    data.get_from(&msgs[0]).unwrap();
    assert_eq!(data.0, b"back");
    assert_eq!(h.core.stats().packets(Direction::ToPeer), 1);
    assert_eq!(h.core.stats().bytes(Direction::ToClient), 4);

    h.advance(299);
    let (_, out) = h.send(c.tuple, &send_indication(peer, b"still"));
    assert_eq!(out.len(), 1);
    h.advance(1);
    let (_, out) = h.send(c.tuple, &send_indication(peer, b"expired"));
    assert!(out.is_empty(), "permissions last 300 s");
    h.core.handle_peer(h.now, id, peer, b"expired");
    assert!(h.outputs().is_empty());
}

#[test]
fn channels_carry_channel_data_and_expire_after_600s() {
    let mut h = Harness::new();
    let mut c = client(Transport::Tcp, "203.0.113.5:7000", "ana", "pw");
    h.allocate(&mut c).unwrap();
    let id = h.alloc_id(&c);
    let peer = addr(PEER);
    let bind = |n: u16, p: SocketAddr| -> Vec<Box<dyn Setter>> {
        vec![Box::new(ChannelNumber(n)), peer_attr(p)]
    };
    assert_eq!(
        error_code(&h.request(&mut c, METHOD_CHANNEL_BIND, bind(0x3FFF, peer))),
        Some(400)
    );
    ok(&h.request(&mut c, METHOD_CHANNEL_BIND, bind(0x4001, peer)));
    // Rebinding the same pair refreshes; another peer on the channel or channel for the peer
    // is refused.
    ok(&h.request(&mut c, METHOD_CHANNEL_BIND, bind(0x4001, peer)));
    assert_eq!(
        error_code(&h.request(
            &mut c,
            METHOD_CHANNEL_BIND,
            bind(0x4001, addr("198.51.100.8:1"))
        )),
        Some(400)
    );
    assert_eq!(
        error_code(&h.request(&mut c, METHOD_CHANNEL_BIND, bind(0x4002, peer))),
        Some(400)
    );

    // Client → peer over the channel; the binding made a permission too.
    let (_, out) = h.send(c.tuple, &wire::encode_channel_data(0x4001, b"abc", true));
    assert_eq!(
        out,
        vec![Output::ToPeer {
            alloc: id,
            peer,
            data: b"abc".to_vec()
        }]
    );
    // Peer → client as ChannelData, padded over TCP.
    h.core.handle_peer(h.now, id, peer, b"xyz");
    let out = h.outputs();
    assert_eq!(
        out,
        vec![Output::ToClient {
            tuple: c.tuple,
            data: vec![0x40, 0x01, 0, 3, b'x', b'y', b'z', 0]
        }]
    );
    // Unbound channel: dropped.
    h.send(c.tuple, &wire::encode_channel_data(0x4005, b"abc", true));
    assert_eq!(h.core.stats().drops(DropReason::NoChannel), 1);

    // Refresh the permission (not the channel) past 600 s: the channel expires.
    h.advance(290);
    ok(&h.call(&mut c, METHOD_CREATE_PERMISSION, || vec![peer_attr(peer)]));
    h.advance(290);
    ok(&h.call(&mut c, METHOD_CREATE_PERMISSION, || vec![peer_attr(peer)]));
    ok(&h.call(&mut c, METHOD_REFRESH, Vec::new));
    let (_, out) = h.send(c.tuple, &wire::encode_channel_data(0x4001, b"ok", true));
    assert_eq!(out.len(), 1, "599 s: still bound");
    h.advance(20);
    let (_, out) = h.send(c.tuple, &wire::encode_channel_data(0x4001, b"late", true));
    assert!(out.is_empty(), "channel bindings last 600 s");
    // The peer's data now arrives as a Data indication.
    h.core.handle_peer(h.now, id, peer, b"via data");
    let (msgs, _) = h.collect();
    assert_eq!(msgs[0].typ, MessageType::new(METHOD_DATA, CLASS_INDICATION));
    // For five more minutes the channel stays reserved for that peer.
    assert_eq!(
        error_code(&h.call(&mut c, METHOD_CHANNEL_BIND, || bind(
            0x4001,
            addr("198.51.100.8:1")
        ))),
        Some(400)
    );
    ok(&h.call(&mut c, METHOD_CHANNEL_BIND, || bind(0x4001, peer)));
}

#[test]
fn denied_peers_get_403() {
    let mut h = Harness::new();
    let mut c = client(Transport::Udp, "203.0.113.5:7000", "ana", "pw");
    h.allocate(&mut c).unwrap();
    for (peer, reason) in [
        ("127.0.0.1:4000", DenyReason::Loopback),
        ("10.0.0.1:4000", DenyReason::Private),
        ("192.0.2.10:22", DenyReason::OwnAddress),
        ("192.0.2.10:3478", DenyReason::OwnListener),
    ] {
        let m = h.request(
            &mut c,
            METHOD_CREATE_PERMISSION,
            vec![peer_attr(addr(peer))],
        );
        assert_eq!(error_code(&m), Some(403), "{peer}");
        assert_eq!(h.core.stats().denied(reason), 1, "{peer}");
        let bind: Vec<Box<dyn Setter>> =
            vec![Box::new(ChannelNumber(0x4000)), peer_attr(addr(peer))];
        assert_eq!(
            error_code(&h.request(&mut c, METHOD_CHANNEL_BIND, bind)),
            Some(403)
        );
    }
    // One denied address makes the whole request fail: nothing is installed.
    let m = h.request(
        &mut c,
        METHOD_CREATE_PERMISSION,
        vec![peer_attr(addr(PEER)), peer_attr(addr("10.0.0.1:1"))],
    );
    assert_eq!(error_code(&m), Some(403));
    let (_, out) = h.send(c.tuple, &send_indication(addr(PEER), b"x"));
    assert!(out.is_empty());
    // The server's own relay ports are fine (two clients on one server).
    ok(&h.request(
        &mut c,
        METHOD_CREATE_PERMISSION,
        vec![peer_attr(addr("192.0.2.10:50001"))],
    ));
    // IPv6 peer on an IPv4 relay: 443.
    let m = h.request(
        &mut c,
        METHOD_CREATE_PERMISSION,
        vec![peer_attr(addr("[2001:db8::1]:1"))],
    );
    assert_eq!(error_code(&m), Some(443));
}

#[test]
fn refresh_with_lifetime_zero_deletes_and_expiry_closes() {
    let mut h = Harness::new();
    let mut c = client(Transport::Udp, "203.0.113.5:7000", "ana", "pw");
    h.allocate(&mut c).unwrap();
    let id = h.alloc_id(&c);
    let raw = signed(&c, METHOD_REFRESH, vec![Box::new(Lifetime(Duration::ZERO))]);
    let (msgs, out) = h.send(c.tuple, &raw);
    ok(&msgs[0]);
    let mut lifetime = Lifetime(Duration::from_secs(1));
    lifetime.get_from(&msgs[0]).unwrap();
    assert_eq!(lifetime.0, Duration::ZERO);
    assert_eq!(
        out,
        vec![Output::AllocationClosed {
            alloc: id,
            tuple: c.tuple,
            reason: CloseReason::Deleted
        }]
    );
    assert_eq!(h.core.allocation_count(), 0);
    assert_eq!(
        error_code(&h.request(&mut c, METHOD_REFRESH, vec![])),
        Some(437)
    );

    // A new allocation expires after its lifetime unless refreshed.
    h.allocate(&mut c).unwrap();
    h.advance(300);
    ok(&h.request(
        &mut c,
        METHOD_REFRESH,
        vec![Box::new(Lifetime(Duration::from_secs(700)))],
    ));
    assert_eq!(
        h.core.poll_timeout(),
        Some(h.now + Duration::from_secs(700))
    );
    h.advance(699);
    assert_eq!(h.core.allocation_count(), 1);
    h.advance(1);
    assert_eq!(h.core.allocation_count(), 0);
    assert!(matches!(
        h.outputs().as_slice(),
        [Output::AllocationClosed {
            reason: CloseReason::Expired,
            ..
        }]
    ));
    assert_eq!(h.core.stats().closed(CloseReason::Expired), 1);
    assert_eq!(h.core.stats().active_allocations, 0);
}

#[test]
fn connection_close_deletes_the_allocation() {
    let mut h = Harness::new();
    let mut c = client(Transport::Tls, "203.0.113.5:7000", "ana", "pw");
    h.allocate(&mut c).unwrap();
    h.core.connection_closed(h.now, c.tuple);
    assert_eq!(h.core.allocation_count(), 0);
    assert_eq!(h.core.stats().closed(CloseReason::ConnectionClosed), 1);
}

#[test]
fn bandwidth_is_capped_per_allocation() {
    let mut cfg = config();
    cfg.limits.bandwidth_bytes_per_sec = 100_000;
    let mut h = Harness::with(cfg);
    let mut c = client(Transport::Udp, "203.0.113.5:7000", "ana", "pw");
    h.allocate(&mut c).unwrap();
    let id = h.alloc_id(&c);
    let peer = addr(PEER);
    ok(&h.request(&mut c, METHOD_CREATE_PERMISSION, vec![peer_attr(peer)]));
    let payload = vec![0u8; 1_000];
    let mut sent = 0;
    for _ in 0..200 {
        h.core.handle_peer(h.now, id, peer, &payload);
        sent += h.outputs().len();
    }
    assert_eq!(sent, 100, "burst of one second: 100 kB");
    assert_eq!(h.core.stats().drops(DropReason::Bandwidth), 100);
    h.now += Duration::from_millis(500);
    for _ in 0..100 {
        h.core.handle_peer(h.now, id, peer, &payload);
        sent += h.outputs().len();
    }
    assert_eq!(sent, 150, "half a second refills 50 kB");
}

#[test]
fn relay_bind_failure_answers_508_and_frees_the_quota() {
    let mut h = Harness::new();
    let mut c = client(Transport::Udp, "203.0.113.5:7000", "ana", "pw");
    let m = build(METHOD_ALLOCATE, CLASS_REQUEST, vec![udp_transport()]);
    let (msgs, _) = h.send(c.tuple, &m.raw);
    c.nonce = Some(
        TextAttribute::get_from_as(&msgs[0], ATTR_NONCE)
            .unwrap()
            .text,
    );
    h.core.handle_client(
        h.now,
        c.tuple,
        &signed(&c, METHOD_ALLOCATE, vec![udp_transport()]),
    );
    let Some(Output::BindRelay { alloc, .. }) = h.core.poll_output() else {
        panic!("expected BindRelay");
    };
    assert!(!h.core.relay_bound(h.now, alloc, None));
    let (msgs, _) = h.collect();
    assert_eq!(error_code(&msgs[0]), Some(508));
    assert_eq!(h.core.allocation_count(), 0);
    assert_eq!(h.core.stats().failed(AllocFailure::NoRelayPort), 1);
    assert!(!h.core.relay_bound(h.now, alloc, Some(addr("192.0.2.10:1"))));
    h.allocate(&mut c).unwrap();
}

#[test]
fn malformed_input_is_counted_and_never_answered() {
    let mut h = Harness::new();
    let t = tuple(Transport::Udp, "203.0.113.5:7000");
    let good = build(METHOD_BINDING, CLASS_REQUEST, vec![]).raw;
    let mut bad_cookie = good.clone();
    bad_cookie[4] ^= 0xff;
    let mut bad_length = good.clone();
    bad_length[3] = 4;
    let mut truncated_attr = build(
        METHOD_BINDING,
        CLASS_REQUEST,
        vec![Box::new(TextAttribute::new(
            ATTR_SOFTWARE,
            "abcdefgh".into(),
        ))],
    )
    .raw;
    truncated_attr[22..24].copy_from_slice(&200u16.to_be_bytes());
    let response = build(METHOD_BINDING, CLASS_SUCCESS_RESPONSE, vec![]).raw;
    for bytes in [
        &[][..],
        &[0xff; 30][..],
        &good[..10],
        &bad_cookie,
        &bad_length,
        &truncated_attr,
        &response,
        &[0x40, 0x00, 0xff, 0xff, 1, 2][..],
    ] {
        let (msgs, out) = h.send(t, bytes);
        assert!(msgs.is_empty() && out.is_empty(), "{bytes:?}");
    }
    let s = h.core.stats();
    assert_eq!(s.bad(BadMessage::TooShort), 2);
    assert_eq!(s.bad(BadMessage::NotStun), 2);
    assert_eq!(s.bad(BadMessage::BadLength), 1);
    assert_eq!(s.bad(BadMessage::Truncated), 1);
    assert_eq!(s.bad(BadMessage::UnexpectedClass), 1);
    assert_eq!(s.bad(BadMessage::BadChannelData), 1);
    // An unknown method in a request is a 400.
    let mut unknown = MessageType::default();
    unknown.read_value(0x0002);
    let mut m = Message::new();
    m.build(&[Box::new(TransactionId::new()), Box::new(unknown)])
        .unwrap();
    let (msgs, _) = h.send(t, &m.raw);
    assert_eq!(error_code(&msgs[0]), Some(400));
}
