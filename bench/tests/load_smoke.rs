//! The load scenarios at tiny sizes against a real `concord-relay` process (debug build):
//! the JSON report has the pinned shape, every expected delivery arrived, nothing failed.
//! Timing is not asserted.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str], dir: &Path, name: &str) -> Value {
    let relay = concord_testkit::procs::binary("concord-relay", "concord-relay");
    let json = dir.join(format!("{name}.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_concord-bench"))
        .args(args)
        .args(["--quiet", "--pin", "off", "--relay-bin"])
        .arg(&relay)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("concord-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "concord-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report written"))
            .expect("report is JSON");
    // The pinned shape (issue 6).
    for key in [
        "scenario",
        "clients",
        "rate",
        "duration_s",
        "sent",
        "delivered",
        "errors",
    ] {
        assert!(report.get(key).is_some(), "{key} missing: {report}");
    }
    for key in ["p50", "p95", "p99", "max"] {
        assert!(
            report["delivery_ms"][key].is_number(),
            "delivery_ms.{key}: {report}"
        );
    }
    for key in ["cpu_pct", "rss_kb_max", "rss_kb_per_conn"] {
        assert!(report["relay"][key].is_number(), "relay.{key}: {report}");
    }
    assert_eq!(report["scenario"], name);
    assert_eq!(report["errors"], 0, "{report}");
    assert!(stdout.contains("relay RSS per connection"), "{stdout}");
    report
}

#[test]
fn text_delivers_everything() {
    let dir = tempfile::tempdir().unwrap();
    let r = bench(
        &["text", "--clients", "20", "--rate", "20", "--duration", "2"],
        dir.path(),
        "text",
    );
    assert_eq!(r["clients"], 20);
    assert_eq!(r["sent"], 40, "{r}");
    assert!(r["delivered"].as_u64().unwrap() >= 40, "{r}");
    assert_eq!(r["delivered"], r["details"]["expected"], "{r}");
    assert!(r["delivery_ms"]["max"].as_f64().unwrap() > 0.0);
    for plot in ["latency-cdf", "timeline", "relay-rss"] {
        let svg = std::fs::read_to_string(dir.path().join(format!("text-{plot}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{plot}");
    }
}

#[test]
fn text_on_postgres() {
    let url = std::env::var("CONCORD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let dir = tempfile::tempdir().unwrap();
    let r = bench(
        &[
            "text",
            "--clients",
            "20",
            "--rate",
            "20",
            "--duration",
            "2",
            "--database-url",
            &url,
        ],
        dir.path(),
        "text",
    );
    assert_eq!(r["details"]["database"], "postgres");
    assert_eq!(r["sent"], 40, "{r}");
    assert_eq!(r["delivered"], r["details"]["expected"], "{r}");
}

#[test]
fn idle_measures_memory_per_connection() {
    let dir = tempfile::tempdir().unwrap();
    let r = bench(
        &["idle", "--clients", "20", "--duration", "1"],
        dir.path(),
        "idle",
    );
    assert_eq!(r["clients"], 20);
    assert_eq!(r["details"]["dropped_connections"], 0);
}

/// Connections dropped and made again: every socket the connections took is given back (the
/// RSS and other descriptors are reported, not asserted).
#[test]
fn idle_churn_gives_back_every_socket() {
    let dir = tempfile::tempdir().unwrap();
    let r = bench(
        &[
            "idle",
            "--clients",
            "50",
            "--duration",
            "1",
            "--rounds",
            "2",
            "--resume-window",
            "1",
        ],
        dir.path(),
        "idle",
    );
    let d = &r["details"];
    let rounds = d["churn_rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{r}");
    let sockets = |v: &serde_json::Value| v["sockets"].as_i64().unwrap();
    let (before, connected) = (
        sockets(&d["relay_fds_before_connect"]),
        sockets(&d["relay_fds_connected"]),
    );
    assert!(
        connected >= before + 50,
        "each connection holds a socket: {d}"
    );
    assert_eq!(d["sockets_leaked"], 0, "{d}");
    for round in rounds {
        assert_eq!(sockets(&round["closed_fds"]), before, "{d}");
        assert!(sockets(&round["connected_fds"]) >= before + 50, "{d}");
    }
    // Other descriptors are the database pool, which opens connections on demand up to its
    // size: reported, not asserted.
    assert!(d["files_grown_over_rounds"].is_i64(), "{d}");
    assert!(d["rss_after_close_over_before"].as_f64().unwrap() > 0.0);
}
