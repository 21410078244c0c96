use concord_proto::Id;
use concord_proto::gateway::ReadyGuild;
use concord_proto::model::{
    Channel, ChannelKind, EventKind, Guild, Message, MessageDeleted, ReactionCount, ReactionEvent,
    Role, User,
};
use concord_proto::permissions::Permissions;
use concord_proto::signed::Envelope;
use serde_json::{Value, json};

use super::*;

pub(super) const DEVICE: &str = "dev-a";
const T0: i64 = 1_750_000_000_000;

pub(super) fn cache() -> Cache {
    Cache::open_in_memory(CacheLimits::default()).unwrap()
}

pub(super) fn message(channel: i64, id: i64, seq: i64, content: &str) -> Message {
    Message {
        id: Id(id),
        channel_id: Id(channel),
        guild_id: None,
        author: Id(7),
        device: DEVICE.into(),
        nonce: format!("n{id}"),
        content: content.into(),
        created_at: T0 + id,
        edited_at: None,
        seq,
        reply_to: None,
        mentions: vec![],
        reactions: vec![],
        deleted: false,
    }
}

pub(super) fn create(c: &mut Cache, m: &Message) -> Applied {
    c.apply_event(EventKind::MessageCreate, &serde_json::to_value(m).unwrap())
        .unwrap()
}

fn edit(c: &mut Cache, m: &Message, seq: i64, content: &str) -> Applied {
    let mut m = m.clone();
    m.seq = seq;
    m.content = content.into();
    m.edited_at = Some(T0 + 1_000_000);
    c.apply_event(EventKind::MessageUpdate, &serde_json::to_value(m).unwrap())
        .unwrap()
}

fn delete(c: &mut Cache, m: &Message, seq: i64) -> Applied {
    let d = MessageDeleted {
        id: m.id,
        channel_id: m.channel_id,
        guild_id: None,
        seq,
    };
    c.apply_event(EventKind::MessageDelete, &serde_json::to_value(d).unwrap())
        .unwrap()
}

fn react(c: &mut Cache, m: &Message, seq: i64, user: i64, emoji: &str, add: bool) -> Applied {
    let e = ReactionEvent {
        channel_id: m.channel_id,
        guild_id: None,
        message_id: m.id,
        user_id: Id(user),
        emoji: emoji.into(),
        seq,
    };
    let kind = if add {
        EventKind::ReactionAdd
    } else {
        EventKind::ReactionRemove
    };
    c.apply_event(kind, &serde_json::to_value(e).unwrap())
        .unwrap()
}

pub(super) fn envelope(channel: i64, nonce: &str, content: &str) -> Envelope {
    Envelope {
        channel_id: Id(channel),
        device_key: DEVICE.into(),
        nonce: nonce.into(),
        content: content.into(),
        reply_to: None,
        created_at: T0,
        signature: "unchecked".into(),
    }
}

fn contents(page: &[CachedMessage]) -> Vec<&str> {
    page.iter().map(|m| m.content.as_str()).collect()
}

fn channel(id: i64, guild: Option<i64>, position: i64) -> Channel {
    Channel {
        id: Id(id),
        guild_id: guild.map(Id),
        kind: if guild.is_some() {
            ChannelKind::Text
        } else {
            ChannelKind::Dm
        },
        name: format!("c{id}"),
        topic: None,
        position,
        private: false,
        slowmode_secs: 0,
        overwrites: vec![],
        last_seq: 0,
        recipients: vec![],
    }
}

fn ready_guild(id: i64, channels: &[i64]) -> ReadyGuild {
    ReadyGuild {
        guild: Guild {
            id: Id(id),
            name: format!("g{id}"),
            owner_id: Id(7),
            created_at: T0,
        },
        channels: channels
            .iter()
            .enumerate()
            .map(|(i, c)| channel(*c, Some(id), i as i64))
            .collect(),
        roles: vec![
            Role {
                id: Id(id),
                guild_id: Id(id),
                name: "@everyone".into(),
                permissions: Permissions(1),
                position: 0,
            },
            Role {
                id: Id(id + 1),
                guild_id: Id(id),
                name: "mod".into(),
                permissions: Permissions(3),
                position: 1,
            },
        ],
        my_roles: vec![Id(id + 1)],
        voice_states: Vec::new(),
    }
}

