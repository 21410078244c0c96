//! Browser voice through the relay's SFU: three Chromium contexts with fake microphones in
//! one voice channel (`browser/tests/web-voice.mjs`): each receives the two others, speaking
//! indicators, mute stops a speaker's packets, deafen, per-user volume, leave.

use std::time::Duration;

use concord_testkit::{TestRelay, browser};

mod common;

const CHECKS: &[&str] = &[
    "all_connected",
    "each_receives",
    "audio_energy_rises",
    "sources_are_the_two_others",
    "speaking_shown",
    "mute_stops_packets",
    "mute_shown_to_others",
    "unmute_resumes",
    "volume_follows_user",
    "relay_rtcp_stats",
    "deafen_silences",
    "deafen_shown_to_others",
    "leave_removes",
    "no_console_errors",
    "no_foreign_requests",
    "no_dialogs",
];

#[tokio::test(flavor = "multi_thread")]
async fn three_browsers_talk_through_the_sfu() {
    let relay = TestRelay::start_with(tempfile::tempdir().expect("temp dir"), |c| {
        c.voice.sfu_forwarded_speakers = 3;
    })
    .await;
    let result = browser::run(
        "tests/web-voice.mjs",
        std::slice::from_ref(&relay.url),
        Duration::from_secs(240),
    )
    .await;
    eprintln!("rtp: {}", result["rtp"]);
    eprintln!("relay stats: {}", result["relay_stats"]);
    browser::assert_checks(&result, CHECKS);
}

/// Forced TURN (`iceTransportPolicy: "relay"`): the same call with every browser relayed by
/// concord-turn.
#[tokio::test(flavor = "multi_thread")]
async fn browsers_talk_through_turn_only() {
    let turn = common::turn_server().await;
    let relay = common::relay_with_turn(turn.udp_addr()).await;
    let result = browser::run(
        "tests/web-voice.mjs",
        &[relay.url.clone(), "relay-only".to_owned()],
        Duration::from_secs(240),
    )
    .await;
    eprintln!("rtp: {}", result["rtp"]);
    let mut checks = CHECKS.to_vec();
    checks.push("through_turn");
    browser::assert_checks(&result, &checks);
}
