//! What comes in: relay pushes (relay-signed events applied to the cache in seq order, with
//! catch-up on gaps), gossip for public channels (shown at once as unconfirmed), and direct
//! envelopes from peers (DMs).

use std::sync::Arc;

use concord_net::Request;
use concord_net::identity::device_key;
use concord_net::protocol::{MAX_PUSH_EVENTS, Response};
use concord_proto::gateway::{GuildDeleted, PresenceUpdate, ReadyGuild, TypingStart};
use concord_proto::model::{Channel, ChannelKind, EventKind, Guild, Message, MessageDeleted};
use concord_proto::permissions::gossip_eligible;
use concord_proto::signed::{Envelope, SignedEvent};
use concord_proto::{Id, Permissions};
use libp2p::PeerId;
use libp2p::gossipsub::{self, MessageAcceptance};
use serde_json::Value;

use super::{Inner, LocalEvent, now_ms};
use crate::cache::Applied;

/// A request from a peer. Only the relay may push; anyone may send a direct envelope, which
/// must be signed by the peer's own device key.
pub async fn inbound(
    inner: &Arc<Inner>,
    peer: PeerId,
    relay: Option<PeerId>,
    request: Request,
) -> Response {
    match request {
        Request::Push { events } if Some(peer) == relay => {
            if events.len() > MAX_PUSH_EVENTS {
                return Response::refused("too_many_events", "at most 100 events per push");
            }
            push(inner, events).await;
            Response::Received
        }
        Request::Push { .. } => {
            Response::refused("not_my_relay", "only this node's relay pushes events")
        }
        Request::Direct { envelope } => match direct(inner, peer, envelope) {
            Ok(()) => Response::Received,
            Err((code, message)) => Response::refused(code, message),
        },
        Request::VoiceOffer {
            grant,
            sdp,
            restart,
        } => super::voice::on_offer(inner, peer, grant, sdp, restart).await,
        Request::VoiceBye { channel_id } => super::voice::on_bye(inner, peer, channel_id).await,
        _ => Response::refused("unsupported", "nodes answer push, direct and voice"),
    }
}

/// Relay-signed events: verified with the relay key pinned at join, then applied.
pub async fn push(inner: &Arc<Inner>, events: Vec<SignedEvent>) {
    let Some(key) = inner.relay().and_then(|r| r.verifying_key()) else {
        return;
    };
    for event in events {
        if let Err(e) = event.verify(&key) {
            tracing::warn!(error = %e, t = %event.t, "dropping a pushed event with a bad relay signature");
            continue;
        }
        apply_one(inner, &event.t, &event.d).await;
    }
}

fn channel_event_channel(data: &Value) -> Option<Id> {
    serde_json::from_value(data.get("channel_id")?.clone()).ok()
}

/// Applies one verified event: channel events through the seq cursor (a gap starts a
/// catch-up), state events to the cache.
pub async fn apply_one(inner: &Arc<Inner>, t: &str, d: &str) {
    let Ok(data) = serde_json::from_str::<Value>(d) else {
        tracing::warn!(t, "dropping a pushed event that is not JSON");
        return;
    };
    if let Some(kind) = EventKind::parse(t) {
        let result = inner.cache().apply_event(kind, &data);
        match result {
            Ok(Applied::Applied) => announce(inner, kind, &data),
            Ok(Applied::Duplicate) => {}
            Ok(Applied::Gap { .. }) => {
                if let Some(channel) = channel_event_channel(&data) {
                    tokio::spawn(super::relay_link::catch_up(inner.clone(), channel));
                }
            }
            Err(e) => tracing::warn!(error = %e, t, "could not apply an event"),
        }
        return;
    }
    if let Err(e) = apply_state(inner, t, data) {
        tracing::warn!(error = %e, t, "could not apply a state event");
    }
}

/// Tells local listeners what a channel event changed.
pub fn announce(inner: &Inner, kind: EventKind, data: &Value) {
    let Some(channel) = channel_event_channel(data) else {
        return;
    };
    match kind {
        EventKind::MessageDelete => {
            if let Ok(d) = serde_json::from_value::<MessageDeleted>(data.clone()) {
                inner.emit(LocalEvent::MessageDeleted {
                    channel_id: channel,
                    id: d.id,
                });
            }
        }
        _ => {
            let id = match kind {
                EventKind::MessageCreate | EventKind::MessageUpdate => {
                    serde_json::from_value::<Message>(data.clone())
                        .ok()
                        .map(|m| m.id)
                }
                _ => data
                    .get("message_id")
                    .and_then(|v| serde_json::from_value(v.clone()).ok()),
            };
            let found = id.and_then(|id| {
                let cache = inner.cache();
                cache
                    .history(channel, None, 200)
                    .ok()?
                    .into_iter()
                    .rev()
                    .find(|m| m.id == Some(id))
            });
            if let Some(message) = found {
                inner.emit(LocalEvent::Message { message });
            }
        }
    }
}

