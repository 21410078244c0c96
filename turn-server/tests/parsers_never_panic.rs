//! Arbitrary bytes into every parser, and into the whole core (fresh, and with a live
//! allocation, channel and permission), never panic. Besides plain random bytes, STUN-shaped
//! input (right cookie, random attributes, sometimes with valid integrity and fingerprint)
//! reaches the deeper paths, and mutations of valid requests probe the edges.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use concord_turn::auth::{Credentials, NonceKey, long_term_key, parse_rest_username};
use concord_turn::core::wire::{
    add_fingerprint, add_integrity, decode_xor_address, parse_channel_data, parse_stun,
    stream_frame_len,
};
use concord_turn::core::{
    AllocId, CoreConfig, Family, FiveTuple, Limits, Output, Transport, TurnCore,
};
use concord_turn::policy::PeerPolicy;
use proptest::prelude::*;
use rtc_stun::attributes::*;
use rtc_stun::message::*;
use rtc_stun::textattrs::TextAttribute;

const REALM: &str = "r";

fn core() -> (TurnCore, Instant) {
    let now = Instant::now();
    let config = CoreConfig {
        credentials: Credentials::new(REALM, [("u", "p")], Some("s")),
        policy: PeerPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            ..PeerPolicy::default()
        },
        limits: Limits::default(),
        relay_family: Family::V4,
        software: "x".into(),
    };
    (TurnCore::new(config, [1; 32], now, 1_700_000_000), now)
}

fn tuple(transport: Transport) -> FiveTuple {
    FiveTuple {
        transport,
        client: "127.0.0.1:5000".parse().unwrap(),
        server: "127.0.0.1:3478".parse().unwrap(),
    }
}

fn drain(core: &mut TurnCore, now: Instant) {
    while let Some(out) = core.poll_output() {
        if let Output::BindRelay { alloc, .. } = out {
            core.relay_bound(now, alloc, Some("127.0.0.1:40000".parse().unwrap()));
        }
    }
}

fn signed(method: Method, nonce: &str, attrs: Vec<Box<dyn Setter>>) -> Vec<u8> {
    let mut m = Message::new();
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(method, CLASS_REQUEST)),
    ];
    setters.extend(attrs);
    setters.push(Box::new(TextAttribute::new(ATTR_USERNAME, "u".into())));
    setters.push(Box::new(TextAttribute::new(ATTR_REALM, REALM.into())));
    setters.push(Box::new(TextAttribute::new(ATTR_NONCE, nonce.into())));
    m.build(&setters).unwrap();
    add_integrity(&mut m, &long_term_key("u", REALM, "p"));
    add_fingerprint(&mut m);
    m.raw
}

fn peer() -> SocketAddr {
    "127.0.0.1:6000".parse().unwrap()
}

/// A core with an allocation on `t`, a permission and a channel (0x4000) for `peer()`, and
/// the nonce that works.
fn core_with_allocation(t: FiveTuple) -> (TurnCore, Instant, AllocId, String) {
    let (mut core, now) = core();
    let nonce = NonceKey::new([1; 32], 600).issue(0, t.client);
    let transport: Box<dyn Setter> = Box::new(rtc_turn::proto::reqtrans::RequestedTransport {
        protocol: rtc_turn::proto::PROTO_UDP,
    });
    core.handle_client(now, t, &signed(METHOD_ALLOCATE, &nonce, vec![transport]));
    let mut alloc = None;
    while let Some(out) = core.poll_output() {
        if let Output::BindRelay { alloc: id, .. } = out {
            alloc = Some(id);
            core.relay_bound(now, id, Some("127.0.0.1:40000".parse().unwrap()));
        }
    }
    let peer_attr = || -> Box<dyn Setter> {
        Box::new(rtc_turn::proto::peeraddr::PeerAddress {
            ip: peer().ip(),
            port: peer().port(),
        })
    };
    core.handle_client(
        now,
        t,
        &signed(
            METHOD_CHANNEL_BIND,
            &nonce,
            vec![
                Box::new(rtc_turn::proto::channum::ChannelNumber(0x4000)),
                peer_attr(),
            ],
        ),
    );
    drain(&mut core, now);
    assert_eq!(core.allocation_count(), 1);
    (core, now, alloc.expect("allocated"), nonce)
}

/// STUN-shaped bytes: a valid header (random type and transaction), random attributes with
/// honest or dishonest lengths, sometimes integrity and fingerprint.
fn stun_shaped() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u16>(),
        any::<[u8; 12]>(),
        prop::collection::vec(
            (
                prop_oneof![
                    Just(0x0006u16),
                    Just(0x0008),
                    Just(0x000C),
                    Just(0x000D),
                    Just(0x0012),
                    Just(0x0013),
                    Just(0x0014),
                    Just(0x0015),
                    Just(0x0017),
                    Just(0x0018),
                    Just(0x0019),
                    Just(0x001A),
                    Just(0x0022),
                    Just(0x8028),
                    any::<u16>(),
                ],
                prop::collection::vec(any::<u8>(), 0..40),
                any::<bool>(),
            ),
            0..8,
        ),
        any::<u8>(),
    )
        .prop_map(|(typ, tid, attrs, tail)| {
            let mut body = Vec::new();
            for (t, v, honest) in attrs {
                body.extend_from_slice(&t.to_be_bytes());
                let len = if honest { v.len() } else { v.len() + 4 };
                body.extend_from_slice(&(len as u16).to_be_bytes());
                body.extend_from_slice(&v);
                while body.len() % 4 != 0 {
                    body.push(0);
                }
            }
            let mut m = Vec::with_capacity(20 + body.len());
            m.extend_from_slice(&(typ & 0x3fff).to_be_bytes());
            m.extend_from_slice(&(body.len() as u16).to_be_bytes());
            m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
            m.extend_from_slice(&tid);
            m.extend_from_slice(&body);
            // Sometimes sign it for real (so the authenticated paths parse random attributes).
            if tail % 3 == 0 {
                let mut msg = Message::new();
                if msg.unmarshal_binary(&m).is_ok() {
                    msg.add(ATTR_USERNAME, b"u");
                    msg.add(ATTR_REALM, REALM.as_bytes());
                    let nonce =
                        NonceKey::new([1; 32], 600).issue(0, "127.0.0.1:5000".parse().unwrap());
                    msg.add(ATTR_NONCE, nonce.as_bytes());
                    add_integrity(&mut msg, &long_term_key("u", REALM, "p"));
                    if tail % 2 == 0 {
                        add_fingerprint(&mut msg);
                    }
                    return msg.raw;
                }
            }
            m
        })
}

