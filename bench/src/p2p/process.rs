//! The node as a process: `concord-relay` and `concord daemon` binaries, the daemon's RSS
//! after join and its cold start to "connected".

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use concord_node::daemon::{CONTROL_ADDR_FILE, CONTROL_TOKEN_FILE};
use concord_node::relay_http::RelayHttp;
use serde_json::{Value, json};

use super::{Args, ProcessReport, kib_to_mb, status_kib};
use crate::stats::summarize;

pub(super) struct Binaries {
    node: PathBuf,
    relay: PathBuf,
}

/// The release binaries beside this one in the target dir.
pub(super) fn binaries() -> anyhow::Result<Binaries> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the bench binary has no directory")?;
    let bins = Binaries {
        node: dir.join("concord"),
        relay: dir.join("concord-relay"),
    };
    for bin in [&bins.node, &bins.relay] {
        anyhow::ensure!(
            bin.exists(),
            "{} is missing; build it first: cargo build --release -p concord-node -p concord-relay",
            bin.display()
        );
    }
    Ok(bins)
}

/// A child process, killed when dropped.
struct Proc(Child);

impl Proc {
    /// SIGTERM, so the daemon shuts down as it would for a user; SIGKILL after a grace.
    async fn stop(mut self) {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .await;
        for _ in 0..200 {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) async fn node_process(bins: &Binaries, args: &Args) -> anyhow::Result<ProcessReport> {
    let root = tempfile::tempdir()?;
    let (node_dir, relay_dir) = (root.path().join("node"), root.path().join("relay"));
    let (_relay, url) = start_relay(&bins.relay, &relay_dir).await?;
    cli(&bins.node, &node_dir, &["init", "--label", "bench"]).await?;
    let identity = concord_node::identity::load(&node_dir)?;
    let code = create_guild(&RelayHttp::new(&url), &identity, "bench").await?;

    let mut daemon = start_daemon(&bins.node, &node_dir)?;
    control(&node_dir).await?;
    cli(&bins.node, &node_dir, &["join", &url, &code]).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: Value =
            serde_json::from_str(&cli(&bins.node, &node_dir, &["--json", "status"]).await?)?;
        if status["relay"]["connected"] == true {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the node never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "node joined; idle {} s before reading its RSS…",
        args.idle_secs
    );
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.0.id()))?;
    let rss = status_kib(&status, "VmRSS").context("no VmRSS")?;
    let peak = status_kib(&status, "VmHWM").context("no VmHWM")?;

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let (mut runs, mut up) = (Vec::new(), Vec::new());
    for i in 0..args.restarts {
        daemon.stop().await;
        let start = Instant::now();
        daemon = start_daemon(&bins.node, &node_dir)?;
        let (addr, token) = control(&node_dir).await?;
        up.push(start.elapsed());
        while !relay_connected(&http, &addr, &token).await {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(30),
                "restart {i}: never connected"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        runs.push(start.elapsed());
    }
    daemon.stop().await;
    Ok(ProcessReport {
        idle_rss_mb: kib_to_mb(rss),
        idle_rss_kib: rss,
        peak_rss_mb: kib_to_mb(peak),
        idle_secs: args.idle_secs,
        cold_start: summarize(&runs),
        cold_start_runs_ms: runs.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
        control_api_up: summarize(&up),
    })
}

/// Starts `concord-relay` on loopback ports; returns it and the URL it prints.
async fn start_relay(bin: &Path, dir: &Path) -> anyhow::Result<(Proc, String)> {
    let mut child = std::process::Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args([
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
            "--p2p-listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--log",
            "warn",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let stdout = child.stdout.take().context("relay stdout")?;
    let relay = Proc(child);
    let (tx, rx) = tokio::sync::oneshot::channel();
    // Keep draining: a relay blocked on a full stdout pipe stalls.
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix("concord-relay listening on ")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .ok()
        .and_then(Result::ok)
        .context("the relay did not print its URL")?;
    Ok((relay, url))
}

fn start_daemon(bin: &Path, dir: &Path) -> anyhow::Result<Proc> {
    // Its appearance is the "control API up" signal.
    let _ = std::fs::remove_file(dir.join(CONTROL_ADDR_FILE));
    let child = std::process::Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .args([
            "daemon",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--no-mdns",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("start the node daemon")?;
    Ok(Proc(child))
}

/// Waits for the daemon's control API; returns its address and token.
async fn control(dir: &Path) -> anyhow::Result<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Written after the token, and not atomically: wait until it parses.
        let addr = std::fs::read_to_string(dir.join(CONTROL_ADDR_FILE)).unwrap_or_default();
        if addr.trim().parse::<std::net::SocketAddr>().is_ok() {
            let token = std::fs::read_to_string(dir.join(CONTROL_TOKEN_FILE))?;
            return Ok((addr.trim().to_owned(), token.trim().to_owned()));
        }
        anyhow::ensure!(Instant::now() < deadline, "the daemon did not start");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn relay_connected(http: &reqwest::Client, addr: &str, token: &str) -> bool {
    let answer = http
        .get(format!("http://{addr}/v1/status"))
        .bearer_auth(token)
        .send()
        .await;
    match answer {
        Ok(resp) => resp
            .json::<Value>()
            .await
            .is_ok_and(|v| v["relay"]["connected"] == true),
        Err(_) => false,
    }
}

/// `concord --data-dir DIR args…`; its stdout.
async fn cli(bin: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "concord {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Registers the identity's account and creates a guild; returns an invite code.
async fn create_guild(
    http: &RelayHttp,
    identity: &concord_node::identity::Identity,
    name: &str,
) -> anyhow::Result<String> {
    http.login(identity, Some(name)).await?;
    let guild: Value = http
        .authed(
            identity,
            reqwest::Method::POST,
            "/api/v1/guilds",
            Some(json!({ "name": name })),
        )
        .await?;
    let id = guild["id"].as_str().context("guild id")?.to_owned();
    let invite: Value = http
        .authed(
            identity,
            reqwest::Method::POST,
            &format!("/api/v1/guilds/{id}/invites"),
            Some(json!({})),
        )
        .await?;
    Ok(invite["code"].as_str().context("invite code")?.to_owned())
}
