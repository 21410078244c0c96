//! `concord-bench voice` at a tiny size: three WebRTC participants join one room through the
//! SFU at once, every listener gets its two speakers, and the report has the documented
//! fields. (Numbers are for the benchmark run, not for CI: nothing here is timed.)

use std::path::PathBuf;
use std::process::Command;

#[test]
fn voice_scenario_forwards_every_speaker_and_writes_its_report() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_concord-bench"));
    let relay = concord_testkit::procs::binary("concord-relay", "concord-relay");
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("voice.json");
    let out = Command::new(&bench)
        .args([
            "voice",
            "--rooms",
            "1",
            "--participants",
            "3",
            "--duration",
            "2",
        ])
        .args(["--pin", "off", "--quiet", "--relay-bin"])
        .arg(&relay)
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
    assert_eq!(report["scenario"], "voice");
    // Three participants, each hearing the two others.
    assert_eq!(report["downtracks"], 6);
    let level = &report["levels"][0];
    assert_eq!(level["expected"], 6 * 50 * 2);
    // Loopback drops nothing; the window's edges may cut a packet or two.
    assert!(
        level["received"].as_u64().expect("received") >= 6 * 50 * 2 - 12,
        "{level}"
    );
    for key in [
        "downtracks_per_core",
        "loss_fraction",
        "raw_forwarder_pps",
        "raw_forwarder_ratio",
        "seed_premise_fraction",
    ] {
        assert!(report[key].is_number(), "{key} in {report}");
    }
    assert!(report["forward_delay_ms"]["p99"].as_f64().expect("p99") > 0.0);
    assert!(
        report["raw_forwarder"]["forwarded_pps"]
            .as_f64()
            .expect("raw")
            > 0.0
    );
}