fn me() -> User {
    User {
        id: Id(7),
        username: "ana".into(),
    }
}

#[test]
fn fts5_is_built_in_and_schema_is_current() {
    let c = cache();
    let fts5: i64 = c
        .conn
        .query_row("SELECT sqlite_compileoption_used('ENABLE_FTS5')", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fts5, 1);
    let version: i64 = c
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::MIGRATIONS.last().unwrap().0);
    let fk: i64 = c
        .conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
}

#[test]
fn migrations_list_matches_directory() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/node");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert_eq!(files.len(), schema::MIGRATIONS.len());
    for (path, (version, sql)) in files.iter().zip(schema::MIGRATIONS) {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name[..4].parse::<i64>().unwrap(), *version, "{name}");
        assert_eq!(&std::fs::read_to_string(path).unwrap(), sql, "{name}");
    }
}

#[test]
fn file_cache_is_private_wal_and_refuses_newer_schema() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.db");
    {
        let mut c = Cache::open(&path, CacheLimits::default()).unwrap();
        c.set_setting("relay_url", "https://relay.example").unwrap();
        let mode: String = c
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        for suffix in ["", "-wal", "-shm"] {
            let p = dir.path().join(format!("cache.db{suffix}"));
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }
    // An existing file with loose permissions is tightened.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = Cache::open(&path, CacheLimits::default()).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        c.setting("relay_url").unwrap().as_deref(),
        Some("https://relay.example")
    );
    c.conn.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    assert!(matches!(
        Cache::open(&path, CacheLimits::default()),
        Err(CacheError::TooNew { found: 99, .. })
    ));
    // Not a database at all.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    assert!(matches!(
        Cache::open(&junk, CacheLimits::default()),
        Err(CacheError::Corrupt(_))
    ));
}

#[test]
fn settings() {
    let mut c = cache();
    assert_eq!(c.setting("relay_only").unwrap(), None);
    c.set_setting("relay_only", "true").unwrap();
    c.set_setting("relay_only", "false").unwrap();
    assert_eq!(c.setting("relay_only").unwrap().as_deref(), Some("false"));
    c.remove_setting("relay_only").unwrap();
    assert_eq!(c.setting("relay_only").unwrap(), None);
}

#[test]
fn events_apply_once_and_in_order() {
    let mut c = cache();
    let m1 = message(1, 101, 1, "one");
    let m2 = message(1, 102, 2, "two");
    let m3 = message(1, 103, 3, "three");
    assert_eq!(c.cursor(Id(1)).unwrap(), 0);
    assert_eq!(create(&mut c, &m1), Applied::Applied);
    assert_eq!(create(&mut c, &m1), Applied::Duplicate);
    assert_eq!(create(&mut c, &m3), Applied::Gap { have: 1, got: 3 });
    assert_eq!(c.cursor(Id(1)).unwrap(), 1);
    assert_eq!(contents(&c.history(Id(1), None, 10).unwrap()), ["one"]);
    assert_eq!(create(&mut c, &m2), Applied::Applied);
    assert_eq!(create(&mut c, &m3), Applied::Applied);
    assert_eq!(create(&mut c, &m2), Applied::Duplicate);
    assert_eq!(c.cursor(Id(1)).unwrap(), 3);
    assert_eq!(
        contents(&c.history(Id(1), None, 10).unwrap()),
        ["one", "two", "three"]
    );
    // Channels are independent; a channel the cache has no row for still applies.
    assert_eq!(
        create(&mut c, &message(2, 201, 1, "other")),
        Applied::Applied
    );
    assert_eq!(c.cursor(Id(2)).unwrap(), 1);
    assert_eq!(c.cursor(Id(1)).unwrap(), 3);
}

#[test]
fn batches_answer_per_event() {
    let mut c = cache();
    let events: Vec<Value> = [(1, "a"), (2, "b"), (2, "b"), (4, "d"), (3, "c")]
        .iter()
        .map(|(seq, text)| serde_json::to_value(message(1, 100 + seq, *seq, text)).unwrap())
        .collect();
    let answers = c
        .apply_events(events.iter().map(|e| (EventKind::MessageCreate, e)))
        .unwrap();
    assert_eq!(
        answers,
        [
            Applied::Applied,
            Applied::Applied,
            Applied::Duplicate,
            Applied::Gap { have: 2, got: 4 },
            Applied::Applied
        ]
    );
    assert_eq!(c.cursor(Id(1)).unwrap(), 3);
}

