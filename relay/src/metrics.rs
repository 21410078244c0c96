//! Prometheus metrics. Every name starts with `concord_`; `METRICS` lists them all, and
//! `relay/tests/metrics.rs` drives a session and checks that each one moved. Also the
//! recorder and the HTTP middleware.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const METRICS: &[(&str, &str)] = &[
    (
        "concord_http_requests_total",
        "HTTP requests by route template, method and status",
    ),
    (
        "concord_http_request_duration_seconds",
        "HTTP request latency by route template and method",
    ),
    (
        "concord_http_requests_in_flight",
        "HTTP requests being served",
    ),
    (
        "concord_gateway_connections",
        "Open gateway WebSocket connections",
    ),
    (
        "concord_gateway_sessions",
        "Gateway sessions, including resumable ones",
    ),
    (
        "concord_gateway_events_total",
        "Events queued to gateway sessions, by type",
    ),
    (
        "concord_gateway_closes_total",
        "Gateway connections closed, by close code",
    ),
    ("concord_messages_persisted_total", "Messages stored"),
    (
        "concord_channel_events_total",
        "Channel events (create, edit, delete, reactions) stored, by kind",
    ),
    (
        "concord_db_query_duration_seconds",
        "Store operation latency by operation",
    ),
    (
        "concord_db_pool_connections",
        "Database pool connections by pool and state",
    ),
    (
        "concord_rate_limited_total",
        "Requests refused by a rate limit, by class",
    ),
    (
        "concord_auth_failures_total",
        "Refused credentials, by reason",
    ),
    (
        "concord_logins_total",
        "Successful logins, by kind (login, register)",
    ),
    ("concord_ready", "1 when the relay reports ready"),
    (
        "concord_p2p_nodes",
        "Nodes connected over libp2p that said hello",
    ),
    (
        "concord_p2p_requests_total",
        "libp2p RPC requests from nodes, by type and outcome",
    ),
    (
        "concord_p2p_events_pushed_total",
        "Relay-signed events pushed to nodes",
    ),
    (
        "concord_cluster_published_total",
        "Fan-outs published to the other instances through Redis",
    ),
    (
        "concord_cluster_received_total",
        "Fan-outs from other instances applied here",
    ),
    (
        "concord_cluster_dropped_total",
        "Fan-outs not published (Redis down or the queue full)",
    ),
    (
        "concord_breaker_state",
        "Circuit breaker per dependency: 0 closed, 1 open (failing fast), 2 half-open",
    ),
    (
        "concord_cluster_redis_up",
        "1 while the Redis subscription of a clustered instance is up",
    ),
    (
        "concord_cluster_voice_forwarded_total",
        "Voice requests sent on to the instance that holds the room, by result (ok, unreachable, redis_down)",
    ),
    (
        "concord_cluster_voice_rooms_owned",
        "Voice rooms this instance holds (their leases renewed in Redis)",
    ),
    (
        "concord_cluster_voice_rooms_lost_total",
        "Voice rooms dropped here because another instance took them over",
    ),
    (
        "concord_cluster_voice_claims_lost_total",
        "Room placements where another instance's claim came first",
    ),
    (
        "concord_db_reads_total",
        "Reads with read replicas configured, by target (replica, primary_fallback)",
    ),
    (
        "concord_cluster_caught_up_total",
        "Channel events pushed from the store because the Redis subscription was down",
    ),
    (
        "concord_cluster_duplicates_total",
        "Channel events from Redis skipped because they were already pushed here",
    ),
    (
        "concord_storage_free_bytes",
        "Free bytes on the SQLite database's filesystem at the last check",
    ),
    (
        "concord_storage_low",
        "1 while that filesystem is under its free-space floor or full (new content refused)",
    ),
    (
        "concord_storage_transitions_total",
        "Changes of the free-space state, by the state entered (low, ok)",
    ),
    (
        "concord_storage_refused_total",
        "Writes refused with 507 storage_full because free space was under the floor",
    ),
    (
        "concord_db_writer_reopened_total",
        "SQLite writer connections closed because a failed write left them inside a transaction",
    ),
    (
        "concord_db_fast_failures_total",
        "Store calls refused at once while the database breaker is open",
    ),
    (
        "concord_jobs_total",
        "Durable queue jobs, by event (enqueued, reclaimed, done)",
    ),
    (
        "concord_archive_messages_total",
        "Messages moved to the archive or restored from it, by op",
    ),
    (
        "concord_moderation_actions_total",
        "Guild moderation actions recorded in audit logs, by action",
    ),
    (
        "concord_reports_total",
        "Reports filed, by scope (guild, instance)",
    ),
    ("concord_accounts_deleted_total", "Accounts deleted"),
    (
        "concord_voice_rooms",
        "Voice channels with participants on this instance",
    ),
    (
        "concord_voice_participants",
        "Participants in voice channels on this instance",
    ),
    ("concord_voice_joins_total", "Voice channel joins"),
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once (several relays in one test process share it).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder (a test harness) may already be installed; ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            for (name, help) in METRICS {
                metrics::describe_counter!(*name, *help);
            }
            handle
        })
        .clone()
}

pub fn render() -> String {
    install().render()
}

pub fn auth_failure(reason: &'static str) {
    metrics::counter!("concord_auth_failures_total", "reason" => reason).increment(1);
}

pub fn rate_limited(class: &'static str) {
    metrics::counter!("concord_rate_limited_total", "class" => class).increment(1);
}

pub fn gateway_events(t: &'static str, delivered: usize) {
    metrics::counter!("concord_gateway_events_total", "type" => t).increment(delivered as u64);
}

/// Per-request counters and latency, labelled by route template (never the raw path, so ids
/// do not explode the label space).
pub async fn track_http(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().as_str().to_owned();
    let in_flight = metrics::gauge!("concord_http_requests_in_flight");
    in_flight.increment(1.0);
    let response = next.run(req).await;
    in_flight.decrement(1.0);
    let status = response.status().as_u16().to_string();
    metrics::counter!("concord_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("concord_http_request_duration_seconds", "route" => route, "method" => method)
        .record(start.elapsed().as_secs_f64());
    response
}
