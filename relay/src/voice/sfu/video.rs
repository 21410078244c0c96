//! Video through the SFU (screen share or camera), sans-IO: each participant may publish one
//! video stream and watch one other participant's on their single video slot. A viewer
//! that starts watching (or switches) gets nothing until the publisher's next keyframe —
//! a decoder cannot start mid-GOP — and the publisher is asked for one at once (RTCP PLI),
//! at most once per `KEYFRAME_GAP_MS` however many viewers ask. The slot keeps one SSRC;
//! at each switch its sequence numbers continue by one and its timestamp by one frame, so
//! the viewer's jitter buffer sees one stream. Bounded by the room size.
//! Keyframes are VP8's (`vp8_keyframe_start`); `KEYFRAME_GAP_MS` is 500. Viewers' PLI/FIR
//! reach the application through `concord_media::keyframe`. Unit-tested.

use std::collections::HashMap;

use concord_proto::Id;

/// The least time between two keyframe requests to one publisher: a keyframe costs several
/// ordinary frames of bandwidth, and a room of viewers joining at once needs only one.
pub const KEYFRAME_GAP_MS: i64 = 500;
/// The timestamp step across a source switch: one frame at 30 fps on the 90 kHz clock.
const FRAME_TS: u32 = 3_000;

/// One packet to one viewer: the rewritten header fields of their slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoForward {
    pub viewer: Id,
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
}

/// What a packet or a watch change asks the session to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct VideoActions {
    pub forwards: Vec<VideoForward>,
    /// Ask this publisher for a keyframe (PLI).
    pub keyframe_request: Option<Id>,
}

#[derive(Debug, Clone, Copy)]
struct Viewer {
    ssrc: u32,
    watching: Option<Id>,
    /// Dropping the source's packets until a keyframe starts.
    waiting: bool,
    /// Last sequence number and timestamp sent on the slot (None before the first packet).
    last: Option<(u16, u32)>,
    /// The current source's mapping: out = in + offset.
    seq_offset: u16,
    ts_offset: u32,
}

#[derive(Debug, Default)]
pub struct VideoRouter {
    viewers: HashMap<Id, Viewer>,
    /// Publisher → when a keyframe was last asked of them (ms).
    asked: HashMap<Id, i64>,
}

impl VideoRouter {
    /// A participant's video slot (`ssrc`), watching nobody yet.
    pub fn add_viewer(&mut self, id: Id, ssrc: u32) {
        self.viewers.insert(
            id,
            Viewer {
                ssrc,
                watching: None,
                waiting: false,
                last: None,
                seq_offset: 0,
                ts_offset: 0,
            },
        );
    }

    /// The participant left: their slot goes; whoever watched them waits for a keyframe
    /// (they may come back, e.g. after a failover, with a new stream).
    pub fn remove(&mut self, id: Id) {
        self.viewers.remove(&id);
        self.asked.remove(&id);
        for v in self.viewers.values_mut() {
            if v.watching == Some(id) {
                v.waiting = true;
            }
        }
    }

    /// Whom `viewer` watches.
    pub fn watching(&self, viewer: Id) -> Option<Id> {
        self.viewers.get(&viewer).and_then(|v| v.watching)
    }

    /// How many viewers watch `publisher`.
    pub fn viewers_of(&self, publisher: Id) -> usize {
        self.viewers
            .values()
            .filter(|v| v.watching == Some(publisher))
            .count()
    }

    /// `viewer` watches `target` (None: stops watching). Returns the publisher to ask for a
    /// keyframe, if it is time to ask. Unknown viewers and watching oneself are ignored
    /// (the API refuses both before this).
    pub fn watch(&mut self, viewer: Id, target: Option<Id>, now_ms: i64) -> Option<Id> {
        if target == Some(viewer) {
            return None;
        }
        let v = self.viewers.get_mut(&viewer)?;
        if v.watching == target {
            return None;
        }
        v.watching = target;
        v.waiting = target.is_some();
        self.ask(target?, now_ms)
    }

    /// The viewer's decoder asked for a keyframe (its PLI or FIR on the slot).
    pub fn viewer_wants_keyframe(&mut self, viewer: Id, now_ms: i64) -> Option<Id> {
        let target = self.viewers.get(&viewer)?.watching?;
        self.ask(target, now_ms)
    }

