//! Moderation and administration in the web client, in Chromium
//! (`browser/tests/web-moderation.mjs`): the setup link, reports, timeouts, slow mode, bulk
//! deletion, the audit log, the admin screen (reports, suspension), export and deletion.

use std::time::Duration;

use concord_testkit::{TestRelay, browser};

#[tokio::test]
async fn moderators_and_admins_in_the_browser() {
    let relay = TestRelay::start_with(tempfile::tempdir().expect("temp dir"), |_| {}).await;
    let link = concord_relay::api::admin::setup_link(relay.server().app())
        .await
        .expect("store answers")
        .expect("a new relay has no admin: a setup link");
    let result = browser::run(
        "tests/web-moderation.mjs",
        &[relay.url.clone(), link],
        Duration::from_secs(240),
    )
    .await;
    browser::assert_checks(
        &result,
        &[
            "no_admin_button_before",
            "setup_claimed",
            "report_sent",
            "report_shows_message",
            "report_resolved",
            "timeout_blocks",
            "timeout_ended",
            "slowmode_enforced",
            "slowmode_off",
            "bulk_deleted",
            "audit_log",
            "member_cannot_see_audit",
            "voice_join_status",
            "voice_participants_shown",
            "export_downloaded",
            "admin_stats",
            "admin_report_dismissed",
            "instance_invite",
            "no_console_errors",
            "outbox_survives_reload",
            "suspended_logged_out",
            "unsuspended_login",
            "account_deleted",
            "owner_must_hand_over",
            "no_dialogs",
            "no_foreign_requests",
        ],
    );
}
