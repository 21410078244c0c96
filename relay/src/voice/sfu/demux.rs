//! Which participant a datagram on a room's shared sockets belongs to: by source address,
//! or, for a STUN check, by the relay's ICE username fragment it names ("ours:theirs").
//! Plain data, no IO: the room's task asks and then tells what the peer made of it.
//! A STUN check from an address another peer had goes to the peer whose ufrag it names,
//! which takes the address over once it accepts the check. Bounded, unit-tested.

use std::collections::HashMap;
use std::net::SocketAddr;

use concord_proto::Id;

/// Addresses one peer may send from (host, reflexive and relayed candidates of a client).
const MAX_ADDRS_PER_PEER: usize = 8;

/// Where a datagram goes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Route {
    pub user: Id,
    /// The address belongs to another peer so far: it moves to `user` once their connection
    /// accepts the check ([`Demux::learn`]).
    pub moves: bool,
}

#[derive(Default)]
pub(super) struct Demux {
    by_addr: HashMap<SocketAddr, Id>,
    by_ufrag: HashMap<String, Id>,
    /// Each peer's ufrag and the addresses learnt for it (oldest first).
    peers: HashMap<Id, (String, Vec<SocketAddr>)>,
}

impl Demux {
    /// A new peer (replacing the user's earlier one) with the ufrag of the relay's offer.
    pub fn add(&mut self, user: Id, ufrag: String) {
        self.remove(user);
        self.by_ufrag.insert(ufrag.clone(), user);
        self.peers.insert(user, (ufrag, Vec::new()));
    }

    pub fn remove(&mut self, user: Id) {
        let Some((ufrag, addrs)) = self.peers.remove(&user) else {
            return;
        };
        self.by_ufrag.remove(&ufrag);
        for addr in addrs {
            self.by_addr.remove(&addr);
        }
    }

