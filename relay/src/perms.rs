//! Permission checks from an in-memory cache of guild state (roles, channels, overwrites) and
//! members' roles, loaded lazily from the store and invalidated on every write that changes
//! them. Every route and every delivered event goes through here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use concord_proto::model::{Channel, ChannelKind};
use concord_proto::permissions::{apply_timeout, base_permissions, channel_permissions};
use concord_proto::{Id, Permissions};

use crate::domain::error::{DomainError, DomainResult};
use crate::store::{GuildSnapshot, Store, StoreResult};

/// Caches stop growing past these sizes (they are cleared and refilled on demand).
const MAX_GUILDS: usize = 20_000;
const MAX_MEMBERS: usize = 500_000;
const MAX_CHANNELS: usize = 200_000;

/// What permissions need of a membership.
#[derive(Debug, Default)]
pub struct MemberState {
    pub roles: Vec<Id>,
    /// Timed out until then (unix ms); the check compares with the clock on every use.
    pub timeout_until: Option<i64>,
}

/// `None` in the cache means "not a member".
type MemberRoles = Option<Arc<MemberState>>;

#[derive(Default)]
struct Caches {
    guilds: HashMap<Id, Arc<GuildSnapshot>>,
    members: HashMap<(Id, Id), MemberRoles>,
    /// channel → guild (None for DMs) and, for DMs, the two participants.
    channels: HashMap<Id, Arc<Channel>>,
}

pub struct PermCache {
    store: Arc<dyn Store>,
    caches: Mutex<Caches>,
    /// Bumped by every invalidation; a load that raced one does not fill the cache.
    generation: AtomicU64,
    /// Invalidations for the other instances of a cluster.
    pub outbox: crate::cluster::Outbox,
}

/// What a caller may do in one channel.
#[derive(Debug, Clone)]
pub struct ChannelAccess {
    pub channel: Arc<Channel>,
    pub perms: Permissions,
}

