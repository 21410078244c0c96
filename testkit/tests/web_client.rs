//! The web client (`web/`, served by the relay) in real Chromium: two users in two browser
//! contexts create accounts, a guild and an invite, join, and chat live both ways; HTML in a
//! message stays text; a reload keeps the session; history scrolls back; no console errors,
//! no request to another origin, a strict CSP. The checks run in
//! `browser/tests/web-client.mjs`; this test starts the relay and asserts its JSON answer.

use std::time::Duration;

use concord_testkit::{TestRelay, browser};
use serde_json::Value;

const CHECKS: &[&str] = &[
    "csp",
    "html_content_type",
    "guild_created",
    "invite_link",
    "invite_note",
    "joined",
    "b_sees_a_live",
    "typing_seen",
    "a_sees_b_live",
    "author_shown",
    "html_is_text",
    "reload_keeps_session",
    "newest_page_only",
    "scroll_back",
    "start_of_channel",
    "no_duplicates",
    "live_after_reload",
    "fits_360",
    "vectors",
    "keys_non_extractable",
    "no_console_errors",
    "no_foreign_requests",
    "no_dialogs",
];

#[tokio::test]
async fn two_users_chat_in_chromium() {
    let relay = TestRelay::start_with(tempfile::tempdir().expect("temp dir"), |_| {}).await;
    let result = browser::run(
        "tests/web-client.mjs",
        std::slice::from_ref(&relay.url),
        Duration::from_secs(180),
    )
    .await;
    let pretty = serde_json::to_string_pretty(&result).expect("json");
    for check in CHECKS {
        assert_eq!(
            result["checks"][check],
            Value::Bool(true),
            "check {check} failed:\n{pretty}"
        );
    }
    assert_eq!(result["console_errors"], serde_json::json!([]), "{pretty}");
    assert_eq!(result["foreign_requests"], serde_json::json!([]), "{pretty}");
    let csp = result["csp"].as_str().expect("CSP header");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(result["xss"]["imgs"], 0, "{pretty}");
    assert_eq!(result["ok"], Value::Bool(true), "{pretty}");
}
