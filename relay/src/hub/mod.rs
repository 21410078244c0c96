//! Fan-out: which gateway sessions are online, in which guilds, and who receives each event.
//! Authorization is checked per recipient before anything is queued. Presence lives here
//! too. `session.rs` is one session's buffer; `delivered.rs` keeps each seq to one push.

pub mod delivered;
mod session;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concord_proto::gateway::PresenceStatus;
use concord_proto::gateway::PresenceUpdate;
use concord_proto::model::Channel;
use concord_proto::{Id, Permissions};
use serde::Serialize;

pub use session::{CloseReason, Queued, Resume, Session};

use crate::perms::{PermCache, everyone_can_view};

#[derive(Default)]
struct State {
    sessions: HashMap<String, Arc<Session>>,
    by_user: HashMap<Id, Vec<Arc<Session>>>,
    /// Guilds of each user with at least one session (attached or resumable).
    user_guilds: HashMap<Id, HashSet<Id>>,
    /// Users with a session, per guild.
    guild_users: HashMap<Id, HashSet<Id>>,
    presence: HashMap<Id, PresenceStatus>,
    /// Users online on other instances of a cluster (from their presence fan-outs and
    /// periodic refreshes) and the guilds they are in: `ready`'s presence snapshot includes
    /// them. Bounded; entries not refreshed in time expire (their instance died).
    remote_presence: HashMap<Id, RemotePresence>,
}

struct RemotePresence {
    status: PresenceStatus,
    guilds: Vec<Id>,
    seen: Instant,
}

/// One user's presence as instances exchange it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PresenceEntry {
    pub user: Id,
    pub status: PresenceStatus,
    pub guilds: Vec<Id>,
}

/// Most users online elsewhere that one instance remembers for `ready` snapshots.
const MAX_REMOTE_PRESENCE: usize = 200_000;

/// Records a remote user's presence (bounded); false when the table is full.
fn remember_remote(
    st: &mut State,
    user: Id,
    status: PresenceStatus,
    guilds: &[Id],
    now: Instant,
) -> bool {
    if st.remote_presence.len() >= MAX_REMOTE_PRESENCE && !st.remote_presence.contains_key(&user) {
        return false;
    }
    st.remote_presence.insert(
        user,
        RemotePresence {
            status,
            guilds: guilds.to_vec(),
            seen: now,
        },
    );
    true
}

pub struct Hub {
    state: Mutex<State>,
    /// Fan-outs for the other instances of a cluster (unset on a single instance).
    pub outbox: crate::cluster::Outbox,
    /// Channel events already pushed here, whichever way they came (`delivered.rs`).
    pub delivered: delivered::Delivered,
}

