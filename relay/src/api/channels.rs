//! Channels: read, update, delete, permission overwrites, typing, read state, event log.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use concord_proto::api::{AckRequest, ErrorBody, EventsQuery, PutOverwrite, UpdateChannel};
use concord_proto::gateway::ChannelDeleted;
use concord_proto::limits;
use concord_proto::model::{Channel, ChannelEvent, ChannelKind};
use concord_proto::permissions::{Overwrite, OverwriteKind};
use concord_proto::{Id, Permissions};

use super::error::{ApiError, ApiResult};
use super::extract::{PathParams, Valid, ValidQuery};
use super::moderation::audit_guild;
use crate::app::App;
use crate::auth::Caller;
use crate::messaging;
use crate::perms::ChannelAccess;
use crate::store::ChannelUpdate;

/// The overwrite a channel holds for `target_id`, from the guild snapshot.
async fn existing_overwrite(
    app: &App,
    guild_id: Id,
    channel_id: Id,
    target_id: Id,
) -> ApiResult<Option<Overwrite>> {
    let snapshot = app
        .perms
        .snapshot(guild_id)
        .await?
        .ok_or(ApiError::NotFound("guild"))?;
    Ok(snapshot
        .channels
        .iter()
        .find(|c| c.id == channel_id)
        .and_then(|c| {
            c.overwrites
                .iter()
                .find(|o| o.target_id == target_id)
                .copied()
        }))
}

/// Without administrator, you can only change overwrite bits you hold yourself.
fn check_overwrite_change(access: &ChannelAccess, bits: Permissions) -> ApiResult<()> {
    if !access.perms.contains(Permissions::ADMINISTRATOR) && !access.perms.contains(bits) {
        return Err(ApiError::Forbidden(
            "permission_escalation",
            "you cannot change permissions you do not hold",
        ));
    }
    Ok(())
}

/// A guild channel the caller may manage (DMs cannot be managed).
async fn managed(
    app: &App,
    caller: &Caller,
    channel_id: Id,
    needed: Permissions,
) -> ApiResult<(ChannelAccess, Id)> {
    let access = app
        .perms
        .require_channel(channel_id, caller.user_id, needed)
        .await?;
    let guild_id = access
        .channel
        .guild_id
        .ok_or(ApiError::missing_permissions())?;
    Ok((access, guild_id))
}

