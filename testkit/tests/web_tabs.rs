//! Two tabs of one user in Chromium share a session whose access tokens live 60 s (so every
//! call refreshes first): refreshes take turns under a Web Lock, nothing fails, and the
//! session survives (`browser/tests/web-tabs.mjs`).

use std::time::Duration;

use concord_testkit::{TestRelay, browser};

#[tokio::test]
async fn two_tabs_share_token_refresh() {
    let relay = TestRelay::start_with(tempfile::tempdir().expect("temp dir"), |c| {
        c.auth.access_token_ttl_secs = 60;
    })
    .await;
    let result = browser::run(
        "tests/web-tabs.mjs",
        std::slice::from_ref(&relay.url),
        Duration::from_secs(180),
    )
    .await;
    browser::assert_checks(
        &result,
        &[
            "second_tab_logged_in",
            "all_delivered",
            "still_logged_in",
            "refreshed",
            "no_failed_requests",
            "no_console_errors",
        ],
    );
}