    /// The peer a datagram from `from` is for. A new address is learnt at once when a check
    /// names a peer (it may come before that peer has the answer, and the replies to the
    /// relay's own checks carry no name); anything else from an unknown address is None.
    pub fn route(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<Route> {
        let named = stun_username(datagram)
            .and_then(|name| name.split(':').next())
            .and_then(|ufrag| self.by_ufrag.get(ufrag).copied());
        match (named, self.by_addr.get(&from).copied()) {
            (Some(user), Some(known)) => Some(Route {
                user,
                moves: user != known,
            }),
            (None, Some(known)) => Some(Route {
                user: known,
                moves: false,
            }),
            (Some(user), None) => {
                self.learn(user, from);
                Some(Route { user, moves: false })
            }
            (None, None) => None,
        }
    }

    /// Ties `from` to `user` (and to nobody else), forgetting the user's oldest address past
    /// the bound.
    pub fn learn(&mut self, user: Id, from: SocketAddr) {
        if !self.peers.contains_key(&user) {
            return;
        }
        if let Some(previous) = self.by_addr.insert(from, user)
            && previous != user
            && let Some((_, addrs)) = self.peers.get_mut(&previous)
        {
            addrs.retain(|a| *a != from);
        }
        let Some((_, addrs)) = self.peers.get_mut(&user) else {
            return;
        };
        if addrs.contains(&from) {
            return;
        }
        if addrs.len() >= MAX_ADDRS_PER_PEER {
            let oldest = addrs.remove(0);
            self.by_addr.remove(&oldest);
        }
        addrs.push(from);
    }
}

/// The USERNAME attribute of a STUN binding request, checked before it is read: a STUN
/// header (RFC 8489: top bits 00, magic cookie) and attributes that fit the datagram.
pub(super) fn stun_username(datagram: &[u8]) -> Option<&str> {
    const MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    const USERNAME: u16 = 0x0006;
    if datagram.len() < 20 || datagram[0] & 0xC0 != 0 || datagram[4..8] != MAGIC {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let body = datagram.get(20..20 + length)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        let value = body.get(at + 4..at + 4 + len)?;
        if kind == USERNAME {
            return std::str::from_utf8(value).ok();
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{Demux, MAX_ADDRS_PER_PEER, Route, stun_username};
    use concord_proto::Id;
    use std::net::SocketAddr;

    /// A binding request naming `username`, with a padded attribute after it.
    fn check(username: &str) -> Vec<u8> {
        let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        m.extend_from_slice(&[7; 12]);
        let name = username.as_bytes();
        let mut attrs = vec![0x00, 0x06, 0x00, name.len() as u8];
        attrs.extend_from_slice(name);
        attrs.resize(4 + name.len().div_ceil(4) * 4, 0);
        attrs.extend_from_slice(&[0x80, 0x28, 0x00, 0x04, 1, 2, 3, 4]);
        m[2..4].copy_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&attrs);
        m
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    const RTP: [u8; 12] = [0x80, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9];

    #[test]
    fn stun_username_is_read_only_from_a_well_formed_request() {
        let m = check("ab12:xyz");
        assert_eq!(stun_username(&m), Some("ab12:xyz"));
        // Length past the end, wrong cookie, RTP-looking first byte, too short.
        let mut long = m.clone();
        long[3] += 4;
        assert_eq!(stun_username(&long), None);
        let mut cookie = m.clone();
        cookie[4] = 0;
        assert_eq!(stun_username(&cookie), None);
        let mut rtp = m.clone();
        rtp[0] = 0x80;
        assert_eq!(stun_username(&rtp), None);
        assert_eq!(stun_username(&m[..19]), None);
        // An attribute whose length runs past the body.
        let mut bad = m.clone();
        bad[20 + 3] = 0x40;
        assert_eq!(stun_username(&bad), None);
    }

    #[test]
    fn a_check_names_its_peer_and_media_follows_the_address() {
        let (bob, cat) = (Id(1), Id(2));
        let mut demux = Demux::default();
        demux.add(bob, "bobufrag".into());
        demux.add(cat, "catufrag".into());
        // Media from nowhere known, or a check naming nobody: dropped.
        assert_eq!(demux.route(addr(1000), &RTP), None);
        assert_eq!(demux.route(addr(1000), &check("nobody:x")), None);
        let to_bob = Some(Route {
            user: bob,
            moves: false,
        });
        assert_eq!(demux.route(addr(1000), &check("bobufrag:b")), to_bob);
        assert_eq!(demux.route(addr(1000), &RTP), to_bob);
        // A new offer for bob: the old ufrag and addresses are gone.
        demux.add(bob, "bobnew".into());
        assert_eq!(demux.route(addr(1000), &RTP), None);
        assert_eq!(demux.route(addr(1001), &check("bobufrag:b")), None);
        demux.remove(cat);
        assert_eq!(demux.route(addr(1002), &check("catufrag:c")), None);
    }

    #[test]
    fn a_reused_port_moves_only_once_the_new_peer_accepts_the_check() {
        let (bob, cat) = (Id(1), Id(2));
        let mut demux = Demux::default();
        demux.add(bob, "bobufrag".into());
        demux.add(cat, "catufrag".into());
        demux.route(addr(1000), &check("bobufrag:b"));
        // Bob's socket closed and cat's new one got its port: cat's check goes to cat, but
        // the address stays bob's until cat's connection accepts it.
        let moving = Some(Route {
            user: cat,
            moves: true,
        });
        assert_eq!(demux.route(addr(1000), &check("catufrag:c")), moving);
        assert_eq!(demux.route(addr(1000), &RTP).unwrap().user, bob);
        demux.learn(cat, addr(1000));
        assert_eq!(demux.route(addr(1000), &RTP).unwrap().user, cat);
        // Bob no longer holds it: removing bob leaves cat's address alone.
        demux.remove(bob);
        assert_eq!(demux.route(addr(1000), &RTP).unwrap().user, cat);
    }

    #[test]
    fn a_peer_keeps_its_latest_addresses_only() {
        let bob = Id(1);
        let mut demux = Demux::default();
        demux.add(bob, "bobufrag".into());
        let last = 2000 + MAX_ADDRS_PER_PEER as u16;
        for port in 2000..=last {
            demux.route(addr(port), &check("bobufrag:b"));
        }
        assert_eq!(
            demux.route(addr(2000), &RTP),
            None,
            "the oldest is forgotten"
        );
        for port in 2001..=last {
            assert_eq!(demux.route(addr(port), &RTP).unwrap().user, bob);
        }
    }
}
