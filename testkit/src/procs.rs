//! Real binaries for tests: the relay and the `concord` CLI/daemon as processes, optionally
//! inside a network namespace (`ip netns exec`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A binary of the workspace, next to the running test in the target dir. It is built (a
/// no-op when up to date) once per test process: cargo builds only the binaries of the
/// package under test, so a binary of another package in a reused target dir may be stale.
pub fn binary(package: &str, name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    // target/<profile>/deps/<test> → target/<profile>
    let dir = std::env::current_exe()
        .expect("test path")
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned();
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", name])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building {name}");
        built.push(name.to_owned());
    }
    dir.join(name)
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn command(ns: Option<&str>, program: &Path) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Starts `concord-relay` with `args`; returns the process and its URL. Its stdout is drained
/// by a thread, so it never blocks or breaks.
pub fn relay(args: &[&str]) -> (Proc, String) {
    relay_with_env(args, &[])
}

/// One instance of a cluster as a process (it can be SIGKILLed: drop the [`Proc`]): loopback
/// listeners, `config`, the shared PostgreSQL `db` and the test Redis under `prefix`.
pub fn cluster_relay(dir: &Path, config: &Path, db: &str, prefix: &str) -> (Proc, String) {
    let config = config.to_str().expect("UTF-8 path");
    let dir = dir.to_str().expect("UTF-8 path");
    let redis = crate::redis_url();
    relay(&[
        "--config",
        config,
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir,
        "--database-url",
        db,
        "--redis-url",
        &redis,
        "--redis-prefix",
        prefix,
        "--p2p-listen",
        "/ip4/127.0.0.1/tcp/0",
        "--log",
        "warn",
    ])
}

/// [`relay`] with extra environment variables.
pub fn relay_with_env(args: &[&str], env: &[(&str, &str)]) -> (Proc, String) {
    let mut child = Command::new(binary("concord-relay", "concord-relay"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .expect("relay starts");
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the relay prints its URL")
            .expect("stdout reads");
        if let Some(u) = line.strip_prefix("concord-relay listening on ") {
            break u.to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (Proc(child), url)
}

/// The `concord` CLI on one data dir, optionally inside a network namespace, never with a
/// terminal on stdin.
pub struct Cli {
    pub dir: PathBuf,
    pub ns: Option<String>,
}

impl Cli {
    pub fn new(dir: &Path) -> Cli {
        Cli {
            dir: dir.to_owned(),
            ns: None,
        }
    }

    pub fn in_netns(dir: &Path, ns: &str) -> Cli {
        Cli {
            dir: dir.to_owned(),
            ns: Some(ns.to_owned()),
        }
    }

    fn concord(&self) -> Command {
        let mut c = command(self.ns.as_deref(), &binary("concord-node", "concord"));
        c.arg("--data-dir").arg(&self.dir).stdin(Stdio::null());
        c
    }

    /// Runs a command; returns (success, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.concord().args(args).output().expect("concord runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "concord {args:?} failed: {err}{out}");
        out
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }

    /// Starts `concord daemon` with `args` and waits for its control API.
    pub fn daemon(&self, args: &[&str]) -> Proc {
        let addr_file = self.dir.join(concord_node::daemon::CONTROL_ADDR_FILE);
        let _ = std::fs::remove_file(&addr_file);
        let child = self
            .concord()
            .arg("daemon")
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("daemon starts");
        wait_until("the daemon's control API", Duration::from_secs(30), || {
            std::fs::read_to_string(&addr_file)
                .is_ok_and(|a| a.trim().parse::<std::net::SocketAddr>().is_ok())
        });
        Proc(child)
    }
}
