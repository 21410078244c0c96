//! The real binaries, run inside the lab's namespaces with `ip netns exec`. `Node` wraps the
//! `concord` CLI of one host.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// Where `concord-relay`, `concord-bootstrap` and `concord` are.
#[derive(Debug, Clone)]
pub struct Bins {
    pub relay: PathBuf,
    pub bootstrap: PathBuf,
    pub node: PathBuf,
}

impl Bins {
    /// The three binaries in one directory (a cargo target profile dir).
    pub fn in_dir(dir: &Path) -> anyhow::Result<Bins> {
        let bins = Bins {
            relay: dir.join("concord-relay"),
            bootstrap: dir.join("concord-bootstrap"),
            node: dir.join("concord"),
        };
        for b in [&bins.relay, &bins.bootstrap, &bins.node] {
            if !b.is_file() {
                bail!(
                    "{} is missing (build the workspace's binaries first)",
                    b.display()
                );
            }
        }
        Ok(bins)
    }
}

/// A child process, killed when dropped.
pub struct Proc(Child);

impl Proc {
    /// SIGTERM, as a user's shutdown does, then waits for the exit (SIGKILL after 10 s): the
    /// process closes its connections, so the relay forgets it at once.
    pub fn stop(mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn in_ns(ns: &str, program: &Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

/// Starts a server in `ns` and returns the lines it printed up to and including the first
/// one that `ready` accepts; the rest of its stdout is drained by a thread.
pub fn server(
    ns: &str,
    program: &Path,
    args: &[&str],
    ready: impl Fn(&str) -> bool,
) -> anyhow::Result<(Proc, Vec<String>)> {
    let mut child = in_ns(ns, program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let proc = Proc(child);
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    loop {
        let Some(line) = lines.next() else {
            bail!("{} exited before it was ready: {seen:?}", program.display());
        };
        let line = line?;
        let done = ready(&line);
        seen.push(line);
        if done {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    Ok((proc, seen))
}

/// `concord` on one data dir inside one namespace.
#[derive(Debug, Clone)]
pub struct Node {
    pub host: String,
    pub ns: String,
    pub dir: PathBuf,
    pub bin: PathBuf,
}

impl Node {
    fn concord(&self) -> Command {
        let mut c = in_ns(&self.ns, &self.bin);
        c.arg("--data-dir").arg(&self.dir).stdin(Stdio::null());
        c
    }

    /// Runs a command and parses its `--json` output.
    pub fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let out = self
            .concord()
            .arg("--json")
            .args(args)
            .output()
            .context("running concord")?;
        if !out.status.success() {
            bail!(
                "{}: concord {args:?} failed: {}{}",
                self.host,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{}: concord {args:?} printed no JSON", self.host))
    }

    /// Runs a command that prints nothing useful.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = self
            .concord()
            .args(args)
            .output()
            .context("running concord")?;
        if !out.status.success() {
            bail!(
                "{}: concord {args:?} failed: {}",
                self.host,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Starts `concord daemon` and waits for its control API.
    pub fn daemon(&self, args: &[&str]) -> anyhow::Result<Proc> {
        let addr_file = self.dir.join(concord_node::daemon::CONTROL_ADDR_FILE);
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::File::create(self.dir.join("daemon.log"))?;
        let child = self
            .concord()
            .arg("daemon")
            .args(args)
            .env(
                "CONCORD_LOG",
                std::env::var("NETLAB_NODE_LOG").unwrap_or_else(|_| "info,libp2p=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting concord daemon")?;
        let proc = Proc(child);
        wait_until(Duration::from_secs(30), || {
            std::fs::read_to_string(&addr_file)
                .is_ok_and(|a| a.trim().parse::<std::net::SocketAddr>().is_ok())
        })
        .with_context(|| format!("{}: the daemon's control API never came up", self.host))?;
        Ok(proc)
    }
}

/// Polls `f` every 50 ms until it holds; an error after `timeout`.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