fn serialise<T: Serialize>(d: &T) -> Arc<str> {
    Arc::from(serde_json::to_string(d).expect("gateway payloads serialise"))
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    pub fn new() -> Hub {
        Hub {
            state: Mutex::new(State::default()),
            outbox: crate::cluster::Outbox::default(),
            delivered: delivered::Delivered::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("hub lock")
    }

    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.lock().sessions.get(id).cloned()
    }

    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Adds a new session with the user's guilds. Returns true when the user just came online.
    pub fn register(&self, session: Arc<Session>, guilds: impl IntoIterator<Item = Id>) -> bool {
        let mut st = self.lock();
        let user = session.user_id;
        st.sessions.insert(session.id.clone(), session.clone());
        let list = st.by_user.entry(user).or_default();
        list.push(session);
        let first = list.len() == 1;
        let guilds: HashSet<Id> = guilds.into_iter().collect();
        for g in &guilds {
            st.guild_users.entry(*g).or_default().insert(user);
        }
        st.user_guilds.entry(user).or_default().extend(guilds);
        if first {
            st.presence.insert(user, PresenceStatus::Online);
        }
        first
    }

    /// Removes a session for good. When it was the user's last, the user goes offline and
    /// everyone sharing a guild is told. Returns true in that case.
    pub fn unregister(&self, session_id: &str) -> bool {
        let user = {
            let mut st = self.lock();
            let Some(session) = st.sessions.remove(session_id) else {
                return false;
            };
            let user = session.user_id;
            let list = st.by_user.entry(user).or_default();
            list.retain(|s| s.id != session_id);
            if !list.is_empty() {
                return false;
            }
            user
        };
        // Recipients are computed while the user's guilds are still indexed.
        let recipients = self.co_members(user);
        let mut st = self.lock();
        if st.by_user.get(&user).is_some_and(|l| !l.is_empty()) {
            return false; // a new session arrived meanwhile
        }
        st.by_user.remove(&user);
        st.presence.remove(&user);
        let guilds = st.user_guilds.remove(&user).unwrap_or_default();
        for g in &guilds {
            if let Some(users) = st.guild_users.get_mut(g) {
                users.remove(&user);
                if users.is_empty() {
                    st.guild_users.remove(g);
                }
            }
        }
        drop(st);
        // Still online on another instance: guild mates here see that, not offline.
        let status = self
            .lock()
            .remote_presence
            .get(&user)
            .map_or(PresenceStatus::Offline, |r| r.status);
        self.push_presence(recipients, user, status);
        self.outbox.publish(|| crate::cluster::Fanout::Presence {
            user,
            status: PresenceStatus::Offline,
            guilds: guilds.into_iter().collect(),
        });
        true
    }

    /// True when any of the user's sessions has a live socket.
    pub fn is_connected(&self, user: Id) -> bool {
        self.lock()
            .by_user
            .get(&user)
            .is_some_and(|l| l.iter().any(|s| s.is_attached()))
    }

    pub fn presence(&self, user: Id) -> PresenceStatus {
        self.lock()
            .presence
            .get(&user)
            .copied()
            .unwrap_or(PresenceStatus::Offline)
    }

    /// The user's sessions (on every instance) start receiving the guild's events.
    pub fn join_guild(&self, user: Id, guild: Id) {
        self.join_guild_local(user, guild);
        self.outbox
            .publish(|| crate::cluster::Fanout::JoinGuild { user, guild });
    }

    pub fn join_guild_local(&self, user: Id, guild: Id) {
        let mut st = self.lock();
        if st.by_user.contains_key(&user) {
            st.user_guilds.entry(user).or_default().insert(guild);
            st.guild_users.entry(guild).or_default().insert(user);
        }
    }

    pub fn leave_guild(&self, user: Id, guild: Id) {
        self.leave_guild_local(user, guild);
        self.outbox
            .publish(|| crate::cluster::Fanout::LeaveGuild { user, guild });
    }

    pub fn leave_guild_local(&self, user: Id, guild: Id) {
        let mut st = self.lock();
        if let Some(g) = st.user_guilds.get_mut(&user) {
            g.remove(&guild);
        }
        if let Some(u) = st.guild_users.get_mut(&guild) {
            u.remove(&user);
        }
    }

    pub fn forget_guild(&self, guild: Id) {
        self.forget_guild_local(guild);
        self.outbox
            .publish(|| crate::cluster::Fanout::ForgetGuild { guild });
    }

    pub fn forget_guild_local(&self, guild: Id) {
        let mut st = self.lock();
        if let Some(users) = st.guild_users.remove(&guild) {
            for u in users {
                if let Some(g) = st.user_guilds.get_mut(&u) {
                    g.remove(&guild);
                }
            }
        }
    }

    fn push_to_users(
        &self,
        users: impl IntoIterator<Item = Id>,
        t: &'static str,
        d: &Arc<str>,
        except_session: Option<&str>,
    ) -> usize {
        let st = self.lock();
        let mut delivered = 0;
        for user in users {
            for s in st.by_user.get(&user).into_iter().flatten() {
                if Some(s.id.as_str()) != except_session {
                    s.push(t, d.clone());
                    delivered += 1;
                }
            }
        }
        drop(st);
        crate::metrics::gateway_events(t, delivered);
        delivered
    }

    /// Sends to every listed user's sessions, on every instance.
    pub fn to_users<T: Serialize>(
        &self,
        users: impl IntoIterator<Item = Id>,
        t: &'static str,
        d: &T,
    ) -> usize {
        let users: Vec<Id> = users.into_iter().collect();
        let d = serialise(d);
        let delivered = self.push_to_users(users.iter().copied(), t, &d, None);
        self.outbox.publish(|| crate::cluster::Fanout::Users {
            users,
            t: t.to_owned(),
            d: d.to_string(),
        });
        delivered
    }

    /// Sends to the listed users' sessions on this instance only.
    pub fn push_local(
        &self,
        users: impl IntoIterator<Item = Id>,
        t: &'static str,
        d: Arc<str>,
    ) -> usize {
        self.push_to_users(users, t, &d, None)
    }

    /// Guilds with at least one member who has a session here.
    pub fn local_guilds(&self) -> Vec<Id> {
        self.lock().guild_users.keys().copied().collect()
    }

    /// Users with a session here.
    pub fn local_users(&self) -> Vec<Id> {
        self.lock().by_user.keys().copied().collect()
    }

    /// Members of the guild with a session here.
    pub fn guild_online(&self, guild: Id) -> Vec<Id> {
        self.lock()
            .guild_users
            .get(&guild)
            .map(|u| u.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Sends to every online member of a guild (guild-wide events: roles, members, guild),
    /// on every instance.
    pub fn to_guild<T: Serialize>(&self, guild: Id, t: &'static str, d: &T) -> usize {
        let d = serialise(d);
        let delivered = self.push_local(self.guild_online(guild), t, d.clone());
        self.outbox.publish(|| crate::cluster::Fanout::Guild {
            guild,
            t: t.to_owned(),
            d: d.to_string(),
        });
        delivered
    }

    /// Sends to online users who may view the channel (DM: its two participants), on every
    /// instance.
    pub async fn to_channel_viewers<T: Serialize>(
        &self,
        perms: &PermCache,
        channel: &Channel,
        t: &'static str,
        d: &T,
    ) -> usize {
        self.to_channel_viewers_except(perms, channel, None, t, d)
            .await
    }

    /// A stored channel event (it has the channel's `seq`) to its viewers on every instance;
    /// noted as delivered here, so the store catch-up and Redis do not push it again.
    pub async fn to_channel_event<T: Serialize>(
        &self,
        perms: &PermCache,
        channel: &Channel,
        seq: i64,
        t: &'static str,
        d: &T,
    ) -> usize {
        self.delivered.first(channel.id, seq);
        self.fan_out_to_viewers(perms, channel, None, Some(seq), t, d)
            .await
    }

    /// Like `to_channel_viewers`, leaving out one user (typing: not to the typist).
    pub async fn to_channel_viewers_except<T: Serialize>(
        &self,
        perms: &PermCache,
        channel: &Channel,
        except: Option<Id>,
        t: &'static str,
        d: &T,
    ) -> usize {
        self.fan_out_to_viewers(perms, channel, except, None, t, d)
            .await
    }

    async fn fan_out_to_viewers<T: Serialize>(
        &self,
        perms: &PermCache,
        channel: &Channel,
        except: Option<Id>,
        seq: Option<i64>,
        t: &'static str,
        d: &T,
    ) -> usize {
        let users = match self
            .channel_viewers(perms, channel, Permissions::VIEW_CHANNEL)
            .await
        {
            Ok(users) => users,
            Err(e) => {
                tracing::error!(error = %e, channel = %channel.id, "fan-out could not check permissions; event not pushed");
                return 0;
            }
        };
        let d = serialise(d);
        let delivered = self.push_local(
            users.into_iter().filter(|u| Some(*u) != except),
            t,
            d.clone(),
        );
        self.publish_to_viewers(channel, except, seq, t, &d);
        delivered
    }

    /// To viewers of `channel` found here beforehand (the channel is gone by now); other
    /// instances work out theirs from their permission snapshot, which the invalidation
    /// published after this has not reached yet.
    pub fn to_viewers_found<T: Serialize>(
        &self,
        viewers_here: impl IntoIterator<Item = Id>,
        channel: &Channel,
        t: &'static str,
        d: &T,
    ) -> usize {
        let d = serialise(d);
        let delivered = self.push_local(viewers_here, t, d.clone());
        self.publish_to_viewers(channel, None, None, t, &d);
        delivered
    }

    /// Every other instance checks its own sessions' permissions.
    fn publish_to_viewers(
        &self,
        channel: &Channel,
        except: Option<Id>,
        seq: Option<i64>,
        t: &'static str,
        d: &Arc<str>,
    ) {
        self.outbox
            .publish(|| crate::cluster::Fanout::ChannelViewers {
                channel: Box::new(channel.clone()),
                except,
                seq,
                t: t.to_owned(),
                d: d.to_string(),
            });
    }

    /// After a change that may alter who sees a guild channel: viewers get the new channel,
    /// other online members a delete (a client that never saw it ignores that). On every
    /// instance.
    pub async fn channel_visibility_changed(
        &self,
        perms: &PermCache,
        channel: &Channel,
    ) -> crate::store::StoreResult<()> {
        self.channel_visibility_local(perms, channel).await?;
        self.outbox.publish(|| crate::cluster::Fanout::Visibility {
            channel: Box::new(channel.clone()),
        });
        Ok(())
    }

    pub async fn channel_visibility_local(
        &self,
        perms: &PermCache,
        channel: &Channel,
    ) -> crate::store::StoreResult<()> {
        let Some(guild_id) = channel.guild_id else {
            return Ok(());
        };
        let viewers: HashSet<Id> = self
            .channel_viewers(perms, channel, Permissions::VIEW_CHANNEL)
            .await?
            .into_iter()
            .collect();
        self.push_local(
            viewers.iter().copied(),
            "channel_update",
            serialise(channel),
        );
        let hidden: Vec<Id> = self
            .guild_online(guild_id)
            .into_iter()
            .filter(|u| !viewers.contains(u))
            .collect();
        self.push_local(
            hidden,
            "channel_delete",
            serialise(&concord_proto::gateway::ChannelDeleted {
                id: channel.id,
                guild_id: Some(guild_id),
            }),
        );
        Ok(())
    }

    /// Online users holding `needed` in the channel.
    pub async fn channel_viewers(
        &self,
        perms: &PermCache,
        channel: &Channel,
        needed: Permissions,
    ) -> crate::store::StoreResult<Vec<Id>> {
        let Some(guild_id) = channel.guild_id else {
            let st = self.lock();
            return Ok(channel
                .recipients
                .iter()
                .map(|u| u.id)
                .filter(|u| st.by_user.contains_key(u))
                .collect());
        };
        let candidates = self.guild_online(guild_id);
        let Some(snapshot) = perms.snapshot(guild_id).await? else {
            return Ok(Vec::new());
        };
        let current = snapshot.channels.iter().find(|c| c.id == channel.id);
        if needed == Permissions::VIEW_CHANNEL
            && current.is_some_and(|c| everyone_can_view(&snapshot, c))
        {
            return Ok(candidates);
        }
        let mut allowed = Vec::with_capacity(candidates.len());
        for user in candidates {
            if let Some(access) = perms.channel_permissions(channel.id, user).await?
                && access.perms.contains(Permissions::VIEW_CHANNEL | needed)
            {
                allowed.push(user);
            }
        }
        Ok(allowed)
    }

    /// The presence of everyone sharing a guild with `user` who does not appear offline
    /// (the snapshot in `ready`), sorted by user id.
    pub fn co_member_presences(&self, user: Id) -> Vec<PresenceUpdate> {
        let members = self.co_members(user);
        let st = self.lock();
        let mut out: Vec<_> = members
            .iter()
            .filter_map(|u| {
                let status = st.presence.get(u).copied()?;
                (status != PresenceStatus::Offline).then_some(PresenceUpdate {
                    user_id: *u,
                    status,
                })
            })
            .collect();
        // Guild mates online on other instances.
        let my_guilds = st.user_guilds.get(&user);
        for (u, remote) in &st.remote_presence {
            if *u != user
                && !members.contains(u)
                && remote
                    .guilds
                    .iter()
                    .any(|g| my_guilds.is_some_and(|m| m.contains(g)))
            {
                out.push(PresenceUpdate {
                    user_id: *u,
                    status: remote.status,
                });
            }
        }
        out.sort_by_key(|p| p.user_id);
        out
    }

    /// Users who share a guild with `user` and are online (for presence).
    fn co_members(&self, user: Id) -> HashSet<Id> {
        let st = self.lock();
        let mut out = HashSet::new();
        for g in st.user_guilds.get(&user).into_iter().flatten() {
            out.extend(st.guild_users.get(g).into_iter().flatten().copied());
        }
        out.remove(&user);
        out
    }

    /// Records and announces a presence change to everyone sharing a guild.
    pub fn announce_presence(&self, user: Id, status: PresenceStatus) {
        if status == PresenceStatus::Offline {
            self.lock().presence.remove(&user);
        } else if self.lock().by_user.contains_key(&user) {
            self.lock().presence.insert(user, status);
        }
        let recipients = self.co_members(user);
        self.push_presence(recipients, user, status);
        let guilds: Vec<Id> = self
            .lock()
            .user_guilds
            .get(&user)
            .map(|g| g.iter().copied().collect())
            .unwrap_or_default();
        self.outbox.publish(|| crate::cluster::Fanout::Presence {
            user,
            status,
            guilds,
        });
    }

    /// A user's presence to these users' sessions here.
    fn push_presence(
        &self,
        recipients: impl IntoIterator<Item = Id>,
        user: Id,
        status: PresenceStatus,
    ) {
        let update = PresenceUpdate {
            user_id: user,
            status,
        };
        self.push_local(recipients, "presence_update", serialise(&update));
    }

    /// Another instance's user changed presence: tell their guild mates who are here. A user
    /// who went offline there but still has a session here is not offline: this instance
    /// says so again instead.
    pub fn presence_from_peer(&self, user: Id, status: PresenceStatus, guilds: &[Id]) {
        let local = {
            let mut st = self.lock();
            if status == PresenceStatus::Offline {
                st.remote_presence.remove(&user);
            } else {
                remember_remote(&mut st, user, status, guilds, Instant::now());
            }
            st.presence.get(&user).copied()
        };
        if status == PresenceStatus::Offline
            && let Some(here) = local
        {
            self.announce_presence(user, here);
            return;
        }
        let recipients = self.guild_mates_here(user, guilds);
        self.push_presence(recipients, user, status);
    }

    /// Everyone online here, for the other instances (answering a hello, refreshing).
    pub fn local_presences(&self) -> Vec<PresenceEntry> {
        let st = self.lock();
        st.presence
            .iter()
            .filter(|(_, s)| **s != PresenceStatus::Offline)
            .map(|(user, status)| PresenceEntry {
                user: *user,
                status: *status,
                guilds: st
                    .user_guilds
                    .get(user)
                    .map(|g| g.iter().copied().collect())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Another instance's periodic list of who is online there: keeps those entries fresh,
    /// and tells guild mates here about users they did not know were online (this instance
    /// started, or Redis came back, after those users connected).
    pub fn presence_refresh_from_peer(&self, entries: &[PresenceEntry], now: Instant) {
        let mut news = Vec::new();
        {
            let mut st = self.lock();
            for e in entries {
                let known = st
                    .remote_presence
                    .get(&e.user)
                    .is_some_and(|r| r.status == e.status);
                if remember_remote(&mut st, e.user, e.status, &e.guilds, now) && !known {
                    news.push(e.clone());
                }
            }
        }
        for e in news {
            let recipients = self.guild_mates_here(e.user, &e.guilds);
            self.push_presence(recipients, e.user, e.status);
        }
    }

    /// Forgets users whose instance stopped refreshing them (it died without saying
    /// goodbye); their guild mates here see them go offline unless they are online here.
    pub fn expire_remote_presence(&self, now: Instant, max_age: Duration) -> usize {
        let expired: Vec<(Id, Vec<Id>)> = {
            let mut st = self.lock();
            let old: Vec<Id> = st
                .remote_presence
                .iter()
                .filter(|(_, r)| now.duration_since(r.seen) > max_age)
                .map(|(u, _)| *u)
                .collect();
            old.into_iter()
                .filter_map(|u| {
                    let r = st.remote_presence.remove(&u)?;
                    (!st.presence.contains_key(&u)).then_some((u, r.guilds))
                })
                .collect()
        };
        for (user, guilds) in &expired {
            let recipients = self.guild_mates_here(*user, guilds);
            self.push_presence(recipients, *user, PresenceStatus::Offline);
        }
        expired.len()
    }

    fn guild_mates_here(&self, user: Id, guilds: &[Id]) -> HashSet<Id> {
        let st = self.lock();
        guilds
            .iter()
            .flat_map(|g| st.guild_users.get(g).into_iter().flatten().copied())
            .filter(|u| *u != user)
            .collect()
    }

    /// Closes every gateway socket of an auth session here (logout, revocation; the app
    /// tells the other instances).
    pub fn close_auth_session_local(&self, auth_session: Id, reason: CloseReason) {
        let st = self.lock();
        for s in st
            .sessions
            .values()
            .filter(|s| s.auth_session() == auth_session)
        {
            s.close(reason);
        }
    }

    /// Closes a user's node push sessions here (those without an auth session).
    pub fn close_node_sessions_local(&self, user: Id, reason: CloseReason) {
        let st = self.lock();
        for s in st
            .sessions
            .values()
            .filter(|s| s.user_id == user && s.auth_session() == Id(0))
        {
            s.close(reason);
        }
    }

    pub fn close_all(&self, reason: CloseReason) {
        for s in self.lock().sessions.values() {
            s.close(reason);
        }
    }

    /// Drops sessions whose resume window has passed; returns how many.
    pub fn sweep(&self, window: Duration) -> usize {
        let expired: Vec<String> = self
            .lock()
            .sessions
            .values()
            .filter(|s| s.is_expired(window))
            .map(|s| s.id.clone())
            .collect();
        for id in &expired {
            self.unregister(id);
        }
        expired.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_users_expire_unless_refreshed() {
        let hub = Hub::new();
        let t0 = Instant::now();
        let entry = |user| PresenceEntry {
            user: Id(user),
            status: PresenceStatus::Online,
            guilds: vec![Id(9)],
        };
        hub.presence_refresh_from_peer(&[entry(1), entry(2)], t0);
        let max_age = Duration::from_secs(90);
        assert_eq!(
            hub.expire_remote_presence(t0 + Duration::from_secs(60), max_age),
            0
        );
        // User 1 is refreshed, user 2's instance went quiet.
        hub.presence_refresh_from_peer(&[entry(1)], t0 + Duration::from_secs(60));
        assert_eq!(
            hub.expire_remote_presence(t0 + Duration::from_secs(100), max_age),
            1
        );
        let left: Vec<Id> = hub.lock().remote_presence.keys().copied().collect();
        assert_eq!(left, [Id(1)]);
        assert_eq!(
            hub.expire_remote_presence(t0 + Duration::from_secs(200), max_age),
            1
        );
        assert!(hub.lock().remote_presence.is_empty());
    }
}
