//! Guild moderation: the guild audit log (who did what to whom, readable with
//! view_audit_log), timeouts (moderate_members) and bulk deletion of a member's recent
//! messages (manage_messages). Every moderation route writes an audit entry
//! (`domain::audit::audit_guild`, the `guild_audit` table). A timeout is
//! `members.timeout_until`; while it runs `perms.rs` strips `TIMED_OUT_DENY`, after the
//! overwrites. Slow mode is checked in `messaging::send`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use concord_proto::api::{BulkDelete, BulkDeleted, ErrorBody, TimeoutMember, Validate};
use concord_proto::limits::{Invalid, invalid, page_limit};
use concord_proto::{Id, Permissions};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, ApiResult};
use super::extract::{PathParams, Valid, ValidQuery};
use super::members::check_target;
use crate::app::{App, now_ms};
use crate::auth::Caller;
use crate::store::AuditEntry;

pub use crate::domain::audit::audit_guild;

/// An audit detail with the moderator's reason after it, when they gave one.
fn with_reason(detail: String, reason: Option<String>) -> String {
    match reason {
        Some(r) if !r.is_empty() => format!("{detail}: {r}"),
        _ => detail,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GuildAuditQuery {
    /// Only this action (e.g. `member_ban`).
    pub action: Option<String>,
    /// Entries older than this id (paging).
    pub before: Option<Id>,
    /// 1..=100, default 50.
    pub limit: Option<u32>,
}

impl Validate for GuildAuditQuery {
    fn validate(&self) -> Result<(), Invalid> {
        if let Some(a) = &self.action
            && (a.is_empty()
                || a.len() > 64
                || !a.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        {
            return Err(invalid("action", "an action name such as member_ban"));
        }
        page_limit(self.limit).map(|_| ())
    }
}

#[utoipa::path(get, path = "/api/v1/guilds/{guild_id}/audit-log", tag = "moderation", security(("bearer" = [])),
    params(("guild_id" = Id, Path), GuildAuditQuery),
    responses((status = 200, body = Vec<AuditEntry>, description = "newest first"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn audit_log(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(guild_id): PathParams<Id>,
    ValidQuery(q): ValidQuery<GuildAuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    app.perms
        .require_guild(guild_id, caller.user_id, Permissions::VIEW_AUDIT_LOG)
        .await?;
    Ok(Json(
        app.store
            .guild_audit(
                guild_id,
                q.action.as_deref(),
                q.before,
                page_limit(q.limit)?,
            )
            .await?,
    ))
}

/// Checks that the caller may moderate `user_id` with `needed` (not the owner, not
/// themselves, a lower rank) and that the target is a member.
async fn moderated_member(
    app: &App,
    caller: &Caller,
    guild_id: Id,
    user_id: Id,
    needed: Permissions,
) -> ApiResult<()> {
    let (snapshot, _) = app
        .perms
        .require_guild(guild_id, caller.user_id, needed)
        .await?;
    check_target(snapshot.guild.owner_id, caller.user_id, user_id)?;
    app.perms
        .require_outrank(&snapshot, caller.user_id, user_id)
        .await?;
    Ok(())
}

async fn set_timeout(app: &App, guild_id: Id, user_id: Id, until: Option<i64>) -> ApiResult<()> {
    if !app.store.set_timeout(guild_id, user_id, until).await? {
        return Err(ApiError::NotFound("member"));
    }
    app.perms.invalidate_member(guild_id, user_id);
    if let Some(member) = app.store.member(guild_id, user_id).await? {
        app.hub.to_guild(guild_id, "member_update", &member);
    }
    Ok(())
}

#[utoipa::path(put, path = "/api/v1/guilds/{guild_id}/members/{user_id}/timeout", tag = "moderation", security(("bearer" = [])),
    params(("guild_id" = Id, Path), ("user_id" = Id, Path)), request_body = TimeoutMember,
    responses((status = 204, description = "the member cannot send, react, invite or speak until it ends"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn timeout(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((guild_id, user_id)): PathParams<(Id, Id)>,
    Valid(body): Valid<TimeoutMember>,
) -> ApiResult<StatusCode> {
    moderated_member(
        &app,
        &caller,
        guild_id,
        user_id,
        Permissions::MODERATE_MEMBERS,
    )
    .await?;
    let until = now_ms() + i64::from(body.duration_secs) * 1000;
    set_timeout(&app, guild_id, user_id, Some(until)).await?;
    let detail = with_reason(format!("{} s", body.duration_secs), body.reason);
    audit_guild(
        &app,
        guild_id,
        caller.user_id,
        "member_timeout",
        Some(user_id),
        detail,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/guilds/{guild_id}/members/{user_id}/timeout", tag = "moderation", security(("bearer" = [])),
    params(("guild_id" = Id, Path), ("user_id" = Id, Path)),
    responses((status = 204, description = "the timeout ended early"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn end_timeout(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((guild_id, user_id)): PathParams<(Id, Id)>,
) -> ApiResult<StatusCode> {
    moderated_member(
        &app,
        &caller,
        guild_id,
        user_id,
        Permissions::MODERATE_MEMBERS,
    )
    .await?;
    set_timeout(&app, guild_id, user_id, None).await?;
    audit_guild(
        &app,
        guild_id,
        caller.user_id,
        "member_timeout_end",
        Some(user_id),
        String::new(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// At most this many messages go in one bulk delete (the client calls again for more).
const MAX_BULK_DELETE: u32 = 1_000;

#[utoipa::path(post, path = "/api/v1/guilds/{guild_id}/members/{user_id}/messages/bulk-delete", tag = "moderation", security(("bearer" = [])),
    params(("guild_id" = Id, Path), ("user_id" = Id, Path)), request_body = BulkDelete,
    responses((status = 200, body = BulkDeleted, description = "the user's messages of the window, in channels where the caller has manage_messages (at most 1000 per call)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn bulk_delete(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((guild_id, user_id)): PathParams<(Id, Id)>,
    Valid(body): Valid<BulkDelete>,
) -> ApiResult<Json<BulkDeleted>> {
    // The target may have left or been banned already: rank only matters while a member.
    let (snapshot, _) = app
        .perms
        .require_guild(guild_id, caller.user_id, Permissions::MANAGE_MESSAGES)
        .await?;
    if user_id != caller.user_id {
        check_target(snapshot.guild.owner_id, caller.user_id, user_id)?;
        app.perms
            .require_outrank(&snapshot, caller.user_id, user_id)
            .await?;
    }
    let since = Id::from_unix_ms(now_ms() - i64::from(body.within_secs) * 1000);
    let found = app
        .store
        .live_messages_by(user_id, Some(guild_id), since, MAX_BULK_DELETE)
        .await?;
    let mut access = HashMap::new();
    let mut deleted = 0u64;
    for (channel_id, message_id) in found {
        let a = match access.entry(channel_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(
                app.perms
                    .channel_permissions(channel_id, caller.user_id)
                    .await?
                    .filter(|a| a.perms.contains(Permissions::MANAGE_MESSAGES)),
            ),
        };
        let Some(a) = a else { continue };
        match crate::messaging::delete_stored(&app, a, message_id).await {
            Ok(()) => deleted += 1,
            // Deleted meanwhile by someone else.
            Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let detail = with_reason(
        format!("{deleted} messages of the last {} s", body.within_secs),
        body.reason,
    );
    audit_guild(
        &app,
        guild_id,
        caller.user_id,
        "message_bulk_delete",
        Some(user_id),
        detail,
    )
    .await?;
    Ok(Json(BulkDeleted { deleted }))
}
