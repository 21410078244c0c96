//! The relay's state for this user: the user, guilds with their roles and channels, DMs.

use std::collections::HashSet;

use concord_proto::Id;
use concord_proto::gateway::ReadyGuild;
use concord_proto::model::{Channel, ChannelKind, Guild, Role, User};
use concord_proto::permissions::Permissions;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Cache, CacheError, Result, corrupt, ids_json, opt_id, parse_ids};

const CHANNEL_COLS: &str =
    "id, guild_id, kind, name, topic, position, private, overwrites, last_seq, recipients";

impl Cache {
    /// Replaces the state with the relay's `ready`: guilds and channels that are no longer
    /// listed are removed with their messages and cursors, and so are messages of channels
    /// the cache never had a row for. The outbox is left alone.
    pub fn replace_state(
        &mut self,
        user: &User,
        guilds: &[ReadyGuild],
        dms: &[Channel],
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO me (slot, id, username) VALUES (0, ?1, ?2) \
             ON CONFLICT (slot) DO UPDATE SET id = excluded.id, username = excluded.username",
            params![user.id.0, user.username],
        )?;
        let keep_guilds: HashSet<i64> = guilds.iter().map(|g| g.guild.id.0).collect();
        for id in ids(&tx, "SELECT id FROM guilds")? {
            if !keep_guilds.contains(&id) {
                tx.execute("DELETE FROM guilds WHERE id = ?1", [id])?;
            }
        }
        for guild in guilds {
            write_guild(&tx, guild)?;
        }
        let mut keep_channels: HashSet<i64> = dms.iter().map(|c| c.id.0).collect();
        keep_channels.extend(
            guilds
                .iter()
                .flat_map(|g| g.channels.iter().map(|c| c.id.0)),
        );
        for id in ids(&tx, "SELECT id FROM channels WHERE guild_id IS NULL")? {
            if !keep_channels.contains(&id) {
                tx.execute("DELETE FROM channels WHERE id = ?1", [id])?;
            }
        }
        for dm in dms {
            write_channel(&tx, dm)?;
        }
        // Messages and cursors of channels that have no row (events that came first).
        let mut held = ids(&tx, "SELECT channel_id FROM cursors")?;
        held.extend(ids(
            &tx,
            "SELECT DISTINCT channel_id FROM messages WHERE seq IS NULL",
        )?);
        for id in held {
            if !keep_channels.contains(&id) {
                forget_channel(&tx, id)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Stores a guild as `ready` or `guild_create` lists it; its channels and roles that are
    /// not listed are removed.
    pub fn upsert_guild(&mut self, guild: &ReadyGuild) -> Result<()> {
        let tx = self.conn.transaction()?;
        write_guild(&tx, guild)?;
        tx.commit()?;
        Ok(())
    }

    /// `guild_update`: name and owner only.
    pub fn update_guild(&mut self, guild: &Guild) -> Result<()> {
        self.conn.execute(
            "UPDATE guilds SET name = ?2, owner_id = ?3, created_at = ?4 WHERE id = ?1",
            params![guild.id.0, guild.name, guild.owner_id.0, guild.created_at],
        )?;
        Ok(())
    }

    /// Removes the guild with its roles, channels, messages and cursors.
    pub fn remove_guild(&mut self, id: Id) -> Result<()> {
        self.conn
            .execute("DELETE FROM guilds WHERE id = ?1", [id.0])?;
        Ok(())
    }

    /// `channel_create` and `channel_update` (an unknown id is a create). A guild channel
    /// needs its guild in the cache first.
    pub fn upsert_channel(&mut self, channel: &Channel) -> Result<()> {
        if let Some(guild_id) = channel.guild_id {
            let known: Option<i64> = self
                .conn
                .query_row("SELECT 1 FROM guilds WHERE id = ?1", [guild_id.0], |r| {
                    r.get(0)
                })
                .optional()?;
            if known.is_none() {
                return Err(CacheError::UnknownGuild(guild_id));
            }
        }
        write_channel(&self.conn, channel)
    }

    /// Removes the channel with its messages and cursor (also when only messages were held).
    pub fn remove_channel(&mut self, id: Id) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM channels WHERE id = ?1", [id.0])?;
        forget_channel(&tx, id.0)?;
        tx.commit()?;
        Ok(())
    }

    /// `role_create` and `role_update`; ignored when the guild is not cached.
    pub fn upsert_role(&mut self, role: &Role) -> Result<()> {
        write_role(&self.conn, role)
    }

    /// The guild-level permissions of a guild's @everyone role (its id is the guild's).
    pub fn everyone_permissions(&self, guild_id: Id) -> Result<Option<Permissions>> {
        Ok(self
            .conn
            .query_row(
                "SELECT permissions FROM roles WHERE id = ?1 AND guild_id = ?1",
                [guild_id.0],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|p| Permissions(p as u64)))
    }

    /// `role_delete`: also drops the role from `my_roles`.
    pub fn remove_role(&mut self, guild_id: Id, role_id: Id) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM roles WHERE id = ?1 AND guild_id = ?2",
            [role_id.0, guild_id.0],
        )?;
        let mine = my_roles(&tx, guild_id)?;
        if mine.contains(&role_id) {
            let left: Vec<Id> = mine.into_iter().filter(|r| *r != role_id).collect();
            set_my_roles(&tx, guild_id, &left)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// `member_update` for this user.
    pub fn set_my_roles(&mut self, guild_id: Id, roles: &[Id]) -> Result<()> {
        set_my_roles(&self.conn, guild_id, roles)
    }

    pub fn me(&self) -> Result<Option<User>> {
        Ok(self
            .conn
            .query_row("SELECT id, username FROM me", [], |r| {
                Ok(User {
                    id: Id(r.get(0)?),
                    username: r.get(1)?,
                })
            })
            .optional()?)
    }

    pub fn guilds(&self) -> Result<Vec<Guild>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, name, owner_id, created_at FROM guilds ORDER BY id")?;
        let rows = stmt.query_map([], guild_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The guild as `ready` lists it (channels, roles and `my_roles`).
    pub fn guild(&self, id: Id) -> Result<Option<ReadyGuild>> {
        let guild = self
            .conn
            .query_row(
                "SELECT id, name, owner_id, created_at FROM guilds WHERE id = ?1",
                [id.0],
                guild_row,
            )
            .optional()?;
        let Some(guild) = guild else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, guild_id, name, permissions, position FROM roles \
             WHERE guild_id = ?1 ORDER BY position, id",
        )?;
        let roles = stmt
            .query_map([id.0], |r| {
                Ok(Role {
                    id: Id(r.get(0)?),
                    guild_id: Id(r.get(1)?),
                    name: r.get(2)?,
                    permissions: Permissions(r.get::<_, i64>(3)? as u64),
                    position: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Some(ReadyGuild {
            channels: self.channels(id)?,
            roles,
            my_roles: my_roles(&self.conn, id)?,
            guild,
            // Voice presence is live state from the relay, not cached.
            voice_states: Vec::new(),
        }))
    }

    /// A guild's channels by position.
    pub fn channels(&self, guild_id: Id) -> Result<Vec<Channel>> {
        self.query_channels(
            &format!(
                "SELECT {CHANNEL_COLS} FROM channels WHERE guild_id = ?1 ORDER BY position, id"
            ),
            Some(guild_id),
        )
    }

    pub fn channel(&self, id: Id) -> Result<Option<Channel>> {
        let sql = format!("SELECT {CHANNEL_COLS} FROM channels WHERE id = ?1");
        Ok(self.query_channels(&sql, Some(id))?.pop())
    }

    pub fn dm_channels(&self) -> Result<Vec<Channel>> {
        self.query_channels(
            &format!("SELECT {CHANNEL_COLS} FROM channels WHERE guild_id IS NULL ORDER BY id"),
            None,
        )
    }

    fn query_channels(&self, sql: &str, id: Option<Id>) -> Result<Vec<Channel>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = match id {
            Some(id) => stmt.query([id.0])?,
            None => stmt.query([])?,
        };
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(channel_row(row)?);
        }
        Ok(out)
    }
}

fn ids(conn: &Connection, sql: &str) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Removes the messages and cursor of a channel, whether or not it has a row.
fn forget_channel(conn: &Connection, channel_id: i64) -> Result<()> {
    conn.execute("DELETE FROM messages WHERE channel_id = ?1", [channel_id])?;
    conn.execute("DELETE FROM cursors WHERE channel_id = ?1", [channel_id])?;
    Ok(())
}

fn write_guild(conn: &Connection, g: &ReadyGuild) -> Result<()> {
    conn.execute(
        "INSERT INTO guilds (id, name, owner_id, created_at, my_roles) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, owner_id = excluded.owner_id, \
         created_at = excluded.created_at, my_roles = excluded.my_roles",
        params![
            g.guild.id.0,
            g.guild.name,
            g.guild.owner_id.0,
            g.guild.created_at,
            ids_json(&g.my_roles)
        ],
    )?;
    let roles: HashSet<i64> = g.roles.iter().map(|r| r.id.0).collect();
    let mut stmt = conn.prepare_cached("SELECT id FROM roles WHERE guild_id = ?1")?;
    let old_roles: Vec<i64> = stmt
        .query_map([g.guild.id.0], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in old_roles.into_iter().filter(|id| !roles.contains(id)) {
        conn.execute("DELETE FROM roles WHERE id = ?1", [id])?;
    }
    for role in &g.roles {
        write_role(conn, role)?;
    }
    let channels: HashSet<i64> = g.channels.iter().map(|c| c.id.0).collect();
    let mut stmt = conn.prepare_cached("SELECT id FROM channels WHERE guild_id = ?1")?;
    let old_channels: Vec<i64> = stmt
        .query_map([g.guild.id.0], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in old_channels.into_iter().filter(|id| !channels.contains(id)) {
        conn.execute("DELETE FROM channels WHERE id = ?1", [id])?;
    }
    for channel in &g.channels {
        write_channel(conn, channel)?;
    }
    Ok(())
}

fn write_role(conn: &Connection, r: &Role) -> Result<()> {
    // INSERT … SELECT: nothing is written when the guild is not cached.
    conn.prepare_cached(
        "INSERT INTO roles (id, guild_id, name, permissions, position) \
         SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM guilds WHERE id = ?2) \
         ON CONFLICT (id) DO UPDATE SET guild_id = excluded.guild_id, name = excluded.name, \
         permissions = excluded.permissions, position = excluded.position",
    )?
    .execute(params![
        r.id.0,
        r.guild_id.0,
        r.name,
        r.permissions.0 as i64,
        r.position
    ])?;
    Ok(())
}

fn write_channel(conn: &Connection, c: &Channel) -> Result<()> {
    let overwrites = serde_json::to_string(&c.overwrites).expect("overwrites serialise");
    let recipients = serde_json::to_string(&c.recipients).expect("users serialise");
    conn.prepare_cached(
        "INSERT INTO channels (id, guild_id, kind, name, topic, position, private, overwrites, last_seq, recipients) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (id) DO UPDATE SET guild_id = excluded.guild_id, kind = excluded.kind, \
         name = excluded.name, topic = excluded.topic, position = excluded.position, \
         private = excluded.private, overwrites = excluded.overwrites, \
         last_seq = excluded.last_seq, recipients = excluded.recipients",
    )?
    .execute(params![
        c.id.0,
        c.guild_id.map(|g| g.0),
        c.kind.as_str(),
        c.name,
        c.topic,
        c.position,
        c.private,
        overwrites,
        c.last_seq,
        recipients
    ])?;
    Ok(())
}

fn my_roles(conn: &Connection, guild_id: Id) -> Result<Vec<Id>> {
    let text: Option<String> = conn
        .query_row(
            "SELECT my_roles FROM guilds WHERE id = ?1",
            [guild_id.0],
            |r| r.get(0),
        )
        .optional()?;
    text.map_or(Ok(Vec::new()), |t| parse_ids(&t))
}

fn set_my_roles(conn: &Connection, guild_id: Id, roles: &[Id]) -> Result<()> {
    conn.execute(
        "UPDATE guilds SET my_roles = ?2 WHERE id = ?1",
        params![guild_id.0, ids_json(roles)],
    )?;
    Ok(())
}

fn guild_row(r: &Row) -> rusqlite::Result<Guild> {
    Ok(Guild {
        id: Id(r.get(0)?),
        name: r.get(1)?,
        owner_id: Id(r.get(2)?),
        created_at: r.get(3)?,
    })
}

fn channel_row(r: &Row) -> Result<Channel> {
    let kind: String = r.get(2)?;
    let overwrites: String = r.get(7)?;
    let recipients: String = r.get(9)?;
    Ok(Channel {
        id: Id(r.get(0)?),
        guild_id: opt_id(r.get(1)?),
        kind: ChannelKind::parse(&kind).ok_or_else(|| corrupt("channel kind", &kind))?,
        name: r.get(3)?,
        topic: r.get(4)?,
        position: r.get(5)?,
        private: r.get(6)?,
        // Slow mode is the relay's to enforce; the cache does not keep it.
        slowmode_secs: 0,
        overwrites: serde_json::from_str(&overwrites).map_err(|e| corrupt("overwrites", e))?,
        last_seq: r.get(8)?,
        recipients: serde_json::from_str(&recipients).map_err(|e| corrupt("recipients", e))?,
    })
}
