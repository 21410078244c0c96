//! The SFU's forwarding decisions, sans-IO: which speakers each listener receives and how
//! their packets are rewritten. Every listener has a fixed number of down-track slots (the
//! loudest N speakers, never itself); speakers are ranked by a smoothed RFC 6464 level
//! carried on every packet, re-ranked at most every `RESELECT_MS` with a margin so that two
//! speakers of similar loudness do not flap. A slot keeps one SSRC for its whole life:
//! when its speaker changes, sequence numbers continue by one and the timestamp continues by
//! one frame, with the marker bit set, so the listener's jitter buffer sees one stream.
//! Cost grows with listeners × N, not listeners × speakers. Bounded by the room size.
//! Every listener's slots sit in one array that every packet visits, and the forwards are
//! written into the room's one buffer.

use std::collections::HashMap;

use concord_proto::Id;

/// How often speakers are re-ranked.
const RESELECT_MS: i64 = 200;
/// A speaker with no packet for this long is not speaking (DTX sends nothing in silence).
const SILENT_AFTER_MS: i64 = 600;
/// A challenger must be this much louder (in smoothed dB) to take a slot from a speaker.
const SWITCH_MARGIN_DB: f64 = 3.0;
/// Samples per 20 ms Opus frame at 48 kHz: the timestamp step across a speaker switch.
const FRAME_TS: u32 = 960;

/// Where one packet goes: the listener, its slot, and the rewritten header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub listener: Id,
    pub slot: usize,
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
}

#[derive(Debug, Clone, Copy)]
struct Speaker {
    /// Smoothed loudness in dB above silence (127 - level), 0..=127.
    loudness: f64,
    last_packet_ms: i64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    ssrc: u32,
    speaker: Option<Id>,
    /// Last sequence number and timestamp sent on this slot.
    last_seq: Option<u16>,
    last_ts: u32,
    /// The current speaker's mapping: out = in + offset.
    seq_offset: u16,
    ts_offset: u32,
    /// The next packet starts a new speaker on this slot.
    switched: bool,
}

/// A listener and where its slots are in `Forwarder::slots`.
struct Listener {
    id: Id,
    slots: std::ops::Range<usize>,
}

pub struct Forwarder {
    slots_per_listener: usize,
    speakers: HashMap<Id, Speaker>,
    /// In join order. Every packet visits every listener's slots, so the slots sit in one
    /// array (a room's fit in a few cache lines) rather than one allocation per listener.
    listeners: Vec<Listener>,
    slots: Vec<Slot>,
    /// Speakers allowed to be heard (speak permission, no server mute).
    muted: std::collections::HashSet<Id>,
    last_reselect_ms: Option<i64>,
}

impl Forwarder {
    pub fn new(slots_per_listener: usize) -> Forwarder {
        Forwarder {
            slots_per_listener: slots_per_listener.max(1),
            speakers: HashMap::new(),
            listeners: Vec::new(),
            slots: Vec::new(),
            muted: std::collections::HashSet::new(),
            last_reselect_ms: None,
        }
    }

    /// A participant joins with the SSRCs of its down-track slots (a second join replaces the
    /// first).
    pub fn add_listener(&mut self, id: Id, ssrcs: &[u32]) {
        self.remove_listener(id);
        let start = self.slots.len();
        self.slots.extend(
            ssrcs
                .iter()
                .take(self.slots_per_listener)
                .map(|&ssrc| Slot {
                    ssrc,
                    speaker: None,
                    last_seq: None,
                    last_ts: 0,
                    seq_offset: 0,
                    ts_offset: 0,
                    switched: false,
                }),
        );
        self.listeners.push(Listener {
            id,
            slots: start..self.slots.len(),
        });
    }

    pub fn remove(&mut self, id: Id) {
        self.remove_listener(id);
        self.speakers.remove(&id);
        self.muted.remove(&id);
        for s in &mut self.slots {
            if s.speaker == Some(id) {
                s.speaker = None;
            }
        }
    }

