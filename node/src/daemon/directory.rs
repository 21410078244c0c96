//! Which device belongs to which account, as the relay told us (its member-address answers):
//! the only source we trust for that mapping. It lets a DM go straight to the recipient's
//! connected devices, also on a LAN while the relay is unreachable. Kept in the cache so it
//! survives restarts; bounded.
//!
//! Members' addresses are kept in memory only, with first-learnt and last-seen times, and
//! expire after 10 min (`concord members` shows them). Members are dialed directly, then
//! through the relay's circuit after 500 ms.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use concord_net::Request;
use concord_net::protocol::{PeerInfo, Response};
use concord_proto::Id;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::Inner;

const SETTING: &str = "directory";
const MAX_ENTRIES: usize = 4_096;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Directory {
    /// PeerId (string) → account id.
    devices: HashMap<String, Id>,
    /// The addresses the relay last reported per device; not persisted: addresses go stale
    /// (new ports, new networks), so they expire and are asked for again.
    #[serde(skip)]
    addrs: HashMap<String, AddrRecord>,
}

/// A member's addresses as the relay reported them: when this set was first reported and
/// when last (unix ms).
#[derive(Debug, Clone, Serialize)]
pub struct AddrRecord {
    pub addrs: Vec<String>,
    pub learnt_at_ms: i64,
    pub seen_at_ms: i64,
}

/// How long a member's addresses are trusted without the relay repeating them.
const ADDR_TTL_MS: i64 = 10 * 60 * 1000;

/// One device the relay reported, as `concord members` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberDevice {
    pub peer_id: String,
    pub user_id: Id,
    #[serde(flatten)]
    pub record: Option<AddrRecord>,
}

impl Directory {
    pub fn load(inner: &Inner) -> Directory {
        inner
            .cache()
            .setting(SETTING)
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    }

    fn save(&self, inner: &Inner) {
        if let Ok(text) = serde_json::to_string(self) {
            let _ = inner.cache().set_setting(SETTING, &text);
        }
    }

    pub fn user_of(&self, peer: &PeerId) -> Option<Id> {
        self.devices.get(&peer.to_string()).copied()
    }

    /// Devices with their unexpired addresses, sorted by PeerId.
    pub fn members(&mut self, now_ms: i64) -> Vec<MemberDevice> {
        self.addrs
            .retain(|_, r| now_ms.saturating_sub(r.seen_at_ms) < ADDR_TTL_MS);
        let mut out: Vec<MemberDevice> = self
            .devices
            .iter()
            .map(|(peer, user)| MemberDevice {
                peer_id: peer.clone(),
                user_id: *user,
                record: self.addrs.get(peer).cloned(),
            })
            .collect();
        out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        out
    }

    fn learn(&mut self, peers: &[PeerInfo], now_ms: i64) -> bool {
        let mut changed = false;
        for p in peers {
            if self.devices.len() >= MAX_ENTRIES && !self.devices.contains_key(&p.peer_id) {
                break;
            }
            changed |= self.devices.insert(p.peer_id.clone(), p.user_id) != Some(p.user_id);
            if !p.addrs.is_empty() {
                match self.addrs.get_mut(&p.peer_id) {
                    Some(r) if r.addrs == p.addrs => r.seen_at_ms = now_ms,
                    _ => {
                        self.addrs.insert(
                            p.peer_id.clone(),
                            AddrRecord {
                                addrs: p.addrs.clone(),
                                learnt_at_ms: now_ms,
                                seen_at_ms: now_ms,
                            },
                        );
                    }
                }
            }
        }
        changed
    }
}

