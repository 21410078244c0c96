//! Accessibility of the web client's main views: axe-core in Chromium reports no serious or
//! critical violation, light and dark, desktop and 360 px (`browser/tests/web-a11y.mjs`).

use std::time::Duration;

use concord_testkit::{TestRelay, browser};
use serde_json::Value;

#[tokio::test]
async fn axe_finds_no_serious_violations() {
    let relay = TestRelay::start_with(tempfile::tempdir().expect("temp dir"), |_| {}).await;
    let result = browser::run(
        "tests/web-a11y.mjs",
        std::slice::from_ref(&relay.url),
        Duration::from_secs(180),
    )
    .await;
    let pretty = serde_json::to_string_pretty(&result).expect("json");
    for view in [
        "welcome",
        "welcome_dark",
        "chat",
        "chat_dark",
        "chat_360",
        "invite_dialog",
        "roles_dialog",
        "search",
        "dms_360",
        "no_console_errors",
    ] {
        assert_eq!(
            result["checks"][view],
            Value::Bool(true),
            "{view} failed:\n{pretty}"
        );
    }
    assert_eq!(result["ok"], Value::Bool(true), "{pretty}");
}