/// Whether the channel's messages may go on GossipSub: every member of its guild may view it
/// (`permissions::gossip_eligible`, with the guild's @everyone role from the cache; a guild
/// whose role is not cached yet: no).
pub fn is_public(inner: &Inner, channel: &Channel) -> bool {
    let Some(guild) = channel.guild_id else {
        return false;
    };
    let everyone = inner.cache().everyone_permissions(guild);
    matches!(everyone, Ok(Some(everyone)) if gossip_eligible(channel, everyone))
}

pub fn follow_channel(inner: &Inner, channel: &Channel) {
    let command = if is_public(inner, channel) && inner.allow_direct() {
        super::swarm::Command::Subscribe(channel.id)
    } else {
        super::swarm::Command::Unsubscribe(channel.id)
    };
    let _ = inner.commands.try_send(command);
}

fn apply_state(inner: &Arc<Inner>, t: &str, data: Value) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    match t {
        "guild_create" => {
            let guild: ReadyGuild = serde_json::from_value(data).map_err(|e| err(&e))?;
            inner.cache().upsert_guild(&guild).map_err(|e| err(&e))?;
            for channel in &guild.channels {
                follow_channel(inner, channel);
                tokio::spawn(super::relay_link::catch_up(inner.clone(), channel.id));
            }
        }
        "guild_update" => {
            let guild: Guild = serde_json::from_value(data).map_err(|e| err(&e))?;
            inner.cache().update_guild(&guild).map_err(|e| err(&e))?;
        }
        "guild_delete" => {
            let d: GuildDeleted = serde_json::from_value(data).map_err(|e| err(&e))?;
            inner.cache().remove_guild(d.id).map_err(|e| err(&e))?;
        }
        "channel_create" | "channel_update" => {
            let channel: Channel = serde_json::from_value(data).map_err(|e| err(&e))?;
            inner
                .cache()
                .upsert_channel(&channel)
                .map_err(|e| err(&e))?;
            follow_channel(inner, &channel);
            tokio::spawn(super::relay_link::catch_up(inner.clone(), channel.id));
        }
        "channel_delete" => {
            let d: concord_proto::gateway::ChannelDeleted =
                serde_json::from_value(data).map_err(|e| err(&e))?;
            let _ = inner
                .commands
                .try_send(super::swarm::Command::Unsubscribe(d.id));
            inner.cache().remove_channel(d.id).map_err(|e| err(&e))?;
        }
        "role_create" | "role_update" => {
            let role: concord_proto::model::Role =
                serde_json::from_value(data).map_err(|e| err(&e))?;
            inner.cache().upsert_role(&role).map_err(|e| err(&e))?;
            // @everyone's view decides which of the guild's channels may be gossiped.
            if role.id == role.guild_id {
                let channels = inner.cache().channels(role.guild_id).map_err(|e| err(&e))?;
                for channel in &channels {
                    follow_channel(inner, channel);
                }
            }
        }
        "role_delete" => {
            let d: concord_proto::gateway::RoleDeleted =
                serde_json::from_value(data).map_err(|e| err(&e))?;
            inner
                .cache()
                .remove_role(d.guild_id, d.role_id)
                .map_err(|e| err(&e))?;
        }
        "member_update" => {
            let member: concord_proto::model::Member =
                serde_json::from_value(data).map_err(|e| err(&e))?;
            let me = inner.cache().me().map_err(|e| err(&e))?;
            if me.is_some_and(|u| u.id == member.user.id) {
                inner
                    .cache()
                    .set_my_roles(member.guild_id, &member.roles)
                    .map_err(|e| err(&e))?;
            }
        }
        "voice_state_update" => {
            let d: concord_proto::model::VoiceState =
                serde_json::from_value(data).map_err(|e| err(&e))?;
            super::voice::on_voice_state(inner, d);
            inner.emit(LocalEvent::StateChanged);
            return Ok(());
        }
        "typing_start" => {
            let d: TypingStart = serde_json::from_value(data).map_err(|e| err(&e))?;
            inner.emit(LocalEvent::Typing {
                channel_id: d.channel_id,
                user_id: d.user_id,
            });
            return Ok(());
        }
        "presence_update" => {
            let d: PresenceUpdate = serde_json::from_value(data).map_err(|e| err(&e))?;
            // Someone came online: their node may accept direct connections now.
            if d.status == concord_proto::gateway::PresenceStatus::Online {
                let guilds = inner
                    .cache()
                    .guilds()
                    .map(|g| g.iter().map(|g| g.id).collect())
                    .unwrap_or_default();
                tokio::spawn(super::directory::refresh(inner.clone(), guilds));
            }
            inner.emit(LocalEvent::Presence {
                user_id: d.user_id,
                status: d.status.as_str().to_owned(),
            });
            return Ok(());
        }
        _ => return Ok(()),
    }
    inner.emit(LocalEvent::StateChanged);
    Ok(())
}

