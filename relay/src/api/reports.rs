//! Reports: any member reports a message or a user to the guild's moderators
//! (moderate_members works the queue), and anyone reports to the instance admins. A reported
//! message's content is kept with the report, so deleting the message does not destroy the
//! evidence. Closing a report (resolve or dismiss) records what was done, in the report and
//! in the audit log. Stored in the `reports` table; two queues, the guild's and the admins'.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use concord_proto::api::{CreateReport, ErrorBody, HandleReport, Report, ReportsQuery};
use concord_proto::limits::page_limit;
use concord_proto::{Id, Permissions};

use super::admin::{audit, require_admin};
use super::error::{ApiError, ApiResult};
use super::extract::{PathParams, Valid, ValidQuery};
use super::moderation::audit_guild;
use crate::app::{App, now_ms};
use crate::auth::Caller;
use crate::store::StoreError;

/// Checks what the report points at and builds it: a message the reporter can read (its
/// author becomes the reported user), or an existing user.
async fn build(
    app: &App,
    caller: &Caller,
    guild_id: Option<Id>,
    body: CreateReport,
) -> ApiResult<Report> {
    let mut user_id = body.user_id;
    let mut content = None;
    if let (Some(channel_id), Some(message_id)) = (body.channel_id, body.message_id) {
        let access = app
            .perms
            .require_channel(
                channel_id,
                caller.user_id,
                Permissions::VIEW_CHANNEL | Permissions::READ_HISTORY,
            )
            .await?;
        if guild_id.is_some() && access.channel.guild_id != guild_id {
            return Err(ApiError::NotFound("channel"));
        }
        let message = app
            .store
            .message(channel_id, message_id)
            .await?
            .filter(|m| !m.deleted)
            .ok_or(ApiError::NotFound("message"))?;
        if user_id.is_some_and(|u| u != message.author) {
            return Err(ApiError::BadRequest(
                "user_mismatch",
                "user_id is not the message's author".into(),
            ));
        }
        user_id = Some(message.author);
        content = Some(message.content);
    }
    let user_id = user_id.expect("validated: a user or a message");
    if user_id == caller.user_id {
        return Err(ApiError::BadRequest(
            "report_self",
            "you cannot report yourself".into(),
        ));
    }
    if app.store.account(user_id).await?.is_none() {
        return Err(ApiError::NotFound("user"));
    }
    Ok(Report {
        id: app.next_id(),
        guild_id,
        reporter_id: caller.user_id,
        user_id,
        channel_id: body.channel_id,
        message_id: body.message_id,
        message_content: content,
        reason: body.reason,
        status: "open".into(),
        action: None,
        handled_by: None,
        handled_at: None,
        created_at: now_ms(),
    })
}

async fn create(app: &App, report: Report) -> ApiResult<(StatusCode, Json<Report>)> {
    app.store.create_report(&report).await?;
    let scope = if report.guild_id.is_some() {
        "guild"
    } else {
        "instance"
    };
    metrics::counter!("concord_reports_total", "scope" => scope).increment(1);
    Ok((StatusCode::CREATED, Json(report)))
}

async fn close(
    app: &App,
    caller: &Caller,
    report_id: Id,
    body: &HandleReport,
) -> ApiResult<Report> {
    app.store
        .handle_report(
            report_id,
            &body.status,
            &body.action,
            caller.user_id,
            now_ms(),
        )
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound("report"),
            StoreError::Conflict(_) => {
                ApiError::Conflict("report_closed", "this report is already closed")
            }
            other => other.into(),
        })
}

fn status_filter(q: &ReportsQuery) -> Option<&str> {
    match q.status.as_deref() {
        None => Some("open"),
        Some("all") => None,
        Some(s) => Some(s),
    }
}

