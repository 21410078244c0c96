//! Messages: history, send, read one, edit, delete, reactions.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use concord_proto::api::{EditMessage, ErrorBody, HistoryQuery, SendMessage};
use concord_proto::limits;
use concord_proto::model::{ChannelKind, Message};
use concord_proto::{Id, Permissions};

use super::error::{ApiError, ApiResult};
use super::extract::{PathParams, Valid, ValidQuery};
use axum::response::IntoResponse;

use crate::app::App;
use crate::auth::Caller;
use crate::messaging;
use crate::store::HistoryAnchor;

#[utoipa::path(get, path = "/api/v1/channels/{channel_id}/messages", tag = "messages", security(("bearer" = [])),
    params(("channel_id" = Id, Path), HistoryQuery),
    responses((status = 200, body = Vec<Message>, description = "oldest first",
        headers(("concord-archived-before" = String, description = "present when old messages were archived: messages with smaller ids are no longer in history or search"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn history(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(channel_id): PathParams<Id>,
    ValidQuery(q): ValidQuery<HistoryQuery>,
) -> ApiResult<axum::response::Response> {
    let access = app
        .perms
        .require_channel(channel_id, caller.user_id, Permissions::READ_HISTORY)
        .await?;
    if access.channel.kind == ChannelKind::Voice {
        return Ok(Json(Vec::<Message>::new()).into_response());
    }
    let anchor = match (q.before, q.after, q.around) {
        (Some(b), _, _) => HistoryAnchor::Before(b),
        (_, Some(a), _) => HistoryAnchor::After(a),
        (_, _, Some(x)) => HistoryAnchor::Around(x),
        _ => HistoryAnchor::Latest,
    };
    // Read before the page: every event up to this seq is already reflected in it, so a
    // client catches up from here without applying a reaction or an edit twice.
    let seq = app
        .store
        .channel_seqs(&[channel_id])
        .await?
        .first()
        .map_or(0, |(_, s)| *s);
    let mut page = app
        .store
        .history(channel_id, anchor, limits::page_limit(q.limit)?)
        .await?;
    mark_my_reactions(&app, caller.user_id, &mut page).await?;
    let mut response = Json(page).into_response();
    response
        .headers_mut()
        .insert(CHANNEL_SEQ, axum::http::HeaderValue::from(seq));
    if let Some(before) = app.archived_before() {
        response
            .headers_mut()
            .insert(ARCHIVED_BEFORE, axum::http::HeaderValue::from(before.0));
    }
    Ok(response)
}

/// Tells clients where the archive begins (older messages left history).
pub const ARCHIVED_BEFORE: &str = "concord-archived-before";
/// On history pages: the channel's seq when the page was read (catch up after it).
pub const CHANNEL_SEQ: &str = "concord-channel-seq";

#[utoipa::path(post, path = "/api/v1/channels/{channel_id}/messages", tag = "messages", security(("bearer" = [])),
    params(("channel_id" = Id, Path)), request_body = SendMessage,
    responses((status = 201, body = Message, description = "created"), (status = 200, body = Message, description = "the message first sent with this nonce"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`nonce_reused`: the nonce belongs to a message in another channel"), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "`retry`: the commit's outcome is unknown, send again with the same nonce; `unavailable`: nothing was written"),
        (status = 507, body = ErrorBody, description = "`storage_full`: the disk is under its free-space floor; nothing was written, retry after Retry-After")))]
pub async fn send(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(channel_id): PathParams<Id>,
    Valid(body): Valid<SendMessage>,
) -> ApiResult<(StatusCode, axum::http::HeaderMap, Json<Message>)> {
    let sent = messaging::send(&app, &caller, channel_id, body).await?;
    let mut headers = axum::http::HeaderMap::new();
    super::ratelimit::set_headers(&mut headers, &sent.budget);
    Ok((
        if sent.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        headers,
        Json(sent.message),
    ))
}

#[utoipa::path(get, path = "/api/v1/channels/{channel_id}/messages/{message_id}", tag = "messages", security(("bearer" = [])),
    params(("channel_id" = Id, Path), ("message_id" = Id, Path)),
    responses((status = 200, body = Message), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_message(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((channel_id, message_id)): PathParams<(Id, Id)>,
) -> ApiResult<Json<Message>> {
    app.perms
        .require_channel(channel_id, caller.user_id, Permissions::READ_HISTORY)
        .await?;
    let mut message = app
        .store
        .message(channel_id, message_id)
        .await?
        .ok_or(ApiError::NotFound("message"))?;
    mark_my_reactions(&app, caller.user_id, std::slice::from_mut(&mut message)).await?;
    Ok(Json(message))
}

/// Sets `me` on the reactions the caller made.
async fn mark_my_reactions(app: &App, user_id: Id, messages: &mut [Message]) -> ApiResult<()> {
    let ids: Vec<Id> = messages
        .iter()
        .filter(|m| !m.reactions.is_empty())
        .map(|m| m.id)
        .collect();
    let mine = app.store.my_reactions(user_id, &ids).await?;
    for m in messages {
        for r in &mut m.reactions {
            r.me = mine.iter().any(|(id, e)| *id == m.id && *e == r.emoji);
        }
    }
    Ok(())
}

#[utoipa::path(patch, path = "/api/v1/channels/{channel_id}/messages/{message_id}", tag = "messages", security(("bearer" = [])),
    params(("channel_id" = Id, Path), ("message_id" = Id, Path)), request_body = EditMessage,
    responses((status = 200, body = Message), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn edit(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((channel_id, message_id)): PathParams<(Id, Id)>,
    Valid(body): Valid<EditMessage>,
) -> ApiResult<Json<Message>> {
    Ok(Json(
        messaging::edit(&app, &caller, channel_id, message_id, body.content).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/channels/{channel_id}/messages/{message_id}", tag = "messages", security(("bearer" = [])),
    params(("channel_id" = Id, Path), ("message_id" = Id, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((channel_id, message_id)): PathParams<(Id, Id)>,
) -> ApiResult<StatusCode> {
    messaging::delete(&app, &caller, channel_id, message_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/api/v1/channels/{channel_id}/messages/{message_id}/reactions/{emoji}", tag = "messages", security(("bearer" = [])),
    params(("channel_id" = Id, Path), ("message_id" = Id, Path), ("emoji" = String, Path, description = "URL-encoded emoji")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn add_reaction(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((channel_id, message_id, emoji)): PathParams<(Id, Id, String)>,
) -> ApiResult<StatusCode> {
    limits::emoji(&emoji)?;
    messaging::react(&app, &caller, channel_id, message_id, &emoji, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/channels/{channel_id}/messages/{message_id}/reactions/{emoji}", tag = "messages", security(("bearer" = [])),
    params(("channel_id" = Id, Path), ("message_id" = Id, Path), ("emoji" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_reaction(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((channel_id, message_id, emoji)): PathParams<(Id, Id, String)>,
) -> ApiResult<StatusCode> {
    limits::emoji(&emoji)?;
    messaging::react(&app, &caller, channel_id, message_id, &emoji, false).await?;
    Ok(StatusCode::NO_CONTENT)
}
