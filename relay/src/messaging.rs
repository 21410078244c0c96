//! Writes that produce channel events: send, edit, delete, reactions, typing. HTTP, the
//! gateway and libp2p all go through here, so authorization, the message budget, ordering
//! and fan-out are the same on every path. Each write is authorized, then takes the channel's
//! ordering lock, persists and fans out. Slow mode is checked in `send` under that lock
//! (`channels.slowmode_secs`; a retry of the same nonce passes).

use concord_proto::api::SendMessage;
use concord_proto::gateway::TypingStart;
use concord_proto::limits::MAX_MENTIONS;
use concord_proto::model::{ChannelEvent, ChannelKind, Message};
use concord_proto::ratelimit::Decision;
use concord_proto::{Id, Permissions};

use crate::app::{App, now_ms};
use crate::auth::Caller;
use crate::domain::error::{DomainError, DomainResult};
use crate::perms::ChannelAccess;
use crate::store::NewMessage;

/// `<@123>` mentions in the content, deduplicated, at most 50.
pub fn parse_mentions(content: &str) -> Vec<Id> {
    let mut out = Vec::new();
    let mut rest = content;
    while let Some(start) = rest.find("<@") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find('>') else { break };
        if let Ok(id) = rest[..end].parse::<Id>()
            && !out.contains(&id)
        {
            out.push(id);
            if out.len() == MAX_MENTIONS {
                break;
            }
        }
        rest = &rest[end..];
    }
    out
}

async fn text_channel(
    app: &App,
    caller: &Caller,
    channel_id: Id,
    needed: Permissions,
) -> DomainResult<ChannelAccess> {
    let access = app
        .perms
        .require_channel(channel_id, caller.user_id, needed)
        .await?;
    if access.channel.kind == ChannelKind::Voice {
        return Err(DomainError::BadRequest(
            "not_a_text_channel",
            "voice channels have no messages".into(),
        ));
    }
    Ok(access)
}

/// Pushes a stored channel event to everyone who may view the channel.
async fn fan_out(app: &App, access: &ChannelAccess, event: &ChannelEvent) {
    metrics::counter!("concord_channel_events_total", "kind" => event.kind.as_str()).increment(1);
    app.hub
        .to_channel_event(
            &app.perms,
            &access.channel,
            event.seq,
            event.kind.as_str(),
            &event.data,
        )
        .await;
}

/// A send's outcome.
#[derive(Debug)]
pub struct Sent {
    pub message: Message,
    /// False when the nonce was sent before: `message` is the first one.
    pub created: bool,
    /// What is left of the account's message budget (HTTP reports it in headers).
    pub budget: Decision,
}

/// Spends one unit of the account's message budget: one budget for every transport (HTTP,
/// libp2p), under the key the HTTP layer used before it moved here.
async fn spend_send_budget(app: &App, caller: &Caller) -> DomainResult<Decision> {
    let decision = app
        .limiter
        .check(
            &format!("message_send:user:{}", caller.user_id),
            crate::ratelimit::rule(app.config.rate_limits.message_send),
        )
        .await;
    if !decision.allowed {
        crate::metrics::rate_limited("message_send");
        return Err(DomainError::RateLimited(decision));
    }
    Ok(decision)
}

/// Stores a message (or returns the first one with the same nonce) and fans it out, after
/// spending one unit of the account's message budget.
pub async fn send(
    app: &App,
    caller: &Caller,
    channel_id: Id,
    body: SendMessage,
) -> DomainResult<Sent> {
    let budget = spend_send_budget(app, caller).await?;
    let access = text_channel(app, caller, channel_id, Permissions::SEND_MESSAGES).await?;
    if let Some(reply) = body.reply_to
        && app.store.message(channel_id, reply).await?.is_none()
    {
        return Err(DomainError::BadRequest(
            "unknown_reply",
            "reply_to is not a message of this channel".into(),
        ));
    }
    let new = NewMessage {
        id: app.next_id(),
        channel_id,
        author: caller.user_id,
        device: caller.device_key.clone(),
        nonce: body.nonce,
        mentions: parse_mentions(&body.content),
        content: body.content,
        reply_to: body.reply_to,
        created_at: now_ms(),
    };
    let _order = app.lock_channel(channel_id).await;
    check_slowmode(app, &access, &new).await?;
    let _gate = app.commit_gate.read().await;
    let inserted = app.store.insert_message(&new).await?;
    // A nonce is one message: reused for another channel it finds a message that may sit
    // where the caller can no longer look, so it is refused rather than returned.
    if !inserted.created && inserted.message.channel_id != channel_id {
        return Err(DomainError::Conflict(
            "nonce_reused",
            "this nonce belongs to a message in another channel; send with a new nonce",
        ));
    }
    if inserted.created {
        metrics::counter!("concord_messages_persisted_total").increment(1);
        metrics::counter!("concord_channel_events_total", "kind" => "message_create").increment(1);
        app.hub
            .to_channel_event(
                &app.perms,
                &access.channel,
                inserted.message.seq,
                "message_create",
                &inserted.message,
            )
            .await;
    }
    Ok(Sent {
        message: inserted.message,
        created: inserted.created,
        budget,
    })
}