#[test]
fn malformed_events_change_nothing() {
    let mut c = cache();
    create(&mut c, &message(1, 101, 1, "one"));
    let bad = [
        (
            EventKind::MessageCreate,
            json!({"channel_id": "1", "seq": 2}),
        ),
        (EventKind::ReactionAdd, json!("nope")),
        (
            EventKind::MessageCreate,
            serde_json::to_value(message(1, 102, 0, "zero")).unwrap(),
        ),
    ];
    for (kind, data) in bad {
        assert!(matches!(
            c.apply_event(kind, &data),
            Err(CacheError::BadEvent { .. })
        ));
    }
    // A bad event in a batch rolls the whole batch back.
    let good = serde_json::to_value(message(1, 102, 2, "two")).unwrap();
    let bad = json!({});
    assert!(
        c.apply_events([
            (EventKind::MessageCreate, &good),
            (EventKind::MessageDelete, &bad)
        ])
        .is_err()
    );
    assert_eq!(c.cursor(Id(1)).unwrap(), 1);
    assert_eq!(c.history(Id(1), None, 10).unwrap().len(), 1);
}

#[test]
fn unconfirmed_message_is_confirmed_in_place() {
    let mut c = cache();
    let env = envelope(1, "n101", "hello there");
    assert!(c.insert_unconfirmed(&env, None, T0 + 5).unwrap());
    assert!(!c.insert_unconfirmed(&env, None, T0 + 6).unwrap());
    let page = c.history(Id(1), None, 10).unwrap();
    assert_eq!(page.len(), 1);
    assert!(!page[0].confirmed);
    assert_eq!((page[0].id, page[0].seq), (None, None));
    assert_eq!(c.search("hello", 10).unwrap().len(), 1);

    let m = message(1, 101, 1, "hello there");
    assert_eq!(create(&mut c, &m), Applied::Applied);
    let page = c.history(Id(1), None, 10).unwrap();
    assert_eq!(page.len(), 1, "one row, not two");
    assert!(page[0].confirmed);
    assert_eq!(page[0].id, Some(Id(101)));
    assert_eq!(page[0].seq, Some(1));
    assert_eq!(page[0].author, Some(Id(7)));
    assert_eq!(c.search("hello", 10).unwrap().len(), 1);
    // Gossip arriving after the confirmation adds nothing.
    assert!(!c.insert_unconfirmed(&env, None, T0 + 7).unwrap());
    assert_eq!(c.history(Id(1), None, 10).unwrap().len(), 1);
}

#[test]
fn redacted_create_leaves_a_tombstone() {
    let mut c = cache();
    let mut m = message(1, 101, 1, "");
    m.deleted = true;
    assert_eq!(create(&mut c, &m), Applied::Applied);
    assert!(c.history(Id(1), None, 10).unwrap().is_empty());
    // A late gossip copy of the deleted message does not come back.
    assert!(
        !c.insert_unconfirmed(&envelope(1, "n101", "secret"), None, T0)
            .unwrap()
    );
    assert!(c.history(Id(1), None, 10).unwrap().is_empty());
    assert!(c.search("secret", 10).unwrap().is_empty());
}