/// After a change that may alter who sees the channel: viewers get the new channel, other
/// online members get a delete (a client that never saw it ignores that).
async fn announce_visibility(app: &App, guild_id: Id, channel_id: Id) -> ApiResult<()> {
    app.perms.invalidate_guild(guild_id);
    let Some(access) = app.store.channel(channel_id).await? else {
        return Ok(());
    };
    app.hub
        .channel_visibility_changed(&app.perms, &access)
        .await?;
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/channels/{channel_id}", tag = "channels", security(("bearer" = [])),
    params(("channel_id" = Id, Path)),
    responses((status = 200, body = Channel), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_channel(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(channel_id): PathParams<Id>,
) -> ApiResult<Json<Channel>> {
    app.perms
        .require_channel(channel_id, caller.user_id, Permissions::VIEW_CHANNEL)
        .await?;
    Ok(Json(
        app.store
            .channel(channel_id)
            .await?
            .ok_or(ApiError::NotFound("channel"))?,
    ))
}

#[utoipa::path(patch, path = "/api/v1/channels/{channel_id}", tag = "channels", security(("bearer" = [])),
    params(("channel_id" = Id, Path)), request_body = UpdateChannel,
    responses((status = 200, body = Channel), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_channel(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(channel_id): PathParams<Id>,
    Valid(body): Valid<UpdateChannel>,
) -> ApiResult<Json<Channel>> {
    let (_, guild_id) = managed(&app, &caller, channel_id, Permissions::MANAGE_CHANNELS).await?;
    let detail = serde_json::to_string(&body).unwrap_or_default();
    let update = ChannelUpdate {
        name: body.name,
        topic: body.topic,
        position: body.position,
        private: None,
        slowmode_secs: body.slowmode_secs,
    };
    let channel = app.store.update_channel(channel_id, &update).await?;
    audit_guild(
        &app,
        guild_id,
        caller.user_id,
        "channel_update",
        Some(channel_id),
        detail,
    )
    .await?;
    app.perms.invalidate_guild(guild_id);
    app.hub
        .to_channel_viewers(&app.perms, &channel, "channel_update", &channel)
        .await;
    Ok(Json(channel))
}

#[utoipa::path(delete, path = "/api/v1/channels/{channel_id}", tag = "channels", security(("bearer" = [])),
    params(("channel_id" = Id, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_channel(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(channel_id): PathParams<Id>,
) -> ApiResult<StatusCode> {
    let (access, guild_id) =
        managed(&app, &caller, channel_id, Permissions::MANAGE_CHANNELS).await?;
    let viewers = app
        .hub
        .channel_viewers(&app.perms, &access.channel, Permissions::VIEW_CHANNEL)
        .await?;
    app.store.delete_channel(channel_id).await?;
    audit_guild(
        &app,
        guild_id,
        caller.user_id,
        "channel_delete",
        Some(channel_id),
        format!("#{}", access.channel.name),
    )
    .await?;
    // Before the invalidation: other instances find their viewers in their cached snapshot.
    app.hub.to_viewers_found(
        viewers,
        &access.channel,
        "channel_delete",
        &ChannelDeleted {
            id: channel_id,
            guild_id: Some(guild_id),
        },
    );
    app.perms.invalidate_guild(guild_id);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/api/v1/channels/{channel_id}/permissions/{target_id}", tag = "channels", security(("bearer" = [])),
    params(("channel_id" = Id, Path), ("target_id" = Id, Path, description = "role id (the guild id for @everyone) or user id")),
    request_body = PutOverwrite,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn put_overwrite(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((channel_id, target_id)): PathParams<(Id, Id)>,
    Valid(body): Valid<PutOverwrite>,
) -> ApiResult<StatusCode> {
    let (access, guild_id) = managed(&app, &caller, channel_id, Permissions::MANAGE_ROLES).await?;
    // Replacing an overwrite changes both its old and its new bits.
    let old = existing_overwrite(&app, guild_id, channel_id, target_id).await?;
    let old_bits = old.map_or(Permissions::NONE, |o| o.allow | o.deny);
    check_overwrite_change(&access, body.allow | body.deny | old_bits)?;
    let exists = match body.kind {
        OverwriteKind::Role => app
            .perms
            .snapshot(guild_id)
            .await?
            .is_some_and(|s| s.roles.iter().any(|r| r.id == target_id)),
        OverwriteKind::Member => app.perms.member_roles(guild_id, target_id).await?.is_some(),
    };
    if !exists {
        return Err(ApiError::NotFound(if body.kind == OverwriteKind::Role {
            "role"
        } else {
            "member"
        }));
    }
    let overwrite = Overwrite {
        target_id,
        kind: body.kind,
        allow: body.allow,
        deny: body.deny,
    };
    app.store.put_overwrite(channel_id, &overwrite).await?;
    audit_guild(
        &app,
        guild_id,
        caller.user_id,
        "overwrite_update",
        Some(target_id),
        format!(
            "channel {channel_id} allow {} deny {}",
            body.allow.0, body.deny.0
        ),
    )
    .await?;
    announce_visibility(&app, guild_id, channel_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/channels/{channel_id}/permissions/{target_id}", tag = "channels", security(("bearer" = [])),
    params(("channel_id" = Id, Path), ("target_id" = Id, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_overwrite(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((channel_id, target_id)): PathParams<(Id, Id)>,
) -> ApiResult<StatusCode> {
    let (access, guild_id) = managed(&app, &caller, channel_id, Permissions::MANAGE_ROLES).await?;
    let old = existing_overwrite(&app, guild_id, channel_id, target_id)
        .await?
        .ok_or(ApiError::NotFound("overwrite"))?;
    check_overwrite_change(&access, old.allow | old.deny)?;
    if !app.store.delete_overwrite(channel_id, target_id).await? {
        return Err(ApiError::NotFound("overwrite"));
    }
    audit_guild(
        &app,
        guild_id,
        caller.user_id,
        "overwrite_delete",
        Some(target_id),
        format!("channel {channel_id}"),
    )
    .await?;
    announce_visibility(&app, guild_id, channel_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/channels/{channel_id}/typing", tag = "channels", security(("bearer" = [])),
    params(("channel_id" = Id, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn typing(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(channel_id): PathParams<Id>,
) -> ApiResult<StatusCode> {
    messaging::typing(&app, &caller, channel_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/channels/{channel_id}/ack", tag = "channels", security(("bearer" = [])),
    params(("channel_id" = Id, Path)), request_body = AckRequest,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn ack(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(channel_id): PathParams<Id>,
    Valid(body): Valid<AckRequest>,
) -> ApiResult<StatusCode> {
    app.perms
        .require_channel(channel_id, caller.user_id, Permissions::VIEW_CHANNEL)
        .await?;
    app.store
        .ack(caller.user_id, channel_id, body.message_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/channels/{channel_id}/events", tag = "messages", security(("bearer" = [])),
    params(("channel_id" = Id, Path), EventsQuery),
    responses((status = 200, body = Vec<ChannelEvent>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn events(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(channel_id): PathParams<Id>,
    ValidQuery(q): ValidQuery<EventsQuery>,
) -> ApiResult<Json<Vec<ChannelEvent>>> {
    let access = app
        .perms
        .require_channel(channel_id, caller.user_id, Permissions::READ_HISTORY)
        .await?;
    if access.channel.kind == ChannelKind::Voice {
        return Ok(Json(Vec::new()));
    }
    let limit = limits::page_limit(q.limit)?;
    Ok(Json(
        app.store
            .events(channel_id, q.after_seq.unwrap_or(0), limit)
            .await?,
    ))
}