#[utoipa::path(post, path = "/api/v1/guilds/{guild_id}/reports", tag = "moderation", security(("bearer" = [])),
    params(("guild_id" = Id, Path)), request_body = CreateReport,
    responses((status = 201, body = Report), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn report_to_guild(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(guild_id): PathParams<Id>,
    Valid(body): Valid<CreateReport>,
) -> ApiResult<(StatusCode, Json<Report>)> {
    app.perms
        .require_guild(guild_id, caller.user_id, Permissions::NONE)
        .await?;
    let report = build(&app, &caller, Some(guild_id), body).await?;
    create(&app, report).await
}

#[utoipa::path(get, path = "/api/v1/guilds/{guild_id}/reports", tag = "moderation", security(("bearer" = [])),
    params(("guild_id" = Id, Path), ReportsQuery),
    responses((status = 200, body = Vec<Report>, description = "newest first; open ones unless status says otherwise"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn guild_reports(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(guild_id): PathParams<Id>,
    ValidQuery(q): ValidQuery<ReportsQuery>,
) -> ApiResult<Json<Vec<Report>>> {
    app.perms
        .require_guild(guild_id, caller.user_id, Permissions::MODERATE_MEMBERS)
        .await?;
    let limit = page_limit(q.limit)?;
    Ok(Json(
        app.store
            .reports(Some(guild_id), status_filter(&q), q.before, limit)
            .await?,
    ))
}

#[utoipa::path(patch, path = "/api/v1/guilds/{guild_id}/reports/{report_id}", tag = "moderation", security(("bearer" = [])),
    params(("guild_id" = Id, Path), ("report_id" = Id, Path)), request_body = HandleReport,
    responses((status = 200, body = Report), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn handle_guild_report(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((guild_id, report_id)): PathParams<(Id, Id)>,
    Valid(body): Valid<HandleReport>,
) -> ApiResult<Json<Report>> {
    app.perms
        .require_guild(guild_id, caller.user_id, Permissions::MODERATE_MEMBERS)
        .await?;
    // Another guild's report is as unknown here as a missing one.
    if app
        .store
        .report(report_id)
        .await?
        .is_none_or(|r| r.guild_id != Some(guild_id))
    {
        return Err(ApiError::NotFound("report"));
    }
    let report = close(&app, &caller, report_id, &body).await?;
    audit_guild(
        &app,
        guild_id,
        caller.user_id,
        &format!("report_{}", body.status),
        Some(report.user_id),
        format!("report {report_id}: {}", body.action),
    )
    .await?;
    Ok(Json(report))
}

#[utoipa::path(post, path = "/api/v1/reports", tag = "moderation", security(("bearer" = [])),
    request_body = CreateReport,
    responses((status = 201, body = Report, description = "sent to the instance admins"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn report_to_admins(
    State(app): State<Arc<App>>,
    caller: Caller,
    Valid(body): Valid<CreateReport>,
) -> ApiResult<(StatusCode, Json<Report>)> {
    let report = build(&app, &caller, None, body).await?;
    create(&app, report).await
}

#[utoipa::path(get, path = "/api/v1/admin/reports", tag = "admin", security(("bearer" = [])),
    params(ReportsQuery),
    responses((status = 200, body = Vec<Report>, description = "reports sent to the instance admins, newest first"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn admin_reports(
    State(app): State<Arc<App>>,
    caller: Caller,
    ValidQuery(q): ValidQuery<ReportsQuery>,
) -> ApiResult<Json<Vec<Report>>> {
    require_admin(&app, &caller).await?;
    let limit = page_limit(q.limit)?;
    Ok(Json(
        app.store
            .reports(None, status_filter(&q), q.before, limit)
            .await?,
    ))
}

#[utoipa::path(patch, path = "/api/v1/admin/reports/{report_id}", tag = "admin", security(("bearer" = [])),
    params(("report_id" = Id, Path)), request_body = HandleReport,
    responses((status = 200, body = Report), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn handle_admin_report(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(report_id): PathParams<Id>,
    Valid(body): Valid<HandleReport>,
) -> ApiResult<Json<Report>> {
    require_admin(&app, &caller).await?;
    if app
        .store
        .report(report_id)
        .await?
        .is_none_or(|r| r.guild_id.is_some())
    {
        return Err(ApiError::NotFound("report"));
    }
    let report = close(&app, &caller, report_id, &body).await?;
    audit(
        &app,
        Some(caller.user_id),
        &format!("report_{}", body.status),
        Some(report.user_id),
        &format!("report {report_id}: {}", body.action),
    )
    .await?;
    Ok(Json(report))
}
