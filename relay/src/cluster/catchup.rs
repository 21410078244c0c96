//! Redis is an accelerator, the database the truth: while this instance's Redis subscription
//! is down, the channel events other instances commit reach its sessions (gateway and node
//! pushes) from the store.
//!
//! Every [`POLL`] the catch-up reads the `last_seq` of the channels its sessions follow (the
//! text channels of guilds with a member online here, and those members' DMs), and for each
//! channel that moved past what was delivered here (`hub/delivered.rs`) reads the missing
//! events in seq order and pushes them to the viewers here, after the same permission check
//! as a live fan-out. When the subscription returns, one last sweep runs before the first
//! message from Redis is applied, so nothing committed during the gap is missed; an event
//! both swept and received from Redis is pushed once (by its seq).
//!
//! Rules cross the same way: invalidations and revocations published while this instance
//! was not listening are lost, so every sweep (and the last one) also drops the permission
//! cache, which reloads from the store, and reads the sessions revoked since shortly before
//! the outage began: their tokens are refused here too and their sockets closed.
//!
//! Bounded: at most [`PAGES`] pages of [`PAGE`] events per channel per sweep (a channel
//! further behind continues at the next sweep); the followed set is rebuilt every
//! [`REFRESH`]. Cancel-safe: a sweep dropped halfway leaves the registry consistent (each
//! event is noted as it is pushed).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_proto::model::{Channel, ChannelKind};
use concord_proto::{Id, Permissions};

use crate::app::App;

/// How often the store is read while the subscription is down.
pub const POLL: Duration = Duration::from_millis(500);
/// Revocations are read from this long before the outage was noticed (what was published
/// while the subscription was dying).
const REVOKED_MARGIN_MS: i64 = 10_000;
/// How often the followed channels are worked out again during an outage (and at its start).
const REFRESH: Duration = Duration::from_secs(5);
/// Events per read.
const PAGE: u32 = 100;
/// Reads per channel per sweep.
const PAGES: usize = 10;
/// Channels per `last_seq` query.
const SEQ_BATCH: usize = 500;

/// What the catch-up follows; shared by the poller and the subscriber's last sweep.
#[derive(Default)]
pub struct CatchUp {
    state: tokio::sync::Mutex<Followed>,
    /// Set while the subscription is up: the next outage starts from a fresh followed set.
    stale: std::sync::atomic::AtomicBool,
    /// When the current outage was noticed, less [`REVOKED_MARGIN_MS`] (unix ms).
    revoked_since: std::sync::atomic::AtomicI64,
}

#[derive(Default)]
struct Followed {
    channels: HashMap<Id, Channel>,
    /// Users whose DMs are in `channels` already.
    dm_users: HashSet<Id>,
    refreshed: Option<Instant>,
}

impl CatchUp {
    /// Polls while the subscription is down; stops with the app.
    pub async fn run(self: Arc<Self>, app: Arc<App>) {
        loop {
            tokio::select! {
                _ = app.shutdown.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            if app.redis_ok() {
                self.stale.store(true, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            self.sweep(&app).await;
        }
    }

    /// One pass over the followed channels; returns how many events it pushed.
    pub async fn sweep(&self, app: &App) -> usize {
        let mut followed = self.state.lock().await;
        let stale = self.stale.swap(false, std::sync::atomic::Ordering::Relaxed);
        if stale || followed.refreshed.is_none() {
            self.revoked_since.store(
                crate::app::now_ms() - REVOKED_MARGIN_MS,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        resync_rules(
            app,
            self.revoked_since
                .load(std::sync::atomic::Ordering::Relaxed),
        )
        .await;
        if stale || followed.refreshed.is_none_or(|at| at.elapsed() >= REFRESH) {
            refresh(app, &mut followed).await;
        }
        let ids: Vec<Id> = followed.channels.keys().copied().collect();
        let mut pushed = 0;
        for chunk in ids.chunks(SEQ_BATCH) {
            let seqs = match app.store.channel_seqs(chunk).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "catch-up could not read channel seqs");
                    return pushed;
                }
            };
            for (id, last) in seqs {
                let Some(channel) = followed.channels.get(&id) else {
                    continue;
                };
                pushed += catch_up(app, channel, last).await;
            }
        }
        if pushed > 0 {
            metrics::counter!("concord_cluster_caught_up_total").increment(pushed as u64);
        }
        pushed
    }
}

/// What other instances changed while their invalidations could not arrive: the permission
/// cache is dropped, and sessions revoked since `revoked_since` (unix ms) are refused here
/// and their sockets closed.
async fn resync_rules(app: &App, revoked_since: i64) {
    app.perms.clear();
    match app.store.revoked_sessions_since(revoked_since).await {
        Ok(sessions) => {
            let forget_after = crate::app::now_ms() + (app.tokens.access_ttl_secs() + 60) * 1000;
            for sid in sessions {
                if !app.revoked.contains(sid) {
                    app.apply_revocation(&[sid], &[], forget_after);
                    metrics::counter!("concord_cluster_revocations_caught_up_total").increment(1);
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "catch-up could not read revoked sessions"),
    }
}

/// The followed channels: guild text channels with a member online here, and DMs.
async fn refresh(app: &App, followed: &mut Followed) {
    let mut channels = HashMap::new();
    for guild in app.hub.local_guilds() {
        if let Ok(Some(snapshot)) = app.perms.snapshot(guild).await {
            for c in &snapshot.channels {
                if c.kind != ChannelKind::Voice {
                    channels.insert(c.id, c.clone());
                }
            }
        }
    }
    let users: HashSet<Id> = app.hub.local_users().into_iter().collect();
    // DMs of users still here are kept; new users' are read once.
    for (id, c) in followed.channels.drain() {
        if c.guild_id.is_none() {
            channels.insert(id, c);
        }
    }
    followed.dm_users.retain(|u| users.contains(u));
    for user in users {
        if followed.dm_users.contains(&user) {
            continue;
        }
        if let Ok(dms) = app.store.dm_channels(user).await {
            for c in dms {
                channels.insert(c.id, c);
            }
            followed.dm_users.insert(user);
        }
    }
    followed.channels = channels;
    followed.refreshed = Some(Instant::now());
}

/// Pushes the events of `channel` up to `last` that were not delivered here yet.
async fn catch_up(app: &App, channel: &Channel, last: i64) -> usize {
    let mut after = app.hub.delivered.catch_up_from(channel.id, last);
    let mut pushed = 0;
    for _ in 0..PAGES {
        if after >= last {
            break;
        }
        let events = match app.store.events(channel.id, after, PAGE).await {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, channel = %channel.id, "catch-up could not read events");
                break;
            }
        };
        let Some(newest) = events.last().map(|e| e.seq) else {
            break;
        };
        let viewers = match app
            .hub
            .channel_viewers(&app.perms, channel, Permissions::VIEW_CHANNEL)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, channel = %channel.id, "catch-up could not check permissions");
                break;
            }
        };
        for e in events {
            if app.hub.delivered.first(channel.id, e.seq) {
                let d: Arc<str> = Arc::from(e.data.to_string());
                app.hub
                    .push_local(viewers.iter().copied(), e.kind.as_str(), d);
                pushed += 1;
            }
        }
        after = newest;
    }
    pushed
}
