//! The gateway over a real WebSocket: handshake rules, heartbeats, resume, close codes,
//! presence, and that events reach only authorised recipients.

mod common;

use std::time::Duration;

use common::client::{Backend, Gateway, Got, TestRelay, read, relaxed};
use concord_proto::gateway::close;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

async fn first_close(relay: &TestRelay, frame: Option<WsMessage>) -> Got {
    let mut ws = Gateway::connect(&relay.url).await;
    if let Some(frame) = frame {
        ws.send(frame).await.unwrap();
    }
    loop {
        match read(&mut ws, Duration::from_secs(15)).await {
            Got::Frame(_) => continue,
            other => return other,
        }
    }
}

#[tokio::test]
async fn handshake_failures_have_their_close_codes() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let bad_token =
        WsMessage::text(json!({ "op": "identify", "d": { "token": "nope" } }).to_string());
    assert!(matches!(
        first_close(&relay, Some(bad_token)).await,
        Got::Closed(Some(close::AUTH_FAILED))
    ));
    let garbage = WsMessage::text("{not json");
    assert!(matches!(
        first_close(&relay, Some(garbage)).await,
        Got::Closed(Some(close::DECODE_ERROR))
    ));
    let heartbeat_first = WsMessage::text(json!({ "op": "heartbeat" }).to_string());
    assert!(matches!(
        first_close(&relay, Some(heartbeat_first)).await,
        Got::Closed(Some(close::AUTH_FAILED))
    ));
    let huge = WsMessage::text(format!(
        r#"{{"op":"identify","d":{{"token":"{}"}}}}"#,
        "x".repeat(5_000)
    ));
    assert!(matches!(
        first_close(&relay, Some(huge)).await,
        Got::Closed(Some(close::DECODE_ERROR))
    ));
    let user = relay.register("amy").await;
    let unknown = WsMessage::text(
        json!({ "op": "resume", "d": { "token": user.access, "session_id": "nope", "seq": 0 } })
            .to_string(),
    );
    assert!(matches!(
        first_close(&relay, Some(unknown)).await,
        Got::Closed(Some(close::INVALID_SESSION))
    ));
    // Silence: the identify deadline (10 s) closes the socket.
    assert!(matches!(
        first_close(&relay, None).await,
        Got::Closed(Some(close::AUTH_FAILED))
    ));
}

#[tokio::test]
async fn heartbeat_is_acknowledged_and_frames_are_rate_limited() {
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.rate_limits.gateway.requests = 5;
    })
    .await;
    let user = relay.register("ben").await;
    let mut gw = user.gateway().await;
    assert!(gw.ready["heartbeat_interval_ms"].as_u64().unwrap() > 0);
    gw.send_json(json!({ "op": "heartbeat" })).await;
    match gw.next(Duration::from_secs(5)).await {
        Got::Frame(f) => assert_eq!(f.op, "heartbeat_ack"),
        other => panic!("{other:?}"),
    }
    for _ in 0..5 {
        gw.send_json(json!({ "op": "heartbeat" })).await;
    }
    assert_eq!(gw.closed().await, Some(close::RATE_LIMITED));
}

