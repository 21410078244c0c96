//! Property: a shuffled live stream with duplicates and losses (plus gossip copies), applied
//! through the catch-up loop of docs/protocols/gateway.md, ends in the same state as the
//! relay's log applied in order.

use std::collections::{BTreeSet, HashMap};

use concord_proto::Id;
use concord_proto::model::{EventKind, Message, MessageDeleted, ReactionEvent};
use proptest::prelude::*;
use serde_json::Value;

use super::tests::{cache, envelope, message};
use super::{Applied, Cache};

const WORDS: [&str; 6] = ["alpha", "alps", "beta", "bet", "gamma", "delta"];
const CHANNELS: i64 = 2;
const PAGE: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Create {
        ch: i64,
        words: Vec<usize>,
    },
    Edit {
        ch: i64,
        pick: usize,
        words: Vec<usize>,
    },
    Delete {
        ch: i64,
        pick: usize,
    },
    React {
        ch: i64,
        pick: usize,
        user: i64,
        emoji: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let ch = 1..=CHANNELS;
    let words = prop::collection::vec(0..WORDS.len(), 1..4);
    prop_oneof![
        3 => (ch.clone(), words.clone()).prop_map(|(ch, words)| Op::Create { ch, words }),
        1 => (ch.clone(), any::<usize>(), words).prop_map(|(ch, pick, words)| Op::Edit { ch, pick, words }),
        1 => (ch.clone(), any::<usize>()).prop_map(|(ch, pick)| Op::Delete { ch, pick }),
        2 => (ch, any::<usize>(), 1..3i64, 0..2usize)
            .prop_map(|(ch, pick, user, emoji)| Op::React { ch, pick, user, emoji }),
    ]
}

/// One channel event: where it belongs and what the gateway would carry.
#[derive(Debug, Clone)]
struct Event {
    channel: i64,
    seq: i64,
    kind: EventKind,
    data: Value,
}

/// A message as the relay holds it.
struct Sent {
    message: Message,
    deleted: bool,
    /// (user, emoji index)
    reactions: BTreeSet<(i64, usize)>,
}

/// The relay: turns ops into events, keeps the (redacted) log that catch-up reads.
#[derive(Default)]
struct Relay {
    /// In the order the relay produced them, as pushed live.
    live: Vec<Event>,
    /// Per channel, as catch-up returns them (earlier entries of deleted messages redacted).
    log: HashMap<i64, Vec<Event>>,
    messages: Vec<Sent>,
    next_id: i64,
}

impl Relay {
    fn run(ops: &[Op]) -> Relay {
        let mut r = Relay {
            next_id: 100,
            ..Relay::default()
        };
        for op in ops {
            r.step(op);
        }
        r
    }

    fn next_seq(&self, ch: i64) -> i64 {
        self.log.get(&ch).map_or(0, Vec::len) as i64 + 1
    }

    fn push(&mut self, ch: i64, kind: EventKind, data: Value) {
        let seq = data["seq"].as_i64().unwrap();
        let e = Event {
            channel: ch,
            seq,
            kind,
            data,
        };
        self.live.push(e.clone());
        self.log.entry(ch).or_default().push(e);
    }

    /// Index of a live (not deleted) message of the channel.
    fn pick(&self, ch: i64, pick: usize) -> Option<usize> {
        let live: Vec<usize> = (0..self.messages.len())
            .filter(|&i| self.messages[i].message.channel_id == Id(ch) && !self.messages[i].deleted)
            .collect();
        (!live.is_empty()).then(|| live[pick % live.len()])
    }

    fn step(&mut self, op: &Op) {
        let text = |words: &[usize]| {
            words
                .iter()
                .map(|w| WORDS[*w])
                .collect::<Vec<_>>()
                .join(" ")
        };
        match op {
            Op::Create { ch, words } => {
                self.next_id += 1;
                let m = message(*ch, self.next_id, self.next_seq(*ch), &text(words));
                self.push(
                    *ch,
                    EventKind::MessageCreate,
                    serde_json::to_value(&m).unwrap(),
                );
                self.messages.push(Sent {
                    message: m,
                    deleted: false,
                    reactions: BTreeSet::new(),
                });
            }
            Op::Edit { ch, pick, words } => {
                let Some(i) = self.pick(*ch, *pick) else {
                    return;
                };
                let seq = self.next_seq(*ch);
                let m = &mut self.messages[i].message;
                m.content = text(words);
                m.edited_at = Some(m.created_at + seq);
                m.mentions = vec![Id(seq)];
                let data = serde_json::to_value(Message { seq, ..m.clone() }).unwrap();
                self.push(*ch, EventKind::MessageUpdate, data);
            }
            Op::Delete { ch, pick } => {
                let Some(i) = self.pick(*ch, *pick) else {
                    return;
                };
                self.messages[i].deleted = true;
                self.messages[i].reactions.clear();
                let m = self.messages[i].message.clone();
                for e in self.log.get_mut(ch).unwrap() {
                    let redact =
                        matches!(e.kind, EventKind::MessageCreate | EventKind::MessageUpdate)
                            && e.data["id"] == serde_json::to_value(m.id).unwrap();
                    if redact {
                        let redacted = Message {
                            content: String::new(),
                            mentions: vec![],
                            deleted: true,
                            seq: e.seq,
                            ..m.clone()
                        };
                        e.data = serde_json::to_value(redacted).unwrap();
                    }
                }
                let d = MessageDeleted {
                    id: m.id,
                    channel_id: m.channel_id,
                    guild_id: None,
                    seq: self.next_seq(*ch),
                };
                self.push(
                    *ch,
                    EventKind::MessageDelete,
                    serde_json::to_value(d).unwrap(),
                );
            }
            Op::React {
                ch,
                pick,
                user,
                emoji,
            } => {
                let Some(i) = self.pick(*ch, *pick) else {
                    return;
                };
                let add = self.messages[i].reactions.insert((*user, *emoji));
                if !add {
                    self.messages[i].reactions.remove(&(*user, *emoji));
                }
                let e = ReactionEvent {
                    channel_id: Id(*ch),
                    guild_id: None,
                    message_id: self.messages[i].message.id,
                    user_id: Id(*user),
                    emoji: ["👍", "🎉"][*emoji].into(),
                    seq: self.next_seq(*ch),
                };
                let kind = if add {
                    EventKind::ReactionAdd
                } else {
                    EventKind::ReactionRemove
                };
                self.push(*ch, kind, serde_json::to_value(e).unwrap());
            }
        }
    }
}

