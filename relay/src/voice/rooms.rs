//! Who is in which voice channel on this instance: plain state with the clock passed in, so
//! the rules (one channel per user, room capacity, leases that run out) are tested without
//! sockets or timers. `api/voice.rs` turns its answers into grants and gateway events.
//! It also decides a room's mode: `mesh`, or `sfu` past the mesh size, with a browser, or
//! with a participant whose join another instance forwarded (`cross_instance`); a room
//! that reached `sfu` stays there until it empties. Unit-tested.

use std::collections::{BTreeMap, HashMap, HashSet};

use concord_proto::Id;
use concord_proto::model::VoiceState;

/// A participant and when their place runs out unless they renew it.
#[derive(Debug, Clone)]
struct Seat {
    state: VoiceState,
    lease_until: i64,
}

#[derive(Debug, Default)]
pub struct Rooms {
    /// channel → user → seat (BTreeMap: participants listed in a stable order).
    rooms: HashMap<Id, BTreeMap<Id, Seat>>,
    /// user → the channel they are in.
    where_is: HashMap<Id, Id>,
    /// Channels on the SFU: once moved there they stay until they empty.
    on_sfu: HashSet<Id>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum JoinError {
    Full,
}

/// What a join changed.
#[derive(Debug, PartialEq, Eq)]
pub struct Joined {
    /// The user's state now.
    pub state: VoiceState,
    /// True when the user was already in this channel (a renewal: nothing to announce).
    pub renewed: bool,
    /// The channel the user left to come here, with their old state.
    pub left: Option<VoiceState>,
}

impl Rooms {
    /// Puts the user in `state.channel_id` (leaving any other channel), or renews their lease
    /// there. A renewal keeps `joined_at` and the server mute; `self_*` and `speak` come from
    /// `state`.
    pub fn join(
        &mut self,
        mut state: VoiceState,
        lease_until: i64,
        max_participants: usize,
    ) -> Result<Joined, JoinError> {
        let channel = state.channel_id.expect("a join names its channel");
        let user = state.user_id;
        if let Some(seat) = self.rooms.get_mut(&channel).and_then(|r| r.get_mut(&user)) {
            state.joined_at = seat.state.joined_at;
            state.server_mute = seat.state.server_mute;
            state.self_video = seat.state.self_video && state.speak && !state.server_mute;
            state.speak &= !state.server_mute;
            seat.state = state.clone();
            seat.lease_until = lease_until;
            return Ok(Joined {
                state,
                renewed: true,
                left: None,
            });
        }
        if self.len_of(channel) >= max_participants {
            return Err(JoinError::Full);
        }
        let left = self.leave(user);
        self.rooms.entry(channel).or_default().insert(
            user,
            Seat {
                state: state.clone(),
                lease_until,
            },
        );
        self.where_is.insert(user, channel);
        Ok(Joined {
            state,
            renewed: false,
            left,
        })
    }

    /// Takes the user out of their channel; returns the state they had.
    pub fn leave(&mut self, user: Id) -> Option<VoiceState> {
        let channel = self.where_is.remove(&user)?;
        let room = self.rooms.get_mut(&channel)?;
        let seat = room.remove(&user);
        if room.is_empty() {
            self.rooms.remove(&channel);
            self.on_sfu.remove(&channel);
        }
        seat.map(|s| s.state)
    }

    /// Channels with at least one participant.
    pub fn channels(&self) -> impl Iterator<Item = Id> + '_ {
        self.rooms.keys().copied()
    }

    /// Empties a room at once (another instance owns it now); returns who was in it.
    pub fn close_room(&mut self, channel: Id) -> Vec<VoiceState> {
        self.on_sfu.remove(&channel);
        let Some(room) = self.rooms.remove(&channel) else {
            return Vec::new();
        };
        room.into_values()
            .map(|seat| {
                self.where_is.remove(&seat.state.user_id);
                seat.state
            })
            .collect()
    }

    /// Puts a channel with participants on the SFU (someone asked the SFU for a place:
    /// after a failover the new owner learns the mode from its participants).
    pub fn set_sfu(&mut self, channel: Id) {
        if self.rooms.contains_key(&channel) {
            self.on_sfu.insert(channel);
        }
    }

