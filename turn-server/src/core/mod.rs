//! The sans-IO TURN server: `TurnCore` takes `(now, 5-tuple, bytes)` and produces outputs
//! (datagrams or stream messages for clients, datagrams for peers from an allocation's relay
//! socket, relay sockets to bind, allocations that ended). It never touches a socket or a
//! clock, so tests drive it with virtual time (`core/tests.rs`). It also returns its next
//! deadline.
//!
//! Protocol: STUN Binding (RFC 8489) and TURN over UDP/TCP/TLS (RFC 8656, accepting RFC 5766
//! clients): Allocate, Refresh, CreatePermission, ChannelBind, Send/Data indications and
//! ChannelData. Long-term credentials with stateless nonces; quotas, caps and the peer policy.
//!
//! Driving it: after every `handle_*` call, drain `poll_output()`. An `Output::BindRelay` must
//! be answered with `relay_bound()`. Call `handle_timeout()` by `poll_timeout()` (or once a
//! second); expiry is also checked whenever an allocation is used, so the timer only reclaims
//! memory and relay sockets.

pub mod stats;
pub mod wire;

use std::collections::VecDeque;

// foldhash: several times cheaper than SipHash per lookup (every relayed packet does a few),
// randomly seeded per process so client-chosen addresses cannot be pre-computed to collide.
use foldhash::{HashMap, HashMapExt};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rtc_stun::attributes::*;
use rtc_stun::error_code::{ErrorCode, ErrorCodeAttribute};
use rtc_stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE, METHOD_BINDING,
    METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_REFRESH, METHOD_SEND,
    Message, MessageClass, MessageType, Setter, TransactionId,
};
use rtc_stun::textattrs::TextAttribute;
use rtc_stun::uattrs::UnknownAttributes;
use rtc_stun::xoraddr::XorMappedAddress;
use rtc_turn::proto::lifetime::Lifetime;

use crate::auth::{AuthFailure, Credentials, Key, NonceKey};
use crate::policy::PeerPolicy;
pub use stats::{AllocFailure, BadMessage, CloseReason, Direction, DropReason, Stats};
use wire::{PacketKind, StunMessage};

/// RFC 8656 §7.2: the lifetime when a client asks for none (or for less).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// RFC 8656 §9: permissions last five minutes.
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// RFC 8656 §12: channel bindings last ten minutes.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// How long an allocation may wait for its relay socket before it is dropped.
const PENDING_LIFETIME: Duration = Duration::from_secs(30);
/// REQUESTED-TRANSPORT value for UDP.
const PROTO_UDP: u8 = 17;

/// The client-facing transport of a 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// Over streams, ChannelData is padded to a multiple of 4 bytes.
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// Client address, server address and transport: what an allocation is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// An allocation's id, stable for its whole life (the driver keys relay sockets by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send to a client over its 5-tuple (one datagram, or one message on its stream).
    ToClient { tuple: FiveTuple, data: Vec<u8> },
    /// Send one datagram from the allocation's relay socket to a peer.
    ToPeer {
        alloc: AllocId,
        peer: SocketAddr,
        data: Vec<u8>,
    },
    /// Bind a relay socket for a new allocation, then call `TurnCore::relay_bound`.
    BindRelay {
        alloc: AllocId,
        family: Family,
        even_port: bool,
    },
    /// The allocation ended: close its relay socket.
    AllocationClosed {
        alloc: AllocId,
        tuple: FiveTuple,
        reason: CloseReason,
    },
}

/// Caps and quotas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Allocations one user may hold at once (486 beyond).
    pub user_quota: usize,
    /// Allocations the whole server holds at once (508 beyond).
    pub max_allocations: usize,
    /// The longest lifetime granted by Allocate or Refresh.
    pub max_lifetime: Duration,
    /// How long a nonce stays valid (438 after).
    pub nonce_ttl: Duration,
    /// Bytes per second relayed per allocation, in each direction; 0 = unlimited.
    pub bandwidth_bytes_per_sec: u64,
    /// Distinct peer IPs with a permission, per allocation (508 beyond).
    pub max_permissions: usize,
    /// Channel bindings per allocation (508 beyond).
    pub max_channels: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            user_quota: 100,
            max_allocations: 10_000,
            max_lifetime: Duration::from_secs(3_600),
            nonce_ttl: Duration::from_secs(600),
            bandwidth_bytes_per_sec: 1_250_000,
            max_permissions: 64,
            max_channels: 64,
        }
    }
}

