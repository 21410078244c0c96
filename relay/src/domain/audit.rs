//! The guild audit log: what moderators did, by whom, to whom. Written by moderation
//! operations whatever transport asked for them.

use concord_proto::Id;

use crate::app::{App, now_ms};
use crate::domain::error::DomainResult;
use crate::store::AuditEntry;

/// Records a moderation action in the guild's audit log.
pub async fn audit_guild(
    app: &App,
    guild_id: Id,
    actor: Id,
    action: &str,
    target: Option<Id>,
    detail: String,
) -> DomainResult<()> {
    metrics::counter!("concord_moderation_actions_total", "action" => action.to_owned())
        .increment(1);
    app.store
        .add_guild_audit(
            guild_id,
            &AuditEntry {
                id: app.next_id(),
                actor_id: Some(actor),
                action: action.to_owned(),
                target_id: target,
                detail,
                created_at: now_ms(),
            },
        )
        .await?;
    Ok(())
}