fn mutated_request() -> impl Strategy<Value = Vec<u8>> {
    (
        0usize..5,
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        any::<Option<usize>>(),
    )
        .prop_map(|(which, flips, cut)| {
            let nonce = NonceKey::new([1; 32], 600).issue(0, "127.0.0.1:5000".parse().unwrap());
            let peer_attr: Box<dyn Setter> = Box::new(rtc_turn::proto::peeraddr::PeerAddress {
                ip: peer().ip(),
                port: peer().port(),
            });
            let mut raw = match which {
                0 => signed(METHOD_REFRESH, &nonce, vec![]),
                1 => signed(METHOD_CREATE_PERMISSION, &nonce, vec![peer_attr]),
                2 => signed(
                    METHOD_CHANNEL_BIND,
                    &nonce,
                    vec![
                        Box::new(rtc_turn::proto::channum::ChannelNumber(0x4001)),
                        peer_attr,
                    ],
                ),
                3 => {
                    let mut m = Message::new();
                    m.build(&[
                        Box::new(TransactionId::new()),
                        Box::new(MessageType::new(METHOD_SEND, CLASS_INDICATION)),
                        peer_attr,
                        Box::new(rtc_turn::proto::data::Data(vec![1, 2, 3])),
                    ])
                    .unwrap();
                    m.raw
                }
                _ => vec![0x40, 0x00, 0x00, 0x03, 1, 2, 3, 0],
            };
            for (at, byte) in flips {
                let i = at % raw.len();
                raw[i] ^= byte;
            }
            if let Some(cut) = cut {
                raw.truncate(cut % (raw.len() + 1));
            }
            raw
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn wire_parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), tid in any::<[u8; 12]>()) {
        let _ = parse_stun(&bytes);
        let _ = parse_channel_data(&bytes);
        let _ = stream_frame_len(&bytes);
        let _ = decode_xor_address(&bytes, &tid);
        if let Ok(m) = parse_stun(&bytes) {
            let _ = m.integrity_ok(b"key");
            let _ = m.text(ATTR_USERNAME);
        }
    }

    #[test]
    fn stun_shaped_input_never_panics_the_parser(bytes in stun_shaped()) {
        if let Ok(m) = parse_stun(&bytes) {
            let _ = m.integrity_ok(&long_term_key("u", REALM, "p"));
            for a in &m.attrs {
                let _ = decode_xor_address(m.attr(a.typ).unwrap_or(&[]), &m.msg.transaction_id.0);
            }
        }
    }

    #[test]
    fn text_parsers_never_panic(text in ".{0,80}", ip in any::<[u8; 4]>(), port in any::<u16>()) {
        let _ = parse_rest_username(&text);
        let key = NonceKey::new([2; 32], 600);
        let client = SocketAddr::from((ip, port));
        let _ = key.check(&text, 10, client);
        let _ = concord_turn::config::parse_net(&text);
        let _ = concord_turn::config::parse_user(&text);
        let _ = text.parse::<concord_turn::config::PortRange>();
        let _ = Credentials::new(REALM, [], Some("s")).lookup(&text, 1_700_000_000);
    }

    #[test]
    fn core_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        stream in any::<bool>(),
    ) {
        let (mut core, now) = core();
        let t = tuple(if stream { Transport::Tcp } else { Transport::Udp });
        core.handle_client(now, t, &bytes);
        drain(&mut core, now);
        core.handle_peer(now, AllocId(1), peer(), &bytes);
        drain(&mut core, now);
    }

    #[test]
    fn core_with_an_allocation_never_panics(
        inputs in prop::collection::vec(
            prop_oneof![stun_shaped(), mutated_request(), prop::collection::vec(any::<u8>(), 0..100)],
            1..6,
        ),
        stream in any::<bool>(),
        later in 0u64..2_000,
    ) {
        let t = tuple(if stream { Transport::Tls } else { Transport::Udp });
        let (mut core, now, alloc, _) = core_with_allocation(t);
        for (i, bytes) in inputs.iter().enumerate() {
            let at = now + Duration::from_secs(later * i as u64 / 4);
            core.handle_client(at, t, bytes);
            drain(&mut core, at);
            core.handle_peer(at, alloc, peer(), bytes);
            drain(&mut core, at);
            core.handle_timeout(at);
            drain(&mut core, at);
        }
        prop_assert!(core.allocation_count() <= 1);
    }
}
