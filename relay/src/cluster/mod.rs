//! Several relay instances on one PostgreSQL and one Redis. The instance a client talks to
//! persists what it submits (seq stays gapless through the channel row lock in the
//! database) and fans the event out to its own sessions; the same fan-out, described by what
//! it means rather than by recipient list, goes on Redis pub/sub, and every other instance
//! applies it to its own sessions with its own permission checks. Cache invalidations and
//! session revocations travel the same way.
//!
//! Redis being down costs latency, not events: each instance keeps serving its own clients,
//! the publisher drops (and counts) what it cannot send, the subscriber reconnects with
//! backoff, and meanwhile the channel events of other instances come from the store
//! (`catchup.rs`). Durable work does not ride on pub/sub (see ARCHITECTURE.md).
//!
//! Enabled by `[redis] url`. A [`Fanout`] says what a fan-out means (to users, to a guild, to
//! a channel's viewers except one, a visibility change, presence with the user's guilds,
//! membership changes, revocations, permission-cache invalidations); it goes through one
//! bounded queue to the pub/sub channel `{prefix}:fanout`, and every other instance runs it
//! through `apply`. Hub, `PermCache` and `App` hold an [`Outbox`], a no-op on a single
//! instance. The subscriber drives `/readyz`'s `redis` check (`ok`, or `down` → `degraded`);
//! while it is down `catchup.rs` reads the followed channels from the store every 0.5 s, and
//! `hub/delivered.rs` keeps each seq to one push.
//!
//! Fan-out is pub/sub, not a queue, on purpose: an event that misses an instance (Redis
//! down, instance restarting) is already committed, and every client catches up by seq
//! (gateway resume or `after`, node `sync`). A durable queue (`jobs.rs`) is only for work
//! whose only record would otherwise be in memory (archiving months). Ids stay unique
//! across instances through the worker-id lease. A SIGKILLed instance loses only
//! unacknowledged sends, which clients retry on another instance with the same nonce
//! (`testkit/tests/cluster_failover.rs`).
//!
//! Presence: each instance publishes who is online on it every [`PRESENCE_REFRESH`] (30 s,
//! in `PresenceBatch`es of 500 users) and sends `Hello` whenever its subscription comes up
//! (at start, after an outage), which makes the others answer with theirs, so a late
//! instance still lists users online elsewhere; a remote user not refreshed for
//! [`PRESENCE_EXPIRY`] (95 s) is shown offline (their instance died without a goodbye).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use concord_proto::Id;
use concord_proto::gateway::PresenceStatus;
use concord_proto::model::Channel;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::app::App;

pub mod breaker;
pub mod catchup;
pub mod jobs;
pub mod link;
pub mod ratelimit;

use link::Redis;

/// One fan-out (or cache/session change) another instance must repeat locally.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Fanout {
    /// To these users' sessions (recipients the caller took from the database).
    Users {
        users: Vec<Id>,
        t: String,
        d: String,
    },
    /// To every online member of the guild.
    Guild {
        guild: Id,
        t: String,
        d: String,
    },
    /// To online users allowed to view the channel (checked by the receiving instance),
    /// except one.
    ChannelViewers {
        channel: Box<Channel>,
        except: Option<Id>,
        /// The channel's seq of a stored event (typing has none): an instance that already
        /// pushed it (from the store while Redis was down) skips it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<i64>,
        t: String,
        d: String,
    },
    /// A channel's visibility changed: its viewers get it, everyone else a delete.
    Visibility {
        channel: Box<Channel>,
    },
    /// A user's presence, to their guild mates.
    Presence {
        user: Id,
        status: PresenceStatus,
        guilds: Vec<Id>,
    },
    JoinGuild {
        user: Id,
        guild: Id,
    },
    LeaveGuild {
        user: Id,
        guild: Id,
    },
    ForgetGuild {
        guild: Id,
    },
    /// Auth sessions revoked: refuse their tokens and close their sockets.
    Revoke {
        sessions: Vec<Id>,
        /// Accounts whose node push sessions close (suspension).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        users: Vec<Id>,
        forget_after: i64,
    },
    InvalidateGuild {
        guild: Id,
    },
    InvalidateMember {
        guild: Id,
        user: Id,
    },
    /// An instance (re)joined: everyone answers with who is online there.
    Hello,
    /// Who is online on the sending instance (an answer to `Hello`, and every
    /// `PRESENCE_REFRESH`); entries not refreshed in `PRESENCE_EXPIRY` are dropped.
    PresenceBatch {
        entries: Vec<crate::hub::PresenceEntry>,
    },
}

/// How often each instance tells the others who is online there.
pub const PRESENCE_REFRESH: Duration = Duration::from_secs(30);
/// A remote user not refreshed for this long is taken as gone (their instance died).
pub const PRESENCE_EXPIRY: Duration = Duration::from_secs(95);
/// Users per presence batch message.
const PRESENCE_BATCH: usize = 500;

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// The publishing instance; it skips its own messages.
    origin: String,
    /// W3C trace context of the span that published it (when traces are exported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tp: Option<String>,
    #[serde(flatten)]
    fanout: Fanout,
}

