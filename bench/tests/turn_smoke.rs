//! `concord-bench turn` at a tiny size against concord-turn: every allocation is set up, every
//! packet arrives, and the report has the documented shape. (Numbers are for the benchmark run,
//! not for CI: nothing here is timed.)

use std::path::PathBuf;
use std::process::Command;

#[test]
fn turn_scenario_relays_every_packet_and_writes_its_report() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_concord-bench"));
    let turn = bench.with_file_name("concord-turn");
    assert!(
        turn.exists(),
        "{} is missing: build the workspace (cargo build -p concord-turn)",
        turn.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("turn.json");
    let out = Command::new(&bench)
        .args([
            "turn",
            "--allocations",
            "10",
            "--duration",
            "2",
            "--servers",
            "concord",
            "--no-pin",
        ])
        .arg("--concord-turn")
        .arg(&turn)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("concord-bench runs");
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("report written")).expect("JSON");
    assert_eq!(report["scenario"], "turn");
    assert_eq!(report["rate_pps"], 50);
    assert_eq!(report["payload_bytes"], 160);
    let run = &report["runs"][0];
    assert_eq!(run["server"], "concord-turn");
    assert_eq!(run["allocations"], 10);
    assert_eq!(run["allocations_failed"], 0);
    // 10 allocations × 50 packets/s × 2 s, all relayed on loopback.
    assert_eq!(run["sent"], 1000);
    assert_eq!(run["received"], 1000, "{run}");
    assert_eq!(run["loss_pct"], 0.0);
    for key in ["cpu_pct", "rss_kb_max", "setup_s"] {
        assert!(run[key].is_number(), "{key} in {run}");
    }
    assert!(run["latency_ms"]["p99_ms"].as_f64().expect("p99") > 0.0);
    assert!(report["ratios"].as_array().expect("ratios").is_empty());
}
