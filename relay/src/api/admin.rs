//! Instance administration: a role separate from guild roles (`accounts.instance_admin`,
//! granted with `concord-relay admin grant`). Admins list and search accounts, suspend and
//! unsuspend them (a suspended account cannot log in and its sessions end at once), revoke an
//! account's sessions, and read instance statistics and the instance audit log, which records
//! every one of these actions.
//!
//! Also: account deletion (`api/deletion.rs`), guild removal, and the one-time setup link
//! (`setup_link`: a token in `server_secrets`, claimed by `POST /admin/setup`, which makes the
//! claimant an admin). Suspension revokes sessions through `App::revoke_sessions`; the audit
//! log is the `instance_audit` table. The CLI's `admin grant|revoke|list|setup-link|
//! delete-user|delete-guild` works on the database directly.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use concord_proto::Id;
use concord_proto::api::{ClaimSetup, CreateInvite, ErrorBody, Validate};
use concord_proto::limits::{Invalid, invalid, page_limit};
use concord_proto::model::Device;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult};
use super::extract::{PathParams, ValidQuery};
use crate::app::{App, now_ms};
use crate::auth::Caller;
use crate::store::{AdminAccount, AuditEntry, InstanceInvite, InstanceStats, StoreError};

/// The caller must be an instance admin (and not suspended).
pub async fn require_admin(app: &App, caller: &Caller) -> ApiResult<()> {
    match app.store.admin_account(caller.user_id).await? {
        Some(a) if a.instance_admin && a.suspended_at.is_none() => Ok(()),
        _ => Err(ApiError::Forbidden(
            "not_instance_admin",
            "this needs an instance admin",
        )),
    }
}

