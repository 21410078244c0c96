//! Every request body and gateway frame decoder, fed arbitrary bytes and arbitrary JSON:
//! decoding and validation return errors, never panic.

use concord_proto::api::*;
use concord_proto::gateway::{ClientFrame, ServerFrame};
use concord_proto::signed::DeviceCertificate;
use concord_proto::{Id, limits};
use proptest::prelude::*;
use serde::de::DeserializeOwned;

fn decode_and_validate<T: DeserializeOwned + Validate>(bytes: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<T>(bytes) {
        let _ = value.validate();
    }
}

/// Every request body type the HTTP API accepts.
fn all_bodies(bytes: &[u8]) {
    decode_and_validate::<ChallengeRequest>(bytes);
    decode_and_validate::<LoginRequest>(bytes);
    decode_and_validate::<RefreshRequest>(bytes);
    decode_and_validate::<AddDeviceRequest>(bytes);
    decode_and_validate::<CreateGuild>(bytes);
    decode_and_validate::<UpdateGuild>(bytes);
    decode_and_validate::<CreateChannel>(bytes);
    decode_and_validate::<UpdateChannel>(bytes);
    decode_and_validate::<PutOverwrite>(bytes);
    decode_and_validate::<CreateRole>(bytes);
    decode_and_validate::<UpdateRole>(bytes);
    decode_and_validate::<CreateInvite>(bytes);
    decode_and_validate::<CreateBan>(bytes);
    decode_and_validate::<CreateDm>(bytes);
    decode_and_validate::<SendMessage>(bytes);
    decode_and_validate::<EditMessage>(bytes);
    decode_and_validate::<AckRequest>(bytes);
    decode_and_validate::<HistoryQuery>(bytes);
    decode_and_validate::<EventsQuery>(bytes);
    decode_and_validate::<SearchQuery>(bytes);
    decode_and_validate::<MembersQuery>(bytes);
    if let Ok(cert) = serde_json::from_slice::<DeviceCertificate>(bytes) {
        let _ = cert.verify();
    }
    let _ = ClientFrame::parse(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = ServerFrame::parse(text);
        let _ = text.parse::<Id>();
        let _ = limits::search_terms(text);
        let _ = limits::emoji(text);
        let _ = limits::content(text);
    }
}

/// JSON values shaped like the API's: objects with the fields it knows, wrong types mixed in.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let keys = prop::sample::select(vec![
        "op",
        "d",
        "token",
        "session_id",
        "seq",
        "channel_id",
        "status",
        "content",
        "nonce",
        "reply_to",
        "name",
        "kind",
        "private",
        "topic",
        "position",
        "allow",
        "deny",
        "permissions",
        "max_uses",
        "expires_in_secs",
        "reason",
        "recipient",
        "message_id",
        "device_key",
        "challenge",
        "signature",
        "certificate",
        "username",
        "account_key",
        "label",
        "created_at",
        "refresh_token",
        "q",
        "limit",
        "before",
        "after",
        "around",
        "after_seq",
    ]);
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        ".{0,40}".prop_map(serde_json::Value::from),
        "[0-9]{1,20}".prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "identify",
            "resume",
            "heartbeat",
            "typing",
            "presence",
            "text",
            "voice",
            "dm",
            "role",
            "member",
            "online"
        ])
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(keys.clone().prop_map(str::to_owned), inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        all_bodies(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        all_bodies(value.to_string().as_bytes());
    }

    #[test]
    fn gateway_frames_round_trip(token in "[A-Za-z0-9._-]{1,100}", seq in any::<u64>(), session in "[A-Za-z0-9_-]{1,40}") {
        for frame in [
            ClientFrame::Identify(concord_proto::gateway::Identify { token: token.clone() }),
            ClientFrame::Resume(concord_proto::gateway::Resume { token: token.clone(), session_id: session.clone(), seq }),
            ClientFrame::Heartbeat,
        ] {
            prop_assert_eq!(ClientFrame::parse(frame.to_json().as_bytes()), Ok(frame));
        }
    }
}