#[tokio::test]
async fn resume_replays_missed_events_in_order() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let (guild, channel) = ana.create_guild("g").await;
    bob.join(&ana.invite(guild).await).await;
    let mut gw = bob.gateway().await;
    ana.say(channel, "before").await;
    assert_eq!(gw.event("message_create").await["content"], "before");
    let (session, seen) = (gw.session_id.clone(), gw.last_s);
    // Drop the TCP connection without a close frame, as a network failure would.
    drop(gw);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..5 {
        ana.say(channel, &format!("missed {i}")).await;
    }
    let mut ws = Gateway::connect(&relay.url).await;
    ws.send(WsMessage::text(
        json!({ "op": "resume", "d": { "token": bob.access, "session_id": session, "seq": seen } })
            .to_string(),
    ))
    .await
    .unwrap();
    let mut gw = Gateway {
        ws,
        ready: json!(null),
        session_id: session.clone(),
        last_s: seen,
    };
    let mut contents = Vec::new();
    loop {
        match gw.next(Duration::from_secs(5)).await {
            Got::Frame(f) if f.op == "resumed" => break,
            Got::Frame(f) if f.t.as_deref() == Some("message_create") => {
                contents.push(f.d["content"].as_str().unwrap().to_owned())
            }
            Got::Frame(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        contents,
        (0..5).map(|i| format!("missed {i}")).collect::<Vec<_>>()
    );
    // Live again after the replay, numbering continues.
    ana.say(channel, "after").await;
    assert_eq!(gw.event("message_create").await["content"], "after");
    // A seq from the future is refused.
    let mut ws = Gateway::connect(&relay.url).await;
    ws.send(WsMessage::text(
        json!({ "op": "resume", "d": { "token": bob.access, "session_id": session, "seq": 999 } })
            .to_string(),
    ))
    .await
    .unwrap();
    assert!(matches!(
        read(&mut ws, Duration::from_secs(5)).await,
        Got::Closed(Some(close::INVALID_SESSION))
    ));
    // A client whose network changed resumes before the server noticed the old socket died:
    // the new connection takes the session over and the old one is closed.
    let seen = gw.last_s;
    let mut ws = Gateway::connect(&relay.url).await;
    ws.send(WsMessage::text(
        json!({ "op": "resume", "d": { "token": bob.access, "session_id": session, "seq": seen } })
            .to_string(),
    ))
    .await
    .unwrap();
    let mut taken = Gateway {
        ws,
        ready: json!(null),
        session_id: session.clone(),
        last_s: seen,
    };
    match taken.next(Duration::from_secs(5)).await {
        Got::Frame(f) => assert_eq!(f.op, "resumed"),
        other => panic!("{other:?}"),
    }
    assert_eq!(gw.closed().await, Some(close::INVALID_SESSION));
    ana.say(channel, "to the new socket").await;
    assert_eq!(
        taken.event("message_create").await["content"],
        "to the new socket"
    );
    let gw = taken;
    // Another user cannot resume bob's session.
    drop(gw);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut ws = Gateway::connect(&relay.url).await;
    ws.send(WsMessage::text(
        json!({ "op": "resume", "d": { "token": ana.access, "session_id": session, "seq": 0 } })
            .to_string(),
    ))
    .await
    .unwrap();
    assert!(matches!(
        read(&mut ws, Duration::from_secs(5)).await,
        Got::Closed(Some(close::INVALID_SESSION))
    ));
}

#[tokio::test]
async fn overflowed_resume_buffer_means_invalid_session() {
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.gateway.resume_buffer = 3;
    })
    .await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let (guild, channel) = ana.create_guild("g").await;
    bob.join(&ana.invite(guild).await).await;
    let gw = bob.gateway().await;
    let session = gw.session_id.clone();
    drop(gw);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..6 {
        ana.say(channel, &format!("m{i}")).await;
    }
    let mut ws = Gateway::connect(&relay.url).await;
    ws.send(WsMessage::text(
        json!({ "op": "resume", "d": { "token": bob.access, "session_id": session, "seq": 0 } })
            .to_string(),
    ))
    .await
    .unwrap();
    assert!(matches!(
        read(&mut ws, Duration::from_secs(5)).await,
        Got::Closed(Some(close::INVALID_SESSION))
    ));
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_closed_as_too_slow() {
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.gateway.max_pending_events = 20;
    })
    .await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let (guild, channel) = ana.create_guild("g").await;
    bob.join(&ana.invite(guild).await).await;
    let mut gw = bob.gateway().await;
    // bob stops reading; big messages fill the socket buffers, then the session queue.
    let big = "x".repeat(4_000);
    let mut sent = 0;
    for _ in 0..3_000 {
        ana.say(channel, &big).await;
        sent += 1;
        if relay
            .server()
            .app()
            .hub
            .session(&gw.session_id)
            .and_then(|s| s.close_reason())
            .is_some()
        {
            break;
        }
    }
    assert!(sent < 3_000, "the session was never marked too slow");
    assert_eq!(gw.closed().await, Some(close::TOO_SLOW));
}

/// With the default queue of 512 events, a client that does not read fills its socket (and
/// the relay's) long before its queue overflows: the 4008 close frame is queued behind
/// megabytes. The relay keeps the connection until the client has drained them, so the client
/// sees 4008, not a bare end of stream.
#[tokio::test]
async fn a_reader_that_fell_behind_its_socket_still_receives_its_close_frame() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let (guild, channel) = ana.create_guild("g").await;
    bob.join(&ana.invite(guild).await).await;
    let mut gw = bob.gateway().await;
    let big = "x".repeat(4_000);
    let mut sent = 0;
    while relay
        .server()
        .app()
        .hub
        .session(&gw.session_id)
        .and_then(|s| s.close_reason())
        .is_none()
    {
        ana.say(channel, &big).await;
        sent += 1;
        assert!(sent < 10_000, "the session was never marked too slow");
    }
    // Well past what the sockets buffer: the close frame was queued behind megabytes.
    assert!(sent > 512, "{sent} messages");
    // A slow reader takes its time to come back to its socket: longer than the relay's
    // 10 s write timeout, so the relay has given up writing events and queued its close.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut events = 0;
    let code = loop {
        match gw.next(Duration::from_secs(10)).await {
            Got::Frame(f) if f.op == "event" => events += 1,
            Got::Frame(_) => {}
            Got::Closed(code) => break code,
            Got::Timeout => panic!("neither the close frame nor the end of the stream came"),
        }
    };
    eprintln!("{sent} sent, {events} events read before the close");
    assert_eq!(
        code,
        Some(close::TOO_SLOW),
        "the client sees 4008, not a bare end of stream"
    );
}