/// Records an admin action in the instance audit log.
pub async fn audit(
    app: &App,
    actor: Option<Id>,
    action: &str,
    target: Option<Id>,
    detail: &str,
) -> ApiResult<()> {
    app.store
        .add_audit(&AuditEntry {
            id: app.next_id(),
            actor_id: actor,
            action: action.to_owned(),
            target_id: target,
            detail: detail.to_owned(),
            created_at: now_ms(),
        })
        .await?;
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AccountQuery {
    /// Part of a username (case-insensitive); empty or absent lists everyone.
    pub q: Option<String>,
    /// Accounts with larger ids than this (paging).
    pub after: Option<Id>,
    /// 1..=100, default 50.
    pub limit: Option<u32>,
}

impl Validate for AccountQuery {
    fn validate(&self) -> Result<(), Invalid> {
        if self.q.as_ref().is_some_and(|q| q.chars().count() > 64) {
            return Err(invalid("q", "at most 64 characters"));
        }
        page_limit(self.limit).map(|_| ())
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries older than this id (paging).
    pub before: Option<Id>,
    /// 1..=100, default 50.
    pub limit: Option<u32>,
}

impl Validate for AuditQuery {
    fn validate(&self) -> Result<(), Invalid> {
        page_limit(self.limit).map(|_| ())
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    #[serde(flatten)]
    pub stored: InstanceStats,
    /// Gateway sessions on this instance now.
    pub gateway_sessions: usize,
}

#[utoipa::path(get, path = "/api/v1/admin/stats", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Stats), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn stats(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<Json<Stats>> {
    require_admin(&app, &caller).await?;
    Ok(Json(Stats {
        stored: app.store.instance_stats().await?,
        gateway_sessions: app.hub.session_count(),
    }))
}

#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin", security(("bearer" = [])),
    params(AccountQuery),
    responses((status = 200, body = Vec<AdminAccount>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn users(
    State(app): State<Arc<App>>,
    caller: Caller,
    ValidQuery(q): ValidQuery<AccountQuery>,
) -> ApiResult<Json<Vec<AdminAccount>>> {
    require_admin(&app, &caller).await?;
    let limit = page_limit(q.limit)?;
    Ok(Json(
        app.store
            .search_accounts(q.q.as_deref().unwrap_or(""), q.after, limit)
            .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/admin/users/{user_id}", tag = "admin", security(("bearer" = [])),
    params(("user_id" = Id, Path)),
    responses((status = 200, body = AdminAccount), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn user(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(user_id): PathParams<Id>,
) -> ApiResult<Json<AdminAccount>> {
    require_admin(&app, &caller).await?;
    app.store
        .admin_account(user_id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("user"))
}

#[utoipa::path(post, path = "/api/v1/admin/users/{user_id}/suspend", tag = "admin", security(("bearer" = [])),
    params(("user_id" = Id, Path)),
    responses((status = 204, description = "suspended; every session of the account ended"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn suspend(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(user_id): PathParams<Id>,
) -> ApiResult<StatusCode> {
    require_admin(&app, &caller).await?;
    if user_id == caller.user_id {
        return Err(ApiError::BadRequest(
            "cannot_suspend_self",
            "an admin cannot suspend their own account".into(),
        ));
    }
    let sessions = app
        .store
        .set_suspended(user_id, Some(now_ms()))
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => ApiError::NotFound("user"),
            other => other.into(),
        })?;
    app.shut_out_account(user_id, &sessions);
    audit(
        &app,
        Some(caller.user_id),
        "account_suspend",
        Some(user_id),
        "",
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/admin/users/{user_id}/suspend", tag = "admin", security(("bearer" = [])),
    params(("user_id" = Id, Path)),
    responses((status = 204, description = "the account may log in again"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn unsuspend(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(user_id): PathParams<Id>,
) -> ApiResult<StatusCode> {
    require_admin(&app, &caller).await?;
    app.store
        .set_suspended(user_id, None)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => ApiError::NotFound("user"),
            other => other.into(),
        })?;
    audit(
        &app,
        Some(caller.user_id),
        "account_unsuspend",
        Some(user_id),
        "",
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/admin/users/{user_id}/sessions/revoke", tag = "admin", security(("bearer" = [])),
    params(("user_id" = Id, Path)),
    responses((status = 204, description = "every session of the account ended (its devices log in again)"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_sessions(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(user_id): PathParams<Id>,
) -> ApiResult<StatusCode> {
    require_admin(&app, &caller).await?;
    if app.store.admin_account(user_id).await?.is_none() {
        return Err(ApiError::NotFound("user"));
    }
    let sessions = app.store.revoke_account_sessions(user_id, now_ms()).await?;
    app.revoke_sessions(&sessions);
    let detail = format!("{} sessions", sessions.len());
    audit(
        &app,
        Some(caller.user_id),
        "sessions_revoke",
        Some(user_id),
        &detail,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin", security(("bearer" = [])),
    params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>, description = "newest first"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn audit_log(
    State(app): State<Arc<App>>,
    caller: Caller,
    ValidQuery(q): ValidQuery<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    require_admin(&app, &caller).await?;
    Ok(Json(
        app.store.audit_log(q.before, page_limit(q.limit)?).await?,
    ))
}

/// The server secret holding the one-time setup token while the instance has no admin.
const SETUP_SECRET: &str = "setup_token";

/// The one-time setup token (made on first use, kept until an admin exists).
pub async fn setup_token(store: &dyn crate::store::Store) -> crate::store::StoreResult<String> {
    store
        .secret_or_insert(SETUP_SECRET, &crate::auth::tokens::random_token(24))
        .await
}

/// The setup link for a relay reached at `origin`.
pub fn setup_url(origin: &str, token: &str) -> String {
    format!("{}/setup#{token}", origin.trim_end_matches('/'))
}

/// While no instance admin exists: the one-time link that makes whoever opens it (logged in)
/// the first admin. `None` once there is an admin.
pub async fn setup_link(app: &App) -> ApiResult<Option<String>> {
    if !app.store.instance_admins().await?.is_empty() {
        return Ok(None);
    }
    let token = setup_token(app.store.as_ref()).await?;
    Ok(Some(setup_url(&app.audiences[0], &token)))
}

#[utoipa::path(post, path = "/api/v1/admin/setup", tag = "admin", security(("bearer" = [])),
    request_body = ClaimSetup,
    responses((status = 204, description = "the caller is now the first instance admin"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn claim_setup(
    State(app): State<Arc<App>>,
    caller: Caller,
    super::extract::Valid(body): super::extract::Valid<ClaimSetup>,
) -> ApiResult<StatusCode> {
    if !app.store.instance_admins().await?.is_empty() {
        return Err(ApiError::Conflict(
            "already_set_up",
            "this instance already has an admin",
        ));
    }
    let token = setup_token(app.store.as_ref()).await?;
    if !crate::auth::tokens::constant_time_eq(token.as_bytes(), body.token.as_bytes()) {
        return Err(ApiError::Forbidden(
            "bad_setup_token",
            "this setup link is not valid",
        ));
    }
    app.store.set_instance_admin(caller.user_id, true).await?;
    audit(
        &app,
        Some(caller.user_id),
        "admin_grant",
        Some(caller.user_id),
        "setup link",
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/admin/users/{user_id}", tag = "admin", security(("bearer" = [])),
    params(("user_id" = Id, Path)),
    responses((status = 204, description = "the account is deleted (messages per auth.deleted_account_messages)"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_user(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(user_id): PathParams<Id>,
) -> ApiResult<StatusCode> {
    require_admin(&app, &caller).await?;
    if user_id == caller.user_id {
        return Err(ApiError::BadRequest(
            "cannot_delete_self",
            "delete your own account with DELETE /api/v1/users/@me".into(),
        ));
    }
    let erased = super::deletion::delete_account(&app, user_id).await?;
    audit(
        &app,
        Some(caller.user_id),
        "account_delete",
        Some(user_id),
        &format!("{erased} messages erased"),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/admin/guilds/{guild_id}", tag = "admin", security(("bearer" = [])),
    params(("guild_id" = Id, Path)),
    responses((status = 204, description = "the guild is deleted and its members told"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_guild(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(guild_id): PathParams<Id>,
) -> ApiResult<StatusCode> {
    require_admin(&app, &caller).await?;
    let name = app
        .store
        .guild(guild_id)
        .await?
        .ok_or(ApiError::NotFound("guild"))?
        .name;
    super::guilds::remove_guild(&app, guild_id).await?;
    audit(
        &app,
        Some(caller.user_id),
        "guild_delete",
        Some(guild_id),
        &name,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn existing_account(app: &App, user_id: Id) -> ApiResult<()> {
    match app.store.admin_account(user_id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound("user")),
    }
}

#[utoipa::path(get, path = "/api/v1/admin/users/{user_id}/devices", tag = "admin", security(("bearer" = [])),
    params(("user_id" = Id, Path)),
    responses((status = 200, body = Vec<Device>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn user_devices(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(user_id): PathParams<Id>,
) -> ApiResult<Json<Vec<Device>>> {
    require_admin(&app, &caller).await?;
    existing_account(&app, user_id).await?;
    Ok(Json(
        app.store
            .devices(user_id)
            .await?
            .into_iter()
            .map(super::users::device)
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/admin/users/{user_id}/devices/{device_key}", tag = "admin", security(("bearer" = [])),
    params(("user_id" = Id, Path), ("device_key" = String, Path, description = "base64url device public key")),
    responses((status = 204, description = "the device is revoked and its sessions end"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_user_device(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((user_id, device_key)): PathParams<(Id, String)>,
) -> ApiResult<StatusCode> {
    require_admin(&app, &caller).await?;
    super::users::revoke_device_of(&app, user_id, &device_key).await?;
    audit(
        &app,
        Some(caller.user_id),
        "device_revoke",
        Some(user_id),
        &device_key,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/admin/invites", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<InstanceInvite>, description = "newest first"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn instance_invites(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> ApiResult<Json<Vec<InstanceInvite>>> {
    require_admin(&app, &caller).await?;
    Ok(Json(app.store.instance_invites().await?))
}

#[utoipa::path(post, path = "/api/v1/admin/invites", tag = "admin", security(("bearer" = [])),
    request_body = CreateInvite,
    responses((status = 201, body = InstanceInvite, description = "an invite to the instance: lets a new account sign up on an invite-only relay"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_instance_invite(
    State(app): State<Arc<App>>,
    caller: Caller,
    super::extract::Valid(body): super::extract::Valid<CreateInvite>,
) -> ApiResult<(StatusCode, Json<InstanceInvite>)> {
    require_admin(&app, &caller).await?;
    let now = now_ms();
    for _ in 0..5 {
        // 12 characters: never the length of a guild invite's code (8), so the two never meet.
        let invite = InstanceInvite {
            code: crate::auth::tokens::random_token(9),
            created_by: caller.user_id,
            max_uses: body.max_uses,
            uses: 0,
            expires_at: body.expires_in_secs.map(|s| now + s * 1000),
            revoked: false,
            created_at: now,
        };
        match app.store.create_instance_invite(&invite).await {
            Err(StoreError::Conflict(_)) => continue,
            other => other?,
        }
        audit(
            &app,
            Some(caller.user_id),
            "instance_invite_create",
            None,
            &invite.code,
        )
        .await?;
        return Ok((StatusCode::CREATED, Json(invite)));
    }
    Err(ApiError::Internal(
        "could not find a free invite code".into(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/admin/invites/{code}", tag = "admin", security(("bearer" = [])),
    params(("code" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_instance_invite(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(code): PathParams<String>,
) -> ApiResult<StatusCode> {
    require_admin(&app, &caller).await?;
    if code.len() > 32 || !app.store.revoke_instance_invite(&code, now_ms()).await? {
        return Err(ApiError::NotFound("invite"));
    }
    audit(
        &app,
        Some(caller.user_id),
        "instance_invite_revoke",
        None,
        &code,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