/// Slow mode: one message per `slowmode_secs` for members without manage_messages. Runs under
/// the channel's lock, so two racing sends of one member cannot both pass; a retry of the
/// same nonce passes (it returns the first message).
async fn check_slowmode(app: &App, access: &ChannelAccess, new: &NewMessage) -> DomainResult<()> {
    let secs = access.channel.slowmode_secs;
    if secs == 0
        || access.perms.contains(Permissions::MANAGE_MESSAGES)
        || access.perms.contains(Permissions::MANAGE_CHANNELS)
    {
        return Ok(());
    }
    let window = i64::from(secs) * 1000;
    let since = Id::from_unix_ms(new.created_at - window);
    if let Some((nonce, at)) = app
        .store
        .latest_message_by(new.channel_id, new.author, since)
        .await?
        && nonce != new.nonce
        && new.created_at - at < window
    {
        return Err(DomainError::SlowMode(window - (new.created_at - at)));
    }
    Ok(())
}

pub async fn edit(
    app: &App,
    caller: &Caller,
    channel_id: Id,
    message_id: Id,
    content: String,
) -> DomainResult<Message> {
    let access = text_channel(app, caller, channel_id, Permissions::VIEW_CHANNEL).await?;
    let existing = app
        .store
        .message(channel_id, message_id)
        .await?
        .ok_or(DomainError::NotFound("message"))?;
    if existing.author != caller.user_id {
        return Err(DomainError::Forbidden(
            "not_author",
            "only the author can edit a message",
        ));
    }
    let _order = app.lock_channel(channel_id).await;
    let event = app
        .store
        .edit_message(
            channel_id,
            message_id,
            &content,
            &parse_mentions(&content),
            now_ms(),
        )
        .await?;
    fan_out(app, &access, &event).await;
    serde_json::from_value(event.data).map_err(|e| DomainError::Internal(e.to_string()))
}

pub async fn delete(
    app: &App,
    caller: &Caller,
    channel_id: Id,
    message_id: Id,
) -> DomainResult<()> {
    let access = text_channel(app, caller, channel_id, Permissions::VIEW_CHANNEL).await?;
    let existing = app
        .store
        .message(channel_id, message_id)
        .await?
        .ok_or(DomainError::NotFound("message"))?;
    let by_moderator = existing.author != caller.user_id;
    if by_moderator && !access.perms.contains(Permissions::MANAGE_MESSAGES) {
        return Err(DomainError::missing_permissions());
    }
    delete_stored(app, &access, message_id).await?;
    if by_moderator && let Some(guild_id) = access.channel.guild_id {
        crate::domain::audit::audit_guild(
            app,
            guild_id,
            caller.user_id,
            "message_delete",
            Some(existing.author),
            format!("message {message_id} in channel {channel_id}"),
        )
        .await?;
    }
    Ok(())
}

/// Deletes one message (its author's or a moderator's decision, already checked) and tells
/// the channel.
pub async fn delete_stored(app: &App, access: &ChannelAccess, message_id: Id) -> DomainResult<()> {
    let channel_id = access.channel.id;
    let _order = app.lock_channel(channel_id).await;
    let event = app
        .store
        .delete_message(channel_id, message_id, now_ms())
        .await?;
    fan_out(app, access, &event).await;
    Ok(())
}

pub async fn react(
    app: &App,
    caller: &Caller,
    channel_id: Id,
    message_id: Id,
    emoji: &str,
    add: bool,
) -> DomainResult<()> {
    let needed = if add {
        Permissions::ADD_REACTIONS | Permissions::READ_HISTORY
    } else {
        Permissions::VIEW_CHANNEL
    };
    let access = text_channel(app, caller, channel_id, needed).await?;
    let _order = app.lock_channel(channel_id).await;
    let event = if add {
        app.store
            .add_reaction(channel_id, message_id, caller.user_id, emoji, now_ms())
            .await
    } else {
        app.store
            .remove_reaction(channel_id, message_id, caller.user_id, emoji, now_ms())
            .await
    }
    .map_err(|e| match e {
        crate::store::StoreError::NotFound => DomainError::NotFound("message"),
        other => other.into(),
    })?;
    if let Some(event) = event {
        fan_out(app, &access, &event).await;
    }
    Ok(())
}

/// Tells the channel's other viewers that the caller is typing (no seq: not stored).
pub async fn typing(app: &App, caller: &Caller, channel_id: Id) -> DomainResult<()> {
    let access: ChannelAccess =
        text_channel(app, caller, channel_id, Permissions::SEND_MESSAGES).await?;
    let d = TypingStart {
        channel_id,
        guild_id: access.channel.guild_id,
        user_id: caller.user_id,
        timestamp: now_ms(),
    };
    app.hub
        .to_channel_viewers_except(
            &app.perms,
            &access.channel,
            Some(caller.user_id),
            "typing_start",
            &d,
        )
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_parsed() {
        assert_eq!(
            parse_mentions("hi <@12> and <@34>, <@12> again <@x> <@5"),
            vec![Id(12), Id(34)]
        );
        assert!(parse_mentions("no mentions").is_empty());
    }
}
