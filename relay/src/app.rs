//! Shared state of one relay instance and the small operations every part uses (time, ids,
//! session revocation, per-channel ordering).
//!
//! `App` holds the store, the token service and revocation set, the permission cache, the
//! hub, the rate limiter, the id generator (on its leased worker id), voice, the cluster
//! `Outbox` and the striped per-channel ordering locks (`lock_channel`). Test hook, cheap when
//! unused: `commit_gate` holds message commits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use concord_proto::{Id, IdGenerator};
use tokio_util::sync::CancellationToken;

use crate::auth::revocation::RevocationSet;
use crate::auth::tokens::TokenService;
use crate::config::RelayConfig;
use crate::hub::{CloseReason, Hub};
use crate::perms::PermCache;
use crate::ratelimit::RateLimiter;
use crate::store::Store;

/// Channel writes and their fan-out run under one of these locks (by channel id), so
/// events of a channel leave this instance in seq order.
const CHANNEL_LOCK_STRIPES: usize = 1024;

pub struct App {
    pub config: RelayConfig,
    /// Normalised public origins; the login audience is one of them.
    pub audiences: Vec<String>,
    pub store: Arc<dyn Store>,
    pub tokens: TokenService,
    pub revoked: RevocationSet,
    pub perms: PermCache,
    pub hub: Hub,
    pub limiter: Arc<dyn RateLimiter>,
    pub worker_id: u16,
    /// Unique per process; holds the worker-id lease.
    pub instance: String,
    ids: Mutex<IdGenerator>,
    channel_locks: Vec<tokio::sync::Mutex<()>>,
    db_ok: AtomicBool,
    draining: AtomicBool,
    pub shutdown: CancellationToken,
    /// Test hook: while a test holds the write side, message commits wait (they take the read
    /// side, which costs nothing when nobody holds it).
    pub commit_gate: tokio::sync::RwLock<()>,
    /// The libp2p side, once it listens (absent when disabled).
    pub p2p: std::sync::OnceLock<crate::p2p::Shared>,
    /// Who is in which voice channel on this instance.
    pub voice: crate::voice::Voice,
    /// Session revocations for the other instances of a cluster.
    pub outbox: crate::cluster::Outbox,
    /// The cluster's Redis subscription is up (true on a single instance).
    redis_ok: AtomicBool,
    /// Clients whose reads stay on the primary (with read replicas only).
    pub recent_writers: crate::store::consistency::RecentWriters,
    /// Messages with smaller ids are archived (0: none); history responses say so.
    archived_before: std::sync::atomic::AtomicI64,
    /// The SQLite database's free-space floor (none on PostgreSQL).
    pub space: Option<Arc<crate::store::space::SpaceWatch>>,
}