    fn ask(&mut self, publisher: Id, now_ms: i64) -> Option<Id> {
        if let Some(&at) = self.asked.get(&publisher)
            && now_ms - at < KEYFRAME_GAP_MS
        {
            return None;
        }
        self.asked.insert(publisher, now_ms);
        Some(publisher)
    }

    /// One packet of `from`'s video: where it goes, and whether to ask `from` again for the
    /// keyframe some viewer still waits for (the first request may have been lost).
    pub fn on_packet(
        &mut self,
        from: Id,
        seq: u16,
        timestamp: u32,
        keyframe_start: bool,
        now_ms: i64,
    ) -> VideoActions {
        let mut out = VideoActions::default();
        let mut still_waiting = false;
        for (&id, v) in self.viewers.iter_mut() {
            if v.watching != Some(from) {
                continue;
            }
            if v.waiting {
                if !keyframe_start {
                    still_waiting = true;
                    continue;
                }
                v.waiting = false;
                // Continue the slot's stream from where it was (any offset for the first).
                let (next_seq, next_ts) = match v.last {
                    Some((s, t)) => (s.wrapping_add(1), t.wrapping_add(FRAME_TS)),
                    None => (seq, timestamp),
                };
                v.seq_offset = next_seq.wrapping_sub(seq);
                v.ts_offset = next_ts.wrapping_sub(timestamp);
            }
            let (s, t) = (
                seq.wrapping_add(v.seq_offset),
                timestamp.wrapping_add(v.ts_offset),
            );
            // Only forward progress moves `last` (a reordered packet must not rewind it).
            if v.last.is_none_or(|(ls, _)| (s.wrapping_sub(ls) as i16) > 0) {
                v.last = Some((s, t));
            }
            out.forwards.push(VideoForward {
                viewer: id,
                ssrc: v.ssrc,
                seq: s,
                timestamp: t,
            });
        }
        if still_waiting {
            out.keyframe_request = self.ask(from, now_ms);
        }
        out
    }
}

