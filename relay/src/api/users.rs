//! The caller's account: profile, devices, guilds, DMs and read states.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use concord_proto::api::{AddDeviceRequest, CreateDm, ErrorBody};
use concord_proto::model::{Channel, ChannelKind, Device, Guild, ReadState, User};
use concord_proto::{Id, signed};

use super::error::{ApiError, ApiResult};
use super::extract::{PathParams, Valid};
use crate::app::{App, now_ms};
use crate::auth::Caller;
use crate::store::{DeviceRecord, StoreError};

pub fn device(d: DeviceRecord) -> Device {
    Device {
        device_key: d.device_key,
        label: d.label,
        certified_at: d.certified_at,
        added_at: d.added_at,
        revoked_at: d.revoked_at,
    }
}

async fn user(app: &App, id: Id) -> ApiResult<User> {
    let account = app
        .store
        .account(id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    Ok(User {
        id: account.id,
        username: account.username,
    })
}

/// The caller's own profile: the public one plus what only they see.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Me {
    #[serde(flatten)]
    pub user: User,
    /// An instance admin (the client then offers the admin screens).
    pub instance_admin: bool,
}

#[utoipa::path(get, path = "/api/v1/users/@me", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub async fn me(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<Json<Me>> {
    let instance_admin = app
        .store
        .admin_account(caller.user_id)
        .await?
        .is_some_and(|a| a.instance_admin);
    Ok(Json(Me {
        user: user(&app, caller.user_id).await?,
        instance_admin,
    }))
}

#[utoipa::path(delete, path = "/api/v1/users/@me", tag = "users", security(("bearer" = [])),
    responses((status = 204, description = "the account is deleted: sessions end, devices and personal data are erased; messages are kept as a deleted user's or erased, per auth.deleted_account_messages"),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody, description = "owns_guilds: hand them over or delete them first")))]