#[test]
fn edits_deletes_and_reactions() {
    let mut c = cache();
    let m = message(1, 101, 1, "first draft");
    let other = message(1, 102, 2, "bystander");
    create(&mut c, &m);
    create(&mut c, &other);
    let mut mentioned = m.clone();
    mentioned.mentions = vec![Id(9)];
    mentioned.seq = 3;
    mentioned.content = "final words".into();
    mentioned.edited_at = Some(T0 + 50);
    assert_eq!(
        c.apply_event(
            EventKind::MessageUpdate,
            &serde_json::to_value(&mentioned).unwrap()
        )
        .unwrap(),
        Applied::Applied
    );
    let got = &c.history(Id(1), None, 10).unwrap()[0];
    assert_eq!(got.content, "final words");
    assert_eq!(got.edited_at, Some(T0 + 50));
    assert_eq!(got.mentions, [Id(9)]);
    assert_eq!(got.seq, Some(1), "an edit keeps the create's seq");
    assert!(c.search("draft", 10).unwrap().is_empty());
    assert_eq!(c.search("final", 10).unwrap().len(), 1);

    assert_eq!(react(&mut c, &m, 4, 1, "👍", true), Applied::Applied);
    react(&mut c, &m, 5, 2, "👍", true);
    react(&mut c, &m, 6, 2, "🎉", true);
    react(&mut c, &m, 7, 2, "👍", false);
    let got = &c.history(Id(1), None, 10).unwrap()[0];
    assert_eq!(
        got.reactions,
        [
            ReactionCount {
                emoji: "🎉".into(),
                count: 1,
                me: false,
            },
            ReactionCount {
                emoji: "👍".into(),
                count: 1,
                me: false,
            }
        ]
    );

    assert_eq!(delete(&mut c, &m, 8), Applied::Applied);
    assert_eq!(
        contents(&c.history(Id(1), None, 10).unwrap()),
        ["bystander"]
    );
    assert!(c.search("final", 10).unwrap().is_empty());
    let reactions: i64 = c
        .conn
        .query_row("SELECT count(*) FROM reactions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(reactions, 0);
    // The deleted content is gone from the row and from the index, which stays consistent.
    let content: String = c
        .conn
        .query_row(
            "SELECT content || search_text FROM messages WHERE id = 101",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(content, "");
    let in_fts: i64 = c
        .conn
        .query_row(
            "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'final OR words OR first'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(in_fts, 0);
    c.conn
        .execute(
            "INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')",
            [],
        )
        .unwrap();
    // Events about a message the cache does not hold still advance the cursor.
    let gone = message(1, 999, 9, "never seen");
    assert_eq!(react(&mut c, &gone, 9, 1, "👍", true), Applied::Applied);
    assert_eq!(edit(&mut c, &gone, 10, "edited"), Applied::Applied);
    assert_eq!(c.cursor(Id(1)).unwrap(), 10);
    assert_eq!(c.history(Id(1), None, 10).unwrap().len(), 1);
}

#[test]
fn search_matches_every_term_and_a_prefix() {
    let mut c = cache();
    let texts = [
        "Hello world, how are you?",
        "hello there",
        "World peace",
        "café au lait",
        "NOT a keyword AND never NEAR",
        "mail user@Example.com",
    ];
    for (i, t) in texts.iter().enumerate() {
        create(
            &mut c,
            &message(1 + i as i64 % 2, 101 + i as i64, 1 + i as i64 / 2, t),
        );
    }
    let found = |c: &Cache, q: &str| {
        let mut v: Vec<String> = c
            .search(q, 10)
            .unwrap()
            .into_iter()
            .map(|m| m.content)
            .collect();
        v.sort();
        v
    };
    assert_eq!(found(&c, "hello wor"), ["Hello world, how are you?"]);
    assert_eq!(
        found(&c, "hel"),
        ["Hello world, how are you?", "hello there"]
    );
    assert_eq!(found(&c, "WORLD, hello!"), ["Hello world, how are you?"]);
    assert_eq!(
        found(&c, "world"),
        ["Hello world, how are you?", "World peace"]
    );
    assert_eq!(found(&c, "caf"), ["café au lait"]);
    assert_eq!(found(&c, "not and near"), ["NOT a keyword AND never NEAR"]);
    assert_eq!(found(&c, "example.com"), ["mail user@Example.com"]);
    assert!(found(&c, "hello peace").is_empty());
    assert!(matches!(c.search("!!!", 10), Err(CacheError::BadQuery(_))));
    // Ranked: the message where the term weighs more comes first.
    create(&mut c, &message(1, 200, 4, "peace peace peace"));
    assert_eq!(
        c.search("peace", 10).unwrap()[0].content,
        "peace peace peace"
    );
    assert_eq!(c.search("peace", 1).unwrap().len(), 1);
}

#[test]
fn history_pages_backwards_through_everything() {
    let mut c = cache();
    let mut expected = Vec::new();
    for seq in 1..=120 {
        let m = message(1, 1000 + seq, seq, &format!("m{seq}"));
        create(&mut c, &m);
        expected.push(format!("m{seq}"));
    }
    // Deleted messages are left out; a message in another channel never shows.
    delete(&mut c, &message(1, 1000 + 7, 7, ""), 121);
    expected.retain(|t| t != "m7");
    create(&mut c, &message(2, 5000, 1, "elsewhere"));
    for (i, received) in [30, 10, 20].iter().enumerate() {
        let env = envelope(1, &format!("u{i}"), &format!("u{i}"));
        c.insert_unconfirmed(&env, Some(Id(7)), T0 + received)
            .unwrap();
    }
    // Unconfirmed messages come last, by received time.
    expected.extend(["u1", "u2", "u0"].map(String::from));

    let mut seen: Vec<String> = Vec::new();
    let mut before = None;
    loop {
        let page = c.history(Id(1), before, 50).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 50);
        before = Some(page[0].history_key());
        let mut texts: Vec<String> = page.into_iter().map(|m| m.content).collect();
        texts.extend(seen);
        seen = texts;
    }
    assert_eq!(seen, expected);
    // Pages of 2 step through the unconfirmed tail too.
    let page = c.history(Id(1), None, 2).unwrap();
    assert_eq!(contents(&page), ["u2", "u0"]);
    let page = c.history(Id(1), Some(page[0].history_key()), 2).unwrap();
    assert_eq!(contents(&page), ["m120", "u1"]);
    let page = c.history(Id(1), Some(HistoryKey::Seq(3)), 5).unwrap();
    assert_eq!(contents(&page), ["m1", "m2"]);
    assert!(c.history(Id(1), None, 0).unwrap().is_empty());
    assert_eq!(c.history(Id(1), None, 10_000).unwrap().len(), 119 + 3);
}

#[test]
fn outbox_backs_off_and_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.db");
    let now = T0;
    {
        let mut c = Cache::open(&path, CacheLimits::default()).unwrap();
        c.outbox_push(&envelope(1, "a", "first"), now).unwrap();
        c.outbox_push(&envelope(1, "b", "second"), now + 1).unwrap();
        c.outbox_push(&envelope(1, "a", "first again"), now + 2)
            .unwrap();
        assert_eq!(c.outbox_len().unwrap(), 2);
        let due = c.outbox_due(now + 1, 10).unwrap();
        assert_eq!(due.len(), 2);
        assert_eq!(due[0].envelope, envelope(1, "a", "first"));
        assert_eq!(due[0].attempts, 0);
        assert_eq!(c.outbox_due(now, 10).unwrap().len(), 1, "b is not due yet");
        c.outbox_retry_later("a", now + 10).unwrap();
    }
    let mut c = Cache::open(&path, CacheLimits::default()).unwrap();
    assert_eq!(c.outbox_len().unwrap(), 2);
    let due = c.outbox_due(now + 10, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].envelope.nonce, "b");
    let a = c.outbox_due(now + 1_000, 10).unwrap().remove(0);
    assert_eq!((a.envelope.nonce.as_str(), a.attempts), ("a", 1));
    assert!((now + 10 + 375..=now + 10 + 500).contains(&a.next_attempt_at));
    let mut at = now + 10;
    for attempt in 2..=12 {
        c.outbox_retry_later("a", at).unwrap();
        let a = c
            .outbox_due(i64::MAX, 10)
            .unwrap()
            .into_iter()
            .find(|i| i.envelope.nonce == "a")
            .unwrap();
        assert_eq!(a.attempts, attempt);
        let delay = a.next_attempt_at - at;
        let base = (500i64 << (attempt - 1).min(7)).min(60_000);
        assert!(
            (base * 3 / 4..=base).contains(&delay),
            "attempt {attempt}: {delay}"
        );
        at = a.next_attempt_at;
    }
    c.outbox_ack("a").unwrap();
    c.outbox_ack("a").unwrap();
    c.outbox_retry_later("gone", at).unwrap();
    assert_eq!(c.outbox_len().unwrap(), 1);
}

