//! Prometheus metrics. Every name starts with `concord_turn_`; `METRICS` lists them all, and
//! `tests/metrics.rs` drives a session and checks that each one moved.
//!
//! The core keeps plain counters ([`Stats`]); the driver adds what changed since the last
//! export (so several servers in one process add up instead of overwriting each other).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::auth::AuthFailure;
use crate::core::stats::DENY_REASONS;
use crate::core::{AllocFailure, BadMessage, CloseReason, Direction, DropReason, Stats, Transport};

pub const METRICS: &[(&str, &str)] = &[
    ("concord_turn_allocations", "Active allocations"),
    (
        "concord_turn_allocations_created_total",
        "Allocations created, by client transport",
    ),
    (
        "concord_turn_allocations_failed_total",
        "Allocate requests refused, by reason (the first 401 challenge excepted)",
    ),
    (
        "concord_turn_allocations_closed_total",
        "Allocations ended, by reason (expired, deleted, connection_closed)",
    ),
    (
        "concord_turn_auth_challenges_total",
        "401 challenges to requests without credentials (the normal first step)",
    ),
    (
        "concord_turn_auth_failures_total",
        "Refused credentials, by reason",
    ),
    (
        "concord_turn_peers_denied_total",
        "Permissions and channel bindings refused by the peer policy, by reason",
    ),
    (
        "concord_turn_bad_messages_total",
        "Malformed or unsupported messages, by reason",
    ),
    (
        "concord_turn_dropped_packets_total",
        "Packets dropped without an answer, by reason",
    ),
    (
        "concord_turn_relayed_packets_total",
        "Packets relayed, by direction (to_peer, to_client)",
    ),
    (
        "concord_turn_relayed_bytes_total",
        "Payload bytes relayed, by direction (to_peer, to_client)",
    ),
    (
        "concord_turn_binding_requests_total",
        "STUN Binding requests answered",
    ),
    (
        "concord_turn_connections",
        "Open TCP and TLS client connections, by transport",
    ),
    (
        "concord_turn_connections_rejected_total",
        "TCP and TLS connections refused at the connection cap",
    ),
    (
        "concord_turn_slow_clients_total",
        "TCP and TLS clients disconnected because they did not read fast enough",
    ),
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness); ours still renders.
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

fn add(name: &'static str, label: &'static str, value: &'static str, delta: u64) {
    if delta > 0 {
        metrics::counter!(name, label => value).increment(delta);
    }
}

fn add_each<T: Copy>(
    name: &'static str,
    label: &'static str,
    all: &[T],
    as_str: fn(T) -> &'static str,
    now: &[u64],
    before: &[u64],
) {
    for (i, v) in all.iter().enumerate() {
        add(name, label, as_str(*v), now[i].saturating_sub(before[i]));
    }
}

/// Adds the difference between two snapshots of the core's counters.
pub fn export(now: &Stats, before: &Stats) {
    let active = now.active_allocations as f64 - before.active_allocations as f64;
    if active != 0.0 {
        metrics::gauge!("concord_turn_allocations").increment(active);
    }
    add_each(
        "concord_turn_allocations_created_total",
        "transport",
        &Transport::ALL,
        Transport::as_str,
        &now.allocations_created,
        &before.allocations_created,
    );
    add_each(
        "concord_turn_allocations_failed_total",
        "reason",
        AllocFailure::ALL,
        AllocFailure::as_str,
        &now.allocations_failed,
        &before.allocations_failed,
    );
    add_each(
        "concord_turn_allocations_closed_total",
        "reason",
        CloseReason::ALL,
        CloseReason::as_str,
        &now.allocations_closed,
        &before.allocations_closed,
    );
    let challenges = now.auth_challenges.saturating_sub(before.auth_challenges);
    if challenges > 0 {
        metrics::counter!("concord_turn_auth_challenges_total").increment(challenges);
    }
    add_each(
        "concord_turn_auth_failures_total",
        "reason",
        &AuthFailure::ALL,
        AuthFailure::as_str,
        &now.auth_failures,
        &before.auth_failures,
    );
    add_each(
        "concord_turn_peers_denied_total",
        "reason",
        &DENY_REASONS,
        crate::policy::DenyReason::as_str,
        &now.peers_denied,
        &before.peers_denied,
    );
    add_each(
        "concord_turn_bad_messages_total",
        "reason",
        BadMessage::ALL,
        BadMessage::as_str,
        &now.bad_messages,
        &before.bad_messages,
    );
    add_each(
        "concord_turn_dropped_packets_total",
        "reason",
        DropReason::ALL,
        DropReason::as_str,
        &now.dropped,
        &before.dropped,
    );
    add_each(
        "concord_turn_relayed_packets_total",
        "direction",
        &Direction::ALL,
        Direction::as_str,
        &now.relayed_packets,
        &before.relayed_packets,
    );
    add_each(
        "concord_turn_relayed_bytes_total",
        "direction",
        &Direction::ALL,
        Direction::as_str,
        &now.relayed_bytes,
        &before.relayed_bytes,
    );
    let bindings = now.binding_requests.saturating_sub(before.binding_requests);
    if bindings > 0 {
        metrics::counter!("concord_turn_binding_requests_total").increment(bindings);
    }
}

/// A packet the driver could not hand to the OS or to a client's queue.
pub fn driver_drop(reason: &'static str) {
    metrics::counter!("concord_turn_dropped_packets_total", "reason" => reason).increment(1);
}

pub fn connection_opened(transport: Transport) {
    metrics::gauge!("concord_turn_connections", "transport" => transport.as_str()).increment(1.0);
}

pub fn connection_closed(transport: Transport) {
    metrics::gauge!("concord_turn_connections", "transport" => transport.as_str()).decrement(1.0);
}

pub fn connection_rejected() {
    metrics::counter!("concord_turn_connections_rejected_total").increment(1);
}

pub fn slow_client() {
    metrics::counter!("concord_turn_slow_clients_total").increment(1);
}
