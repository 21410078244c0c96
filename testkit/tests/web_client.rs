//! The web client (`web/`, served by the relay) in real Chromium: two users in two browser
//! contexts create accounts, a guild and an invite, join, and chat live both ways; HTML in a
//! message stays text; a reload keeps the session; history scrolls back; no console errors,
//! no request to another origin, a strict CSP; edit, delete, a reaction and a DM seen by the
//! other user; search jumps to a message; a linked second browser sees the same guilds.
//! Screenshots of the main views land in `$CARGO_TARGET_TMPDIR/web-screenshots/`. The checks run in
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
    "edit_seen",
    "reaction_seen",
    "reaction_mine_after_reload",
    "delete_seen",
    "dm_exchanged",
    "channel_created_seen",
    "unread_badge",
    "unread_divider",
    "unread_cleared",
    "channel_renamed_seen",
    "channel_deleted_seen",
    "reload_keeps_session",
    "newest_page_only",
    "scroll_back",
    "start_of_channel",
    "no_duplicates",
    "live_after_reload",
    "search_highlight",
    "search_jump",
    "linked_browser",
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
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
    let result = browser::run(
        "tests/web-client.mjs",
        &[relay.url.clone(), shots.display().to_string()],
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
    assert_eq!(
        result["foreign_requests"],
        serde_json::json!([]),
        "{pretty}"
    );
    let csp = result["csp"].as_str().expect("CSP header");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(result["xss"]["imgs"], 0, "{pretty}");
    let pngs = result["screenshots"].as_array().expect("screenshots");
    assert!(pngs.len() >= 6, "{pretty}");
    for png in pngs {
        let bytes = std::fs::read(png.as_str().expect("path")).expect("screenshot written");
        assert!(bytes.starts_with(b"\x89PNG"), "{png} is not a PNG");
    }
    assert_eq!(result["ok"], Value::Bool(true), "{pretty}");
}
