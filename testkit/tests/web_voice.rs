//! Browser voice through the relay's SFU: three Chromium contexts with fake microphones in
//! one voice channel (`browser/tests/web-voice.mjs`): each receives the two others, speaking
//! indicators, mute stops a speaker's packets, deafen, per-user volume, leave; and screen
//! share and camera (`browser/tests/web-video.mjs`) with a keyframe request per new viewer.

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
    "relay_receiver_reports",
    "deafen_silences",
    "deafen_shown_to_others",
    "leave_removes",
    "microphone_refused",
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
    eprintln!("per slot: {}", result["per_stream"]);
    eprintln!("volumes: {}", result["volumes"]);
    eprintln!("relay stats: {}", result["relay_stats"]);
    eprintln!("remote inbound: {}", result["remote_inbound"]);
    browser::assert_checks(&result, CHECKS);
    assert_short_paths(&relay.url).await;
}

/// Chromium's connections took the SFU's short paths both ways: every SRTP key test matched
/// (one per connection and direction: three browsers, more if one rejoined), none failed.
async fn assert_short_paths(relay_url: &str) {
    let text = concord_testkit::metrics_text(relay_url).await;
    let metric = |labels: &[&str]| {
        concord_testkit::metric_in(&text, "concord_sfu_direct_srtp_total", labels)
    };
    for direction in ["direction=\"down\"", "direction=\"up\""] {
        let matched = metric(&[direction, "result=\"matched\""]);
        assert!(matched >= 3.0, "{direction}: {matched} matched in\n{text}");
        assert_eq!(
            metric(&[direction, "result=\"mismatch\""]),
            0.0,
            "{direction}"
        );
    }
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
    // (No `assert_short_paths` here: the TURN server in this process installed the metrics
    // recorder first, so the relay's `/metrics` is empty.)
    browser::assert_checks(&result, &checks);
}

/// Screen share and camera: a viewer decodes the sharer's frames from a keyframe the relay
/// asked for when they started watching (one more for a later viewer); stopping closes the
/// viewers; nobody receives video they do not watch.
#[tokio::test(flavor = "multi_thread")]
async fn browsers_share_screens_and_cameras_through_the_sfu() {
    let relay = TestRelay::start().await;
    let result = browser::run(
        "tests/web-video.mjs",
        std::slice::from_ref(&relay.url),
        Duration::from_secs(240),
    )
    .await;
    eprintln!(
        "first frame after watch: {} ms (B), {} ms (C); sender: {}",
        result["first_frame_ms"], result["c_first_frame_ms"], result["a_sender"]
    );
    browser::assert_checks(
        &result,
        &[
            "live_shown",
            "nothing_unwatched",
            "viewer_decodes",
            "keyframe_requested_for_viewer",
            "viewer_plays",
            "keyframe_requested_for_new_viewer",
            "second_viewer_decodes",
            "camera_watched",
            "stop_closes_viewers",
            "other_stream_unaffected",
            "camera_shown_live",
            "no_console_errors",
            "no_foreign_requests",
            "no_dialogs",
        ],
    );
}