/// What to do with a gossip message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept(Envelope),
    /// May be stale on our side (unknown channel, no longer public): not the sender's fault.
    Ignore,
    /// Provably bad: malformed, bad signature, signed by someone other than its author.
    Reject,
}

/// GossipSub validation (DESIGN.md): reject only what is provably bad; state that may be
/// stale gives ignore, so a node never penalises a peer (or its relay) for our old view.
pub fn gossip_verdict(
    data: &[u8],
    source: Option<PeerId>,
    topic: &str,
    channel: Option<&Channel>,
    everyone: Option<Permissions>,
) -> Verdict {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(data) else {
        return Verdict::Reject;
    };
    if envelope.verify().is_err() {
        return Verdict::Reject;
    }
    // The libp2p message author must be the envelope's device.
    let Some(source) = source else {
        return Verdict::Reject;
    };
    if device_key(&source).as_deref() != Some(envelope.device_key.as_str()) {
        return Verdict::Reject;
    }
    if concord_net::topics::channel_of_topic(topic) != Some(envelope.channel_id) {
        return Verdict::Reject;
    }
    // A channel not every member may view never goes on GossipSub: whatever arrives on its
    // topic is ignored, not shown.
    let eligible = channel
        .zip(everyone)
        .is_some_and(|(c, everyone)| gossip_eligible(c, everyone));
    if !eligible {
        return Verdict::Ignore;
    }
    Verdict::Accept(envelope)
}

/// A GossipSub message: shown at once as unconfirmed when accepted.
pub fn gossip(inner: &Inner, message: &gossipsub::Message) -> MessageAcceptance {
    let channel = serde_json::from_slice::<Envelope>(&message.data)
        .ok()
        .and_then(|e| inner.cache().channel(e.channel_id).ok().flatten());
    let everyone = channel
        .as_ref()
        .and_then(|c| c.guild_id)
        .and_then(|g| inner.cache().everyone_permissions(g).ok().flatten());
    match gossip_verdict(
        &message.data,
        message.source,
        message.topic.as_str(),
        channel.as_ref(),
        everyone,
    ) {
        Verdict::Accept(envelope) => {
            // Bound first: a guard in an `if let` scrutinee lives through the block, and
            // emit_unconfirmed takes the cache lock again.
            let inserted = inner.cache().insert_unconfirmed(&envelope, None, now_ms());
            if let Ok(true) = inserted {
                emit_unconfirmed(inner, &envelope);
            }
            MessageAcceptance::Accept
        }
        Verdict::Ignore => MessageAcceptance::Ignore,
        Verdict::Reject => MessageAcceptance::Reject,
    }
}

pub fn emit_unconfirmed(inner: &Inner, envelope: &Envelope) {
    let found = inner
        .cache()
        .history(envelope.channel_id, None, 200)
        .ok()
        .and_then(|page| {
            page.into_iter()
                .rev()
                .find(|m| m.device == envelope.device_key && m.nonce == envelope.nonce)
        });
    if let Some(message) = found {
        inner.emit(LocalEvent::Message { message });
    }
}