/// Everything the core needs to know.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub credentials: Credentials,
    pub policy: PeerPolicy,
    pub limits: Limits,
    /// The relay address family (the family of the relay IP).
    pub relay_family: Family,
    /// SOFTWARE attribute on responses; empty for none.
    pub software: String,
}

/// Token bucket in bytes; one second of burst (at least one maximum-size packet).
#[derive(Debug, Clone)]
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u64, now: Instant) -> Bucket {
        let capacity = (rate as f64).max(65_535.0);
        Bucket {
            rate: rate as f64,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    fn take(&mut self, now: Instant, n: usize) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone)]
struct Pending {
    key: Key,
    lifetime: Duration,
    transaction_id: TransactionId,
}

#[derive(Debug, Clone)]
struct Allocation {
    tuple: FiveTuple,
    /// None until the relay socket is bound.
    relay: Option<SocketAddr>,
    /// The USERNAME that created it; later requests must use the same (441).
    username: String,
    /// The quota key.
    user: String,
    expires: Instant,
    pending: Option<Pending>,
    allocate_transaction: TransactionId,
    /// The success response, resent for a retransmitted Allocate.
    success: Option<Vec<u8>>,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
    channel_of_peer: HashMap<SocketAddr, u16>,
    up: Bucket,
    down: Bucket,
}

impl Allocation {
    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|e| *e > now)
    }

    fn channel_peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&number)
            .filter(|(_, e)| *e > now)
            .map(|(p, _)| *p)
    }

    fn peer_channel(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let n = *self.channel_of_peer.get(&peer)?;
        self.channel_peer(n, now).map(|_| n)
    }

    fn prune(&mut self, now: Instant) {
        self.permissions.retain(|_, e| *e > now);
        // A channel stays reserved for its peer for five minutes after it expires
        // (RFC 8656 §12), so expired bindings are kept that long.
        let keep = now.checked_sub(Duration::from_secs(300)).unwrap_or(now);
        let channel_of_peer = &mut self.channel_of_peer;
        self.channels.retain(|_, (peer, e)| {
            let k = *e > keep;
            if !k {
                channel_of_peer.remove(peer);
            }
            k
        });
    }
}

/// The result of authenticating a request.
struct Authed {
    username: String,
    user: String,
    key: Key,
}

/// The sans-IO TURN server.
pub struct TurnCore {
    config: CoreConfig,
    nonces: NonceKey,
    epoch: Instant,
    unix_at_epoch: u64,
    rng: u64,
    next_id: u64,
    allocs: HashMap<AllocId, Allocation>,
    by_tuple: HashMap<FiveTuple, AllocId>,
    per_user: HashMap<String, usize>,
    draining: bool,
    out: VecDeque<Output>,
    stats: Stats,
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        508 => "Insufficient Capacity",
        _ => "Server Error",
    }
}

type Attrs = Vec<Box<dyn Setter>>;

