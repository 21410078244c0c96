//! Browser voice survives the death of the room's instance. Two relay instances on one
//! PostgreSQL and one Redis: B runs in this test and serves the web client, A is a process.
//! Two Chromium contexts (`browser/tests/web-voice-failover.mjs`) join a voice channel
//! through B; once a channel's room is on A (the test checks A's metrics, the page tries new
//! channels until one is), A is SIGKILLed. The browsers notice the dead connection, join
//! again through B, which takes the room, and renegotiate: audio flows again without the
//! call ending.

use std::time::{Duration, Instant};

use concord_testkit::{TestRelay, browser, fresh_postgres_url, procs, redis_url, wait_for};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The SFU rooms an instance reports in its metrics.
async fn sfu_rooms(url: &str) -> f64 {
    concord_testkit::metric(url, "concord_sfu_rooms").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn browsers_rejoin_when_the_rooms_instance_dies() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("relay.toml");
    std::fs::write(
        &config,
        "[rate_limits.general]\nrequests = 100000\nwindow_secs = 10\n",
    )
    .unwrap();
    let db = fresh_postgres_url();
    let prefix = format!("webfailover{}", std::process::id());
    let (proc_a, url_a) = procs::cluster_relay(&root.path().join("a"), &config, &db, &prefix);
    let mut proc_a = Some(proc_a);
    let b = TestRelay::start_with(tempfile::tempdir().unwrap(), |c| {
        c.database_url = Some(db.clone());
        c.redis.url = Some(redis_url());
        c.redis.prefix = prefix.clone();
    })
    .await;
    let b_app = b.server().app().clone();
    wait_for(Duration::from_secs(10), || b_app.redis_ok()).await;

    let browser::Interactive {
        child: _child,
        mut stdin,
        mut stdout,
        mut stderr,
    } = browser::spawn("tests/web-voice-failover.mjs", std::slice::from_ref(&b.url));

    let mut result = None;
    let mut killed_at = None;
    let talk = async {
        while let Some(line) = stdout.next_line().await.expect("read stdout") {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            match v["step"].as_str() {
                Some("joined") => {
                    // Both browsers are on one SFU: A's, or the page's own (B's).
                    let on_a = sfu_rooms(&url_a).await == 1.0;
                    assert_eq!(b_app.voice.sfu.room_count(), usize::from(!on_a));
                    if on_a {
                        drop(proc_a.take());
                        killed_at = Some(Instant::now());
                        stdin.write_all(b"killed\n").await.expect("write");
                    } else {
                        stdin.write_all(b"again\n").await.expect("write");
                    }
                }
                Some("recovered") => {
                    let rooms = b_app.voice.sfu.room_count();
                    let members: usize = b_app
                        .voice
                        .with(|r| r.channels().map(|c| r.participants(c).len()).sum());
                    let answer = if rooms == 1 { "owner" } else { "elsewhere" };
                    stdin
                        .write_all(format!("{answer} {members}\n").as_bytes())
                        .await
                        .expect("write");
                }
                _ if v.get("ok").is_some() => result = Some(v),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(300), talk)
        .await
        .expect("web-voice-failover.mjs finishes within 300 s");
    let mut errors = String::new();
    let _ = stderr.read_to_string(&mut errors).await;
    let result =
        result.unwrap_or_else(|| panic!("web-voice-failover.mjs printed no result\n{errors}"));
    eprintln!(
        "owner killed: browsers hear each other again after {} ms (each {}); console: {}",
        result["audio_back_ms"], result["audio_back_each_ms"], result["console_errors"]
    );
    assert!(killed_at.is_some(), "the owner was never killed: {result}");
    browser::assert_checks(
        &result,
        &[
            "audio_back",
            "new_connection",
            "status_connected",
            "call_not_ended",
            "room_on_page_instance",
            "no_foreign_requests",
            "no_dialogs",
        ],
    );
    b.stop().await;
}
