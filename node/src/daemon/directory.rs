//! Which device belongs to which account, as the relay told us (its member-address answers):
//! the only source we trust for that mapping. It lets a DM go straight to the recipient's
//! connected devices, also on a LAN while the relay is unreachable. Kept in the cache so it
//! survives restarts; bounded.

use std::collections::HashMap;
use std::sync::Arc;

use concord_net::Request;
use concord_net::protocol::{PeerInfo, Response};
use concord_proto::Id;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::Inner;

const SETTING: &str = "directory";
const MAX_ENTRIES: usize = 4_096;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Directory {
    /// PeerId (string) → account id.
    devices: HashMap<String, Id>,
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

    fn learn(&mut self, peers: &[PeerInfo]) -> bool {
        let mut changed = false;
        for p in peers {
            if self.devices.len() >= MAX_ENTRIES && !self.devices.contains_key(&p.peer_id) {
                break;
            }
            changed |= self.devices.insert(p.peer_id.clone(), p.user_id) != Some(p.user_id);
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
        if directory.learn(&learnt) {
            directory.save(&inner);
        }
    }
    if !inner.allow_direct() {
        return;
    }
    for peer in learnt {
        let Ok(id) = peer.peer_id.parse::<PeerId>() else {
            continue;
        };
        for addr in peer
            .addrs
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
        {
            let _ = inner
                .commands
                .send(super::swarm::Command::Dial(
                    addr.with_p2p(id).unwrap_or_else(|a| a),
                ))
                .await;
        }
    }
}
