//! GossipSub topics: one per public channel. Private channels never get a topic.

use concord_proto::Id;
use libp2p::gossipsub::IdentTopic;

pub fn channel_topic(channel_id: Id) -> IdentTopic {
    IdentTopic::new(format!("concord/channel/{channel_id}"))
}

/// The channel a topic belongs to, if it is one of ours.
pub fn channel_of_topic(topic: &str) -> Option<Id> {
    topic.strip_prefix("concord/channel/")?.parse().ok()
}
