use std::collections::HashMap;

use async_trait::async_trait;
use concord_proto::Id;
use concord_proto::model::{Ban, Channel, ChannelKind, Guild, Invite, Member, Role, User};
use concord_proto::permissions::Overwrite;
use sqlx::{AnyConnection, AssertSqlSafe};

use super::rows::{self, id, int, opt_int, text};
use super::{SqlStore, is_unique_violation, placeholders};
use crate::store::{
    AcceptedInvite, ChannelUpdate, GuildSnapshot, GuildStore, InviteRefusal, StoreError,
    StoreResult,
};

const GUILD_COLS: &str = "g.id, g.name, g.owner_id, g.created_at";
const ROLE_COLS: &str = "id, guild_id, name, permissions, position";
const CHANNEL_COLS: &str =
    "c.id, c.guild_id, c.kind, c.name, c.topic, c.position, c.private, c.slowmode_secs, c.last_seq";
const INVITE_COLS: &str =
    "code, guild_id, inviter_id, max_uses, uses, expires_at, revoked_at, created_at";

async fn insert_channel(conn: &mut AnyConnection, c: &Channel, now: i64) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO channels (id, guild_id, kind, name, topic, position, private, slowmode_secs, last_seq, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9)",
    )
    .bind(c.id.0)
    .bind(c.guild_id.map(|g| g.0))
    .bind(c.kind.as_str())
    .bind(&c.name)
    .bind(&c.topic)
    .bind(c.position)
    .bind(i64::from(c.private))
    .bind(i64::from(c.slowmode_secs))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    for o in &c.overwrites {
        upsert_overwrite(conn, c.id, o).await?;
    }
    Ok(())
}