    fn remove_listener(&mut self, id: Id) {
        let Some(i) = self.listeners.iter().position(|l| l.id == id) else {
            return;
        };
        let gone = self.listeners.remove(i).slots;
        self.slots.drain(gone.clone());
        for l in &mut self.listeners[i..] {
            l.slots = l.slots.start - gone.len()..l.slots.end - gone.len();
        }
    }

    /// Server mute or no speak permission: nobody receives this speaker.
    pub fn set_muted(&mut self, id: Id, muted: bool) {
        if muted {
            self.muted.insert(id);
        } else {
            self.muted.remove(&id);
        }
    }

    pub fn is_muted(&self, id: Id) -> bool {
        self.muted.contains(&id)
    }

    pub fn listener_count(&self) -> usize {
        self.listeners.len()
    }

    /// Which speaker each slot of `listener` carries now.
    pub fn slots_of(&self, listener: Id) -> Vec<Option<Id>> {
        self.listeners
            .iter()
            .find(|l| l.id == listener)
            .map(|l| {
                self.slots[l.slots.clone()]
                    .iter()
                    .map(|s| s.speaker)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One upstream packet from `from` (sequence number, timestamp and RFC 6464 level as
    /// received): updates the ranking and says where the packet goes, in `out` (cleared
    /// first: the caller keeps one buffer for every packet).
    pub fn on_packet(
        &mut self,
        from: Id,
        seq: u16,
        timestamp: u32,
        level: u8,
        now_ms: i64,
        out: &mut Vec<Forward>,
    ) {
        out.clear();
        if self.muted.contains(&from) {
            return;
        }
        let loudness = f64::from(127u8.saturating_sub(level.min(127)));
        let speaker = self.speakers.entry(from).or_insert(Speaker {
            loudness,
            last_packet_ms: now_ms,
        });
        // About 200 ms of memory at 50 packets/s.
        speaker.loudness += (loudness - speaker.loudness) * 0.1;
        speaker.last_packet_ms = now_ms;
        if self
            .last_reselect_ms
            .is_none_or(|t| now_ms - t >= RESELECT_MS)
        {
            self.reselect(now_ms);
        }
        for l in &self.listeners {
            let listener = l.id;
            if listener == from {
                continue;
            }
            let slots = &mut self.slots[l.slots.clone()];
            // A speaker the ranking just admitted gets a free slot at once.
            if !slots.iter().any(|s| s.speaker == Some(from))
                && let Some(free) = slots.iter_mut().find(|s| s.speaker.is_none())
            {
                assign(free, from);
            }
            for (i, slot) in slots.iter_mut().enumerate() {
                if slot.speaker != Some(from) {
                    continue;
                }
                if slot.switched {
                    // Continue the slot's stream: next sequence number, one frame later.
                    let next_seq = slot.last_seq.map_or(seq, |s| s.wrapping_add(1));
                    slot.seq_offset = next_seq.wrapping_sub(seq);
                    let next_ts = if slot.last_seq.is_some() {
                        slot.last_ts.wrapping_add(FRAME_TS)
                    } else {
                        timestamp
                    };
                    slot.ts_offset = next_ts.wrapping_sub(timestamp);
                }
                let f = Forward {
                    listener,
                    slot: i,
                    ssrc: slot.ssrc,
                    seq: seq.wrapping_add(slot.seq_offset),
                    timestamp: timestamp.wrapping_add(slot.ts_offset),
                    marker: slot.switched,
                };
                slot.switched = false;
                // Retransmissions and reordering keep the highest sequence as the base.
                if slot
                    .last_seq
                    .is_none_or(|s| (f.seq.wrapping_sub(s) as i16) > 0)
                {
                    slot.last_seq = Some(f.seq);
                    slot.last_ts = f.timestamp;
                }
                out.push(f);
            }
        }
    }

    /// Re-ranks speakers: every listener's slots go to the loudest active speakers but
    /// itself; a speaker holding a slot keeps it unless a challenger is clearly louder.
    pub fn reselect(&mut self, now_ms: i64) {
        self.last_reselect_ms = Some(now_ms);
        self.speakers
            .retain(|_, s| now_ms - s.last_packet_ms <= SILENT_AFTER_MS * 10);
        let active: Vec<(Id, f64)> = {
            let mut v: Vec<(Id, f64)> = self
                .speakers
                .iter()
                .filter(|(id, s)| {
                    now_ms - s.last_packet_ms <= SILENT_AFTER_MS && !self.muted.contains(id)
                })
                .map(|(id, s)| (*id, s.loudness))
                .collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            v
        };
        let loudness_of = |id: Id| active.iter().find(|(a, _)| *a == id).map(|(_, l)| *l);
        for l in &self.listeners {
            let listener = l.id;
            let slots = &mut self.slots[l.slots.clone()];
            let wanted: Vec<Id> = active
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| *id != listener)
                .take(slots.len())
                .collect();
            // Slots whose speaker went silent, muted, or left are freed.
            for slot in slots.iter_mut() {
                if let Some(s) = slot.speaker
                    && loudness_of(s).is_none()
                {
                    slot.speaker = None;
                }
            }
            for candidate in wanted {
                if slots.iter().any(|s| s.speaker == Some(candidate)) {
                    continue;
                }
                if let Some(free) = slots.iter_mut().find(|s| s.speaker.is_none()) {
                    assign(free, candidate);
                    continue;
                }
                // Replace the quietest holder if the candidate is clearly louder.
                let challenger = loudness_of(candidate).unwrap_or(0.0);
                let quietest = slots
                    .iter_mut()
                    .filter_map(|s| s.speaker.and_then(&loudness_of).map(|ld| (ld, s)))
                    .min_by(|a, b| a.0.total_cmp(&b.0));
                if let Some((held, slot)) = quietest
                    && challenger > held + SWITCH_MARGIN_DB
                {
                    assign(slot, candidate);
                }
            }
        }
    }
}

fn assign(slot: &mut Slot, speaker: Id) {
    slot.speaker = Some(speaker);
    slot.switched = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends one 20 ms packet from each (speaker, level) at `t`, returning the forwards.
    fn tick(f: &mut Forwarder, t: i64, speakers: &[(i64, u8)]) -> Vec<(Id, Forward)> {
        let n = t / 20;
        speakers
            .iter()
            .flat_map(|&(id, level)| {
                let mut out = Vec::new();
                f.on_packet(Id(id), n as u16, (n * 960) as u32, level, t, &mut out);
                out.into_iter().map(move |fw| (Id(id), fw))
            })
            .collect()
    }

    fn room(slots: usize, people: i64) -> Forwarder {
        let mut f = Forwarder::new(slots);
        for p in 1..=people {
            let ssrcs: Vec<u32> = (0..slots as u32).map(|i| p as u32 * 100 + i).collect();
            f.add_listener(Id(p), &ssrcs);
        }
        f
    }

    #[test]
    fn each_listener_gets_the_loudest_others_never_itself() {
        // 6 people, 2 slots; 1..=4 speak at different levels (lower = louder).
        let mut f = room(2, 6);
        let speakers = [(1, 10), (2, 20), (3, 40), (4, 60)];
        for t in (0..2_000).step_by(20) {
            tick(&mut f, t, &speakers);
        }
        let heard = |l: i64| {
            let mut v: Vec<i64> = f
                .slots_of(Id(l))
                .into_iter()
                .flatten()
                .map(|i| i.0)
                .collect();
            v.sort();
            v
        };
        assert_eq!(heard(6), vec![1, 2]);
        assert_eq!(heard(1), vec![2, 3], "speaker 1 never hears itself");
        assert_eq!(heard(2), vec![1, 3]);
        // Forwarding cost: listeners × slots, not listeners × speakers.
        let forwards = tick(&mut f, 2_000, &speakers);
        assert_eq!(forwards.len(), 6 * 2);
    }

    #[test]
    fn a_slot_stream_stays_continuous_across_a_speaker_switch() {
        let mut f = room(1, 3);
        // Speaker 1 alone, then 2 (much louder) starts and 1 keeps going quietly.
        let mut out: Vec<Forward> = Vec::new();
        for t in (0..1_000).step_by(20) {
            out.extend(
                tick(&mut f, t, &[(1, 50)])
                    .into_iter()
                    .filter(|(_, fw)| fw.listener == Id(3))
                    .map(|(_, fw)| fw),
            );
        }
        for t in (1_000..3_000).step_by(20) {
            out.extend(
                tick(&mut f, t, &[(1, 50), (2, 5)])
                    .into_iter()
                    .filter(|(_, fw)| fw.listener == Id(3))
                    .map(|(_, fw)| fw),
            );
        }
        assert_eq!(f.slots_of(Id(3)), vec![Some(Id(2))]);
        // One SSRC, sequence numbers without a gap or repeat, timestamps one frame apart,
        // a marker exactly where the speaker changed (and at the start).
        assert!(out.iter().all(|fw| fw.ssrc == 300));
        for pair in out.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq.wrapping_add(1), "{pair:?}");
            assert_eq!(
                pair[1].timestamp,
                pair[0].timestamp.wrapping_add(960),
                "{pair:?}"
            );
        }
        assert_eq!(out.iter().filter(|fw| fw.marker).count(), 2);
    }

    #[test]
    fn similar_speakers_do_not_flap_and_silence_frees_the_slot() {
        let mut f = room(1, 3);
        for t in (0..1_000).step_by(20) {
            tick(&mut f, t, &[(1, 30)]);
        }
        // Speaker 2 is only 1 dB louder: below the margin, 1 keeps the slot.
        for t in (1_000..3_000).step_by(20) {
            tick(&mut f, t, &[(1, 30), (2, 29)]);
        }
        assert_eq!(f.slots_of(Id(3)), vec![Some(Id(1))]);
        // Speaker 1 stops (DTX: no packets): the slot goes to 2.
        for t in (3_000..4_000).step_by(20) {
            tick(&mut f, t, &[(2, 29)]);
        }
        assert_eq!(f.slots_of(Id(3)), vec![Some(Id(2))]);
    }

    #[test]
    fn muted_and_departed_speakers_are_not_forwarded() {
        let mut f = room(2, 3);
        f.set_muted(Id(2), true);
        let forwards = tick(&mut f, 0, &[(1, 10), (2, 10)]);
        assert!(forwards.iter().all(|(from, _)| *from == Id(1)));
        f.remove(Id(1));
        assert_eq!(f.listener_count(), 2);
        assert!(tick(&mut f, 20, &[(2, 10)]).is_empty());
        assert!(f.slots_of(Id(3)).iter().all(|s| *s != Some(Id(1))));
    }

    #[test]
    fn a_listener_leaving_or_joining_again_leaves_the_others_slots_as_they_were() {
        let mut f = room(2, 4);
        let speakers = [(1, 10), (2, 20)];
        for t in (0..1_000).step_by(20) {
            tick(&mut f, t, &speakers);
        }
        let before: Vec<Forward> = tick(&mut f, 1_000, &speakers)
            .into_iter()
            .filter(|(_, fw)| fw.listener == Id(4))
            .map(|(_, fw)| fw)
            .collect();
        // Listener 3 (in the middle of the slot array) leaves; 2 joins again with new SSRCs.
        f.remove(Id(3));
        f.add_listener(Id(2), &[900, 901]);
        assert_eq!(f.listener_count(), 3);
        let after = tick(&mut f, 1_020, &speakers);
        let to = |l: i64| -> Vec<Forward> {
            after
                .iter()
                .filter(|(_, fw)| fw.listener == Id(l))
                .map(|(_, fw)| *fw)
                .collect()
        };
        // Listener 4 keeps its SSRCs and continues its streams by one.
        assert_eq!(to(4).len(), 2);
        for fw in to(4) {
            let old = before.iter().find(|b| b.slot == fw.slot).unwrap();
            assert_eq!(fw.ssrc, old.ssrc);
            assert_eq!(fw.seq, old.seq.wrapping_add(1));
            assert!(!fw.marker);
        }
        // The rejoined listener hears 1 on its new slots (never itself), from a fresh start.
        let two = to(2);
        assert_eq!(two.len(), 1);
        assert!(two[0].ssrc == 900 || two[0].ssrc == 901);
        assert!(two[0].marker);
        assert!(to(3).is_empty());
        assert_eq!(f.slots_of(Id(3)), Vec::<Option<Id>>::new());
    }
}