/// Whether a VP8 RTP payload (RFC 7741) starts a keyframe: the first packet of a partition
/// (S = 1, PID = 0) whose VP8 frame header has P = 0.
pub fn vp8_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let (extended, start, partition) = (first & 0x80 != 0, first & 0x10 != 0, first & 0x07);
    if !start || partition != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&x) = payload.get(at) else {
            return false;
        };
        at += 1;
        if x & 0x80 != 0 {
            // PictureID: one byte, or two when its M bit is set.
            let Some(&pid) = payload.get(at) else {
                return false;
            };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    payload.get(at).is_some_and(|&b| b & 0x01 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: i64) -> Id {
        Id(n)
    }

    fn room() -> VideoRouter {
        let mut r = VideoRouter::default();
        for (n, ssrc) in [(1, 100), (2, 200), (3, 300)] {
            r.add_viewer(id(n), ssrc);
        }
        r
    }

    #[test]
    fn a_new_viewer_asks_for_a_keyframe_and_gets_nothing_before_it() {
        let mut r = room();
        assert_eq!(r.watch(id(2), Some(id(1)), 0), Some(id(1)));
        // Mid-GOP packets are held back; the request is not repeated within the gap.
        let a = r.on_packet(id(1), 10, 9_000, false, 100);
        assert!(a.forwards.is_empty());
        assert_eq!(a.keyframe_request, None);
        // Past the gap and still without a keyframe: asked again (a PLI may be lost).
        let a = r.on_packet(id(1), 11, 9_000, false, 600);
        assert_eq!(a.keyframe_request, Some(id(1)));
        // The keyframe opens the stream, and what follows flows on.
        let a = r.on_packet(id(1), 12, 12_000, true, 650);
        assert_eq!(
            a.forwards,
            vec![VideoForward {
                viewer: id(2),
                ssrc: 200,
                seq: 12,
                timestamp: 12_000
            }]
        );
        assert_eq!(a.keyframe_request, None);
        let a = r.on_packet(id(1), 13, 12_000, false, 660);
        assert_eq!(a.forwards.len(), 1);
        assert_eq!(a.forwards[0].seq, 13);
    }

    #[test]
    fn viewers_joining_together_cause_one_keyframe_request() {
        let mut r = room();
        assert_eq!(r.watch(id(2), Some(id(1)), 0), Some(id(1)));
        assert_eq!(r.watch(id(3), Some(id(1)), 100), None);
        assert_eq!(r.viewers_of(id(1)), 2);
        let a = r.on_packet(id(1), 5, 0, true, 200);
        assert_eq!(a.forwards.len(), 2);
        // A viewer's own PLI is passed on, within the same limit.
        assert_eq!(r.viewer_wants_keyframe(id(3), 300), None);
        assert_eq!(r.viewer_wants_keyframe(id(3), 800), Some(id(1)));
        assert_eq!(r.viewer_wants_keyframe(id(1), 900), None, "watches nobody");
    }

    #[test]
    fn switching_source_continues_the_slot_stream() {
        let mut r = room();
        r.watch(id(3), Some(id(1)), 0);
        r.on_packet(id(1), 1_000, 50_000, true, 10);
        let last = r.on_packet(id(1), 1_001, 53_000, false, 40).forwards[0];
        assert_eq!(r.watch(id(3), Some(id(2)), 50), Some(id(2)));
        // The old source no longer reaches the viewer; the new one waits for its keyframe.
        assert!(
            r.on_packet(id(1), 1_002, 56_000, true, 60)
                .forwards
                .is_empty()
        );
        assert!(r.on_packet(id(2), 7, 1, false, 70).forwards.is_empty());
        let first = r.on_packet(id(2), 8, 4, true, 80).forwards[0];
        assert_eq!(first.ssrc, last.ssrc);
        assert_eq!(first.seq, last.seq.wrapping_add(1));
        assert_eq!(first.timestamp, last.timestamp.wrapping_add(FRAME_TS));
        let next = r.on_packet(id(2), 9, 3_004, false, 90).forwards[0];
        assert_eq!(next.seq, first.seq.wrapping_add(1));
        assert_eq!(next.timestamp, first.timestamp.wrapping_add(3_000));
    }

    #[test]
    fn nobody_watches_oneself_and_stopping_stops() {
        let mut r = room();
        assert_eq!(r.watch(id(1), Some(id(1)), 0), None);
        assert!(r.on_packet(id(1), 1, 0, true, 0).forwards.is_empty());
        r.watch(id(2), Some(id(1)), 0);
        assert_eq!(r.on_packet(id(1), 2, 0, true, 10).forwards.len(), 1);
        assert_eq!(r.watch(id(2), None, 20), None);
        assert!(r.on_packet(id(1), 3, 0, true, 30).forwards.is_empty());
        assert_eq!(r.watch(id(9), Some(id(1)), 0), None, "not in the room");
    }

    #[test]
    fn a_publisher_who_leaves_and_returns_is_resumed_from_a_keyframe() {
        let mut r = room();
        r.watch(id(2), Some(id(1)), 0);
        r.on_packet(id(1), 1, 0, true, 0);
        r.remove(id(1));
        assert_eq!(r.watching(id(2)), Some(id(1)));
        r.add_viewer(id(1), 111);
        // Its new stream starts anywhere; nothing until its keyframe, then continuous.
        assert!(
            r.on_packet(id(1), 40_000, 7, false, 600)
                .forwards
                .is_empty()
        );
        let f = r.on_packet(id(1), 40_001, 9, true, 700).forwards[0];
        assert_eq!((f.seq, f.timestamp), (2, FRAME_TS));
    }

    #[test]
    fn vp8_keyframes_are_told_from_other_frames() {
        // No extension: S=1 PID=0, then a frame header with P=0 (key) or P=1 (inter).
        assert!(vp8_keyframe_start(&[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        assert!(!vp8_keyframe_start(&[0x10, 0x01]));
        // Not the start of a partition, or not partition 0.
        assert!(!vp8_keyframe_start(&[0x00, 0x00]));
        assert!(!vp8_keyframe_start(&[0x11, 0x00]));
        // X with a 15-bit PictureID, TL0PICIDX and TID (as Chromium sends): 5 bytes before.
        assert!(vp8_keyframe_start(&[
            0x90, 0xe0, 0x81, 0x23, 0x05, 0x40, 0x00
        ]));
        assert!(!vp8_keyframe_start(&[
            0x90, 0xe0, 0x81, 0x23, 0x05, 0x40, 0x01
        ]));
        // X with a 7-bit PictureID only.
        assert!(vp8_keyframe_start(&[0x90, 0x80, 0x05, 0x00]));
        // Truncated: never a keyframe, never a panic.
        for bad in [&[][..], &[0x90], &[0x90, 0x80], &[0x90, 0xe0, 0x81]] {
            assert!(!vp8_keyframe_start(bad));
        }
    }
}
