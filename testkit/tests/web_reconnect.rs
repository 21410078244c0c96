//! A dropped network, then a relay restart (same data dir, same port), under two open web
//! clients in Chromium: reconnect banner, resume or catch-up with no lost or duplicated
//! message, outbox. The browser side
//! is `browser/tests/web-reconnect.mjs`; it asks this test to stop and start the relay
//! through its stdin/stdout.

use std::time::Duration;

use concord_testkit::{TestRelay, browser};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// 1 s heartbeats: a client notices a silently dead connection within about 2 s.
fn fast_heartbeats(c: &mut concord_relay::RelayConfig) {
    c.gateway.heartbeat_interval_ms = 1_000;
}

#[tokio::test]
async fn relay_restart_under_open_clients() {
    let mut relay =
        Some(TestRelay::start_with(tempfile::tempdir().expect("temp dir"), fast_heartbeats).await);
    let url = relay.as_ref().expect("running").url.clone();
    let listen: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .expect("relay url is http://ip:port");

    let browser::Interactive {
        child: _child,
        mut stdin,
        mut stdout,
        mut stderr,
    } = browser::spawn("tests/web-reconnect.mjs", std::slice::from_ref(&url));

    let mut stopped = None;
    let mut result = None;
    let talk = async {
        while let Some(line) = stdout.next_line().await.expect("read stdout") {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            match v["step"].as_str() {
                Some("stop") => {
                    stopped = Some(relay.take().expect("running").stop().await);
                    stdin.write_all(b"ok\n").await.expect("write");
                }
                Some("start") => {
                    let data = stopped.take().expect("stopped");
                    // Same data dir and port: the page's origin (the login audience) stays.
                    relay = Some(
                        TestRelay::start_with(data, |c| {
                            fast_heartbeats(c);
                            c.listen = listen;
                        })
                        .await,
                    );
                    stdin.write_all(b"ok\n").await.expect("write");
                }
                _ if v.get("ok").is_some() => result = Some(v),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(180), talk)
        .await
        .expect("web-reconnect.mjs finishes within 180 s");
    let mut errors = String::new();
    let _ = stderr.read_to_string(&mut errors).await;
    let result = result.unwrap_or_else(|| panic!("web-reconnect.mjs printed no result\n{errors}"));
    browser::assert_checks(
        &result,
        &[
            "network_drop_recovered",
            "resumed_after_drop",
            "no_console_errors_before",
            "banner_shown",
            "offline_message_waits",
            "banner_hidden",
            "live_again",
            "retried_with_the_same_nonce",
            "each_once",
            "no_duplicate_ids",
            "history_complete",
            "no_foreign_requests",
            "no_dialogs",
        ],
    );
}
