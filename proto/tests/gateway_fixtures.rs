//! The gateway fixtures in tests/fixtures/gateway are the examples of
//! docs/protocols/gateway.md. This test keeps them honest: every client fixture parses and
//! round-trips, every invalid one is refused for the right reason, every server fixture decodes
//! into its proto type and is byte-for-byte (as JSON values) what the server's frame builders
//! produce from that type.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use concord_proto::gateway::{
    self, ChannelDeleted, ClientFrame, FrameError, GuildDeleted, HEARTBEAT_ACK,
    MAX_CLIENT_FRAME_BYTES, MemberRemoved, PresenceUpdate, Ready, ReadyGuild, Resumed, RoleDeleted,
    ServerFrame, TypingStart,
};
use concord_proto::model::{Channel, Guild, Member, Message, MessageDeleted, ReactionEvent, Role};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const CLIENT_FIXTURES: [&str; 5] = ["identify", "resume", "heartbeat", "typing", "presence"];

/// Every event type the relay sends (grep relay/src for `to_users`, `to_guild`,
/// `to_channel_viewers` and `announce_presence`); each has a fixture `event_<t>.json`.
const EVENT_TYPES: [&str; 19] = [
    "message_create",
    "message_update",
    "message_delete",
    "reaction_add",
    "reaction_remove",
    "typing_start",
    "presence_update",
    "member_add",
    "member_update",
    "member_remove",
    "channel_create",
    "channel_update",
    "channel_delete",
    "role_create",
    "role_update",
    "role_delete",
    "guild_create",
    "guild_update",
    "guild_delete",
];

/// Invalid client frames and the error each must produce.
fn expected_invalid(name: &str) -> fn(&FrameError) -> bool {
    match name {
        "unknown_op" => |e| matches!(e, FrameError::UnknownOp(op) if op == "subscribe"),
        "missing_d" => |e| matches!(e, FrameError::BadData { op: "identify", .. }),
        "extra_field" => |e| matches!(e, FrameError::BadData { op: "typing", .. }),
        "bad_id" => |e| matches!(e, FrameError::BadData { op: "typing", .. }),
        "unknown_status" => |e| matches!(e, FrameError::BadData { op: "presence", .. }),
        "negative_seq" => |e| matches!(e, FrameError::BadData { op: "resume", .. }),
        "op_not_string" => |e| matches!(e, FrameError::Malformed(_)),
        "not_object" => |e| matches!(e, FrameError::Malformed(_)),
        "not_json" => |e| matches!(e, FrameError::Malformed(_)),
        "oversized" => |e| matches!(e, FrameError::TooLarge),
        other => panic!("invalid fixture {other}.json has no expected error in this test"),
    }
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gateway")
}

fn json_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| p.file_stem().unwrap().to_str().unwrap().to_owned())
        .collect()
}