impl PermCache {
    pub fn new(store: Arc<dyn Store>) -> PermCache {
        PermCache {
            store,
            caches: Mutex::new(Caches::default()),
            generation: AtomicU64::new(0),
            outbox: crate::cluster::Outbox::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Caches> {
        self.caches.lock().expect("perm cache lock")
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Drops a guild's snapshot here and on every other instance.
    pub fn invalidate_guild(&self, guild_id: Id) {
        self.invalidate_guild_local(guild_id);
        self.outbox
            .publish(|| crate::cluster::Fanout::InvalidateGuild { guild: guild_id });
    }

    pub fn invalidate_guild_local(&self, guild_id: Id) {
        self.bump();
        let mut c = self.lock();
        c.guilds.remove(&guild_id);
        c.channels.retain(|_, ch| ch.guild_id != Some(guild_id));
    }

    pub fn invalidate_member(&self, guild_id: Id, user_id: Id) {
        self.invalidate_member_local(guild_id, user_id);
        self.outbox
            .publish(|| crate::cluster::Fanout::InvalidateMember {
                guild: guild_id,
                user: user_id,
            });
    }

    pub fn invalidate_member_local(&self, guild_id: Id, user_id: Id) {
        self.bump();
        self.lock().members.remove(&(guild_id, user_id));
    }

    /// Drops every cached entry (they reload from the store on demand): what to do when
    /// invalidations from other instances may have been missed (Redis down).
    pub fn clear(&self) {
        self.bump();
        let mut c = self.lock();
        c.guilds.clear();
        c.members.clear();
        c.channels.clear();
    }

    /// Drops everything about a deleted guild, including memberships.
    pub fn forget_guild(&self, guild_id: Id) {
        self.invalidate_guild(guild_id);
        self.lock().members.retain(|(g, _), _| *g != guild_id);
    }

    pub async fn snapshot(&self, guild_id: Id) -> StoreResult<Option<Arc<GuildSnapshot>>> {
        if let Some(s) = self.lock().guilds.get(&guild_id) {
            return Ok(Some(s.clone()));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let Some(snapshot) = self.store.guild_snapshot(guild_id).await? else {
            return Ok(None);
        };
        let snapshot = Arc::new(snapshot);
        let mut c = self.lock();
        if self.generation.load(Ordering::SeqCst) == generation {
            if c.guilds.len() >= MAX_GUILDS {
                c.guilds.clear();
            }
            c.guilds.insert(guild_id, snapshot.clone());
        }
        Ok(Some(snapshot))
    }

    pub async fn member_roles(&self, guild_id: Id, user_id: Id) -> StoreResult<MemberRoles> {
        if let Some(m) = self.lock().members.get(&(guild_id, user_id)) {
            return Ok(m.clone());
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let roles = self.store.member(guild_id, user_id).await?.map(|m| {
            Arc::new(MemberState {
                roles: m.roles,
                timeout_until: m.timeout_until,
            })
        });
        let mut c = self.lock();
        if self.generation.load(Ordering::SeqCst) == generation {
            if c.members.len() >= MAX_MEMBERS {
                c.members.clear();
            }
            c.members.insert((guild_id, user_id), roles.clone());
        }
        Ok(roles)
    }

    pub async fn channel(&self, channel_id: Id) -> StoreResult<Option<Arc<Channel>>> {
        if let Some(ch) = self.lock().channels.get(&channel_id) {
            return Ok(Some(ch.clone()));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let Some(channel) = self.store.channel(channel_id).await? else {
            return Ok(None);
        };
        let channel = Arc::new(channel);
        let mut c = self.lock();
        if self.generation.load(Ordering::SeqCst) == generation {
            if c.channels.len() >= MAX_CHANNELS {
                c.channels.clear();
            }
            c.channels.insert(channel_id, channel.clone());
        }
        Ok(Some(channel))
    }

    /// Guild-level permissions, or `None` when the user is not a member.
    pub async fn guild_permissions(
        &self,
        guild_id: Id,
        user_id: Id,
    ) -> StoreResult<Option<(Arc<GuildSnapshot>, Permissions)>> {
        let Some(snapshot) = self.snapshot(guild_id).await? else {
            return Ok(None);
        };
        let Some(member) = self.member_roles(guild_id, user_id).await? else {
            return Ok(None);
        };
        let perms = apply_timeout(
            guild_perms(&snapshot, user_id, &member.roles),
            member.timeout_until,
            crate::app::now_ms(),
        );
        Ok(Some((snapshot.clone(), perms)))
    }

    /// Permissions in a channel; `None` when the channel does not exist. A non-member or a
    /// stranger to a DM gets `Permissions::NONE`.
    pub async fn channel_permissions(
        &self,
        channel_id: Id,
        user_id: Id,
    ) -> StoreResult<Option<ChannelAccess>> {
        let Some(channel) = self.channel(channel_id).await? else {
            return Ok(None);
        };
        let perms = match channel.guild_id {
            None => {
                if channel.recipients.iter().any(|u| u.id == user_id) {
                    Permissions::DM
                } else {
                    Permissions::NONE
                }
            }
            Some(guild_id) => match self.guild_permissions(guild_id, user_id).await? {
                None => Permissions::NONE,
                Some((snapshot, base)) => {
                    let member = self
                        .member_roles(guild_id, user_id)
                        .await?
                        .unwrap_or_default();
                    // The snapshot holds the freshest overwrites for guild channels.
                    let overwrites = snapshot
                        .channels
                        .iter()
                        .find(|c| c.id == channel_id)
                        .map(|c| c.overwrites.as_slice())
                        .unwrap_or(&[]);
                    // An overwrite must not give back what a timeout took.
                    apply_timeout(
                        channel_permissions(base, guild_id, user_id, &member.roles, overwrites),
                        member.timeout_until,
                        crate::app::now_ms(),
                    )
                }
            },
        };
        Ok(Some(ChannelAccess { channel, perms }))
    }

    /// For routes: the channel if the caller may view it and holds `needed` there.
    pub async fn require_channel(
        &self,
        channel_id: Id,
        user_id: Id,
        needed: Permissions,
    ) -> DomainResult<ChannelAccess> {
        let access = self
            .channel_permissions(channel_id, user_id)
            .await?
            .ok_or(DomainError::NotFound("channel"))?;
        if !access.perms.contains(Permissions::VIEW_CHANNEL) {
            return Err(DomainError::missing_access());
        }
        if !access.perms.contains(needed) {
            return Err(DomainError::missing_permissions());
        }
        Ok(access)
    }

    /// For routes: the guild if the caller is a member holding `needed`.
    pub async fn require_guild(
        &self,
        guild_id: Id,
        user_id: Id,
        needed: Permissions,
    ) -> DomainResult<(Arc<GuildSnapshot>, Permissions)> {
        let Some((snapshot, perms)) = self.guild_permissions(guild_id, user_id).await? else {
            return Err(match self.snapshot(guild_id).await? {
                None => DomainError::NotFound("guild"),
                Some(_) => DomainError::missing_access(),
            });
        };
        if !perms.contains(needed) {
            return Err(DomainError::missing_permissions());
        }
        Ok((snapshot, perms))
    }

    /// The position of the member's highest role (0: only @everyone); the owner outranks all.
    pub async fn rank(&self, snapshot: &GuildSnapshot, user_id: Id) -> StoreResult<i64> {
        if snapshot.guild.owner_id == user_id {
            return Ok(i64::MAX);
        }
        let member = self
            .member_roles(snapshot.guild.id, user_id)
            .await?
            .unwrap_or_default();
        Ok(snapshot
            .roles
            .iter()
            .filter(|r| member.roles.contains(&r.id))
            .map(|r| r.position)
            .max()
            .unwrap_or(0))
    }

    /// Role hierarchy: the actor's highest role must be above `position`.
    pub async fn require_above(
        &self,
        snapshot: &GuildSnapshot,
        actor: Id,
        position: i64,
    ) -> DomainResult<()> {
        if self.rank(snapshot, actor).await? > position {
            Ok(())
        } else {
            Err(DomainError::Forbidden(
                "role_hierarchy",
                "your highest role must be above the target's",
            ))
        }
    }

    /// Role hierarchy for moderating a member (kick, ban).
    pub async fn require_outrank(
        &self,
        snapshot: &GuildSnapshot,
        actor: Id,
        target: Id,
    ) -> DomainResult<()> {
        let target_rank = self.rank(snapshot, target).await?;
        self.require_above(snapshot, actor, target_rank).await
    }

    /// Channels of a guild the user may view.
    pub async fn visible_channels(
        &self,
        snapshot: &GuildSnapshot,
        user_id: Id,
    ) -> StoreResult<Vec<Channel>> {
        let guild_id = snapshot.guild.id;
        let Some(member) = self.member_roles(guild_id, user_id).await? else {
            return Ok(Vec::new());
        };
        let roles = &member.roles;
        let base = guild_perms(snapshot, user_id, roles);
        let mut visible: Vec<Channel> = snapshot
            .channels
            .iter()
            .filter(|c| {
                channel_permissions(base, guild_id, user_id, roles, &c.overwrites)
                    .contains(Permissions::VIEW_CHANNEL)
            })
            .cloned()
            .collect();
        // The snapshot's last_seq values are as old as the snapshot; clients catch up from
        // them, so they are read fresh.
        let ids: Vec<Id> = visible.iter().map(|c| c.id).collect();
        let seqs: HashMap<Id, i64> = self.store.channel_seqs(&ids).await?.into_iter().collect();
        for c in &mut visible {
            c.last_seq = seqs.get(&c.id).copied().unwrap_or(c.last_seq);
        }
        Ok(visible)
    }
}

/// True when every member can view the channel: public, no overwrites, @everyone may view.
/// Fan-out then skips per-member checks.
pub fn everyone_can_view(snapshot: &GuildSnapshot, channel: &Channel) -> bool {
    channel.kind != ChannelKind::Dm
        && channel.overwrites.is_empty()
        && everyone_permissions(snapshot).contains(Permissions::VIEW_CHANNEL)
}

fn everyone_permissions(snapshot: &GuildSnapshot) -> Permissions {
    snapshot
        .roles
        .iter()
        .find(|r| r.id == snapshot.guild.id)
        .map_or(Permissions::NONE, |r| r.permissions)
}

pub fn guild_perms(snapshot: &GuildSnapshot, user_id: Id, member_roles: &[Id]) -> Permissions {
    let role_perms = snapshot
        .roles
        .iter()
        .filter(|r| member_roles.contains(&r.id))
        .map(|r| r.permissions);
    base_permissions(
        snapshot.guild.owner_id == user_id,
        everyone_permissions(snapshot),
        role_perms,
    )
}
