//! Guild administration in the web client, in Chromium (`browser/tests/web-admin.mjs`):
//! replies, presence, roles and permissions, a private channel, kick and ban.

use std::time::Duration;

use concord_testkit::{TestRelay, browser};

#[tokio::test]
async fn roles_private_channels_kick_and_ban() {
    let relay = TestRelay::start_with(tempfile::tempdir().expect("temp dir"), |_| {}).await;
    let result = browser::run(
        "tests/web-admin.mjs",
        std::slice::from_ref(&relay.url),
        Duration::from_secs(180),
    )
    .await;
    browser::assert_checks(
        &result,
        &[
            "reply_shown",
            "presence_seen",
            "no_delete_before",
            "role_seen",
            "moderator_delete",
            "private_hidden",
            "private_granted",
            "mention_highlighted",
            "keyboard",
            "kicked",
            "no_console_errors",
            "ban_refuses_rejoin",
            "no_dialogs",
            "no_foreign_requests",
        ],
    );
}