/// The lock stripe of a channel. Ids end in a per-millisecond sequence that is mostly 0, so
/// `id % stripes` would put nearly every channel on one lock (serialising all sends): mix the
/// bits first (Fibonacci hashing).
fn stripe(channel_id: Id) -> usize {
    let mixed = (channel_id.0 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> 32) as usize % CHANNEL_LOCK_STRIPES
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub struct AppParts {
    pub config: RelayConfig,
    pub audiences: Vec<String>,
    pub store: Arc<dyn Store>,
    pub tokens: TokenService,
    pub limiter: Arc<dyn RateLimiter>,
    pub worker_id: u16,
    pub instance: String,
    pub space: Option<Arc<crate::store::space::SpaceWatch>>,
}

impl App {
    pub fn new(parts: AppParts) -> App {
        let recent_writers = crate::store::consistency::RecentWriters::new(
            std::time::Duration::from_secs(parts.config.database.read_your_writes_secs),
        );
        let voice = crate::voice::Voice::new(&parts.config.voice);
        App {
            perms: PermCache::new(parts.store.clone()),
            config: parts.config,
            audiences: parts.audiences,
            store: parts.store,
            tokens: parts.tokens,
            revoked: RevocationSet::default(),
            hub: Hub::new(),
            limiter: parts.limiter,
            worker_id: parts.worker_id,
            instance: parts.instance,
            ids: Mutex::new(IdGenerator::new(parts.worker_id)),
            channel_locks: (0..CHANNEL_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            db_ok: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            p2p: std::sync::OnceLock::new(),
            voice,
            commit_gate: tokio::sync::RwLock::new(()),
            outbox: crate::cluster::Outbox::default(),
            redis_ok: AtomicBool::new(true),
            recent_writers,
            archived_before: std::sync::atomic::AtomicI64::new(0),
            space: parts.space,
        }
    }

    pub fn next_id(&self) -> Id {
        self.ids.lock().expect("id lock").next(now_ms())
    }

    pub async fn lock_channel(&self, channel_id: Id) -> tokio::sync::MutexGuard<'_, ()> {
        self.channel_locks[stripe(channel_id)].lock().await
    }

    /// Refuses the sessions' access tokens at once and closes their gateway sockets.
    pub fn revoke_sessions(&self, session_ids: &[Id]) {
        self.revoke(session_ids, &[]);
    }

    /// A suspended account: its sessions revoked as above, and its nodes' push sessions
    /// (libp2p, which carry no auth session) closed; a node that says hello again is refused
    /// (`domain::access`).
    pub fn shut_out_account(&self, user: Id, session_ids: &[Id]) {
        self.revoke(session_ids, &[user]);
    }

    fn revoke(&self, session_ids: &[Id], users: &[Id]) {
        let forget_after = now_ms() + (self.tokens.access_ttl_secs() + 60) * 1000;
        self.apply_revocation(session_ids, users, forget_after);
        self.outbox.publish(|| crate::cluster::Fanout::Revoke {
            sessions: session_ids.to_vec(),
            users: users.to_vec(),
            forget_after,
        });
    }

    /// A revocation here (from this instance or another).
    pub fn apply_revocation(&self, session_ids: &[Id], users: &[Id], forget_after: i64) {
        for sid in session_ids {
            self.revoked.insert(*sid, forget_after);
            self.hub
                .close_auth_session_local(*sid, CloseReason::Revoked);
        }
        for user in users {
            self.hub
                .close_node_sessions_local(*user, CloseReason::Revoked);
        }
    }

    /// Messages older than this id are archived.
    pub fn archived_before(&self) -> Option<Id> {
        match self.archived_before.load(Ordering::Relaxed) {
            0 => None,
            id => Some(Id(id)),
        }
    }

    /// Re-reads where the archive begins (after archiving, and periodically: another
    /// instance may have archived).
    pub async fn refresh_archived_before(&self) {
        match self.store.archived_months().await {
            Ok(months) => self.archived_before.store(
                crate::archive::archived_before(&months).map_or(0, |id| id.0),
                Ordering::Relaxed,
            ),
            Err(e) => tracing::debug!(error = %e, "reading archived months failed"),
        }
    }

    pub fn set_redis_ok(&self, ok: bool) {
        self.redis_ok.store(ok, Ordering::Relaxed);
        metrics::gauge!("concord_cluster_redis_up").set(if ok { 1.0 } else { 0.0 });
    }

    /// False while a clustered instance cannot reach Redis (it still serves its own clients).
    pub fn redis_ok(&self) -> bool {
        self.redis_ok.load(Ordering::Relaxed)
    }

    pub fn set_db_ok(&self, ok: bool) {
        self.db_ok.store(ok, Ordering::Relaxed);
    }

    pub fn db_ok(&self) -> bool {
        self.db_ok.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Ready for reads and writes: the database answers, the disk is over its floor, and
    /// the instance is not draining.
    pub fn is_ready(&self) -> bool {
        self.db_ok() && !self.storage_low() && !self.is_draining()
    }

    /// New content is refused (the disk is under its floor or full).
    pub fn storage_low(&self) -> bool {
        self.space.as_ref().is_some_and(|s| s.is_low())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_spread_over_the_lock_stripes() {
        // Ids made in different milliseconds, each with sequence 0: the common case.
        let mut ids = IdGenerator::new(0);
        let used: std::collections::HashSet<usize> = (0..1_000)
            .map(|ms| stripe(ids.next(1_800_000_000_000 + ms * 7)))
            .collect();
        assert!(used.len() > 500, "{} stripes used", used.len());
    }
}
