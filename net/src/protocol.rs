//! `/concord/rpc/1`: Concord's request-response protocol between nodes and relays, JSON
//! encoded, size-capped by the codec before anything is parsed.
//!
//! | request | from → to | answer |
//! |---|---|---|
//! | `hello` | node → relay | `state`: the user, guilds and DMs; registers the node for pushes |
//! | `submit` | node → relay | `ack` with the stored message (and its seq), or `refused` |
//! | `sync` | node → relay | `events`: relay-signed events after a seq, one page |
//! | `peers` | node → relay | `peers`: addresses of guild members who allow direct connections |
//! | `push` | relay → node | `received`: confirmed events, relay-signed |
//! | `direct` | node → node | `received` or `refused`: an envelope sent straight to a peer (DMs) |
//! | `voice_offer` | node → node | `voice_answer` or `refused`: WebRTC offer for a voice mesh link, with the offerer's relay-signed voice grant |
//! | `voice_bye` | node → node | `received`: the sender closed its mesh link (left the channel) |

use std::time::Duration;

use concord_proto::Id;
use concord_proto::gateway::ReadyGuild;
use concord_proto::model::{Channel, Message, User};
use concord_proto::signed::{Envelope, SignedEvent, VoiceGrant};
use libp2p::StreamProtocol;
use libp2p::request_response::{self, ProtocolSupport};
use serde::{Deserialize, Serialize};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/concord/rpc/1");
/// Requests are small; a push or sync page is at most 100 events.
pub const MAX_REQUEST_BYTES: u64 = 512 * 1024;
pub const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;
pub const MAX_PUSH_EVENTS: usize = 100;
pub const MAX_PEERS: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Hello {
        allow_direct: bool,
    },
    Submit {
        envelope: Envelope,
    },
    Sync {
        channel_id: Id,
        after_seq: i64,
        limit: u32,
    },
    Peers {
        guild_id: Id,
    },
    Push {
        events: Vec<SignedEvent>,
    },
    Direct {
        envelope: Envelope,
    },
    /// A voice mesh link: the offerer's grant (checked before the offer is looked at) and a
    /// complete SDP offer (all ICE candidates gathered: no trickle messages).
    VoiceOffer {
        grant: VoiceGrant,
        sdp: String,
        /// An ICE restart of the existing link (new ICE credentials, same DTLS session).
        #[serde(default)]
        restart: bool,
    },
    VoiceBye {
        channel_id: Id,
    },
}

/// An SDP offer or answer is a few kilobytes; more is refused.
pub const MAX_SDP_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub user_id: Id,
    pub device_key: String,
    pub peer_id: String,
    pub addrs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    State {
        user: User,
        guilds: Vec<ReadyGuild>,
        dms: Vec<Channel>,
    },
    Ack {
        message: Message,
    },
    Events {
        events: Vec<SignedEvent>,
    },
    Peers {
        peers: Vec<PeerInfo>,
    },
    Received,
    VoiceAnswer {
        grant: VoiceGrant,
        sdp: String,
    },
    Refused {
        code: String,
        message: String,
    },
}

impl Response {
    pub fn refused(code: &str, message: impl Into<String>) -> Response {
        Response::Refused {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

pub type Behaviour = request_response::json::Behaviour<Request, Response>;

/// The request-response behaviour with Concord's limits.
pub fn behaviour(timeout: Duration) -> Behaviour {
    let codec = request_response::json::codec::Codec::default()
        .set_request_size_maximum(MAX_REQUEST_BYTES)
        .set_response_size_maximum(MAX_RESPONSE_BYTES);
    request_response::Behaviour::with_codec(
        codec,
        [(PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape() {
        let r = Request::Sync {
            channel_id: Id(9),
            after_seq: 3,
            limit: 50,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"type":"sync","channel_id":"9","after_seq":3,"limit":50}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        assert!(
            serde_json::from_str::<Request>(
                r#"{"type":"sync","channel_id":"9","after_seq":3,"limit":50,"x":1}"#
            )
            .is_err()
        );
        assert!(serde_json::from_str::<Request>(r#"{"type":"nope"}"#).is_err());
    }
}