pub async fn delete_me(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<StatusCode> {
    super::deletion::delete_account(&app, caller.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/users/{user_id}", tag = "users", security(("bearer" = [])),
    params(("user_id" = Id, Path)),
    responses((status = 200, body = User), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_user(
    State(app): State<Arc<App>>,
    _caller: Caller,
    PathParams(user_id): PathParams<Id>,
) -> ApiResult<Json<User>> {
    Ok(Json(user(&app, user_id).await?))
}

#[utoipa::path(get, path = "/api/v1/users/@me/devices", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Vec<Device>), (status = 401, body = ErrorBody)))]
pub async fn devices(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<Json<Vec<Device>>> {
    Ok(Json(
        app.store
            .devices(caller.user_id)
            .await?
            .into_iter()
            .map(device)
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/users/@me/devices", tag = "users", security(("bearer" = [])),
    request_body = AddDeviceRequest,
    responses((status = 201, body = Device), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_device(
    State(app): State<Arc<App>>,
    caller: Caller,
    Valid(body): Valid<AddDeviceRequest>,
) -> ApiResult<(StatusCode, Json<Device>)> {
    let account = app
        .store
        .account(caller.user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let cert = body.certificate;
    if cert.account_key != account.account_key {
        return Err(ApiError::Forbidden(
            "foreign_certificate",
            "the certificate is signed by another account key",
        ));
    }
    let record = DeviceRecord {
        device_key: cert.device_key.clone(),
        account_id: account.id,
        label: cert.label.clone(),
        certificate: serde_json::to_string(&cert).expect("certificate serialises"),
        certified_at: cert.created_at,
        added_at: now_ms(),
        revoked_at: None,
    };
    super::auth::register_device(&app, record.clone()).await?;
    Ok((StatusCode::CREATED, Json(device(record))))
}

#[utoipa::path(delete, path = "/api/v1/users/@me/devices/{device_key}", tag = "users", security(("bearer" = [])),
    params(("device_key" = String, Path, description = "base64url device public key")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_device(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(device_key): PathParams<String>,
) -> ApiResult<StatusCode> {
    revoke_device_of(&app, caller.user_id, &device_key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes one device of an account (its owner's or an admin's decision): its sessions end
/// and its libp2p connection closes.
pub async fn revoke_device_of(app: &App, account: Id, device_key: &str) -> ApiResult<()> {
    signed::parse_public_key(device_key, "device_key")
        .map_err(|e| ApiError::BadRequest("invalid_device_key", e.to_string()))?;
    let sessions = match app.store.revoke_device(account, device_key, now_ms()).await {
        Err(StoreError::NotFound) => return Err(ApiError::NotFound("device")),
        other => other?,
    };
    app.revoke_sessions(&sessions);
    if let Some(p2p) = app.p2p.get() {
        p2p.disconnect_device(device_key);
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/users/@me/guilds", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Vec<Guild>), (status = 401, body = ErrorBody)))]
pub async fn guilds(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<Json<Vec<Guild>>> {
    Ok(Json(app.store.guilds_of(caller.user_id).await?))
}

#[utoipa::path(delete, path = "/api/v1/users/@me/guilds/{guild_id}", tag = "users", security(("bearer" = [])),
    params(("guild_id" = Id, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn leave_guild(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(guild_id): PathParams<Id>,
) -> ApiResult<StatusCode> {
    let (snapshot, _) = app
        .perms
        .require_guild(guild_id, caller.user_id, concord_proto::Permissions::NONE)
        .await?;
    if snapshot.guild.owner_id == caller.user_id {
        return Err(ApiError::BadRequest(
            "owner_cannot_leave",
            "the owner must delete the guild (or transfer it) instead".into(),
        ));
    }
    super::members::remove_member(&app, guild_id, caller.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/users/@me/dms", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Vec<Channel>), (status = 401, body = ErrorBody)))]
pub async fn dms(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<Json<Vec<Channel>>> {
    Ok(Json(app.store.dm_channels(caller.user_id).await?))
}

#[utoipa::path(post, path = "/api/v1/users/@me/dms", tag = "users", security(("bearer" = [])),
    request_body = CreateDm,
    responses((status = 200, body = Channel), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn open_dm(
    State(app): State<Arc<App>>,
    caller: Caller,
    Valid(body): Valid<CreateDm>,
) -> ApiResult<Json<Channel>> {
    if body.recipient == caller.user_id {
        return Err(ApiError::BadRequest(
            "dm_self",
            "you cannot open a DM with yourself".into(),
        ));
    }
    user(&app, body.recipient).await?;
    // DMs need a guild in common: strangers cannot message anyone they like.
    let mine: Vec<Id> = app
        .store
        .guilds_of(caller.user_id)
        .await?
        .iter()
        .map(|g| g.id)
        .collect();
    let shared = app
        .store
        .guilds_of(body.recipient)
        .await?
        .iter()
        .any(|g| mine.contains(&g.id));
    if !shared {
        return Err(ApiError::Forbidden(
            "no_mutual_guild",
            "you can only message people you share a guild with",
        ));
    }
    let candidate = Channel {
        id: app.next_id(),
        guild_id: None,
        kind: ChannelKind::Dm,
        name: String::new(),
        topic: None,
        position: 0,
        private: true,
        slowmode_secs: 0,
        overwrites: Vec::new(),
        last_seq: 0,
        recipients: Vec::new(),
    };
    let channel = app
        .store
        .open_dm(&candidate, caller.user_id, body.recipient)
        .await?;
    if channel.id == candidate.id {
        app.hub
            .to_users([caller.user_id, body.recipient], "channel_create", &channel);
    }
    Ok(Json(channel))
}

#[utoipa::path(get, path = "/api/v1/users/@me/read-states", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Vec<ReadState>), (status = 401, body = ErrorBody)))]
pub async fn read_states(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> ApiResult<Json<Vec<ReadState>>> {
    let mut channels: Vec<Id> = app
        .store
        .dm_channels(caller.user_id)
        .await?
        .iter()
        .map(|c| c.id)
        .collect();
    for guild in app.store.guilds_of(caller.user_id).await? {
        if let Some(snapshot) = app.perms.snapshot(guild.id).await? {
            channels.extend(
                app.perms
                    .visible_channels(&snapshot, caller.user_id)
                    .await?
                    .iter()
                    .filter(|c| c.kind == ChannelKind::Text)
                    .map(|c| c.id),
            );
        }
    }
    Ok(Json(
        app.store.read_states(caller.user_id, &channels).await?,
    ))
}

/// Everything the relay holds about the caller, as one JSON document.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DataExport {
    pub exported_at: i64,
    pub account: User,
    pub devices: Vec<ExportedDevice>,
    pub guilds: Vec<Guild>,
    /// Every message the account wrote (deleted ones included, as stored), oldest first.
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<crate::store::ArchivedMessage>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ExportedDevice {
    pub device_key: String,
    pub label: String,
    pub added_at: i64,
    pub revoked_at: Option<i64>,
}

/// Messages per page while building an export.
const EXPORT_PAGE: u32 = 1_000;

#[utoipa::path(get, path = "/api/v1/users/@me/export", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = DataExport, description = "a JSON archive of the caller's own data, sent as a download"), (status = 401, body = ErrorBody)))]
pub async fn export(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> ApiResult<impl axum::response::IntoResponse> {
    let account = user(&app, caller.user_id).await?;
    let devices = app
        .store
        .devices(caller.user_id)
        .await?
        .into_iter()
        .map(|d| ExportedDevice {
            device_key: d.device_key,
            label: d.label,
            added_at: d.added_at,
            revoked_at: d.revoked_at,
        })
        .collect();
    let guilds = app.store.guilds_of(caller.user_id).await?;
    let mut messages = Vec::new();
    let mut after = None;
    loop {
        let page = app
            .store
            .messages_by_author(caller.user_id, after, EXPORT_PAGE)
            .await?;
        let full = page.len() == EXPORT_PAGE as usize;
        after = page.last().map(|m| m.id);
        messages.extend(page);
        if !full {
            break;
        }
    }
    let export = DataExport {
        exported_at: now_ms(),
        account,
        devices,
        guilds,
        messages,
    };
    let disposition = format!(
        "attachment; filename=\"concord-export-{}.json\"",
        caller.user_id
    );
    Ok((
        [(
            axum::http::header::CONTENT_DISPOSITION,
            axum::http::HeaderValue::from_str(&disposition).expect("ascii header"),
        )],
        Json(export),
    ))
}
