//! Runs the Chromium scripts in `browser/` (playwright-core driving Debian's Chromium) and
//! reads the one JSON line each prints. `scripts/test` installs Chromium and the npm package.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// The `browser/` directory of the repository.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../browser")
}

/// Runs `node browser/<script> args…` and returns its JSON result (`ok` says whether the
/// browser saw what the script checks). Panics with the script's output when it cannot run.
pub async fn run(script: &str, args: &[String], timeout: Duration) -> Value {
    let dir = dir();
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "browser tests need `npm ci --prefix browser` and Debian's chromium (scripts/test installs both)"
    );
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .kill_on_drop(true);
    let output = tokio::time::timeout(timeout, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {timeout:?}"))
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    match line.map(serde_json::from_str::<Value>) {
        Some(Ok(v)) => v,
        _ => panic!("{script} printed no result\nstdout: {stdout}\nstderr: {stderr}"),
    }
}

/// A script that talks to its test while it runs: JSON lines on stdout (steps, then its
/// result), answers on stdin. Killed when dropped.
pub struct Interactive {
    pub child: tokio::process::Child,
    pub stdin: tokio::process::ChildStdin,
    pub stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    pub stderr: tokio::process::ChildStderr,
}

/// Starts `node browser/<script> args…` with piped stdin, stdout and stderr.
pub fn spawn(script: &str, args: &[String]) -> Interactive {
    use std::process::Stdio;
    use tokio::io::AsyncBufReadExt;
    let dir = dir();
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "browser tests need `npm ci --prefix browser` and Debian's chromium (scripts/test installs both)"
    );
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    Interactive {
        stdin: child.stdin.take().expect("stdin"),
        stdout: tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines(),
        stderr: child.stderr.take().expect("stderr"),
        child,
    }
}

/// Asserts that every named check of a script's result is `true`, and `ok`; a failure shows
/// the whole result.
pub fn assert_checks(result: &Value, checks: &[&str]) {
    let pretty = serde_json::to_string_pretty(result).expect("json");
    for check in checks {
        assert_eq!(
            result["checks"][check],
            Value::Bool(true),
            "check {check} failed:\n{pretty}"
        );
    }
    assert_eq!(result["ok"], Value::Bool(true), "{pretty}");
}
