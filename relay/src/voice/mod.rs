//! Voice channels on this instance: who is in which channel (`rooms.rs`), the relay-signed
//! grants that let a device in, and the `voice_state_update` events everyone who can see the
//! channel gets. Small channels of nodes talk over a WebRTC mesh between
//! the nodes; larger ones and browsers go through the SFU (`sfu/`).
//!
//! `Voice` hangs on `App`; this module announces `voice_state_update`s, and its expiry sweep
//! runs every second from `background.rs`. The grant is the relay-signed `VoiceGrant`
//! (`concord_proto::signed`), issued on join by `api/voice.rs`. Across a cluster,
//! `placement.rs` says which instance holds a room and `directory.rs` who is in voice where.

pub mod directory;
pub mod placement;
pub mod rooms;
pub mod sfu;

use std::sync::Mutex;

use concord_proto::model::VoiceState;
use concord_proto::{Id, Permissions};

use crate::app::{App, now_ms};

/// The voice state of one instance.
pub struct Voice {
    rooms: Mutex<rooms::Rooms>,
    pub sfu: sfu::session::Sfu,
    /// Which instance holds each room (several instances on one Redis only).
    pub placement: std::sync::OnceLock<std::sync::Arc<placement::Placement>>,
}

impl Voice {
    pub fn new(config: &crate::config::VoiceConfig) -> Voice {
        Voice {
            rooms: Mutex::new(rooms::Rooms::default()),
            sfu: sfu::session::Sfu::new(sfu::session::SfuLimits {
                slots: config.sfu_forwarded_speakers as usize,
                max_rooms: config.sfu_max_rooms as usize,
                max_upstream_kbps: config.sfu_max_upstream_kbps,
                max_video_kbps: config.sfu_max_video_kbps,
            }),
            placement: std::sync::OnceLock::new(),
        }
    }

    /// Runs `f` on the rooms (a short critical section: no await inside).
    pub fn with<T>(&self, f: impl FnOnce(&mut rooms::Rooms) -> T) -> T {
        f(&mut self.rooms.lock().expect("voice rooms lock"))
    }
}

/// Tells everyone who can see the channel about a change (`channel_id` absent: the user
/// left `from`).
pub async fn announce(app: &App, from: Id, state: &VoiceState) {
    if state.channel_id == Some(from) {
        app.voice.sfu.set_muted(from, state.user_id, !state.speak);
    }
    if let Some(placement) = app.voice.placement.get() {
        // The room is held here (voice requests reach their room's owner): other instances
        // read who is in it from Redis.
        let written = if state.channel_id.is_some() {
            placement.record(state).await
        } else {
            placement
                .forget(state.guild_id, state.user_id, from, &placement.instance)
                .await
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, channel = %from, "voice state not written to the cluster directory");
        }
    }
    let Some(channel) = app.perms.channel(from).await.ok().flatten() else {
        return;
    };
    app.hub
        .to_channel_viewers(&app.perms, &channel, "voice_state_update", state)
        .await;
}

/// Announces that `state`'s user left its channel.
pub async fn announce_left(app: &App, mut state: VoiceState) {
    let Some(from) = state.channel_id.take() else {
        return;
    };
    app.voice.sfu.leave(from, state.user_id).await;
    announce(app, from, &state).await;
}

/// How often seats are checked against permissions ([`audit`]).
pub const AUDIT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Drops participants who may no longer be in their channel — kicked, banned, gone from the
/// guild, or without view or connect there after a role or overwrite change — and tells the
/// channel (`voice_state_update`); their SFU tracks close. Runs every [`AUDIT_EVERY`]; the
/// checks hit the permission cache, which every such change invalidates on every instance.
pub async fn audit(app: &App) {
    let seats = app.voice.with(|r| r.seats());
    for (channel, user) in seats {
        let allowed = match app.perms.channel_permissions(channel, user).await {
            Ok(Some(access)) => access
                .perms
                .contains(Permissions::VIEW_CHANNEL | Permissions::CONNECT),
            Ok(None) => false,
            // The store is down: keep the seat rather than drop everyone.
            Err(_) => continue,
        };
        if allowed {
            continue;
        }
        let left = app.voice.with(|r| {
            (r.channel_of(user) == Some(channel))
                .then(|| r.leave(user))
                .flatten()
        });
        if let Some(left) = left {
            metrics::counter!("concord_voice_seats_revoked_total").increment(1);
            tracing::info!(%channel, %user, "voice seat dropped: no longer allowed in the channel");
            announce_left(app, left).await;
        }
    }
}

/// Drops participants whose grant ran out and tells their channels (run every few seconds).
pub async fn expire(app: &App) {
    let gone = app.voice.with(|r| r.expire(now_ms()));
    for state in gone {
        announce_left(app, state).await;
    }
    let (rooms, participants) = app.voice.with(|r| (r.room_count(), r.participant_count()));
    metrics::gauge!("concord_voice_rooms").set(rooms as f64);
    metrics::gauge!("concord_voice_participants").set(participants as f64);
}