impl TurnCore {
    /// `seed` keys the nonces and seeds transaction ids of Data indications; give each server
    /// a random one (tests use fixed seeds). `unix_now` anchors REST credential expiry.
    pub fn new(config: CoreConfig, seed: [u8; 32], now: Instant, unix_now: u64) -> TurnCore {
        let nonces = NonceKey::new(seed, config.limits.nonce_ttl.as_secs());
        let mut rng = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")) ^ 0x9E37_79B9;
        if rng == 0 {
            rng = 1;
        }
        TurnCore {
            config,
            nonces,
            epoch: now,
            unix_at_epoch: unix_now,
            rng,
            next_id: 1,
            allocs: HashMap::new(),
            by_tuple: HashMap::new(),
            per_user: HashMap::new(),
            draining: false,
            out: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Allocations that exist (including ones waiting for their relay socket).
    pub fn allocation_count(&self) -> usize {
        self.allocs.len()
    }

    pub fn has_allocation(&self, tuple: &FiveTuple) -> bool {
        self.by_tuple.contains_key(tuple)
    }

    /// The relay address of the allocation on `tuple`, once bound.
    pub fn relay_addr(&self, tuple: &FiveTuple) -> Option<SocketAddr> {
        self.allocs.get(self.by_tuple.get(tuple)?)?.relay
    }

    /// Refuse new allocations (508) from now on; existing ones carry on.
    pub fn start_draining(&mut self) {
        self.draining = true;
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Re-anchors the unix clock (REST credential expiry) to the wall clock.
    pub fn set_unix_time(&mut self, now: Instant, unix_now: u64) {
        self.unix_at_epoch = unix_now.saturating_sub(self.secs(now));
    }

    fn secs(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    fn unix(&self, now: Instant) -> u64 {
        self.unix_at_epoch + self.secs(now)
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The next allocation expiry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.allocs.values().map(|a| a.expires).min()
    }

    /// Deletes expired allocations and prunes expired permissions and channels.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<AllocId> = self
            .allocs
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.close(id, CloseReason::Expired);
        }
        for a in self.allocs.values_mut() {
            a.prune(now);
        }
    }

    /// A TCP/TLS connection ended: its allocation goes with it.
    pub fn connection_closed(&mut self, _now: Instant, tuple: FiveTuple) {
        if let Some(id) = self.by_tuple.get(&tuple).copied() {
            self.close(id, CloseReason::ConnectionClosed);
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn random_transaction_id(&mut self) -> TransactionId {
        let a = self.next_random().to_le_bytes();
        let b = self.next_random().to_le_bytes();
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(&a);
        id[8..].copy_from_slice(&b[..4]);
        TransactionId(id)
    }

    fn close(&mut self, id: AllocId, reason: CloseReason) {
        let Some(a) = self.allocs.remove(&id) else {
            return;
        };
        self.by_tuple.remove(&a.tuple);
        if let Some(n) = self.per_user.get_mut(&a.user) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(&a.user);
            }
        }
        if a.relay.is_some() {
            self.stats.inc_closed(reason);
            self.out.push_back(Output::AllocationClosed {
                alloc: id,
                tuple: a.tuple,
                reason,
            });
        }
    }

    /// The live allocation on a 5-tuple (an expired one is deleted on the way).
    fn live(&mut self, now: Instant, tuple: &FiveTuple) -> Option<AllocId> {
        let id = *self.by_tuple.get(tuple)?;
        if self.allocs.get(&id).is_none_or(|a| a.expires <= now) {
            self.close(id, CloseReason::Expired);
            return None;
        }
        Some(id)
    }

    // ---- encoding ---------------------------------------------------------------------

    fn encode(
        &self,
        transaction_id: TransactionId,
        typ: MessageType,
        attrs: Attrs,
        key: Option<&Key>,
    ) -> Option<Vec<u8>> {
        let mut m = Message::new();
        let mut setters: Vec<Box<dyn Setter>> = Vec::with_capacity(attrs.len() + 3);
        setters.push(Box::new(transaction_id));
        setters.push(Box::new(typ));
        setters.extend(attrs);
        if !self.config.software.is_empty() {
            setters.push(Box::new(TextAttribute::new(
                ATTR_SOFTWARE,
                self.config.software.clone(),
            )));
        }
        m.build(&setters).ok()?;
        if let Some(key) = key {
            wire::add_integrity(&mut m, key);
        }
        wire::add_fingerprint(&mut m);
        Some(m.raw)
    }

    fn respond(
        &mut self,
        tuple: FiveTuple,
        req: &StunMessage,
        class: MessageClass,
        attrs: Attrs,
        key: Option<&Key>,
    ) {
        let typ = MessageType::new(req.msg.typ.method, class);
        if let Some(data) = self.encode(req.msg.transaction_id, typ, attrs, key) {
            self.out.push_back(Output::ToClient { tuple, data });
        }
    }

    fn error(
        &mut self,
        tuple: FiveTuple,
        req: &StunMessage,
        code: u16,
        mut attrs: Attrs,
        key: Option<&Key>,
    ) {
        attrs.insert(
            0,
            Box::new(ErrorCodeAttribute {
                code: ErrorCode(code),
                reason: reason_phrase(code).as_bytes().to_vec(),
            }),
        );
        self.respond(tuple, req, CLASS_ERROR_RESPONSE, attrs, key);
    }

    /// 401 or 438 with REALM and a fresh NONCE.
    fn challenge(&mut self, now: Instant, tuple: FiveTuple, req: &StunMessage, code: u16) {
        let nonce = self.nonces.issue(self.secs(now), tuple.client);
        let attrs: Attrs = vec![
            Box::new(TextAttribute::new(
                ATTR_REALM,
                self.config.credentials.realm().to_owned(),
            )),
            Box::new(TextAttribute::new(ATTR_NONCE, nonce)),
        ];
        self.error(tuple, req, code, attrs, None);
    }

    // ---- input ------------------------------------------------------------------------

    /// A datagram (UDP) or one framed message (TCP/TLS) from a client.
    pub fn handle_client(&mut self, now: Instant, tuple: FiveTuple, data: &[u8]) {
        if data.is_empty() {
            self.stats.inc_bad(BadMessage::TooShort);
            return;
        }
        match wire::classify(data) {
            PacketKind::Stun => match wire::parse_stun(data) {
                Ok(msg) => self.handle_stun(now, tuple, msg),
                Err(e) => self.stats.inc_bad(e.into()),
            },
            PacketKind::ChannelData => self.handle_channel_data(now, tuple, data),
            PacketKind::Invalid => self.stats.inc_bad(BadMessage::NotStun),
        }
    }

    fn handle_stun(&mut self, now: Instant, tuple: FiveTuple, msg: StunMessage) {
        if msg.is_indication() {
            // Unknown comprehension-required attributes in an indication: discard silently.
            if !msg.unknown.is_empty() {
                self.stats.inc_bad(BadMessage::UnknownAttribute);
                return;
            }
            match msg.msg.typ.method {
                METHOD_SEND => self.handle_send(now, tuple, &msg),
                // A Binding indication is a keepalive.
                METHOD_BINDING => {}
                _ => self.stats.inc_bad(BadMessage::UnknownMethod),
            }
            return;
        }
        if !msg.is_request() {
            self.stats.inc_bad(BadMessage::UnexpectedClass);
            return;
        }
        if !msg.unknown.is_empty() {
            self.stats.inc_bad(BadMessage::UnknownAttribute);
            let attrs: Attrs = vec![Box::new(UnknownAttributes(msg.unknown.clone()))];
            self.error(tuple, &msg, 420, attrs, None);
            return;
        }
        match msg.msg.typ.method {
            METHOD_BINDING => {
                self.stats.binding_requests += 1;
                let attrs: Attrs = vec![Box::new(XorMappedAddress {
                    ip: tuple.client.ip(),
                    port: tuple.client.port(),
                })];
                self.respond(tuple, &msg, CLASS_SUCCESS_RESPONSE, attrs, None);
            }
            METHOD_ALLOCATE | METHOD_REFRESH | METHOD_CREATE_PERMISSION | METHOD_CHANNEL_BIND => {
                let method = msg.msg.typ.method;
                let Some(auth) = self.authenticate(now, tuple, &msg) else {
                    return;
                };
                match method {
                    METHOD_ALLOCATE => self.handle_allocate(now, tuple, &msg, auth),
                    METHOD_REFRESH => self.handle_refresh(now, tuple, &msg, auth),
                    METHOD_CREATE_PERMISSION => self.handle_permission(now, tuple, &msg, auth),
                    _ => self.handle_channel_bind(now, tuple, &msg, auth),
                }
            }
            _ => {
                self.stats.inc_bad(BadMessage::UnknownMethod);
                self.error(tuple, &msg, 400, Vec::new(), None);
            }
        }
    }

    /// RFC 8489 §9.2.4. Sends the error response itself and returns None on failure.
    fn authenticate(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        msg: &StunMessage,
    ) -> Option<Authed> {
        let is_allocate = msg.msg.typ.method == METHOD_ALLOCATE;
        let fail = |core: &mut TurnCore, f: AuthFailure| {
            core.stats.inc_auth(f);
            if is_allocate && f != AuthFailure::NoCredentials {
                core.stats.inc_failed(if f == AuthFailure::StaleNonce {
                    AllocFailure::StaleNonce
                } else if f == AuthFailure::MissingAttributes {
                    AllocFailure::BadRequest
                } else {
                    AllocFailure::Unauthorized
                });
            }
        };
        if msg.integrity.is_none() {
            fail(self, AuthFailure::NoCredentials);
            self.challenge(now, tuple, msg, 401);
            return None;
        }
        let (Some(username), Some(realm), Some(nonce)) = (
            msg.text(ATTR_USERNAME),
            msg.text(ATTR_REALM),
            msg.text(ATTR_NONCE),
        ) else {
            fail(self, AuthFailure::MissingAttributes);
            self.error(tuple, msg, 400, Vec::new(), None);
            return None;
        };
        let identity = match self.config.credentials.lookup(username, self.unix(now)) {
            Ok(identity) => identity,
            Err(f) => {
                fail(self, f);
                self.challenge(now, tuple, msg, 401);
                return None;
            }
        };
        if realm != self.config.credentials.realm() {
            fail(self, AuthFailure::WrongRealm);
            self.challenge(now, tuple, msg, 401);
            return None;
        }
        if !msg.integrity_ok(&identity.key) {
            fail(self, AuthFailure::BadIntegrity);
            self.challenge(now, tuple, msg, 401);
            return None;
        }
        if !self.nonces.check(nonce, self.secs(now), tuple.client) {
            fail(self, AuthFailure::StaleNonce);
            self.challenge(now, tuple, msg, 438);
            return None;
        }
        Some(Authed {
            username: username.to_owned(),
            user: identity.user,
            key: identity.key,
        })
    }

    fn lifetime_attr(msg: &StunMessage) -> Result<Option<Duration>, ()> {
        match msg.attr(ATTR_LIFETIME) {
            None => Ok(None),
            Some(v) if v.len() == 4 => {
                Ok(Some(Duration::from_secs(u64::from(u32::from_be_bytes([
                    v[0], v[1], v[2], v[3],
                ])))))
            }
            Some(_) => Err(()),
        }
    }

    fn requested_family(msg: &StunMessage) -> Result<Option<Option<Family>>, ()> {
        match msg.attr(ATTR_REQUESTED_ADDRESS_FAMILY) {
            None => Ok(None),
            Some(v) if v.len() == 4 => Ok(Some(match v[0] {
                0x01 => Some(Family::V4),
                0x02 => Some(Family::V6),
                _ => None,
            })),
            Some(_) => Err(()),
        }
    }

    fn handle_allocate(&mut self, now: Instant, tuple: FiveTuple, msg: &StunMessage, auth: Authed) {
        let key = auth.key;
        let failed = |core: &mut TurnCore, code: u16, reason: AllocFailure| {
            core.stats.inc_failed(reason);
            core.error(tuple, msg, code, Vec::new(), Some(&key));
        };
        if let Some(id) = self.live(now, &tuple) {
            let a = &self.allocs[&id];
            if a.allocate_transaction == msg.msg.transaction_id {
                // A retransmission: the same answer again (nothing while still binding).
                if let Some(data) = a.success.clone() {
                    self.out.push_back(Output::ToClient { tuple, data });
                }
            } else {
                failed(self, 437, AllocFailure::Mismatch);
            }
            return;
        }
        match msg.attr(ATTR_REQUESTED_TRANSPORT) {
            None => return failed(self, 400, AllocFailure::BadRequest),
            Some(v) if v.len() != 4 => return failed(self, 400, AllocFailure::BadRequest),
            Some(v) if v[0] != PROTO_UDP => {
                return failed(self, 442, AllocFailure::UnsupportedTransport);
            }
            Some(_) => {}
        }
        let Ok(lifetime) = Self::lifetime_attr(msg) else {
            return failed(self, 400, AllocFailure::BadRequest);
        };
        let Ok(family) = Self::requested_family(msg) else {
            return failed(self, 400, AllocFailure::BadRequest);
        };
        let token = msg.attr(ATTR_RESERVATION_TOKEN).is_some();
        let even = msg.attr(ATTR_EVEN_PORT);
        if token && (even.is_some() || family.is_some()) {
            return failed(self, 400, AllocFailure::BadRequest);
        }
        if token {
            // This server never hands out reservation tokens, so none is valid.
            return failed(self, 508, AllocFailure::Reservation);
        }
        let even_port = match even {
            None => false,
            Some(v) if v.len() != 1 => return failed(self, 400, AllocFailure::BadRequest),
            // The R bit asks to reserve the next port too: not supported.
            Some(v) if v[0] & 0x80 != 0 => return failed(self, 508, AllocFailure::Reservation),
            Some(_) => true,
        };
        if let Some(f) = family
            && f != Some(self.config.relay_family)
        {
            return failed(self, 440, AllocFailure::AddressFamily);
        }
        if self.draining {
            return failed(self, 508, AllocFailure::Draining);
        }
        if self.allocs.len() >= self.config.limits.max_allocations {
            return failed(self, 508, AllocFailure::Capacity);
        }
        let held = self.per_user.get(&auth.user).copied().unwrap_or(0);
        if held >= self.config.limits.user_quota {
            return failed(self, 486, AllocFailure::Quota);
        }

        let max = self.config.limits.max_lifetime;
        let lifetime = match lifetime {
            Some(l) if l > DEFAULT_LIFETIME => l.min(max),
            _ => DEFAULT_LIFETIME.min(max),
        };
        let id = AllocId(self.next_id);
        self.next_id += 1;
        let rate = self.config.limits.bandwidth_bytes_per_sec;
        self.allocs.insert(
            id,
            Allocation {
                tuple,
                relay: None,
                username: auth.username,
                user: auth.user.clone(),
                expires: now + PENDING_LIFETIME,
                pending: Some(Pending {
                    key,
                    lifetime,
                    transaction_id: msg.msg.transaction_id,
                }),
                allocate_transaction: msg.msg.transaction_id,
                success: None,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                channel_of_peer: HashMap::new(),
                up: Bucket::new(rate, now),
                down: Bucket::new(rate, now),
            },
        );
        self.by_tuple.insert(tuple, id);
        *self.per_user.entry(auth.user).or_insert(0) += 1;
        self.out.push_back(Output::BindRelay {
            alloc: id,
            family: self.config.relay_family,
            even_port,
        });
    }

    /// The driver's answer to `Output::BindRelay`: the relay address clients are told (the
    /// external address when behind NAT), or None when no port was free. Returns false when
    /// the allocation is gone meanwhile (the driver then closes the socket).
    pub fn relay_bound(&mut self, now: Instant, alloc: AllocId, relay: Option<SocketAddr>) -> bool {
        let Some(a) = self.allocs.get_mut(&alloc) else {
            return false;
        };
        let Some(pending) = a.pending.take() else {
            return false;
        };
        let tuple = a.tuple;
        let Some(relay) = relay else {
            self.stats.inc_failed(AllocFailure::NoRelayPort);
            let typ = MessageType::new(METHOD_ALLOCATE, CLASS_ERROR_RESPONSE);
            let attrs: Attrs = vec![Box::new(ErrorCodeAttribute {
                code: ErrorCode(508),
                reason: reason_phrase(508).as_bytes().to_vec(),
            })];
            if let Some(data) = self.encode(pending.transaction_id, typ, attrs, Some(&pending.key))
            {
                self.out.push_back(Output::ToClient { tuple, data });
            }
            self.close(alloc, CloseReason::Deleted);
            return false;
        };
        a.relay = Some(relay);
        a.expires = now + pending.lifetime;
        let typ = MessageType::new(METHOD_ALLOCATE, CLASS_SUCCESS_RESPONSE);
        let attrs: Attrs = vec![
            Box::new(rtc_turn::proto::relayaddr::RelayedAddress {
                ip: relay.ip(),
                port: relay.port(),
            }),
            Box::new(Lifetime(pending.lifetime)),
            Box::new(XorMappedAddress {
                ip: tuple.client.ip(),
                port: tuple.client.port(),
            }),
        ];
        let data = self.encode(pending.transaction_id, typ, attrs, Some(&pending.key));
        self.stats.inc_created(tuple.transport);
        if let Some(data) = data {
            if let Some(a) = self.allocs.get_mut(&alloc) {
                a.success = Some(data.clone());
            }
            self.out.push_back(Output::ToClient { tuple, data });
        }
        true
    }

    /// The allocation on `tuple` for a request other than Allocate, checked: 437 when there
    /// is none, 441 when another username made it.
    fn allocation_for(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        msg: &StunMessage,
        auth: &Authed,
    ) -> Option<AllocId> {
        let Some(id) = self
            .live(now, &tuple)
            .filter(|id| self.allocs[id].relay.is_some())
        else {
            self.error(tuple, msg, 437, Vec::new(), Some(&auth.key));
            return None;
        };
        if self.allocs[&id].username != auth.username {
            self.stats.inc_auth(AuthFailure::WrongCredentials);
            self.error(tuple, msg, 441, Vec::new(), Some(&auth.key));
            return None;
        }
        Some(id)
    }

    fn handle_refresh(&mut self, now: Instant, tuple: FiveTuple, msg: &StunMessage, auth: Authed) {
        let Some(id) = self.allocation_for(now, tuple, msg, &auth) else {
            return;
        };
        let Ok(requested) = Self::lifetime_attr(msg) else {
            return self.error(tuple, msg, 400, Vec::new(), Some(&auth.key));
        };
        match Self::requested_family(msg) {
            Err(()) => return self.error(tuple, msg, 400, Vec::new(), Some(&auth.key)),
            Ok(Some(f)) if f != Some(self.config.relay_family) => {
                return self.error(tuple, msg, 443, Vec::new(), Some(&auth.key));
            }
            Ok(_) => {}
        }
        let lifetime = match requested {
            None => DEFAULT_LIFETIME.min(self.config.limits.max_lifetime),
            Some(l) => l.min(self.config.limits.max_lifetime),
        };
        let attrs: Attrs = vec![Box::new(Lifetime(lifetime))];
        self.respond(tuple, msg, CLASS_SUCCESS_RESPONSE, attrs, Some(&auth.key));
        if lifetime.is_zero() {
            self.close(id, CloseReason::Deleted);
        } else if let Some(a) = self.allocs.get_mut(&id) {
            a.expires = now + lifetime;
        }
    }

    /// Decodes a peer address and applies the family and peer policy checks. On failure,
    /// answers with 400, 443 or 403 and returns None.
    fn checked_peer(
        &mut self,
        tuple: FiveTuple,
        msg: &StunMessage,
        value: &[u8],
        key: &Key,
    ) -> Option<SocketAddr> {
        let Some(peer) = wire::decode_xor_address(value, &msg.msg.transaction_id.0) else {
            self.stats.inc_bad(BadMessage::BadAttribute);
            self.error(tuple, msg, 400, Vec::new(), Some(key));
            return None;
        };
        if Family::of(peer.ip()) != self.config.relay_family {
            self.error(tuple, msg, 443, Vec::new(), Some(key));
            return None;
        }
        if let Err(reason) = self.config.policy.check(peer) {
            self.stats.inc_denied(reason);
            self.error(tuple, msg, 403, Vec::new(), Some(key));
            return None;
        }
        Some(peer)
    }

    fn handle_permission(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        msg: &StunMessage,
        auth: Authed,
    ) {
        let Some(id) = self.allocation_for(now, tuple, msg, &auth) else {
            return;
        };
        let values: Vec<Vec<u8>> = msg
            .attrs_of(ATTR_XOR_PEER_ADDRESS)
            .take(self.config.limits.max_permissions + 1)
            .map(<[u8]>::to_vec)
            .collect();
        if values.is_empty() {
            self.stats.inc_bad(BadMessage::BadAttribute);
            return self.error(tuple, msg, 400, Vec::new(), Some(&auth.key));
        }
        let mut peers = Vec::with_capacity(values.len());
        for v in &values {
            let Some(peer) = self.checked_peer(tuple, msg, v, &auth.key) else {
                return;
            };
            peers.push(peer.ip());
        }
        let a = self.allocs.get_mut(&id).expect("live allocation");
        a.prune(now);
        let new = peers
            .iter()
            .filter(|ip| !a.permissions.contains_key(ip))
            .collect::<std::collections::HashSet<_>>()
            .len();
        if a.permissions.len() + new > self.config.limits.max_permissions {
            return self.error(tuple, msg, 508, Vec::new(), Some(&auth.key));
        }
        for ip in peers {
            a.permissions.insert(ip, now + PERMISSION_LIFETIME);
        }
        self.respond(
            tuple,
            msg,
            CLASS_SUCCESS_RESPONSE,
            Vec::new(),
            Some(&auth.key),
        );
    }

    fn handle_channel_bind(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        msg: &StunMessage,
        auth: Authed,
    ) {
        let Some(id) = self.allocation_for(now, tuple, msg, &auth) else {
            return;
        };
        let number = match msg.attr(ATTR_CHANNEL_NUMBER) {
            Some(v) if v.len() == 4 => u16::from_be_bytes([v[0], v[1]]),
            _ => {
                self.stats.inc_bad(BadMessage::BadAttribute);
                return self.error(tuple, msg, 400, Vec::new(), Some(&auth.key));
            }
        };
        if !(wire::CHANNEL_MIN..=wire::CHANNEL_MAX).contains(&number) {
            self.stats.inc_bad(BadMessage::BadAttribute);
            return self.error(tuple, msg, 400, Vec::new(), Some(&auth.key));
        }
        let Some(value) = msg.attr(ATTR_XOR_PEER_ADDRESS).map(<[u8]>::to_vec) else {
            self.stats.inc_bad(BadMessage::BadAttribute);
            return self.error(tuple, msg, 400, Vec::new(), Some(&auth.key));
        };
        let Some(peer) = self.checked_peer(tuple, msg, &value, &auth.key) else {
            return;
        };
        let limits = self.config.limits.clone();
        let a = self.allocs.get_mut(&id).expect("live allocation");
        a.prune(now);
        // A channel is bound to one peer and a peer to one channel, for the binding's life
        // and five minutes after.
        let channel_taken = a.channels.get(&number).is_some_and(|(p, _)| *p != peer);
        let peer_taken = a.channel_of_peer.get(&peer).is_some_and(|n| *n != number);
        if channel_taken || peer_taken {
            return self.error(tuple, msg, 400, Vec::new(), Some(&auth.key));
        }
        let new_channel = !a.channels.contains_key(&number);
        let new_permission = !a.permissions.contains_key(&peer.ip());
        if (new_channel && a.channels.len() >= limits.max_channels)
            || (new_permission && a.permissions.len() >= limits.max_permissions)
        {
            return self.error(tuple, msg, 508, Vec::new(), Some(&auth.key));
        }
        a.channels.insert(number, (peer, now + CHANNEL_LIFETIME));
        a.channel_of_peer.insert(peer, number);
        a.permissions.insert(peer.ip(), now + PERMISSION_LIFETIME);
        self.respond(
            tuple,
            msg,
            CLASS_SUCCESS_RESPONSE,
            Vec::new(),
            Some(&auth.key),
        );
    }

    fn handle_send(&mut self, now: Instant, tuple: FiveTuple, msg: &StunMessage) {
        let Some(id) = self.live(now, &tuple) else {
            self.stats.inc_drop(DropReason::NoAllocation);
            return;
        };
        let peer = msg
            .attr(ATTR_XOR_PEER_ADDRESS)
            .and_then(|v| wire::decode_xor_address(v, &msg.msg.transaction_id.0));
        let (Some(peer), Some(data)) = (peer, msg.attr(ATTR_DATA)) else {
            self.stats.inc_drop(DropReason::BadIndication);
            return;
        };
        self.relay_to_peer(now, id, peer, data.to_vec());
    }

    fn handle_channel_data(&mut self, now: Instant, tuple: FiveTuple, data: &[u8]) {
        let (number, payload) = match wire::parse_channel_data(data) {
            Ok(v) => v,
            Err(e) => {
                self.stats.inc_bad(e.into());
                return;
            }
        };
        let Some(id) = self.live(now, &tuple) else {
            self.stats.inc_drop(DropReason::NoAllocation);
            return;
        };
        let Some(peer) = self.allocs[&id].channel_peer(number, now) else {
            self.stats.inc_drop(DropReason::NoChannel);
            return;
        };
        self.relay_to_peer(now, id, peer, payload.to_vec());
    }

    fn relay_to_peer(&mut self, now: Instant, id: AllocId, peer: SocketAddr, data: Vec<u8>) {
        let a = self.allocs.get_mut(&id).expect("live allocation");
        if a.relay.is_none() || !a.permitted(peer.ip(), now) {
            self.stats.inc_drop(DropReason::NoPermission);
            return;
        }
        if !a.up.take(now, data.len()) {
            self.stats.inc_drop(DropReason::Bandwidth);
            return;
        }
        self.stats.inc_relayed(Direction::ToPeer, data.len());
        self.out.push_back(Output::ToPeer {
            alloc: id,
            peer,
            data,
        });
    }

    /// A datagram a peer sent to an allocation's relay socket.
    pub fn handle_peer(&mut self, now: Instant, alloc: AllocId, peer: SocketAddr, data: &[u8]) {
        let Some(a) = self.allocs.get(&alloc) else {
            self.stats.inc_drop(DropReason::NoAllocation);
            return;
        };
        if a.expires <= now {
            self.close(alloc, CloseReason::Expired);
            self.stats.inc_drop(DropReason::NoAllocation);
            return;
        }
        let channel = a.peer_channel(peer, now);
        let tuple = a.tuple;
        if a.relay.is_none() || !a.permitted(peer.ip(), now) {
            self.stats.inc_drop(DropReason::NoPermission);
            return;
        }
        let message = match channel {
            Some(number) => wire::encode_channel_data(number, data, tuple.transport.is_stream()),
            None => {
                if data.len() > u16::MAX as usize - 64 {
                    self.stats.inc_drop(DropReason::BadIndication);
                    return;
                }
                let transaction_id = self.random_transaction_id();
                let attrs: Attrs = vec![
                    Box::new(rtc_turn::proto::peeraddr::PeerAddress {
                        ip: peer.ip(),
                        port: peer.port(),
                    }),
                    Box::new(rtc_turn::proto::data::Data(data.to_vec())),
                ];
                let typ = MessageType::new(METHOD_DATA, rtc_stun::message::CLASS_INDICATION);
                let mut m = Message::new();
                let mut setters: Vec<Box<dyn Setter>> =
                    vec![Box::new(transaction_id), Box::new(typ)];
                setters.extend(attrs);
                if m.build(&setters).is_err() {
                    self.stats.inc_drop(DropReason::BadIndication);
                    return;
                }
                wire::add_fingerprint(&mut m);
                m.raw
            }
        };
        let a = self.allocs.get_mut(&alloc).expect("checked above");
        if !a.down.take(now, data.len()) {
            self.stats.inc_drop(DropReason::Bandwidth);
            return;
        }
        self.stats.inc_relayed(Direction::ToClient, data.len());
        self.out.push_back(Output::ToClient {
            tuple,
            data: message,
        });
    }
}

#[cfg(test)]
mod tests;
