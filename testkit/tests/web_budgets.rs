//! The web client's budgets in Chromium (`browser/tests/web-budgets.mjs`): a channel of
//! 10,000 messages opens with its newest page in under 200 ms on loopback, and a burst of
//! 1,000 live messages leaves the page responsive with a bounded DOM.

use std::time::Duration;

use concord_testkit::{TestRelay, browser};

#[tokio::test]
async fn ten_thousand_messages_and_a_burst() {
    let relay = TestRelay::start_with(tempfile::tempdir().expect("temp dir"), |_| {}).await;
    let result = browser::run(
        "tests/web-budgets.mjs",
        &[relay.url.clone(), "10000".into(), "1000".into()],
        Duration::from_secs(400),
    )
    .await;
    println!("{}", serde_json::to_string_pretty(&result).expect("json"));
    browser::assert_checks(
        &result,
        &[
            "open_under_200ms",
            "newest_page_only",
            "responsive_during_burst",
            "dom_bounded",
            "scroll_back_after_burst",
            "no_console_errors",
        ],
    );
}
