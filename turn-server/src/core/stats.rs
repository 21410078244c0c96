//! Counters the core keeps (plain integers, no recorder): the driver turns them into
//! Prometheus metrics, and core tests assert on them.

use crate::auth::AuthFailure;
use crate::core::Transport;
use crate::core::wire::ParseError;
use crate::policy::DenyReason;

macro_rules! reasons {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }
        }
    };
}

reasons!(
    /// Why an Allocate request got an error response (the first 401 challenge excepted).
    AllocFailure {
        Unauthorized => "unauthorized",
        StaleNonce => "stale_nonce",
        BadRequest => "bad_request",
        UnsupportedTransport => "unsupported_transport",
        AddressFamily => "address_family",
        Mismatch => "allocation_mismatch",
        Quota => "quota",
        Capacity => "capacity",
        Draining => "draining",
        NoRelayPort => "no_relay_port",
        Reservation => "reservation",
    }
);

reasons!(
    /// Why a packet from a client or a peer was dropped without an answer.
    DropReason {
        NoAllocation => "no_allocation",
        NoPermission => "no_permission",
        NoChannel => "no_channel",
        Bandwidth => "bandwidth",
        BadIndication => "bad_indication",
    }
);

reasons!(
    /// Why a message was refused as malformed or unsupported.
    BadMessage {
        TooShort => "too_short",
        NotStun => "not_stun",
        BadLength => "bad_length",
        Truncated => "truncated",
        BadFingerprint => "bad_fingerprint",
        BadIntegritySize => "bad_integrity_size",
        BadChannelData => "bad_channel_data",
        UnknownAttribute => "unknown_attribute",
        UnknownMethod => "unknown_method",
        UnexpectedClass => "unexpected_class",
        BadAttribute => "bad_attribute",
    }
);

reasons!(
    /// Why an allocation ended.
    CloseReason {
        Expired => "expired",
        Deleted => "deleted",
        ConnectionClosed => "connection_closed",
    }
);

impl From<ParseError> for BadMessage {
    fn from(e: ParseError) -> BadMessage {
        match e {
            ParseError::TooShort => BadMessage::TooShort,
            ParseError::NotStun => BadMessage::NotStun,
            ParseError::BadLength => BadMessage::BadLength,
            ParseError::Truncated => BadMessage::Truncated,
            ParseError::BadFingerprint => BadMessage::BadFingerprint,
            ParseError::BadIntegritySize => BadMessage::BadIntegritySize,
            ParseError::BadChannelData => BadMessage::BadChannelData,
        }
    }
}

/// Direction of relayed data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a client through its relay to a peer.
    ToPeer,
    /// From a peer through the relay to the client.
    ToClient,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::ToPeer, Direction::ToClient];
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ToPeer => "to_peer",
            Direction::ToClient => "to_client",
        }
    }
}

/// Counter arrays indexed by the enums above. All counters only grow, except
/// `active_allocations`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub active_allocations: u64,
    pub allocations_created: [u64; 3],
    pub allocations_failed: [u64; 11],
    pub allocations_closed: [u64; 3],
    pub auth_challenges: u64,
    pub auth_failures: [u64; 8],
    pub peers_denied: [u64; 9],
    pub bad_messages: [u64; 11],
    pub dropped: [u64; 5],
    pub relayed_packets: [u64; 2],
    pub relayed_bytes: [u64; 2],
    pub binding_requests: u64,
}

fn index<T: PartialEq>(all: &[T], v: &T) -> usize {
    all.iter().position(|x| x == v).unwrap_or(0)
}

impl Stats {
    pub fn created(&self, t: Transport) -> u64 {
        self.allocations_created[index(&Transport::ALL, &t)]
    }
    pub fn failed(&self, r: AllocFailure) -> u64 {
        self.allocations_failed[index(AllocFailure::ALL, &r)]
    }
    pub fn closed(&self, r: CloseReason) -> u64 {
        self.allocations_closed[index(CloseReason::ALL, &r)]
    }
    pub fn auth_failed(&self, r: AuthFailure) -> u64 {
        self.auth_failures[index(&AuthFailure::ALL, &r)]
    }
    pub fn denied(&self, r: DenyReason) -> u64 {
        self.peers_denied[index(&DENY_REASONS, &r)]
    }
    pub fn bad(&self, r: BadMessage) -> u64 {
        self.bad_messages[index(BadMessage::ALL, &r)]
    }
    pub fn drops(&self, r: DropReason) -> u64 {
        self.dropped[index(DropReason::ALL, &r)]
    }
    pub fn packets(&self, d: Direction) -> u64 {
        self.relayed_packets[index(&Direction::ALL, &d)]
    }
    pub fn bytes(&self, d: Direction) -> u64 {
        self.relayed_bytes[index(&Direction::ALL, &d)]
    }

    pub(crate) fn inc_created(&mut self, t: Transport) {
        self.allocations_created[index(&Transport::ALL, &t)] += 1;
        self.active_allocations += 1;
    }
    pub(crate) fn inc_failed(&mut self, r: AllocFailure) {
        self.allocations_failed[index(AllocFailure::ALL, &r)] += 1;
    }
    pub(crate) fn inc_closed(&mut self, r: CloseReason) {
        self.allocations_closed[index(CloseReason::ALL, &r)] += 1;
        self.active_allocations = self.active_allocations.saturating_sub(1);
    }
    pub(crate) fn inc_auth(&mut self, r: AuthFailure) {
        if r == AuthFailure::NoCredentials {
            self.auth_challenges += 1;
        } else {
            self.auth_failures[index(&AuthFailure::ALL, &r)] += 1;
        }
    }
    pub(crate) fn inc_denied(&mut self, r: DenyReason) {
        self.peers_denied[index(&DENY_REASONS, &r)] += 1;
    }
    pub(crate) fn inc_bad(&mut self, r: BadMessage) {
        self.bad_messages[index(BadMessage::ALL, &r)] += 1;
    }
    pub(crate) fn inc_drop(&mut self, r: DropReason) {
        self.dropped[index(DropReason::ALL, &r)] += 1;
    }
    pub(crate) fn inc_relayed(&mut self, d: Direction, bytes: usize) {
        let i = index(&Direction::ALL, &d);
        self.relayed_packets[i] += 1;
        self.relayed_bytes[i] += bytes as u64;
    }
}

/// Every deny reason, in `Stats::peers_denied` order.
pub const DENY_REASONS: [DenyReason; 9] = [
    DenyReason::OwnListener,
    DenyReason::Unspecified,
    DenyReason::Loopback,
    DenyReason::Private,
    DenyReason::LinkLocal,
    DenyReason::Multicast,
    DenyReason::Reserved,
    DenyReason::OwnAddress,
    DenyReason::DenyList,
];