fn read(name: &str) -> Vec<u8> {
    let path = dir().join(format!("{name}.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn value(name: &str) -> Value {
    serde_json::from_slice(&read(name)).unwrap_or_else(|e| panic!("{name}.json: {e}"))
}

/// Decodes `d` as `T` and encodes it again: the result must be the fixture's `d` exactly, so
/// a fixture can neither carry a field the type drops nor miss one it always sends.
fn typed<T: DeserializeOwned + Serialize>(name: &str, d: &Value) -> String {
    let decoded: T = serde_json::from_value(d.clone()).unwrap_or_else(|e| {
        panic!(
            "{name}.json: d is not a {}: {e}",
            std::any::type_name::<T>()
        )
    });
    let encoded = serde_json::to_string(&decoded).unwrap();
    let again: Value = serde_json::from_str(&encoded).unwrap();
    assert_eq!(
        &again,
        d,
        "{name}.json: d changes when decoded as {} and encoded again",
        std::any::type_name::<T>()
    );
    encoded
}

#[test]
fn fixture_set_is_complete() {
    let expected: BTreeSet<String> = CLIENT_FIXTURES
        .iter()
        .map(|s| s.to_string())
        .chain(["ready", "resumed", "heartbeat_ack"].map(String::from))
        .chain(EVENT_TYPES.iter().map(|t| format!("event_{t}")))
        .collect();
    assert_eq!(json_files(&dir()), expected);
}

#[test]
fn client_fixtures_parse_and_round_trip() {
    for name in CLIENT_FIXTURES {
        let bytes = read(name);
        assert!(bytes.len() <= MAX_CLIENT_FRAME_BYTES, "{name}.json");
        let frame = ClientFrame::parse(&bytes).unwrap_or_else(|e| panic!("{name}.json: {e}"));
        let op = match &frame {
            ClientFrame::Identify(_) => "identify",
            ClientFrame::Resume(_) => "resume",
            ClientFrame::Heartbeat => "heartbeat",
            ClientFrame::Typing(_) => "typing",
            ClientFrame::Presence(_) => "presence",
        };
        assert_eq!(op, name);
        let json = frame.to_json();
        let round: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(round, value(name), "{name}.json does not round-trip");
        assert_eq!(ClientFrame::parse(json.as_bytes()), Ok(frame));
    }
}

#[test]
fn invalid_client_fixtures_are_refused() {
    let names = json_files(&dir().join("invalid"));
    for required in [
        "unknown_op",
        "missing_d",
        "extra_field",
        "oversized",
        "not_json",
    ] {
        assert!(
            names.contains(required),
            "invalid/{required}.json is missing"
        );
    }
    for name in &names {
        let check = expected_invalid(name);
        let path = dir().join("invalid").join(format!("{name}.json"));
        let bytes = std::fs::read(&path).unwrap();
        match ClientFrame::parse(&bytes) {
            Ok(frame) => panic!("invalid/{name}.json was accepted as {frame:?}"),
            Err(e) => assert!(check(&e), "invalid/{name}.json: unexpected error {e:?}"),
        }
    }
}

#[test]
fn ready_resumed_and_heartbeat_ack() {
    let text = String::from_utf8(read("ready")).unwrap();
    let frame = ServerFrame::parse(&text).unwrap();
    assert_eq!(frame.op, "ready");
    assert_eq!((frame.s, frame.t.as_deref()), (None, None));
    typed::<Ready>("ready", &frame.d);
    let ready: Ready = serde_json::from_value(frame.d.clone()).unwrap();
    assert!(!ready.guilds.is_empty() && !ready.dms.is_empty());
    let built: Value = serde_json::from_str(&gateway::ready_frame(&ready)).unwrap();
    assert_eq!(built, value("ready"));

    let frame = ServerFrame::parse(&String::from_utf8(read("resumed")).unwrap()).unwrap();
    assert_eq!(frame.op, "resumed");
    assert_eq!((frame.s, frame.t.as_deref()), (None, None));
    let resumed: Resumed = serde_json::from_value(frame.d.clone()).unwrap();
    let built: Value = serde_json::from_str(&gateway::resumed_frame(&resumed)).unwrap();
    assert_eq!(built, value("resumed"));

    let frame = ServerFrame::parse(&String::from_utf8(read("heartbeat_ack")).unwrap()).unwrap();
    assert_eq!(frame.op, "heartbeat_ack");
    assert!(frame.d.is_null() && frame.s.is_none() && frame.t.is_none());
    let built: Value = serde_json::from_str(HEARTBEAT_ACK).unwrap();
    assert_eq!(built, value("heartbeat_ack"));
}

#[test]
fn event_fixtures_decode_and_match_event_frame() {
    for t in EVENT_TYPES {
        let name = format!("event_{t}");
        let text = String::from_utf8(read(&name)).unwrap();
        let frame = ServerFrame::parse(&text).unwrap_or_else(|e| panic!("{name}.json: {e}"));
        assert_eq!(frame.op, "event", "{name}.json");
        assert_eq!(frame.t.as_deref(), Some(t), "{name}.json");
        let s = frame.s.unwrap_or_else(|| panic!("{name}.json has no s"));
        assert!(s >= 1, "{name}.json: s starts at 1");
        let d = &frame.d;
        let d_json = match t {
            "message_create" | "message_update" => {
                let json = typed::<Message>(&name, d);
                let m: Message = serde_json::from_str(&json).unwrap();
                assert!(m.seq >= 1 && !m.deleted, "{name}.json");
                assert_eq!(m.edited_at.is_some(), t == "message_update", "{name}.json");
                json
            }
            "message_delete" => typed::<MessageDeleted>(&name, d),
            "reaction_add" | "reaction_remove" => typed::<ReactionEvent>(&name, d),
            "typing_start" => typed::<TypingStart>(&name, d),
            "presence_update" => typed::<PresenceUpdate>(&name, d),
            "member_add" | "member_update" => typed::<Member>(&name, d),
            "member_remove" => typed::<MemberRemoved>(&name, d),
            "channel_create" | "channel_update" => typed::<Channel>(&name, d),
            "channel_delete" => typed::<ChannelDeleted>(&name, d),
            "role_create" | "role_update" => typed::<Role>(&name, d),
            "role_delete" => typed::<RoleDeleted>(&name, d),
            "guild_create" => typed::<ReadyGuild>(&name, d),
            "guild_update" => typed::<Guild>(&name, d),
            "guild_delete" => typed::<GuildDeleted>(&name, d),
            other => panic!("no type for event {other}"),
        };
        let built: Value = serde_json::from_str(&gateway::event_frame(t, s, &d_json))
            .unwrap_or_else(|e| panic!("event_frame for {t} is not JSON: {e}"));
        assert_eq!(built, value(&name), "{name}.json differs from event_frame");
    }
}

/// Channel events carry the channel's `seq` in `d`; ready lists each channel's `last_seq`.
#[test]
fn channel_events_carry_seq() {
    for t in [
        "message_create",
        "message_update",
        "message_delete",
        "reaction_add",
        "reaction_remove",
    ] {
        let d = &value(&format!("event_{t}"))["d"];
        assert!(d["seq"].as_i64().is_some_and(|s| s >= 1), "{t}");
        assert!(d["channel_id"].is_string(), "{t}");
    }
    let ready = value("ready");
    for channel in ready["d"]["guilds"][0]["channels"].as_array().unwrap() {
        assert!(channel["last_seq"].is_i64());
    }
}