/// Asks the relay for the members of each guild who accept direct connections, remembers
/// their devices, and dials them: public channels then gossip over direct links.
pub async fn refresh(inner: Arc<Inner>, guilds: Vec<Id>) {
    let Some(relay) = inner.relay().and_then(|r| r.peer()) else {
        return;
    };
    let mut learnt = Vec::new();
    for guild_id in guilds {
        match inner.rpc(relay, Request::Peers { guild_id }).await {
            Ok(Response::Peers { peers }) => learnt.extend(peers),
            Ok(other) => tracing::debug!(?other, %guild_id, "no peers"),
            Err(e) => tracing::debug!(error = %e, "peers query failed"),
        }
    }
    {
        let mut directory = inner.directory.lock().expect("directory lock");
        if directory.learn(&learnt, super::now_ms()) {
            directory.save(&inner);
        }
    }
    if !inner.allow_direct() {
        return;
    }
    let me = inner.identity.peer_id();
    let members: Vec<PeerId> = learnt
        .iter()
        .filter_map(|p| p.peer_id.parse().ok())
        .filter(|p| *p != me)
        .collect();
    tokio::spawn(dial_through_relay(inner.clone(), members));
    for peer in learnt {
        let Ok(id) = peer.peer_id.parse::<PeerId>() else {
            continue;
        };
        if id == me {
            continue;
        }
        // One dial per member over all its addresses (direct ones and its relay circuit, tried
        // concurrently), and none while connected or already dialing: a presence change
        // re-runs this, and every circuit counts against the relay's rate limits.
        let addrs: Vec<Multiaddr> = peer
            .addrs
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .collect();
        if !addrs.is_empty() {
            let _ = inner
                .commands
                .send(super::swarm::Command::DialPeer { peer: id, addrs })
                .await;
        }
    }
}

/// How long direct dials get before a member is dialed through the relay's circuit: enough
/// for a handshake with a reachable address, short enough that hole punching (which needs
/// the relayed connection first) starts at once when the member is behind a NAT. go-libp2p's
/// dial ranking delays relay addresses by the same 500 ms.
const DIRECT_DIAL_GRACE: Duration = Duration::from_millis(500);

/// Members still not connected after the grace period are dialed through the relay (they
/// hold a reservation there unless they are relay-only); DCUtR then tries to make the
/// connection direct.
async fn dial_through_relay(inner: Arc<Inner>, members: Vec<PeerId>) {
    let Some(relay) = inner.relay() else { return };
    let addrs: Vec<Multiaddr> = relay.addrs.iter().filter_map(|a| a.parse().ok()).collect();
    // QUIC first: it shares its socket between listening and dialing, which hole punching needs.
    let Some(base) = addrs
        .iter()
        .find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)))
        .or(addrs.first())
        .cloned()
    else {
        return;
    };
    tokio::time::sleep(DIRECT_DIAL_GRACE).await;
    let connected = inner.connections.lock().expect("connections lock").peers();
    for member in members {
        if connected.contains(&member) {
            continue;
        }
        let circuit = base
            .clone()
            .with(Protocol::P2pCircuit)
            .with(Protocol::P2p(member));
        let _ = inner
            .commands
            .send(super::swarm::Command::Dial(circuit))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(peer: &str, user: i64, addrs: &[&str]) -> PeerInfo {
        PeerInfo {
            user_id: Id(user),
            device_key: String::new(),
            peer_id: peer.into(),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn addresses_keep_their_first_learnt_time_and_expire_unless_repeated() {
        let mut d = Directory::default();
        let a = "/ip4/60.0.0.21/udp/4001/quic-v1";
        assert!(d.learn(&[info("p1", 7, &[a])], 1_000));
        // The same addresses again: only last-seen moves; the mapping did not change.
        assert!(!d.learn(&[info("p1", 7, &[a])], 5_000));
        let m = d.members(5_000);
        let r = m[0].record.as_ref().expect("fresh addresses");
        assert_eq!((r.learnt_at_ms, r.seen_at_ms), (1_000, 5_000));
        // New addresses start a new record.
        d.learn(&[info("p1", 7, &["/ip4/60.0.0.22/udp/9/quic-v1"])], 6_000);
        assert_eq!(
            d.members(6_000)[0].record.as_ref().unwrap().learnt_at_ms,
            6_000
        );
        // Not repeated for ADDR_TTL_MS: the addresses go, the device → account mapping stays.
        let m = d.members(6_000 + ADDR_TTL_MS);
        assert!(m[0].record.is_none());
        assert_eq!(m[0].user_id, Id(7));
    }

    #[test]
    fn the_directory_is_bounded() {
        let mut d = Directory::default();
        let many: Vec<PeerInfo> = (0..MAX_ENTRIES + 10)
            .map(|i| info(&format!("p{i}"), i as i64, &["/ip4/60.0.0.1/tcp/1"]))
            .collect();
        d.learn(&many, 0);
        assert_eq!(d.members(0).len(), MAX_ENTRIES);
        assert!(d.addrs.len() <= MAX_ENTRIES);
    }
}