/// An envelope sent straight to this node (a DM while both are online). It must be signed by
/// the sending peer's own key and be for a DM channel this node knows.
fn direct(inner: &Inner, peer: PeerId, envelope: Envelope) -> Result<(), (&'static str, String)> {
    if device_key(&peer).as_deref() != Some(envelope.device_key.as_str()) {
        return Err((
            "wrong_device",
            "the envelope is not signed by the sending peer".into(),
        ));
    }
    envelope
        .verify()
        .map_err(|e| ("bad_envelope", e.to_string()))?;
    let channel = inner
        .cache()
        .channel(envelope.channel_id)
        .map_err(|e| ("internal", e.to_string()))?;
    let channel = match channel {
        Some(c) if c.kind == ChannelKind::Dm => c,
        _ => {
            return Err((
                "unknown_channel",
                "direct envelopes are for DM channels".into(),
            ));
        }
    };
    // Only a device the relay certified for one of the DM's participants may write in it
    // (the directory holds what the relay said); anyone else waits for the relay's push.
    let sender = inner
        .directory
        .lock()
        .expect("directory lock")
        .user_of(&peer);
    if !sender.is_some_and(|u| channel.recipients.iter().any(|r| r.id == u)) {
        return Err((
            "not_a_participant",
            "this device is not known here as a participant's device".into(),
        ));
    }
    if inner
        .cache()
        .insert_unconfirmed(&envelope, None, now_ms())
        .map_err(|e| ("internal", e.to_string()))?
    {
        emit_unconfirmed(inner, &envelope);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_proto::permissions::{Overwrite, OverwriteKind};
    use ed25519_dalek::SigningKey;

    fn channel(id: Id, private: bool) -> Channel {
        Channel {
            id,
            guild_id: Some(Id(1)),
            kind: ChannelKind::Text,
            name: "general".into(),
            topic: None,
            position: 0,
            private,
            slowmode_secs: 0,
            overwrites: Vec::new(),
            last_seq: 0,
            recipients: Vec::new(),
        }
    }

    const EVERYONE: Option<Permissions> = Some(Permissions::DEFAULT_EVERYONE);

    #[test]
    fn gossip_verdicts() {
        let author = SigningKey::from_bytes(&[4u8; 32]);
        let source = concord_net::identity::peer_id(&author.verifying_key());
        let ch = Id(77);
        let topic = concord_net::topics::channel_topic(ch).to_string();
        let env = Envelope::sign(&author, ch, "n1", "hi", None, 1_700_000_000_000);
        let data = serde_json::to_vec(&env).unwrap();
        let public = channel(ch, false);
        assert_eq!(
            gossip_verdict(&data, Some(source), &topic, Some(&public), EVERYONE),
            Verdict::Accept(env.clone())
        );
        // Stale or unknown state on our side: ignore, never reject.
        assert_eq!(
            gossip_verdict(&data, Some(source), &topic, None, EVERYONE),
            Verdict::Ignore
        );
        assert_eq!(
            gossip_verdict(
                &data,
                Some(source),
                &topic,
                Some(&channel(ch, true)),
                EVERYONE
            ),
            Verdict::Ignore
        );
        // @everyone cannot view at the guild level, or its role is unknown here: ignored.
        assert_eq!(
            gossip_verdict(
                &data,
                Some(source),
                &topic,
                Some(&public),
                Some(Permissions::DEFAULT_EVERYONE & !Permissions::VIEW_CHANNEL)
            ),
            Verdict::Ignore
        );
        assert_eq!(
            gossip_verdict(&data, Some(source), &topic, Some(&public), None),
            Verdict::Ignore
        );
        // A role overwrite denying view hides it from some members: ignored.
        let mut gated = public.clone();
        gated.overwrites.push(Overwrite {
            target_id: Id(9),
            kind: OverwriteKind::Role,
            allow: Permissions::NONE,
            deny: Permissions::VIEW_CHANNEL,
        });
        assert_eq!(
            gossip_verdict(&data, Some(source), &topic, Some(&gated), EVERYONE),
            Verdict::Ignore
        );
        let mut hidden = public.clone();
        hidden.overwrites.push(Overwrite {
            target_id: Id(1),
            kind: OverwriteKind::Role,
            allow: Permissions::NONE,
            deny: Permissions::VIEW_CHANNEL,
        });
        assert_eq!(
            gossip_verdict(&data, Some(source), &topic, Some(&hidden), EVERYONE),
            Verdict::Ignore
        );
        // Provably bad: reject.
        assert_eq!(
            gossip_verdict(b"{not json", Some(source), &topic, Some(&public), EVERYONE),
            Verdict::Reject
        );
        let mut forged = env.clone();
        forged.content = "changed".into();
        assert_eq!(
            gossip_verdict(
                &serde_json::to_vec(&forged).unwrap(),
                Some(source),
                &topic,
                Some(&public),
                EVERYONE
            ),
            Verdict::Reject
        );
        let other =
            concord_net::identity::peer_id(&SigningKey::from_bytes(&[5u8; 32]).verifying_key());
        assert_eq!(
            gossip_verdict(&data, Some(other), &topic, Some(&public), EVERYONE),
            Verdict::Reject
        );
        assert_eq!(
            gossip_verdict(&data, None, &topic, Some(&public), EVERYONE),
            Verdict::Reject
        );
        let wrong_topic = concord_net::topics::channel_topic(Id(78)).to_string();
        assert_eq!(
            gossip_verdict(&data, Some(source), &wrong_topic, Some(&public), EVERYONE),
            Verdict::Reject
        );
    }
}
