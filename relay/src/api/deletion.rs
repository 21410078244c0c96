//! Deleting an account (by its user, or by an instance admin): sessions end at once, devices,
//! memberships, read states and reactions are erased, the username becomes `deleted-<id>`.
//! Messages stay, shown as written by a deleted user, or are erased too when
//! `auth.deleted_account_messages = "erase"`. An account that owns guilds must hand them over
//! (`PATCH /guilds/{id}` with `owner_id`) or delete them first.
//!
//! Shared by `DELETE /users/@me` and the admin route: `ModerationStore::delete_account`
//! (one transaction; refused while the account owns guilds), then sessions revoked and the
//! account's guild mates told.

use std::sync::Arc;

use concord_proto::gateway::MemberRemoved;
use concord_proto::model::User;
use concord_proto::{Id, Permissions};

use super::error::{ApiError, ApiResult};
use crate::app::{App, now_ms};
use crate::config::DeletedMessages;
use crate::perms::ChannelAccess;
use crate::store::StoreError;

/// Messages erased per store round trip.
const ERASE_BATCH: u32 = 500;

/// Deletes the account; returns how many of its messages were erased.
pub async fn delete_account(app: &App, user_id: Id) -> ApiResult<u64> {
    let deleted = app
        .store
        .delete_account(user_id, now_ms())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound("user"),
            StoreError::Conflict(_) => ApiError::Conflict(
                "owns_guilds",
                "hand your guilds to another member or delete them first",
            ),
            other => other.into(),
        })?;
    app.revoke_sessions(&deleted.sessions);
    let gone = User {
        id: user_id,
        username: format!("deleted-{}", user_id.0),
    };
    for guild_id in deleted.guilds {
        app.perms.invalidate_member(guild_id, user_id);
        app.hub.leave_guild(user_id, guild_id);
        app.hub.to_guild(
            guild_id,
            "member_remove",
            &MemberRemoved {
                guild_id,
                user: gone.clone(),
            },
        );
    }
    metrics::counter!("concord_accounts_deleted_total").increment(1);
    if app.config.auth.deleted_account_messages == DeletedMessages::Keep {
        return Ok(0);
    }
    erase_messages(app, user_id).await
}

async fn erase_messages(app: &App, user_id: Id) -> ApiResult<u64> {
    let mut erased = 0;
    loop {
        let batch = app
            .store
            .live_messages_by(user_id, None, Id(0), ERASE_BATCH)
            .await?;
        if batch.is_empty() {
            return Ok(erased);
        }
        let before = erased;
        for (channel_id, message_id) in batch {
            let Some(channel) = app.perms.channel(channel_id).await? else {
                continue;
            };
            let access = ChannelAccess {
                channel: Arc::clone(&channel),
                perms: Permissions::ALL,
            };
            match crate::messaging::delete_stored(app, &access, message_id).await {
                Ok(()) | Err(ApiError::NotFound(_)) => erased += 1,
                Err(e) => return Err(e),
            }
        }
        // A batch that erased nothing would come back the same: stop rather than spin.
        if erased == before {
            return Ok(erased);
        }
    }
}
