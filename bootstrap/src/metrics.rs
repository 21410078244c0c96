//! Prometheus metrics of one bootstrap instance, as plain atomics rendered on `/metrics`
//! (several instances in one test process keep separate numbers). Every name starts with
//! `concord_bootstrap_`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// (name, type, help) of every metric, in render order.
pub const METRICS: &[(&str, &str, &str)] = &[
    ("concord_bootstrap_peers", "gauge", "Connected peers"),
    (
        "concord_bootstrap_dht_routing_peers",
        "gauge",
        "Peers in the Kademlia routing table",
    ),
    (
        "concord_bootstrap_dht_records",
        "gauge",
        "Records held in the DHT store",
    ),
    (
        "concord_bootstrap_dht_queries_total",
        "counter",
        "Inbound Kademlia requests by kind",
    ),
    (
        "concord_bootstrap_autonat_probes_total",
        "counter",
        "AutoNAT dial-back probes served by result",
    ),
    (
        "concord_bootstrap_relay_reservations_total",
        "counter",
        "Circuit relay reservations by result",
    ),
    (
        "concord_bootstrap_relay_circuits_total",
        "counter",
        "Circuit relay circuits by result",
    ),
    (
        "concord_bootstrap_connections_total",
        "counter",
        "Connections established",
    ),
];

pub const QUERY_KINDS: [&str; 5] = [
    "find_node",
    "get_providers",
    "add_provider",
    "get_record",
    "put_record",
];
pub const RESULTS: [&str; 2] = ["ok", "error"];

#[derive(Debug, Default)]
pub struct Stats {
    pub peers: AtomicU64,
    pub routing_peers: AtomicU64,
    pub records: AtomicU64,
    pub queries: [AtomicU64; 5],
    pub autonat_probes: [AtomicU64; 2],
    pub reservations: [AtomicU64; 2],
    pub circuits: [AtomicU64; 2],
    pub connections: AtomicU64,
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

pub fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

pub fn set(a: &AtomicU64, v: u64) {
    a.store(v, Ordering::Relaxed);
}

impl Stats {
    pub fn query(&self, kind: &str) {
        if let Some(i) = QUERY_KINDS.iter().position(|k| *k == kind) {
            inc(&self.queries[i]);
        }
    }

    pub fn queries_total(&self) -> u64 {
        self.queries.iter().map(get).sum()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help) in METRICS {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            match *name {
                "concord_bootstrap_peers" => line(&mut out, name, "", get(&self.peers)),
                "concord_bootstrap_dht_routing_peers" => {
                    line(&mut out, name, "", get(&self.routing_peers))
                }
                "concord_bootstrap_dht_records" => line(&mut out, name, "", get(&self.records)),
                "concord_bootstrap_dht_queries_total" => {
                    for (k, v) in QUERY_KINDS.iter().zip(&self.queries) {
                        line(&mut out, name, &format!("kind=\"{k}\""), get(v));
                    }
                }
                "concord_bootstrap_autonat_probes_total" => {
                    results(&mut out, name, &self.autonat_probes)
                }
                "concord_bootstrap_relay_reservations_total" => {
                    results(&mut out, name, &self.reservations)
                }
                "concord_bootstrap_relay_circuits_total" => results(&mut out, name, &self.circuits),
                "concord_bootstrap_connections_total" => {
                    line(&mut out, name, "", get(&self.connections))
                }
                _ => {}
            }
        }
        out
    }
}

fn results(out: &mut String, name: &str, values: &[AtomicU64; 2]) {
    for (r, v) in RESULTS.iter().zip(values) {
        line(out, name, &format!("result=\"{r}\""), get(v));
    }
}

fn line(out: &mut String, name: &str, labels: &str, value: u64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders() {
        let stats = Stats::default();
        stats.query("find_node");
        let text = stats.render();
        for (name, _, _) in METRICS {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
            assert!(
                text.lines()
                    .any(|l| l.starts_with(name) && !l.starts_with('#')),
                "{name}"
            );
        }
        assert!(text.contains("concord_bootstrap_dht_queries_total{kind=\"find_node\"} 1"));
    }
}