/// Where hub, permission cache and app publish; unset on a single instance.
#[derive(Default)]
pub struct Outbox {
    tx: OnceLock<mpsc::Sender<(Fanout, Option<String>)>>,
}

/// Fan-outs queued for Redis at most; beyond that they are dropped and counted.
const QUEUE: usize = 16_384;

impl Outbox {
    pub fn publish(&self, fanout: impl FnOnce() -> Fanout) {
        let Some(tx) = self.tx.get() else { return };
        let traceparent = crate::telemetry::current_traceparent();
        if tx.try_send((fanout(), traceparent)).is_err() {
            metrics::counter!("concord_cluster_dropped_total").increment(1);
        }
    }
}

/// Gateway event names arriving from other instances, interned once each (the session
/// queue holds `&'static str`). Names are checked and bounded, so nothing can grow this.
fn event_name(name: &str) -> Option<&'static str> {
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    if name.is_empty()
        || name.len() > 32
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        return None;
    }
    let mut names = NAMES.lock().expect("event names lock");
    let names = names.get_or_insert_with(HashSet::new);
    if let Some(n) = names.get(name) {
        return Some(n);
    }
    if names.len() >= 128 {
        return None;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    Some(leaked)
}

/// The pub/sub channel of one cluster.
fn channel_name(prefix: &str) -> String {
    format!("{prefix}:fanout")
}

/// Starts the publisher and the subscriber; they stop with the app's shutdown token.
pub fn spawn(app: Arc<App>, redis: Redis, prefix: &str) -> Vec<JoinHandle<()>> {
    // Not ready for the cluster until the subscription is up.
    app.set_redis_ok(false);
    let (tx, rx) = mpsc::channel(QUEUE);
    for outbox in [&app.hub.outbox, &app.perms.outbox, &app.outbox] {
        let _ = outbox.tx.set(tx.clone());
    }
    let channel = channel_name(prefix);
    let catch_up = Arc::new(catchup::CatchUp::default());
    vec![
        tokio::spawn(publish(app.clone(), redis.clone(), channel.clone(), rx)),
        tokio::spawn(subscribe(app.clone(), redis, channel, catch_up.clone())),
        tokio::spawn(catch_up.run(app.clone())),
        tokio::spawn(refresh_presence(app)),
    ]
}

async fn publish(
    app: Arc<App>,
    redis: Redis,
    channel: String,
    mut rx: mpsc::Receiver<(Fanout, Option<String>)>,
) {
    let mut conn: Option<link::Conn> = None;
    // While Redis is unreachable, fan-outs are dropped at once instead of each waiting out
    // a connection attempt; one probe per cool-down finds it back.
    let mut breaker = breaker::Breaker::new(3, Duration::from_secs(2));
    loop {
        let (fanout, tp) = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            f = rx.recv() => match f { Some(f) => f, None => return },
        };
        let body = match serde_json::to_string(&Envelope {
            origin: app.instance.clone(),
            tp,
            fanout,
        }) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "fan-out does not serialise");
                continue;
            }
        };
        if !breaker.allow(std::time::Instant::now()) {
            metrics::counter!("concord_cluster_dropped_total").increment(1);
            continue;
        }
        if conn.is_none() {
            conn = redis.connect().await.ok();
        }
        let sent = match conn.as_mut() {
            Some(c) => redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&body)
                .query_async::<i64>(c)
                .await
                .is_ok(),
            None => false,
        };
        let now = std::time::Instant::now();
        if sent {
            breaker.success();
            metrics::counter!("concord_cluster_published_total").increment(1);
        } else {
            breaker.failure(now);
            conn = None;
            metrics::counter!("concord_cluster_dropped_total").increment(1);
        }
        metrics::gauge!("concord_breaker_state", "dependency" => "redis_fanout")
            .set(breaker.state(now).as_gauge());
    }
}