#[test]
fn retry_delays_double_up_to_a_minute_with_jitter() {
    assert!((375..=500).contains(&retry_delay_ms("x", 1)));
    assert!((750..=1_000).contains(&retry_delay_ms("x", 2)));
    assert!((1_500..=2_000).contains(&retry_delay_ms("x", 3)));
    assert!((45_000..=60_000).contains(&retry_delay_ms("x", 8)));
    assert!((45_000..=60_000).contains(&retry_delay_ms("x", u32::MAX)));
    let spread: std::collections::HashSet<i64> = (0..50)
        .map(|i| retry_delay_ms(&format!("n{i}"), 6))
        .collect();
    assert!(spread.len() > 10, "jitter spreads retries");
}

#[test]
fn outbox_is_bounded() {
    let mut c = cache();
    for i in 0..OUTBOX_MAX {
        c.outbox_push(&envelope(1, &format!("n{i}"), "x"), T0)
            .unwrap();
    }
    assert!(matches!(
        c.outbox_push(&envelope(1, "one more", "x"), T0),
        Err(CacheError::OutboxFull)
    ));
    // A retry of a queued envelope is still fine.
    c.outbox_push(&envelope(1, "n0", "x"), T0).unwrap();
}

#[test]
fn retention_keeps_the_newest_per_channel_and_never_unconfirmed() {
    let mut c = Cache::open_in_memory(CacheLimits {
        max_messages_per_channel: 10,
        max_age_days: None,
    })
    .unwrap();
    for ch in [1, 2] {
        for seq in 1..=25 {
            create(
                &mut c,
                &message(ch, ch * 1000 + seq, seq, &format!("c{ch} m{seq}")),
            );
        }
    }
    create(&mut c, &message(3, 3001, 1, "small channel"));
    let env = envelope(1, "pending", "not yet");
    c.insert_unconfirmed(&env, None, T0).unwrap();
    c.outbox_push(&env, T0).unwrap();
    assert_eq!(c.enforce_retention(T0).unwrap(), 30);
    assert_eq!(c.enforce_retention(T0).unwrap(), 0);
    let page = c.history(Id(1), None, 100).unwrap();
    assert_eq!(page.len(), 11);
    assert_eq!(page[0].seq, Some(16));
    assert_eq!(page[10].content, "not yet");
    assert_eq!(c.history(Id(3), None, 100).unwrap().len(), 1);
    assert_eq!(c.cursor(Id(1)).unwrap(), 25, "cursors do not move back");
    assert_eq!(c.outbox_len().unwrap(), 1);
    assert!(c.search("m3", 10).unwrap().is_empty());
    assert_eq!(c.search("m20", 10).unwrap().len(), 2);
}

