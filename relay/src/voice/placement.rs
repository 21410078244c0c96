//! Which instance of a cluster holds a voice room. Every instance announces itself in Redis
//! with a liveness key that lives `LIVENESS` (refreshed every `HEARTBEAT`). A room gets its
//! owner when its first participant joins: rendezvous hashing over the live instances, then
//! a claim in Redis that another instance's claim cannot overwrite while the owner lives.
//! The owner renews the room's lease while the room has participants, so instances that
//! join later never move a live room; when the owner's liveness key is gone, the next join
//! claims the room for a live instance (failover). Voice requests reaching another instance
//! are forwarded to the owner (`api/voice_forward.rs`), so every participant of a room
//! lands on one SFU.
//!
//! Keys share the `{prefix:voice}` hash tag: liveness `…:instance:*` (2 s TTL, refreshed
//! every 500 ms), room claims by a Lua script that never overwrites a live owner, renewed
//! every 500 ms while the room has participants and released when it empties. Tested
//! against Redis in `relay/tests/cluster.rs`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use concord_proto::Id;
use redis::Script;

use crate::app::App;
use crate::cluster::link::{Conn, Redis};

/// An instance whose liveness key is older than this is dead.
pub const LIVENESS: Duration = Duration::from_secs(2);
/// How often each instance refreshes its liveness key.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// A room's claim lasts this long unless its owner renews it (every `HEARTBEAT`); an
/// empty room's claim is released at once.
pub const ROOM_LEASE: Duration = Duration::from_secs(10);

/// Where a room lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// On this instance (or nowhere yet and not claimed: served here).
    Here,
    /// On another live instance, reachable at `url`.
    There { instance: String, url: String },
}

/// Claims the room for `ARGV[1]` unless a live instance holds it; returns the owner.
const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and redis.call('EXISTS', ARGV[3] .. cur) == 1 then return cur end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
";

/// Extends the room's lease if `ARGV[1]` still owns it; 0 when it lost the room.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Releases the room if `ARGV[1]` owns it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

pub struct Placement {
    redis: Redis,
    conn: tokio::sync::Mutex<Option<Conn>>,
    /// `{prefix:voice}`: every key in one Redis Cluster slot (the scripts read several).
    pub(super) tag: String,
    pub instance: String,
    /// Where the other instances reach this one's HTTP API.
    pub url: String,
    /// Shared by the instances (kept in Redis): marks a request another instance forwarded.
    secret: std::sync::OnceLock<String>,
    pub http: reqwest::Client,
}

