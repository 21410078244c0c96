//! Drives a session through the API and the gateway, then checks that every metric the relay
//! registers was updated. One test per binary: the recorder is process-wide.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::client::{Backend, TestRelay, relaxed, send};
use concord_relay::metrics::METRICS;
use reqwest::Method;
use serde_json::json;

/// `name` → summed value of its samples (`_count` for histograms).
fn parse(text: &str) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let name = series.split('{').next().unwrap();
        let name = name.strip_suffix("_count").unwrap_or(name);
        if name.ends_with("_bucket") || name.ends_with("_sum") {
            continue;
        }
        *out.entry(name.to_owned()).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

#[tokio::test]
async fn every_registered_metric_moves() {
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.rate_limits.message_send.requests = 5;
    })
    .await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let (guild, channel) = ana.create_guild("metrics").await;
    bob.join(&ana.invite(guild).await).await;
    let mut gw = bob.gateway().await;

    // A node on the libp2p side: hello, submit, sync and pushes.
    let node_dir = tempfile::tempdir().unwrap();
    concord_node::identity::init(node_dir.path(), "node").unwrap();
    let mut node_config = concord_node::NodeConfig::new(node_dir.path().to_owned());
    node_config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    node_config.mdns = false;
    let node = concord_node::Node::spawn(node_config).await.unwrap();
    node.join(&relay.url, &ana.invite(guild).await, Some("nodeuser"))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !node.is_relay_connected() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.send(channel, "from a node", true).await.unwrap();
    let msg = ana.say(channel, "counted").await;
    gw.event("message_create").await;
    ana.patch(
        &format!(
            "/api/v1/channels/{channel}/messages/{}",
            msg["id"].as_str().unwrap()
        ),
        json!({ "content": "edited" }),
    )
    .await
    .ok(200);
    for i in 0..6 {
        ana.post(
            &format!("/api/v1/channels/{channel}/messages"),
            json!({ "content": "x", "nonce": format!("m{i}") }),
        )
        .await;
    }
    assert_eq!(
        send(
            &relay.http,
            Method::GET,
            format!("{}/api/v1/users/@me", relay.url),
            Some("bad"),
            None
        )
        .await
        .status,
        401
    );
    // Moderation: a report, a timeout (audited), an account deleted.
    ana.post(
        &format!("/api/v1/guilds/{guild}/reports"),
        json!({ "user_id": bob.id, "reason": "metrics" }),
    )
    .await
    .ok(201);
    ana.put(
        &format!("/api/v1/guilds/{guild}/members/{}/timeout", bob.id),
        Some(json!({ "duration_secs": 60 })),
    )
    .await
    .ok(204);
    relay
        .register("leaver")
        .await
        .delete("/api/v1/users/@me")
        .await
        .ok(204);
    // Voice: a join (the rooms gauges are set by the expiry task every second).
    let voice = ana.voice_channel(guild, "talk").await;
    ana.post(&format!("/api/v1/voice/channels/{voice}/join"), json!({}))
        .await
        .ok(200);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    gw.ws.close(None).await.unwrap();
    node.shutdown().await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let text = send(
        &relay.http,
        Method::GET,
        format!("{}/metrics", relay.url),
        None,
        None,
    )
    .await
    .body;
    let text = text.as_str().expect("metrics are text");
    let samples = parse(text);
    let mut missing = Vec::new();
    // Cluster metrics move only with Redis (tests/cluster.rs), replica and breaker metrics
    // with their PostgreSQL set-up (tests/pg_replica.rs), archive ones when a month is
    // archived (tests/archive.rs), storage ones on a full disk (tests/disk_full.rs).
    let elsewhere = [
        "concord_breaker_state",
        "concord_db_reads_total",
        "concord_db_fast_failures_total",
        "concord_jobs_total",
        "concord_archive_messages_total",
        // A full disk (tests/disk_full.rs).
        "concord_storage_transitions_total",
        "concord_storage_refused_total",
        "concord_db_writer_reopened_total",
    ];
    for (name, _) in METRICS
        .iter()
        .filter(|(n, _)| !n.starts_with("concord_cluster_") && !elsewhere.contains(n))
    {
        match samples.get(*name) {
            None => missing.push(format!("{name}: no sample")),
            // Gauges may legitimately read 0 (no gateway connection now); they were set.
            Some(v) if *v <= 0.0 && !is_gauge(name) => missing.push(format!("{name}: {v}")),
            Some(_) => {}
        }
    }
    assert!(
        missing.is_empty(),
        "metrics that did not move: {missing:#?}"
    );
    // Labels are route templates, never raw paths with ids.
    assert!(text.contains(r#"route="/api/v1/channels/{channel_id}/messages""#));
    assert!(!text.contains(&format!("/api/v1/channels/{channel}/")));
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.starts_with("concord_"), "unprefixed metric: {line}");
    }
}

fn is_gauge(name: &str) -> bool {
    matches!(
        name,
        "concord_http_requests_in_flight"
            | "concord_gateway_connections"
            | "concord_gateway_sessions"
            | "concord_db_pool_connections"
            | "concord_ready"
            | "concord_storage_low"
            | "concord_p2p_nodes"
            | "concord_voice_rooms"
            | "concord_voice_participants"
    )
}