    /// `mesh` while the channel is small enough and has no browser in it and nobody who came
    /// through another instance, else `sfu`; a channel that reached the SFU stays there until
    /// it empties (no flapping as people come and go around the mesh size).
    pub fn mode(&mut self, channel: Id, mesh_size: u32) -> &'static str {
        let participants = self.rooms.get(&channel);
        let needs_sfu = participants.is_some_and(|r| {
            r.values()
                .any(|s| s.state.client == "browser" || s.state.cross_instance)
        });
        if needs_sfu || participants.map_or(0, BTreeMap::len) > mesh_size as usize {
            self.on_sfu.insert(channel);
        }
        if self.on_sfu.contains(&channel) {
            "sfu"
        } else {
            "mesh"
        }
    }

    /// The user's state, if they are in `channel`.
    pub fn state_in(&self, channel: Id, user: Id) -> Option<&VoiceState> {
        self.rooms.get(&channel)?.get(&user).map(|s| &s.state)
    }

    /// Changes the state of a user in `channel`; returns the new state.
    pub fn update(
        &mut self,
        channel: Id,
        user: Id,
        change: impl FnOnce(&mut VoiceState),
    ) -> Option<VoiceState> {
        let seat = self.rooms.get_mut(&channel)?.get_mut(&user)?;
        change(&mut seat.state);
        seat.state.speak &= !seat.state.server_mute;
        Some(seat.state.clone())
    }

    /// The channel a user is in.
    pub fn channel_of(&self, user: Id) -> Option<Id> {
        self.where_is.get(&user).copied()
    }

    pub fn participants(&self, channel: Id) -> Vec<VoiceState> {
        self.rooms
            .get(&channel)
            .map(|r| r.values().map(|s| s.state.clone()).collect())
            .unwrap_or_default()
    }

    /// How many are in the channel (without copying their states).
    pub fn len_of(&self, channel: Id) -> usize {
        self.rooms.get(&channel).map_or(0, |r| r.len())
    }

    /// Removes everyone whose lease ended at `now`; returns their last states.
    pub fn expire(&mut self, now: i64) -> Vec<VoiceState> {
        let gone: Vec<Id> = self
            .rooms
            .values()
            .flat_map(|r| r.values())
            .filter(|s| s.lease_until <= now)
            .map(|s| s.state.user_id)
            .collect();
        gone.into_iter().filter_map(|u| self.leave(u)).collect()
    }

    /// Every seat here, as (channel, user).
    pub fn seats(&self) -> Vec<(Id, Id)> {
        self.rooms
            .iter()
            .flat_map(|(c, r)| r.keys().map(move |u| (*c, *u)))
            .collect()
    }

    /// Rooms with at least one participant.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn participant_count(&self) -> usize {
        self.where_is.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(channel: u64, user: u64, at: i64) -> VoiceState {
        VoiceState {
            guild_id: Some(Id(1)),
            channel_id: Some(Id(channel as i64)),
            user_id: Id(user as i64),
            device_key: format!("dev{user}"),
            self_mute: false,
            self_deaf: false,
            server_mute: false,
            speak: true,
            client: "node".into(),
            joined_at: at,
            self_video: false,
            cross_instance: false,
        }
    }

    #[test]
    fn a_user_is_in_one_channel_at_a_time() {
        let mut rooms = Rooms::default();
        let first = rooms.join(state(10, 1, 0), 100, 5).unwrap();
        assert!(!first.renewed && first.left.is_none());
        let moved = rooms.join(state(11, 1, 5), 100, 5).unwrap();
        assert_eq!(moved.left.unwrap().channel_id, Some(Id(10)));
        assert!(rooms.participants(Id(10)).is_empty());
        assert_eq!(rooms.channel_of(Id(1)), Some(Id(11)));
        assert_eq!(rooms.room_count(), 1);
    }

    #[test]
    fn renewing_keeps_the_join_time_and_the_server_mute() {
        let mut rooms = Rooms::default();
        rooms.join(state(10, 1, 0), 100, 5).unwrap();
        rooms
            .update(Id(10), Id(1), |s| s.server_mute = true)
            .unwrap();
        let renewed = rooms.join(state(10, 1, 50), 200, 5).unwrap();
        assert!(renewed.renewed);
        assert_eq!(renewed.state.joined_at, 0);
        assert!(renewed.state.server_mute);
        assert!(
            !renewed.state.speak,
            "a server-muted participant may not speak"
        );
        // Leases: the renewed one survives the first deadline.
        rooms.join(state(10, 2, 60), 150, 5).unwrap();
        let gone = rooms.expire(150);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].user_id, Id(2));
        assert_eq!(rooms.participant_count(), 1);
    }

    #[test]
    fn a_full_room_refuses_newcomers_but_not_renewals() {
        let mut rooms = Rooms::default();
        rooms.join(state(10, 1, 0), 100, 2).unwrap();
        rooms.join(state(10, 2, 0), 100, 2).unwrap();
        assert_eq!(rooms.join(state(10, 3, 0), 100, 2), Err(JoinError::Full));
        assert_eq!(rooms.channel_of(Id(3)), None);
        assert!(rooms.join(state(10, 2, 0), 200, 2).unwrap().renewed);
        assert_eq!(rooms.leave(Id(1)).unwrap().user_id, Id(1));
        assert_eq!(rooms.leave(Id(1)), None);
        rooms.join(state(10, 3, 0), 100, 2).unwrap();
    }

    #[test]
    fn a_channel_moves_to_the_sfu_past_the_mesh_size_or_with_a_browser_or_remote_user_and_stays() {
        let mut r = Rooms::default();
        for u in 1..=2 {
            r.join(state(7, u, 0), 100, 10).unwrap();
        }
        assert_eq!(r.mode(Id(7), 2), "mesh");
        r.join(state(7, 3, 0), 100, 10).unwrap();
        assert_eq!(r.mode(Id(7), 2), "sfu");
        r.leave(Id(3));
        assert_eq!(r.mode(Id(7), 2), "sfu", "no flapping back to the mesh");
        r.leave(Id(1));
        r.leave(Id(2));
        r.join(state(7, 1, 0), 100, 10).unwrap();
        assert_eq!(r.mode(Id(7), 2), "mesh", "an emptied channel starts over");
        let mut browser = state(7, 4, 0);
        browser.client = "browser".into();
        r.join(browser, 100, 10).unwrap();
        assert_eq!(r.mode(Id(7), 2), "sfu");

        // Someone whose join came through another instance of a cluster: the SFU too.
        r.join(state(8, 1, 0), 100, 10).unwrap();
        assert_eq!(r.mode(Id(8), 2), "mesh");
        let mut remote = state(8, 2, 0);
        remote.cross_instance = true;
        r.join(remote, 100, 10).unwrap();
        assert_eq!(r.mode(Id(8), 2), "sfu");
    }
}
