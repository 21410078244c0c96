//! Which channel events this instance has handed to its sessions, so that an event reaching
//! it twice — from its own write, from Redis, from the store while Redis is down
//! (`cluster/catchup.rs`) — is pushed once.
//!
//! Per channel: a watermark (every seq up to it was delivered) and the seqs delivered above
//! it; the watermark moves up as the seqs above it close the gap. Bounded: at most
//! [`MAX_ABOVE`] seqs above a watermark (older gaps are given up: clients fill them by seq)
//! and [`MAX_CHANNELS`] channels (the least recently used is forgotten). Plain state, no I/O.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use concord_proto::Id;

/// Seqs remembered above a channel's watermark.
pub const MAX_ABOVE: usize = 1024;
/// Channels remembered.
pub const MAX_CHANNELS: usize = 65_536;

#[derive(Debug, Default)]
struct Mark {
    floor: i64,
    above: BTreeSet<i64>,
    used: u64,
}

impl Mark {
    fn insert(&mut self, seq: i64) -> bool {
        if seq <= self.floor || !self.above.insert(seq) {
            return false;
        }
        while self.above.first() == Some(&(self.floor + 1)) {
            self.above.pop_first();
            self.floor += 1;
        }
        if self.above.len() > MAX_ABOVE {
            // An old gap nobody filled: give it up.
            let lowest = self.above.pop_first().expect("not empty");
            self.floor = lowest;
            while self.above.first() == Some(&(self.floor + 1)) {
                self.above.pop_first();
                self.floor += 1;
            }
        }
        true
    }
}

/// The registry (one per instance, on the hub).
#[derive(Debug, Default)]
pub struct Delivered {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    marks: HashMap<Id, Mark>,
    clock: u64,
}

impl State {
    fn mark(&mut self, channel: Id, floor_if_new: i64) -> &mut Mark {
        self.clock += 1;
        if !self.marks.contains_key(&channel) && self.marks.len() >= MAX_CHANNELS {
            let oldest = self
                .marks
                .iter()
                .min_by_key(|(_, m)| m.used)
                .map(|(c, _)| *c)
                .expect("full");
            self.marks.remove(&oldest);
        }
        let clock = self.clock;
        let mark = self.marks.entry(channel).or_insert_with(|| Mark {
            floor: floor_if_new,
            ..Mark::default()
        });
        mark.used = clock;
        mark
    }
}

impl Delivered {
    /// Notes that the event `seq` of `channel` is being delivered; false if it was already.
    /// A channel seen for the first time starts just below this seq.
    pub fn first(&self, channel: Id, seq: i64) -> bool {
        let mut st = self.state.lock().expect("delivered lock");
        st.mark(channel, seq - 1).insert(seq)
    }

    /// Where store catch-up of `channel` starts: after its watermark, or — for a channel not
    /// seen yet — after `current` (its last seq now: nothing older is owed).
    pub fn catch_up_from(&self, channel: Id, current: i64) -> i64 {
        let mut st = self.state.lock().expect("delivered lock");
        st.mark(channel, current).floor
    }

    /// Whether every seq up to `last` was delivered.
    pub fn has_all(&self, channel: Id, last: i64) -> bool {
        let st = self.state.lock().expect("delivered lock");
        st.marks
            .get(&channel)
            .is_some_and(|m| m.floor >= last || (m.floor..last).all(|s| m.above.contains(&(s + 1))))
    }

    /// Channels remembered (for tests and metrics).
    pub fn len(&self) -> usize {
        self.state.lock().expect("delivered lock").marks.len()
    }

    /// Whether no channel is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_seq_is_delivered_once_and_the_watermark_closes_gaps() {
        let d = Delivered::default();
        let c = Id(7);
        assert!(d.first(c, 10));
        assert!(!d.first(c, 10));
        assert!(d.first(c, 12));
        assert!(!d.has_all(c, 12));
        assert_eq!(d.catch_up_from(c, 99), 10, "catch-up starts at the gap");
        assert!(d.first(c, 11));
        assert!(d.has_all(c, 12));
        assert_eq!(d.catch_up_from(c, 99), 12);
        assert!(!d.first(c, 5), "below the watermark");
    }

    #[test]
    fn an_unknown_channel_owes_nothing_older_than_now() {
        let d = Delivered::default();
        assert_eq!(d.catch_up_from(Id(1), 40), 40);
        assert!(!d.first(Id(1), 40));
        assert!(d.first(Id(1), 41));
    }

    #[test]
    fn bounded_above_the_watermark_and_in_channels() {
        let d = Delivered::default();
        let c = Id(3);
        d.first(c, 1);
        // seq 2 never comes: the gap is given up once too many wait above it.
        for s in 3..(3 + MAX_ABOVE as i64 + 1) {
            assert!(d.first(c, s));
        }
        assert!(d.has_all(c, 3 + MAX_ABOVE as i64));
        let st = d.state.lock().unwrap();
        assert!(st.marks[&c].above.is_empty());
        drop(st);
        for ch in 0..(MAX_CHANNELS as i64 + 10) {
            d.first(Id(1_000 + ch), 1);
        }
        assert_eq!(d.len(), MAX_CHANNELS);
    }
}