async fn upsert_overwrite(
    conn: &mut AnyConnection,
    channel_id: Id,
    o: &Overwrite,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO overwrites (channel_id, target_id, target_kind, allow_bits, deny_bits) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (channel_id, target_id) DO UPDATE SET target_kind = excluded.target_kind, \
         allow_bits = excluded.allow_bits, deny_bits = excluded.deny_bits",
    )
    .bind(channel_id.0)
    .bind(o.target_id.0)
    .bind(o.kind.as_str())
    .bind(o.allow.0 as i64)
    .bind(o.deny.0 as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn insert_member(
    conn: &mut AnyConnection,
    guild_id: Id,
    user_id: Id,
    now: i64,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO members (guild_id, user_id, joined_at) VALUES ($1, $2, $3)")
        .bind(guild_id.0)
        .bind(user_id.0)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Fills overwrites (all channels) and recipients (DM channels) for a batch of channel rows.
async fn complete_channels(
    conn: &mut AnyConnection,
    mut channels: Vec<Channel>,
) -> StoreResult<Vec<Channel>> {
    if channels.is_empty() {
        return Ok(channels);
    }
    let ids: Vec<i64> = channels.iter().map(|c| c.id.0).collect();
    let sql = format!(
        "SELECT channel_id, target_id, target_kind, allow_bits, deny_bits FROM overwrites WHERE channel_id IN ({}) \
         ORDER BY channel_id, target_id",
        placeholders(1, ids.len())
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for i in &ids {
        q = q.bind(*i);
    }
    let mut by_channel: HashMap<Id, Vec<Overwrite>> = HashMap::new();
    for row in q.fetch_all(&mut *conn).await? {
        by_channel
            .entry(id(&row, "channel_id")?)
            .or_default()
            .push(rows::overwrite(&row)?);
    }
    let dm_ids: Vec<i64> = channels
        .iter()
        .filter(|c| c.kind == ChannelKind::Dm)
        .map(|c| c.id.0)
        .collect();
    let mut recipients: HashMap<Id, Vec<User>> = HashMap::new();
    if !dm_ids.is_empty() {
        let sql = format!(
            "SELECT d.channel_id, a.id, a.username FROM dm_channels d JOIN accounts a ON a.id = d.user_low OR a.id = d.user_high \
             WHERE d.channel_id IN ({}) ORDER BY d.channel_id, a.id",
            placeholders(1, dm_ids.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for i in &dm_ids {
            q = q.bind(*i);
        }
        for row in q.fetch_all(&mut *conn).await? {
            recipients
                .entry(id(&row, "channel_id")?)
                .or_default()
                .push(User {
                    id: id(&row, "id")?,
                    username: text(&row, "username")?,
                });
        }
    }
    for c in &mut channels {
        c.overwrites = by_channel.remove(&c.id).unwrap_or_default();
        c.recipients = recipients.remove(&c.id).unwrap_or_default();
    }
    Ok(channels)
}

/// Adds role ids to member rows (`user_id, joined_at, timeout_until, username`).
async fn members_with_roles(
    conn: &mut AnyConnection,
    guild_id: Id,
    rows_: Vec<sqlx::any::AnyRow>,
) -> StoreResult<Vec<Member>> {
    let mut members: Vec<Member> = rows_
        .iter()
        .map(|r| {
            Ok(Member {
                guild_id,
                user: User {
                    id: id(r, "user_id")?,
                    username: text(r, "username")?,
                },
                roles: Vec::new(),
                joined_at: int(r, "joined_at")?,
                timeout_until: opt_int(r, "timeout_until")?,
            })
        })
        .collect::<StoreResult<_>>()?;
    if members.is_empty() {
        return Ok(members);
    }
    let sql = format!(
        "SELECT user_id, role_id FROM member_roles WHERE guild_id = $1 AND user_id IN ({}) ORDER BY role_id",
        placeholders(2, members.len())
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(guild_id.0);
    for m in &members {
        q = q.bind(m.user.id.0);
    }
    let mut roles: HashMap<Id, Vec<Id>> = HashMap::new();
    for row in q.fetch_all(&mut *conn).await? {
        roles
            .entry(id(&row, "user_id")?)
            .or_default()
            .push(id(&row, "role_id")?);
    }
    for m in &mut members {
        m.roles = roles.remove(&m.user.id).unwrap_or_default();
    }
    Ok(members)
}

impl SqlStore {
    /// Row lock suffix: PostgreSQL locks the row; SQLite has a single writer already.
    fn for_update(&self) -> &'static str {
        match self.backend {
            crate::store::Backend::Postgres => " FOR UPDATE",
            crate::store::Backend::Sqlite => "",
        }
    }

    async fn channels_where(&self, clause: &str, bind: i64) -> StoreResult<Vec<Channel>> {
        let mut conn = self.read.acquire().await?;
        let sql = format!("SELECT {CHANNEL_COLS} FROM channels c {clause}");
        let rows_ = sqlx::query(AssertSqlSafe(sql))
            .bind(bind)
            .fetch_all(&mut *conn)
            .await?;
        let channels = rows_
            .iter()
            .map(rows::channel)
            .collect::<StoreResult<Vec<_>>>()?;
        complete_channels(&mut conn, channels).await
    }
}

#[async_trait]
impl GuildStore for SqlStore {
    #[tracing::instrument(name = "db", skip_all, fields(op = "create_guild"))]
    async fn create_guild(
        &self,
        guild: &Guild,
        everyone: &Role,
        channels: &[Channel],
    ) -> StoreResult<()> {
        let _t = self.begin_write("create_guild")?;
        let mut tx = self.write.begin().await?;
        sqlx::query("INSERT INTO guilds (id, name, owner_id, created_at) VALUES ($1, $2, $3, $4)")
            .bind(guild.id.0)
            .bind(&guild.name)
            .bind(guild.owner_id.0)
            .bind(guild.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO roles (id, guild_id, name, permissions, position, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(everyone.id.0)
            .bind(guild.id.0)
            .bind(&everyone.name)
            .bind(everyone.permissions.0 as i64)
            .bind(everyone.position)
            .bind(guild.created_at)
            .execute(&mut *tx)
            .await?;
        insert_member(&mut tx, guild.id, guild.owner_id, guild.created_at).await?;
        for c in channels {
            insert_channel(&mut tx, c, guild.created_at).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "guild"))]
    async fn guild(&self, guild_id: Id) -> StoreResult<Option<Guild>> {
        let _t = self.begin("guild")?;
        let sql = format!("SELECT {GUILD_COLS} FROM guilds g WHERE g.id = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(guild_id.0)
            .fetch_optional(&self.write)
            .await?
            .map(|r| rows::guild(&r))
            .transpose()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "rename_guild"))]
    async fn rename_guild(&self, guild_id: Id, name: &str) -> StoreResult<Guild> {
        let _t = self.begin("rename_guild")?;
        let row = sqlx::query(
            "UPDATE guilds SET name = $1 WHERE id = $2 RETURNING id, name, owner_id, created_at",
        )
        .bind(name)
        .bind(guild_id.0)
        .fetch_optional(&self.write)
        .await?
        .ok_or(StoreError::NotFound)?;
        rows::guild(&row)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "delete_guild"))]
    async fn delete_guild(&self, guild_id: Id) -> StoreResult<()> {
        let _t = self.begin("delete_guild")?;
        let n = sqlx::query("DELETE FROM guilds WHERE id = $1")
            .bind(guild_id.0)
            .execute(&self.write)
            .await?
            .rows_affected();
        if n == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "guilds_of"))]
    async fn guilds_of(&self, user_id: Id) -> StoreResult<Vec<Guild>> {
        let _t = self.begin("guilds_of")?;
        let sql = format!(
            "SELECT {GUILD_COLS} FROM guilds g JOIN members m ON m.guild_id = g.id WHERE m.user_id = $1 ORDER BY g.id"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(user_id.0)
            .fetch_all(&self.write)
            .await?
            .iter()
            .map(rows::guild)
            .collect()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "guild_snapshot"))]
    async fn guild_snapshot(&self, guild_id: Id) -> StoreResult<Option<GuildSnapshot>> {
        let _t = self.begin("guild_snapshot")?;
        // Permission checks must see the latest writes: read from the primary.
        let mut conn = self.write.acquire().await?;
        let sql = format!("SELECT {GUILD_COLS} FROM guilds g WHERE g.id = $1");
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(guild_id.0)
            .fetch_optional(&mut *conn)
            .await?
        else {
            return Ok(None);
        };
        let guild = rows::guild(&row)?;
        let sql =
            format!("SELECT {ROLE_COLS} FROM roles WHERE guild_id = $1 ORDER BY position, id");
        let roles = sqlx::query(AssertSqlSafe(sql))
            .bind(guild_id.0)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(rows::role)
            .collect::<StoreResult<_>>()?;
        let sql = format!(
            "SELECT {CHANNEL_COLS} FROM channels c WHERE c.guild_id = $1 ORDER BY c.position, c.id"
        );
        let channels = sqlx::query(AssertSqlSafe(sql))
            .bind(guild_id.0)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(rows::channel)
            .collect::<StoreResult<Vec<_>>>()?;
        let channels = complete_channels(&mut conn, channels).await?;
        Ok(Some(GuildSnapshot {
            guild,
            roles,
            channels,
        }))
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "create_channel"))]
    async fn create_channel(&self, channel: &Channel) -> StoreResult<()> {
        let _t = self.begin_write("create_channel")?;
        let mut tx = self.write.begin().await?;
        insert_channel(&mut tx, channel, channel.id.unix_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "channel"))]
    async fn channel(&self, channel_id: Id) -> StoreResult<Option<Channel>> {
        let _t = self.begin("channel")?;
        let mut conn = self.write.acquire().await?;
        let sql = format!("SELECT {CHANNEL_COLS} FROM channels c WHERE c.id = $1");
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(channel_id.0)
            .fetch_optional(&mut *conn)
            .await?
        else {
            return Ok(None);
        };
        let channel = rows::channel(&row)?;
        Ok(complete_channels(&mut conn, vec![channel]).await?.pop())
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "channel_seqs"))]
    async fn channel_seqs(&self, ids: &[Id]) -> StoreResult<Vec<(Id, i64)>> {
        let _t = self.begin("channel_seqs")?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, last_seq FROM channels WHERE id IN ({}) ORDER BY id",
            placeholders(1, ids.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for i in ids {
            q = q.bind(i.0);
        }
        q.fetch_all(&self.write)
            .await?
            .iter()
            .map(|r| Ok((id(r, "id")?, int(r, "last_seq")?)))
            .collect()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "update_channel"))]
    async fn update_channel(&self, channel_id: Id, u: &ChannelUpdate) -> StoreResult<Channel> {
        let _t = self.begin("update_channel")?;
        let n = sqlx::query(
            "UPDATE channels SET name = COALESCE($1, name), topic = COALESCE($2, topic), \
             position = COALESCE($3, position), private = COALESCE($4, private), \
             slowmode_secs = COALESCE($5, slowmode_secs) WHERE id = $6",
        )
        .bind(&u.name)
        .bind(&u.topic)
        .bind(u.position)
        .bind(u.private.map(i64::from))
        .bind(u.slowmode_secs.map(i64::from))
        .bind(channel_id.0)
        .execute(&self.write)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        self.channel(channel_id).await?.ok_or(StoreError::NotFound)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "delete_channel"))]
    async fn delete_channel(&self, channel_id: Id) -> StoreResult<()> {
        let _t = self.begin("delete_channel")?;
        let n = sqlx::query("DELETE FROM channels WHERE id = $1")
            .bind(channel_id.0)
            .execute(&self.write)
            .await?
            .rows_affected();
        if n == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "put_overwrite"))]
    async fn put_overwrite(&self, channel_id: Id, overwrite: &Overwrite) -> StoreResult<()> {
        let _t = self.begin_write("put_overwrite")?;
        let mut conn = self.write.acquire().await?;
        upsert_overwrite(&mut conn, channel_id, overwrite).await
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "delete_overwrite"))]
    async fn delete_overwrite(&self, channel_id: Id, target_id: Id) -> StoreResult<bool> {
        let _t = self.begin("delete_overwrite")?;
        let n = sqlx::query("DELETE FROM overwrites WHERE channel_id = $1 AND target_id = $2")
            .bind(channel_id.0)
            .bind(target_id.0)
            .execute(&self.write)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "create_role"))]
    async fn create_role(&self, role: &Role) -> StoreResult<()> {
        let _t = self.begin_write("create_role")?;
        sqlx::query("INSERT INTO roles (id, guild_id, name, permissions, position, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(role.id.0)
            .bind(role.guild_id.0)
            .bind(&role.name)
            .bind(role.permissions.0 as i64)
            .bind(role.position)
            .bind(role.id.unix_ms())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "update_role"))]
    async fn update_role(&self, role: &Role) -> StoreResult<()> {
        let _t = self.begin("update_role")?;
        let n = sqlx::query("UPDATE roles SET name = $1, permissions = $2, position = $3 WHERE id = $4 AND guild_id = $5")
            .bind(&role.name)
            .bind(role.permissions.0 as i64)
            .bind(role.position)
            .bind(role.id.0)
            .bind(role.guild_id.0)
            .execute(&self.write)
            .await?
            .rows_affected();
        if n == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "delete_role"))]
    async fn delete_role(&self, guild_id: Id, role_id: Id) -> StoreResult<bool> {
        let _t = self.begin("delete_role")?;
        let mut tx = self.write.begin().await?;
        let n = sqlx::query("DELETE FROM roles WHERE id = $1 AND guild_id = $2")
            .bind(role_id.0)
            .bind(guild_id.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        // Overwrites name their target without a foreign key (it may be a role or a member).
        sqlx::query("DELETE FROM overwrites WHERE target_id = $1 AND target_kind = 'role'")
            .bind(role_id.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "member"))]
    async fn member(&self, guild_id: Id, user_id: Id) -> StoreResult<Option<Member>> {
        let _t = self.begin("member")?;
        let mut conn = self.write.acquire().await?;
        let rows_ = sqlx::query(
            "SELECT m.user_id, m.joined_at, m.timeout_until, a.username FROM members m JOIN accounts a ON a.id = m.user_id \
             WHERE m.guild_id = $1 AND m.user_id = $2",
        )
        .bind(guild_id.0)
        .bind(user_id.0)
        .fetch_all(&mut *conn)
        .await?;
        Ok(members_with_roles(&mut conn, guild_id, rows_).await?.pop())
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "members"))]
    async fn members(
        &self,
        guild_id: Id,
        after: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<Member>> {
        let _t = self.begin("members")?;
        let mut conn = self.read.acquire().await?;
        let rows_ = sqlx::query(
            "SELECT m.user_id, m.joined_at, m.timeout_until, a.username FROM members m JOIN accounts a ON a.id = m.user_id \
             WHERE m.guild_id = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT $3",
        )
        .bind(guild_id.0)
        .bind(after.map_or(0, |a| a.0))
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        members_with_roles(&mut conn, guild_id, rows_).await
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "member_count"))]
    async fn member_count(&self, guild_id: Id) -> StoreResult<i64> {
        let _t = self.begin("member_count")?;
        let row = sqlx::query("SELECT count(*) AS n FROM members WHERE guild_id = $1")
            .bind(guild_id.0)
            .fetch_one(&mut *self.read.acquire().await?)
            .await?;
        int(&row, "n")
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "add_member_role"))]
    async fn add_member_role(&self, guild_id: Id, user_id: Id, role_id: Id) -> StoreResult<bool> {
        let _t = self.begin("add_member_role")?;
        let result = sqlx::query(
            "INSERT INTO member_roles (guild_id, user_id, role_id) SELECT $1, $2, $3 \
             WHERE EXISTS (SELECT 1 FROM roles WHERE id = $3 AND guild_id = $1) \
             AND EXISTS (SELECT 1 FROM members WHERE guild_id = $1 AND user_id = $2) \
             ON CONFLICT (guild_id, user_id, role_id) DO NOTHING",
        )
        .bind(guild_id.0)
        .bind(user_id.0)
        .bind(role_id.0)
        .execute(&self.write)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "remove_member_role"))]
    async fn remove_member_role(
        &self,
        guild_id: Id,
        user_id: Id,
        role_id: Id,
    ) -> StoreResult<bool> {
        let _t = self.begin("remove_member_role")?;
        let n = sqlx::query(
            "DELETE FROM member_roles WHERE guild_id = $1 AND user_id = $2 AND role_id = $3",
        )
        .bind(guild_id.0)
        .bind(user_id.0)
        .bind(role_id.0)
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "remove_member"))]
    async fn remove_member(&self, guild_id: Id, user_id: Id) -> StoreResult<bool> {
        let _t = self.begin("remove_member")?;
        let n = sqlx::query("DELETE FROM members WHERE guild_id = $1 AND user_id = $2")
            .bind(guild_id.0)
            .bind(user_id.0)
            .execute(&self.write)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "ban"))]
    async fn ban(
        &self,
        guild_id: Id,
        user_id: Id,
        reason: Option<&str>,
        by: Id,
        now: i64,
    ) -> StoreResult<()> {
        let _t = self.begin("ban")?;
        let mut tx = self.write.begin().await?;
        let lock = format!("SELECT id FROM guilds WHERE id = $1{}", self.for_update());
        sqlx::query(AssertSqlSafe(lock))
            .bind(guild_id.0)
            .fetch_optional(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO bans (guild_id, user_id, reason, banned_by, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (guild_id, user_id) DO UPDATE SET reason = excluded.reason",
        )
        .bind(guild_id.0)
        .bind(user_id.0)
        .bind(reason)
        .bind(by.0)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM members WHERE guild_id = $1 AND user_id = $2")
            .bind(guild_id.0)
            .bind(user_id.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "unban"))]
    async fn unban(&self, guild_id: Id, user_id: Id) -> StoreResult<bool> {
        let _t = self.begin("unban")?;
        let n = sqlx::query("DELETE FROM bans WHERE guild_id = $1 AND user_id = $2")
            .bind(guild_id.0)
            .bind(user_id.0)
            .execute(&self.write)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "is_banned"))]
    async fn is_banned(&self, guild_id: Id, user_id: Id) -> StoreResult<bool> {
        let _t = self.begin("is_banned")?;
        Ok(
            sqlx::query("SELECT 1 FROM bans WHERE guild_id = $1 AND user_id = $2")
                .bind(guild_id.0)
                .bind(user_id.0)
                .fetch_optional(&self.write)
                .await?
                .is_some(),
        )
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "bans"))]
    async fn bans(&self, guild_id: Id) -> StoreResult<Vec<Ban>> {
        let _t = self.begin("bans")?;
        sqlx::query(
            "SELECT b.guild_id, b.user_id, a.username, b.reason, b.created_at FROM bans b JOIN accounts a ON a.id = b.user_id \
             WHERE b.guild_id = $1 ORDER BY b.created_at, b.user_id",
        )
        .bind(guild_id.0)
        .fetch_all(&mut *self.read.acquire().await?)
        .await?
        .iter()
        .map(rows::ban)
        .collect()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "create_invite"))]
    async fn create_invite(&self, invite: &Invite) -> StoreResult<()> {
        let _t = self.begin_write("create_invite")?;
        let result = sqlx::query(
            "INSERT INTO invites (code, guild_id, inviter_id, max_uses, uses, expires_at, created_at) VALUES ($1, $2, $3, $4, 0, $5, $6)",
        )
        .bind(&invite.code)
        .bind(invite.guild_id.0)
        .bind(invite.inviter_id.0)
        .bind(invite.max_uses)
        .bind(invite.expires_at)
        .bind(invite.created_at)
        .execute(&self.write)
        .await;
        match result {
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict("invite_code_taken")),
            Err(e) => Err(e.into()),
            Ok(_) => Ok(()),
        }
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "invite"))]
    async fn invite(&self, code: &str) -> StoreResult<Option<Invite>> {
        let _t = self.begin("invite")?;
        let sql = format!("SELECT {INVITE_COLS} FROM invites WHERE code = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(code)
            .fetch_optional(&self.write)
            .await?
            .map(|r| rows::invite(&r))
            .transpose()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "invites"))]
    async fn invites(&self, guild_id: Id) -> StoreResult<Vec<Invite>> {
        let _t = self.begin("invites")?;
        let sql = format!(
            "SELECT {INVITE_COLS} FROM invites WHERE guild_id = $1 ORDER BY created_at, code"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(guild_id.0)
            .fetch_all(&mut *self.read.acquire().await?)
            .await?
            .iter()
            .map(rows::invite)
            .collect()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "revoke_invite"))]
    async fn revoke_invite(&self, guild_id: Id, code: &str, now: i64) -> StoreResult<bool> {
        let _t = self.begin("revoke_invite")?;
        let n = sqlx::query("UPDATE invites SET revoked_at = $1 WHERE code = $2 AND guild_id = $3 AND revoked_at IS NULL")
            .bind(now)
            .bind(code)
            .bind(guild_id.0)
            .execute(&self.write)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "accept_invite"))]
    async fn accept_invite(
        &self,
        code: &str,
        user_id: Id,
        now: i64,
    ) -> StoreResult<Result<AcceptedInvite, InviteRefusal>> {
        let _t = self.begin_write("accept_invite")?;
        let mut tx = self.write.begin().await?;
        let sql = format!("SELECT {INVITE_COLS} FROM invites WHERE code = $1");
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(code)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(Err(InviteRefusal::Unknown));
        };
        let invite = rows::invite(&row)?;
        if invite.revoked {
            return Ok(Err(InviteRefusal::Revoked));
        }
        if invite.expires_at.is_some_and(|t| t <= now) {
            return Ok(Err(InviteRefusal::Expired));
        }
        // Locking the guild row serialises joins with bans of the same guild.
        let sql = format!(
            "SELECT {GUILD_COLS} FROM guilds g WHERE g.id = $1{}",
            self.for_update()
        );
        let guild = rows::guild(
            &sqlx::query(AssertSqlSafe(sql))
                .bind(invite.guild_id.0)
                .fetch_one(&mut *tx)
                .await?,
        )?;
        let banned = sqlx::query("SELECT 1 FROM bans WHERE guild_id = $1 AND user_id = $2")
            .bind(guild.id.0)
            .bind(user_id.0)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if banned {
            return Ok(Err(InviteRefusal::Banned));
        }
        let member = sqlx::query("SELECT 1 FROM members WHERE guild_id = $1 AND user_id = $2")
            .bind(guild.id.0)
            .bind(user_id.0)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if member {
            return Ok(Ok(AcceptedInvite {
                guild,
                joined: false,
            }));
        }
        // Conditional increment: concurrent accepts cannot exceed max_uses.
        let used = sqlx::query("UPDATE invites SET uses = uses + 1 WHERE code = $1 AND (max_uses IS NULL OR uses < max_uses)")
            .bind(code)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if used == 0 {
            return Ok(Err(InviteRefusal::UsedUp));
        }
        // A concurrent accept by the same user may have joined first: then this one did not
        // join, and its use of the invite rolls back.
        let joined = sqlx::query(
            "INSERT INTO members (guild_id, user_id, joined_at) VALUES ($1, $2, $3) ON CONFLICT (guild_id, user_id) DO NOTHING",
        )
        .bind(guild.id.0)
        .bind(user_id.0)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if joined {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(Ok(AcceptedInvite { guild, joined }))
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "open_dm"))]
    async fn open_dm(&self, new_channel: &Channel, a: Id, b: Id) -> StoreResult<Channel> {
        let _t = self.begin_write("open_dm")?;
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let find = "SELECT channel_id FROM dm_channels WHERE user_low = $1 AND user_high = $2";
        let existing = sqlx::query(find)
            .bind(low.0)
            .bind(high.0)
            .fetch_optional(&self.write)
            .await?;
        let channel_id = match existing {
            Some(row) => id(&row, "channel_id")?,
            None => {
                let mut tx = self.write.begin().await?;
                insert_channel(&mut tx, new_channel, new_channel.id.unix_ms()).await?;
                let n = sqlx::query(
                    "INSERT INTO dm_channels (channel_id, user_low, user_high) VALUES ($1, $2, $3) ON CONFLICT (user_low, user_high) DO NOTHING",
                )
                .bind(new_channel.id.0)
                .bind(low.0)
                .bind(high.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    tx.commit().await?;
                    new_channel.id
                } else {
                    // Someone opened it concurrently: drop ours, use theirs.
                    tx.rollback().await?;
                    id(
                        &sqlx::query(find)
                            .bind(low.0)
                            .bind(high.0)
                            .fetch_one(&self.write)
                            .await?,
                        "channel_id",
                    )?
                }
            }
        };
        self.channel(channel_id).await?.ok_or(StoreError::NotFound)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "dm_channels"))]
    async fn dm_channels(&self, user_id: Id) -> StoreResult<Vec<Channel>> {
        let _t = self.begin("dm_channels")?;
        self.channels_where(
            "JOIN dm_channels d ON d.channel_id = c.id WHERE d.user_low = $1 OR d.user_high = $1 ORDER BY c.id",
            user_id.0,
        )
        .await
    }
}