async fn subscribe(app: Arc<App>, redis: Redis, channel: String, catch_up: Arc<catchup::CatchUp>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let session = async {
            let mut pubsub = redis.pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            p = session => p,
        };
        match pubsub {
            Ok(mut pubsub) => {
                // What was committed before the subscription took effect came from no one:
                // sweep the store once before the first message from Redis is applied (they
                // wait in the subscription meanwhile; the seqs keep either from repeating).
                let swept = catch_up.sweep(&app).await;
                if swept > 0 {
                    tracing::info!(
                        swept,
                        "events committed while unsubscribed pushed from the store"
                    );
                }
                app.set_redis_ok(true);
                backoff = Duration::from_millis(200);
                // Whatever happened while this instance was not listening, ask who is online.
                app.outbox.publish(|| Fanout::Hello);
                let mut messages = pubsub.on_message();
                loop {
                    let msg = tokio::select! {
                        _ = app.shutdown.cancelled() => return,
                        m = messages.next() => m,
                    };
                    let Some(msg) = msg else { break };
                    let Ok(body) = msg.get_payload::<String>() else {
                        continue;
                    };
                    match serde_json::from_str::<Envelope>(&body) {
                        Ok(env) if env.origin != app.instance => {
                            metrics::counter!("concord_cluster_received_total").increment(1);
                            let span = tracing::info_span!("cluster.apply", origin = %env.origin);
                            if let Some(tp) = &env.tp {
                                crate::telemetry::set_remote_parent(&span, tp);
                            }
                            apply(&app, env.fanout).instrument(span).await;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "unreadable fan-out from Redis ignored")
                        }
                    }
                }
                tracing::warn!("Redis subscription lost; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "Redis unreachable; serving local clients only"),
        }
        app.set_redis_ok(false);
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Repeats another instance's fan-out here (never republished).
pub async fn apply(app: &App, fanout: Fanout) {
    match fanout {
        Fanout::Users { users, t, d } => {
            if let Some(t) = event_name(&t) {
                app.hub.push_local(users, t, Arc::from(d));
            }
        }
        Fanout::Guild { guild, t, d } => {
            if let Some(t) = event_name(&t) {
                app.hub
                    .push_local(app.hub.guild_online(guild), t, Arc::from(d));
            }
        }
        Fanout::ChannelViewers {
            channel,
            except,
            seq,
            t,
            d,
        } => {
            let Some(t) = event_name(&t) else { return };
            if let Some(seq) = seq
                && !app.hub.delivered.first(channel.id, seq)
            {
                metrics::counter!("concord_cluster_duplicates_total").increment(1);
                return;
            }
            match app
                .hub
                .channel_viewers(
                    &app.perms,
                    &channel,
                    concord_proto::Permissions::VIEW_CHANNEL,
                )
                .await
            {
                Ok(users) => {
                    let users = users.into_iter().filter(|u| Some(*u) != except);
                    app.hub.push_local(users, t, Arc::from(d));
                }
                Err(e) => {
                    tracing::error!(error = %e, "fan-out from another instance could not check permissions")
                }
            }
        }
        Fanout::Presence {
            user,
            status,
            guilds,
        } => app.hub.presence_from_peer(user, status, &guilds),
        Fanout::Visibility { channel } => {
            if let Err(e) = app.hub.channel_visibility_local(&app.perms, &channel).await {
                tracing::error!(error = %e, "visibility change from another instance not applied");
            }
        }
        Fanout::JoinGuild { user, guild } => app.hub.join_guild_local(user, guild),
        Fanout::LeaveGuild { user, guild } => app.hub.leave_guild_local(user, guild),
        Fanout::ForgetGuild { guild } => app.hub.forget_guild_local(guild),
        Fanout::Revoke {
            sessions,
            users,
            forget_after,
        } => app.apply_revocation(&sessions, &users, forget_after),
        Fanout::InvalidateGuild { guild } => app.perms.invalidate_guild_local(guild),
        Fanout::InvalidateMember { guild, user } => app.perms.invalidate_member_local(guild, user),
        Fanout::Hello => publish_presence(app),
        Fanout::PresenceBatch { entries } => app
            .hub
            .presence_refresh_from_peer(&entries, std::time::Instant::now()),
    }
}

/// Tells the other instances who is online here, in bounded batches.
fn publish_presence(app: &App) {
    let entries = app.hub.local_presences();
    for chunk in entries.chunks(PRESENCE_BATCH) {
        app.outbox.publish(|| Fanout::PresenceBatch {
            entries: chunk.to_vec(),
        });
    }
}

/// Refreshes this instance's users on the others, and expires theirs that stopped coming.
async fn refresh_presence(app: Arc<App>) {
    let mut tick = tokio::time::interval(PRESENCE_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        publish_presence(&app);
        let expired = app
            .hub
            .expire_remote_presence(std::time::Instant::now(), PRESENCE_EXPIRY);
        if expired > 0 {
            tracing::info!(
                expired,
                "remote users expired (their instance stopped refreshing)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_checked_and_interned() {
        let a = event_name("message_create").unwrap();
        let b = event_name("message_create").unwrap();
        assert!(std::ptr::eq(a, b));
        assert_eq!(event_name(""), None);
        assert_eq!(event_name("Message"), None);
        assert_eq!(event_name(&"x".repeat(33)), None);
    }

    #[test]
    fn envelopes_round_trip() {
        let env = Envelope {
            origin: "i1".into(),
            tp: None,
            fanout: Fanout::Presence {
                user: Id(5),
                status: PresenceStatus::Idle,
                guilds: vec![Id(9)],
            },
        };
        let text = serde_json::to_string(&env).unwrap();
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.origin, "i1");
        assert!(matches!(back.fanout, Fanout::Presence { user: Id(5), .. }));
    }
}