#[test]
fn retention_by_age() {
    let day = 86_400_000;
    let now = T0 + 30 * day;
    let mut c = Cache::open_in_memory(CacheLimits {
        max_messages_per_channel: 1_000,
        max_age_days: Some(7),
    })
    .unwrap();
    for (seq, age_days) in [(1, 20), (2, 8), (3, 6), (4, 0)] {
        let id = Id::from_unix_ms(now - age_days * day).0 + 1;
        let mut m = message(1, id, seq, &format!("{age_days} days old"));
        m.created_at = now - age_days * day;
        create(&mut c, &m);
    }
    let mut old = envelope(1, "old-gossip", "unconfirmed and old");
    old.created_at = now - 20 * day;
    c.insert_unconfirmed(&old, None, now - 20 * day).unwrap();
    assert_eq!(c.enforce_retention(now).unwrap(), 2);
    assert_eq!(
        contents(&c.history(Id(1), None, 10).unwrap()),
        ["6 days old", "0 days old", "unconfirmed and old"]
    );
    // Unconfirmed messages only go when asked, and never while in the outbox.
    let mut mine = envelope(1, "mine", "still sending");
    mine.created_at = now - 20 * day;
    c.insert_unconfirmed(&mine, None, now - 20 * day).unwrap();
    c.outbox_push(&mine, now).unwrap();
    assert_eq!(c.expire_unconfirmed(now - day).unwrap(), 1);
    assert_eq!(
        contents(&c.history(Id(1), None, 10).unwrap()),
        ["6 days old", "0 days old", "still sending"]
    );
}