impl Placement {
    pub fn new(redis: Redis, prefix: &str, instance: &str, url: &str) -> Placement {
        Placement {
            redis,
            conn: tokio::sync::Mutex::new(None),
            tag: format!("{{{prefix}:voice}}"),
            instance: instance.to_owned(),
            url: url.trim_end_matches('/').to_owned(),
            secret: std::sync::OnceLock::new(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client with no custom TLS builds"),
        }
    }

    pub(super) fn instance_key(&self, instance: &str) -> String {
        format!("{}:instance:{instance}", self.tag)
    }

    fn instances_key(&self) -> String {
        format!("{}:instances", self.tag)
    }

    fn room_key(&self, channel: Id) -> String {
        format!("{}:room:{channel}", self.tag)
    }

    pub(super) async fn conn(&self) -> redis::RedisResult<Conn> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let conn = self.redis.connect().await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Drops a connection that failed, so the next call makes a new one.
    pub(super) async fn check<T>(&self, r: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if r.as_ref().is_err_and(|e| !e.is_unrecoverable_error()) {
            *self.conn.lock().await = None;
        }
        r
    }

    /// The secret that marks forwarded requests (absent until the first heartbeat).
    pub fn secret(&self) -> Option<&str> {
        self.secret.get().map(String::as_str)
    }

    /// Announces this instance as live (and learns the shared forwarding secret).
    pub async fn heartbeat(&self) -> redis::RedisResult<()> {
        let r = self.heartbeat_inner().await;
        self.check(r).await
    }

    async fn heartbeat_inner(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.instance_key(&self.instance))
            .arg(&self.url)
            .arg("PX")
            .arg(LIVENESS.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(self.instances_key())
            .arg(&self.instance)
            .ignore();
        if self.secret.get().is_none() {
            let secret_key = format!("{}:forward-secret", self.tag);
            pipe.cmd("SET")
                .arg(&secret_key)
                .arg(crate::auth::tokens::random_token(24))
                .arg("NX")
                .ignore()
                .cmd("GET")
                .arg(&secret_key);
            let (secret,): (String,) = pipe.query_async(&mut conn).await?;
            let _ = self.secret.set(secret);
        } else {
            pipe.query_async::<()>(&mut conn).await?;
        }
        Ok(())
    }

    /// Live instances with their URLs; dead ones are dropped from the member set.
    pub async fn live(&self) -> redis::RedisResult<Vec<(String, String)>> {
        let r = self.live_inner().await;
        self.check(r).await
    }

    async fn live_inner(&self) -> redis::RedisResult<Vec<(String, String)>> {
        let mut conn = self.conn().await?;
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.instances_key())
            .query_async(&mut conn)
            .await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = members.iter().map(|m| self.instance_key(m)).collect();
        let urls: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (member, url) in members.into_iter().zip(urls) {
            match url {
                Some(url) => live.push((member, url)),
                None => dead.push(member),
            }
        }
        if !dead.is_empty() {
            redis::cmd("SREM")
                .arg(self.instances_key())
                .arg(&dead)
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok(live)
    }

    /// The room's live owner, if it has one (nothing is claimed).
    pub async fn owner(&self, channel: Id) -> redis::RedisResult<Option<Owner>> {
        let r = self.owner_inner(channel).await;
        self.check(r).await
    }

    async fn owner_inner(&self, channel: Id) -> redis::RedisResult<Option<Owner>> {
        let mut conn = self.conn().await?;
        let owner: Option<String> = redis::cmd("GET")
            .arg(self.room_key(channel))
            .query_async(&mut conn)
            .await?;
        let Some(owner) = owner else { return Ok(None) };
        if owner == self.instance {
            return Ok(Some(Owner::Here));
        }
        let url: Option<String> = redis::cmd("GET")
            .arg(self.instance_key(&owner))
            .query_async(&mut conn)
            .await?;
        Ok(url.map(|url| Owner::There {
            instance: owner,
            url,
        }))
    }

    /// The room's owner, claiming it for the instance rendezvous hashing picks among the
    /// live ones when it has no live owner (the first join, or its owner died).
    pub async fn claim(&self, channel: Id) -> redis::RedisResult<Owner> {
        if let Some(owner) = self.owner(channel).await? {
            return Ok(owner);
        }
        let r = self.claim_inner(channel).await;
        self.check(r).await
    }

    async fn claim_inner(&self, channel: Id) -> redis::RedisResult<Owner> {
        let mut live = self.live_inner().await?;
        if !live.iter().any(|(i, _)| *i == self.instance) {
            live.push((self.instance.clone(), self.url.clone()));
        }
        let pick = pick_owner(channel, live.iter().map(|(i, _)| i.as_str()))
            .unwrap_or(&self.instance)
            .to_owned();
        let mut conn = self.conn().await?;
        let owner: String = Script::new(CLAIM)
            .key(self.room_key(channel))
            .arg(&pick)
            .arg(ROOM_LEASE.as_millis() as u64)
            .arg(format!("{}:instance:", self.tag))
            .invoke_async(&mut conn)
            .await?;
        if owner == self.instance {
            return Ok(Owner::Here);
        }
        if owner != pick {
            metrics::counter!("concord_cluster_voice_claims_lost_total").increment(1);
        }
        let url = match live.into_iter().find(|(i, _)| *i == owner) {
            Some((_, url)) => Some(url),
            None => {
                redis::cmd("GET")
                    .arg(self.instance_key(&owner))
                    .query_async(&mut conn)
                    .await?
            }
        };
        Ok(match url {
            Some(url) => Owner::There {
                instance: owner,
                url,
            },
            // It died between the claim and now: the next request claims again.
            None => Owner::Here,
        })
    }

    /// Extends the leases of the rooms held here; returns the ones another instance took.
    pub async fn renew(&self, rooms: &[Id]) -> redis::RedisResult<Vec<Id>> {
        let r = self.renew_inner(rooms).await;
        self.check(r).await
    }

    async fn renew_inner(&self, rooms: &[Id]) -> redis::RedisResult<Vec<Id>> {
        let mut conn = self.conn().await?;
        let script = Script::new(RENEW);
        let mut lost = Vec::new();
        for &room in rooms {
            let kept: i64 = script
                .key(self.room_key(room))
                .arg(&self.instance)
                .arg(ROOM_LEASE.as_millis() as u64)
                .invoke_async(&mut conn)
                .await?;
            if kept == 0 {
                lost.push(room);
            }
        }
        Ok(lost)
    }

    /// Gives up the claims of rooms that emptied here.
    pub async fn release(&self, rooms: &[Id]) -> redis::RedisResult<()> {
        let r = self.release_inner(rooms).await;
        self.check(r).await
    }

    async fn release_inner(&self, rooms: &[Id]) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let script = Script::new(RELEASE);
        for &room in rooms {
            script
                .key(self.room_key(room))
                .arg(&self.instance)
                .invoke_async::<i64>(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Waits until `instance`'s liveness key is gone (true) or `LIVENESS` and a beat have
    /// passed with it still there (false): a request to it failed, but only a missing
    /// liveness key lets another instance take its rooms.
    pub async fn wait_dead(&self, instance: &str) -> bool {
        let deadline = tokio::time::Instant::now() + LIVENESS + HEARTBEAT;
        loop {
            let alive: redis::RedisResult<bool> = async {
                let mut conn = self.conn().await?;
                redis::cmd("EXISTS")
                    .arg(self.instance_key(instance))
                    .query_async(&mut conn)
                    .await
            }
            .await;
            match self.check(alive).await {
                Ok(false) => return true,
                Ok(true) | Err(_) if tokio::time::Instant::now() >= deadline => return false,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// Rendezvous (highest random weight) hashing: each instance scores the room, the highest
/// wins. Adding an instance only takes the rooms it now scores highest on; removing one
/// moves only its rooms.
pub fn pick_owner<'a>(channel: Id, instances: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    instances.max_by_key(|i| (score(channel, i), *i))
}

fn score(channel: Id, instance: &str) -> u64 {
    // FNV-1a over the room and the instance, then a 64-bit finaliser (splitmix64) so nearby
    // ids spread: stable across builds, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in channel.0.to_le_bytes().iter().chain(instance.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Keeps this instance live in Redis and the leases of its rooms renewed; releases rooms
/// that emptied and gives up rooms another instance took (their participants rejoin there).
pub async fn run(app: Arc<App>, placement: Arc<Placement>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held: HashSet<Id> = HashSet::new();
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Err(e) = placement.heartbeat().await {
            tracing::warn!(error = %e, "voice placement heartbeat failed");
            continue;
        }
        let rooms: HashSet<Id> = app.voice.with(|r| r.channels().collect());
        let emptied: Vec<Id> = held.difference(&rooms).copied().collect();
        let current: Vec<Id> = rooms.iter().copied().collect();
        match placement.renew(&current).await {
            Ok(lost) => {
                for room in lost {
                    // Released by a race with a join here (the claim expired or was
                    // dropped as the room emptied): claim it again if nobody else holds it.
                    if matches!(placement.claim(room).await, Ok(Owner::Here)) {
                        continue;
                    }
                    tracing::warn!(%room, "another instance owns this voice room now; dropping it here");
                    metrics::counter!("concord_cluster_voice_rooms_lost_total").increment(1);
                    let gone = app.voice.with(|r| r.close_room(room));
                    for state in gone {
                        app.voice.sfu.leave(room, state.user_id).await;
                        // Their entries go too, unless they already joined the new owner.
                        let _ = placement
                            .forget(state.guild_id, state.user_id, room, &placement.instance)
                            .await;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "voice room leases not renewed"),
        }
        if let Err(e) = placement.release(&emptied).await {
            tracing::warn!(error = %e, "emptied voice rooms not released");
        }
        held = rooms;
        metrics::gauge!("concord_cluster_voice_rooms_owned").set(held.len() as f64);
    }
    // Leaving: let the rooms go now rather than when their leases run out, and stop
    // counting as live.
    let held: Vec<Id> = held.into_iter().collect();
    let _ = placement.release(&held).await;
    let r: redis::RedisResult<()> = async {
        let mut conn = placement.conn().await?;
        redis::cmd("DEL")
            .arg(placement.instance_key(&placement.instance))
            .query_async(&mut conn)
            .await
    }
    .await;
    if let Err(e) = r {
        tracing::debug!(error = %e, "liveness key not removed at shutdown");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_moves_only_the_rooms_a_new_instance_wins() {
        let before = ["a1", "b2", "c3"];
        let after = ["a1", "b2", "c3", "d4"];
        let mut moved = 0;
        for id in 1..2_000i64 {
            let room = Id(id * 7_919);
            let old = pick_owner(room, before.iter().copied()).unwrap();
            let new = pick_owner(room, after.iter().copied()).unwrap();
            if old != new {
                assert_eq!(new, "d4", "a room moved between old instances");
                moved += 1;
            }
        }
        // About a quarter of the rooms score highest on the new instance.
        assert!((350..650).contains(&moved), "{moved} rooms moved");
        assert_eq!(pick_owner(Id(1), std::iter::empty()), None);
    }
}