/// Pages the relay's log after the cursor, then applies the buffered live events that are
/// still ahead of it, in seq order.
fn catch_up(c: &mut Cache, relay: &Relay, ch: i64, buffered: &mut Vec<Event>) {
    let log = relay.log.get(&ch).map_or(&[][..], Vec::as_slice);
    loop {
        let have = c.cursor(Id(ch)).unwrap();
        let page: Vec<&Event> = log.iter().filter(|e| e.seq > have).take(PAGE).collect();
        let answers = c
            .apply_events(page.iter().map(|e| (e.kind, &e.data)))
            .unwrap();
        assert!(answers.iter().all(|a| *a == Applied::Applied));
        if page.len() < PAGE {
            break;
        }
    }
    let (mut mine, rest): (Vec<Event>, Vec<Event>) =
        buffered.drain(..).partition(|e| e.channel == ch);
    *buffered = rest;
    mine.sort_by_key(|e| e.seq);
    for e in mine {
        let a = c.apply_event(e.kind, &e.data).unwrap();
        assert!(!matches!(a, Applied::Gap { .. }), "no gap after catch-up");
    }
}

/// Everything the cache holds about messages, without local row ids and receive times.
#[derive(Debug, PartialEq)]
struct Dump {
    messages: Vec<String>,
    reactions: Vec<String>,
    cursors: Vec<String>,
    /// Ids found by searching each word.
    searches: Vec<Vec<Option<Id>>>,
}

fn dump(c: &Cache) -> Dump {
    let rows = |sql: &str| -> Vec<String> {
        let mut stmt = c.conn.prepare(sql).unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    c.conn
        .execute(
            "INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')",
            [],
        )
        .unwrap();
    let messages = rows(
        "SELECT json_array(id, channel_id, author, device, nonce, content, search_text, reply_to, \
         mentions, created_at, edited_at, seq, deleted) FROM messages ORDER BY id, nonce",
    );
    let reactions = rows("SELECT json_array(message_id, emoji, user_id) FROM reactions ORDER BY 1");
    let cursors = rows("SELECT json_array(channel_id, seq) FROM cursors ORDER BY channel_id");
    let searches = WORDS
        .iter()
        .map(|w| {
            let mut ids: Vec<Option<Id>> = c.search(w, 500).unwrap().iter().map(|m| m.id).collect();
            ids.sort();
            ids
        })
        .collect();
    Dump {
        messages,
        reactions,
        cursors,
        searches,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn shuffled_stream_with_catch_up_matches_in_order(
        ops in prop::collection::vec(op(), 1..40),
        // Per live event: sort key (the shuffle), copies delivered (0 = lost), gossip copy.
        delivery in prop::collection::vec((any::<u16>(), 0..3usize, any::<bool>()), 40),
    ) {
        let relay = Relay::run(&ops);

        let mut reference = cache();
        for e in &relay.live {
            prop_assert_eq!(reference.apply_event(e.kind, &e.data).unwrap(), Applied::Applied);
        }

        enum Item<'a> {
            Live(&'a Event),
            Gossip(&'a Event),
        }
        let mut items: Vec<(u16, usize, Item)> = Vec::new();
        for (i, e) in relay.live.iter().enumerate() {
            let (key, copies, gossip) = delivery[i % delivery.len()];
            for copy in 0..copies {
                items.push((key.wrapping_add(copy as u16 * 7919), i, Item::Live(e)));
            }
            if gossip && e.kind == EventKind::MessageCreate {
                items.push((key.rotate_left(5), i, Item::Gossip(e)));
            }
        }
        items.sort_by_key(|(key, i, _)| (*key, *i));

        let mut c = cache();
        let mut buffered = Vec::new();
        for (n, (_, _, item)) in items.iter().enumerate() {
            match item {
                Item::Gossip(e) => {
                    let m: Message = serde_json::from_value(e.data.clone()).unwrap();
                    let env = envelope(m.channel_id.0, &m.nonce, &m.content);
                    c.insert_unconfirmed(&env, None, n as i64).unwrap();
                }
                Item::Live(e) => {
                    if let Applied::Gap { .. } = c.apply_event(e.kind, &e.data).unwrap() {
                        buffered.push((*e).clone());
                        catch_up(&mut c, &relay, e.channel, &mut buffered);
                    }
                }
            }
        }
        // Reconnect: catch up every channel.
        for ch in 1..=CHANNELS {
            catch_up(&mut c, &relay, ch, &mut buffered);
        }
        prop_assert_eq!(dump(&c), dump(&reference));
    }
}