#[tokio::test]
async fn shutdown_closes_sockets_with_going_away() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let user = relay.register("cal").await;
    let mut gw = user.gateway().await;
    let server = relay.server.as_ref().unwrap();
    let _ = server;
    let closer = tokio::spawn(async move { gw.closed().await });
    relay.shutdown().await;
    assert_eq!(closer.await.unwrap(), Some(close::GOING_AWAY));
}

#[tokio::test]
async fn presence_goes_to_guild_mates_only() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let carol = relay.register("carol").await;
    let (guild, _) = ana.create_guild("g").await;
    bob.join(&ana.invite(guild).await).await;
    let mut ana_gw = ana.gateway().await;
    let mut carol_gw = carol.gateway().await;
    let mut bob_gw = bob.gateway().await;
    let online = ana_gw.event("presence_update").await;
    assert_eq!(
        (online["user_id"].as_str(), online["status"].as_str()),
        (Some(bob.id.to_string().as_str()), Some("online"))
    );
    bob_gw
        .send_json(json!({ "op": "presence", "d": { "status": "idle" } }))
        .await;
    assert_eq!(ana_gw.event("presence_update").await["status"], "idle");
    bob_gw.ws.close(None).await.unwrap();
    assert_eq!(ana_gw.event("presence_update").await["status"], "offline");
    carol_gw
        .no_event("presence_update", Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn ready_carries_who_is_already_online() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let carol = relay.register("carol").await;
    let dave = relay.register("dave").await;
    let (guild, _) = ana.create_guild("g").await;
    for u in [&bob, &carol] {
        u.join(&ana.invite(guild).await).await;
    }
    let mut ana_gw = ana.gateway().await;
    let mut carol_gw = carol.gateway().await;
    // Carol appears offline; Dave is online but shares no guild with Bob.
    carol_gw
        .send_json(json!({ "op": "presence", "d": { "status": "offline" } }))
        .await;
    let _ = ana_gw.event("presence_update").await; // carol online
    assert_eq!(ana_gw.event("presence_update").await["status"], "offline");
    let _dave_gw = dave.gateway().await;

    let bob_gw = bob.gateway().await;
    assert_eq!(
        bob_gw.ready["presences"],
        json!([{ "user_id": ana.id.to_string(), "status": "online" }]),
        "{}",
        bob_gw.ready
    );
}

#[tokio::test]
async fn events_reach_only_authorised_members() {
    let relay = TestRelay::start(Backend::Postgres).await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let (guild, general) = ana.create_guild("g").await;
    bob.join(&ana.invite(guild).await).await;
    let mut bob_gw = bob.gateway().await;
    let private = ana
        .post(
            &format!("/api/v1/guilds/{guild}/channels"),
            json!({ "name": "mods", "kind": "text", "private": true }),
        )
        .await
        .ok(201);
    let private: concord_proto::Id = serde_json::from_value(private["id"].clone()).unwrap();
    ana.say(private, "hidden").await;
    ana.say(general, "visible").await;
    assert_eq!(bob_gw.event("message_create").await["content"], "visible");
    // Granting bob view through a member overwrite shows him the channel and later messages.
    ana.put(
        &format!("/api/v1/channels/{private}/permissions/{}", bob.id),
        Some(json!({ "kind": "member", "allow": 1 })),
    )
    .await
    .ok(204);
    let update = bob_gw.event("channel_update").await;
    assert_eq!(update["id"], json!(private.to_string()));
    ana.say(private, "now you see it").await;
    assert_eq!(
        bob_gw.event("message_create").await["content"],
        "now you see it"
    );
    // Kicked: no more events from the guild.
    ana.delete(&format!("/api/v1/guilds/{guild}/members/{}", bob.id))
        .await
        .ok(204);
    bob_gw.event("guild_delete").await;
    ana.say(general, "after the kick").await;
    bob_gw
        .no_event("message_create", Duration::from_millis(300))
        .await;
}
