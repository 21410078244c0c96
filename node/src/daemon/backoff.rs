//! Dial backoff: an address of a peer that failed is not dialed again until its backoff has
//! passed (2 s, doubling per failure, at most 5 min); a connection over it clears it. The
//! member directory re-dials on every presence change, so without this a peer with dead
//! addresses would be hammered. Time is a parameter (tested with virtual time); bounded.
//! Only member dials back off: explicit dials, such as the relay link, do not.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

const FIRST: Duration = Duration::from_secs(2);
const MAX: Duration = Duration::from_secs(300);
const MAX_ENTRIES: usize = 1_024;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    until: Instant,
}

#[derive(Debug, Default)]
pub struct Backoff {
    entries: HashMap<(PeerId, Multiaddr), Entry>,
}

/// The address without a trailing `/p2p/<peer>` (dials and dial errors differ in that).
fn key(peer: PeerId, addr: &Multiaddr) -> (PeerId, Multiaddr) {
    let mut addr = addr.clone();
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    (peer, addr)
}

impl Backoff {
    pub fn is_backed_off(&self, peer: PeerId, addr: &Multiaddr, now: Instant) -> bool {
        self.entries
            .get(&key(peer, addr))
            .is_some_and(|e| now < e.until)
    }

    pub fn failed(&mut self, peer: PeerId, addr: &Multiaddr, now: Instant) {
        let k = key(peer, addr);
        if !self.entries.contains_key(&k) && self.entries.len() >= MAX_ENTRIES {
            self.entries.retain(|_, e| now < e.until);
            if self.entries.len() >= MAX_ENTRIES
                && let Some(soonest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.until)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&soonest);
            }
        }
        let failures = self.entries.get(&k).map_or(0, |e| e.failures) + 1;
        let delay = FIRST.saturating_mul(1 << (failures - 1).min(16)).min(MAX);
        self.entries.insert(
            k,
            Entry {
                failures,
                until: now + delay,
            },
        );
    }

    pub fn succeeded(&mut self, peer: PeerId, addr: &Multiaddr) {
        self.entries.remove(&key(peer, addr));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/60.0.0.21/udp/{port}/quic-v1")
            .parse()
            .unwrap()
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let (mut b, peer, t0) = (Backoff::default(), PeerId::random(), Instant::now());
        let a = addr(4001);
        assert!(!b.is_backed_off(peer, &a, t0));
        b.failed(peer, &a, t0);
        assert!(b.is_backed_off(peer, &a, t0 + Duration::from_millis(1_999)));
        assert!(!b.is_backed_off(peer, &a, t0 + FIRST));
        let t1 = t0 + FIRST;
        b.failed(peer, &a, t1);
        assert!(b.is_backed_off(peer, &a, t1 + Duration::from_secs(3)));
        assert!(!b.is_backed_off(peer, &a, t1 + Duration::from_secs(4)));
        for _ in 0..30 {
            b.failed(peer, &a, t1);
        }
        assert!(b.is_backed_off(peer, &a, t1 + MAX - Duration::from_secs(1)));
        assert!(!b.is_backed_off(peer, &a, t1 + MAX));
    }

    #[test]
    fn backoff_is_per_peer_and_address_and_ignores_the_p2p_suffix() {
        let (mut b, now) = (Backoff::default(), Instant::now());
        let (p, q) = (PeerId::random(), PeerId::random());
        b.failed(p, &addr(1).with(Protocol::P2p(p)), now);
        assert!(b.is_backed_off(p, &addr(1), now));
        assert!(b.is_backed_off(p, &addr(1).with(Protocol::P2p(p)), now));
        assert!(!b.is_backed_off(p, &addr(2), now));
        assert!(!b.is_backed_off(q, &addr(1), now));
        b.succeeded(p, &addr(1));
        assert!(!b.is_backed_off(p, &addr(1), now));
    }

    #[test]
    fn the_table_is_bounded() {
        let (mut b, peer, now) = (Backoff::default(), PeerId::random(), Instant::now());
        for port in 0..(MAX_ENTRIES as u16 + 100) {
            b.failed(peer, &addr(port), now);
        }
        assert_eq!(b.len(), MAX_ENTRIES);
        // The newest failure is kept.
        assert!(b.is_backed_off(peer, &addr(MAX_ENTRIES as u16 + 99), now));
    }
}
