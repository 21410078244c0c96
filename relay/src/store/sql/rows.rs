//! Turning `AnyRow`s into records. SQLite hands booleans back as integers and PostgreSQL as
//! booleans, so `boolean` accepts both.

use concord_proto::Id;
use concord_proto::model::{Ban, Channel, ChannelKind, Guild, Invite, Role, User};
use concord_proto::permissions::{Overwrite, OverwriteKind, Permissions};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::store::{AccountRecord, DeviceRecord, SessionRecord, StoreError, StoreResult};

pub(crate) fn int(row: &AnyRow, col: &str) -> StoreResult<i64> {
    Ok(row.try_get::<i64, _>(col)?)
}

pub(crate) fn opt_int(row: &AnyRow, col: &str) -> StoreResult<Option<i64>> {
    Ok(row.try_get::<Option<i64>, _>(col)?)
}

pub(crate) fn id(row: &AnyRow, col: &str) -> StoreResult<Id> {
    int(row, col).map(Id)
}

pub(crate) fn opt_id(row: &AnyRow, col: &str) -> StoreResult<Option<Id>> {
    opt_int(row, col).map(|v| v.map(Id))
}

pub(crate) fn text(row: &AnyRow, col: &str) -> StoreResult<String> {
    Ok(row.try_get::<String, _>(col)?)
}

pub(crate) fn opt_text(row: &AnyRow, col: &str) -> StoreResult<Option<String>> {
    Ok(row.try_get::<Option<String>, _>(col)?)
}

pub(crate) fn boolean(row: &AnyRow, col: &str) -> StoreResult<bool> {
    match row.try_get::<bool, _>(col) {
        Ok(b) => Ok(b),
        Err(_) => Ok(int(row, col)? != 0),
    }
}

pub(crate) fn perms(row: &AnyRow, col: &str) -> StoreResult<Permissions> {
    Ok(Permissions(int(row, col)? as u64))
}

pub(crate) fn account(row: &AnyRow) -> StoreResult<AccountRecord> {
    Ok(AccountRecord {
        id: id(row, "id")?,
        username: text(row, "username")?,
        account_key: text(row, "account_key")?,
        created_at: int(row, "created_at")?,
    })
}

pub(crate) fn device(row: &AnyRow) -> StoreResult<DeviceRecord> {
    Ok(DeviceRecord {
        device_key: text(row, "device_key")?,
        account_id: id(row, "account_id")?,
        label: text(row, "label")?,
        certificate: text(row, "certificate")?,
        certified_at: int(row, "certified_at")?,
        added_at: int(row, "added_at")?,
        revoked_at: opt_int(row, "revoked_at")?,
    })
}

pub(crate) fn session(row: &AnyRow) -> StoreResult<SessionRecord> {
    Ok(SessionRecord {
        id: id(row, "id")?,
        account_id: id(row, "account_id")?,
        device_key: text(row, "device_key")?,
        created_at: int(row, "created_at")?,
        revoked_at: opt_int(row, "revoked_at")?,
    })
}

pub(crate) fn guild(row: &AnyRow) -> StoreResult<Guild> {
    Ok(Guild {
        id: id(row, "id")?,
        name: text(row, "name")?,
        owner_id: id(row, "owner_id")?,
        created_at: int(row, "created_at")?,
    })
}

pub(crate) fn role(row: &AnyRow) -> StoreResult<Role> {
    Ok(Role {
        id: id(row, "id")?,
        guild_id: id(row, "guild_id")?,
        name: text(row, "name")?,
        permissions: perms(row, "permissions")?,
        position: int(row, "position")?,
    })
}

/// A channel row without overwrites or recipients (the caller adds them).
pub(crate) fn channel(row: &AnyRow) -> StoreResult<Channel> {
    let kind = text(row, "kind")?;
    Ok(Channel {
        id: id(row, "id")?,
        guild_id: opt_id(row, "guild_id")?,
        kind: ChannelKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("channel kind {kind:?}")))?,
        name: text(row, "name")?,
        topic: opt_text(row, "topic")?,
        position: int(row, "position")?,
        private: boolean(row, "private")?,
        slowmode_secs: u32::try_from(int(row, "slowmode_secs")?)
            .map_err(|_| StoreError::Corrupt("slowmode_secs out of range".into()))?,
        overwrites: Vec::new(),
        last_seq: int(row, "last_seq")?,
        recipients: Vec::new(),
    })
}

/// An overwrite row (`channel_id` is read by the caller when grouping).
pub(crate) fn overwrite(row: &AnyRow) -> StoreResult<Overwrite> {
    let kind = text(row, "target_kind")?;
    Ok(Overwrite {
        target_id: id(row, "target_id")?,
        kind: OverwriteKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("overwrite kind {kind:?}")))?,
        allow: perms(row, "allow_bits")?,
        deny: perms(row, "deny_bits")?,
    })
}

pub(crate) fn invite(row: &AnyRow) -> StoreResult<Invite> {
    Ok(Invite {
        code: text(row, "code")?,
        guild_id: id(row, "guild_id")?,
        inviter_id: id(row, "inviter_id")?,
        max_uses: opt_int(row, "max_uses")?,
        uses: int(row, "uses")?,
        expires_at: opt_int(row, "expires_at")?,
        revoked: opt_int(row, "revoked_at")?.is_some(),
        created_at: int(row, "created_at")?,
    })
}

pub(crate) fn ban(row: &AnyRow) -> StoreResult<Ban> {
    Ok(Ban {
        guild_id: id(row, "guild_id")?,
        user: User {
            id: id(row, "user_id")?,
            username: text(row, "username")?,
        },
        reason: opt_text(row, "reason")?,
        created_at: int(row, "created_at")?,
    })
}