#[test]
fn replace_state_removes_what_vanished() {
    let mut c = cache();
    let a = ready_guild(10, &[11, 12]);
    let b = ready_guild(20, &[21]);
    let dm = channel(31, None, 0);
    c.replace_state(&me(), &[a.clone(), b], std::slice::from_ref(&dm))
        .unwrap();
    assert_eq!(c.me().unwrap(), Some(me()));
    assert_eq!(c.guilds().unwrap().len(), 2);
    assert_eq!(c.guild(Id(10)).unwrap(), Some(a.clone()));
    assert_eq!(c.dm_channels().unwrap(), std::slice::from_ref(&dm));
    for (ch, id) in [(11, 1), (12, 2), (21, 3), (31, 4), (99, 5)] {
        create(&mut c, &message(ch, 100 + id, 1, "kept?"));
    }
    c.insert_unconfirmed(&envelope(98, "u", "orphan"), None, T0)
        .unwrap();

    let mut a2 = a.clone();
    a2.channels.truncate(1);
    a2.guild.name = "renamed".into();
    c.replace_state(&me(), &[a2.clone()], &[]).unwrap();
    assert_eq!(c.guilds().unwrap(), [a2.guild.clone()]);
    assert_eq!(c.channels(Id(10)).unwrap(), a2.channels);
    assert!(c.channel(Id(12)).unwrap().is_none());
    assert!(c.dm_channels().unwrap().is_empty());
    assert_eq!(c.history(Id(11), None, 10).unwrap().len(), 1);
    for ch in [12, 21, 31, 99, 98] {
        assert!(c.history(Id(ch), None, 10).unwrap().is_empty(), "{ch}");
        assert_eq!(c.cursor(Id(ch)).unwrap(), 0, "{ch}");
    }
    let rows: i64 = c
        .conn
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn guild_and_channel_events() {
    let mut c = cache();
    let g = ready_guild(10, &[11]);
    c.upsert_guild(&g).unwrap();
    assert!(matches!(
        c.upsert_channel(&channel(50, Some(77), 0)),
        Err(CacheError::UnknownGuild(Id(77)))
    ));
    let mut ch = channel(12, Some(10), 5);
    c.upsert_channel(&ch).unwrap();
    ch.name = "renamed".into();
    ch.topic = Some("topic".into());
    c.upsert_channel(&ch).unwrap();
    assert_eq!(c.channel(Id(12)).unwrap(), Some(ch));
    c.update_guild(&Guild {
        name: "new name".into(),
        ..g.guild.clone()
    })
    .unwrap();
    assert_eq!(c.guilds().unwrap()[0].name, "new name");
    c.remove_role(Id(10), Id(11)).unwrap();
    let got = c.guild(Id(10)).unwrap().unwrap();
    assert!(got.my_roles.is_empty());
    assert_eq!(got.roles.len(), 1);
    c.set_my_roles(Id(10), &[Id(10)]).unwrap();
    assert_eq!(c.guild(Id(10)).unwrap().unwrap().my_roles, [Id(10)]);

    create(&mut c, &message(12, 500, 1, "in twelve"));
    c.remove_channel(Id(12)).unwrap();
    assert!(c.history(Id(12), None, 10).unwrap().is_empty());
    create(&mut c, &message(11, 501, 1, "in eleven"));
    c.remove_guild(Id(10)).unwrap();
    assert!(c.history(Id(11), None, 10).unwrap().is_empty());
    assert_eq!(c.cursor(Id(11)).unwrap(), 0);
    assert!(c.guild(Id(10)).unwrap().is_none());
    let roles: i64 = c
        .conn
        .query_row("SELECT count(*) FROM roles", [], |r| r.get(0))
        .unwrap();
    assert_eq!(roles, 0);
    // A fresh channel can start at the relay's last seq instead of 0.
    assert!(c.init_cursor(Id(40), 17).unwrap());
    assert!(!c.init_cursor(Id(40), 3).unwrap());
    assert_eq!(c.cursor(Id(40)).unwrap(), 17);
}

#[test]
fn cached_messages_serialise_ids_as_strings() {
    let mut c = cache();
    create(&mut c, &message(1, 101, 1, "hi"));
    let m = &c.history(Id(1), None, 1).unwrap()[0];
    let v = serde_json::to_value(m).unwrap();
    assert_eq!(v["id"], "101");
    assert_eq!(v["channel_id"], "1");
    assert_eq!(v["confirmed"], true);
    assert_eq!(
        serde_json::from_value::<CachedMessage>(v).unwrap(),
        m.clone()
    );
}
