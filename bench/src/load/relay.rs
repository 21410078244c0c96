//! The relay under load: a `concord-relay` process started by the bench (SQLite in a temporary
//! data dir, or a fresh PostgreSQL schema) or an external one named by URL; the host's limits
//! (open files, CPU pinning); and a sampler of the relay's CPU time and RSS from /proc.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::Common;

/// Rate limits in the bench's relay config: high enough that the load never meets them
/// (every bench account logs in from 127.0.0.1).
const UNLIMITED: u32 = 1_000_000_000;

pub struct Relay {
    pub url: String,
    /// The process to sample, when known.
    pub pid: Option<u32>,
    /// "sqlite", "postgres" or "external".
    pub database: String,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL server URL and the schema this run created.
    schema: Option<(String, String)>,
}

/// Extra relay settings for a scenario (written into the bench's relay config).
#[derive(Default, Clone)]
pub struct Tweaks {
    /// `[gateway]` WebSocket buffer sizes; None keeps the relay's defaults.
    pub ws_read_buffer: Option<usize>,
    pub ws_write_buffer: Option<usize>,
    /// Voice through the SFU: libp2p on loopback (the relay signs voice grants with its
    /// identity), this many SFU rooms allowed, and rooms on the SFU from the first join.
    pub voice_rooms: Option<usize>,
    /// `[gateway] resume_window_secs`: how long a closed connection's session is kept.
    pub resume_window_secs: Option<u64>,
}

impl Relay {
    pub async fn start(
        common: &Common,
        tweaks: &Tweaks,
        pin_cpu: Option<usize>,
    ) -> anyhow::Result<Relay> {
        if let Some(url) = &common.target {
            check_loopback(url)?;
            return Ok(Relay {
                url: url.trim_end_matches('/').to_owned(),
                pid: common.relay_pid,
                database: "external".into(),
                child: None,
                _dir: None,
                schema: None,
            });
        }
        let bin = relay_binary(common.relay_bin.as_deref())?;
        let dir = tempfile::tempdir()?;
        let (database_url, schema, database) = match &common.database_url {
            Some(url) if url.starts_with("postgres") => {
                let schema = fresh_schema(url).await?;
                let sep = if url.contains('?') { '&' } else { '?' };
                (
                    Some(format!("{url}{sep}options[search_path]={schema}")),
                    Some((url.clone(), schema)),
                    "postgres",
                )
            }
            Some(url) => (Some(url.clone()), None, "sqlite"),
            None => (None, None, "sqlite"),
        };
        let config = config_toml(dir.path(), database_url.as_deref(), tweaks);
        let config_path = dir.path().join("relay.toml");
        std::fs::write(&config_path, config)?;
        let mut cmd = match pin_cpu {
            Some(cpu) => {
                let mut c = std::process::Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(&bin);
                c
            }
            None => std::process::Command::new(&bin),
        };
        cmd.arg("--config")
            .arg(&config_path)
            .args(["--log", "warn", "serve"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let stdout = child.stdout.take().context("relay stdout")?;
        let pid = child.id();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Keep draining: a relay blocked on a full stdout pipe stalls.
        std::thread::spawn(move || {
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
        let mut relay = Relay {
            url: String::new(),
            pid: Some(pid),
            database: database.into(),
            child: Some(child),
            _dir: Some(dir),
            schema,
        };
        relay.url = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .ok()
            .and_then(Result::ok)
            .context("the relay did not print its URL")?;
        Ok(relay)
    }

    /// SIGTERM and wait (SIGKILL after 15 s); drops the PostgreSQL schema.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .await;
            for _ in 0..300 {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some((url, schema)) = self.schema.take()
            && let Ok(mut conn) = PgConnection::connect(&url).await
        {
            let _ = sqlx::query(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The bench targets loopback only.
fn check_loopback(url: &str) -> anyhow::Result<()> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or(rest);
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    anyhow::ensure!(loopback, "--target must be a loopback URL, not {url}");
    Ok(())
}

/// `concord-relay` beside this executable (target/<profile>/), or the given path.
fn relay_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_owned(),
        None => std::env::current_exe()?
            .parent()
            .context("the bench binary has no directory")?
            .join("concord-relay"),
    };
    anyhow::ensure!(
        path.exists(),
        "{} is missing; build it first: cargo build --release -p concord-relay (or pass --relay-bin)",
        path.display()
    );
    Ok(path)
}

async fn fresh_schema(url: &str) -> anyhow::Result<String> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let schema = format!("bench_{}_{nanos}", std::process::id());
    let mut conn = PgConnection::connect(url)
        .await
        .with_context(|| format!("connect to {url}"))?;
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&mut conn)
        .await?;
    conn.close().await.ok();
    Ok(schema)
}

fn config_toml(dir: &Path, database_url: Option<&str>, tweaks: &Tweaks) -> String {
    let mut out = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n",
        dir.join("data").display().to_string()
    );
    if let Some(url) = database_url {
        out.push_str(&format!("database_url = {url:?}\n"));
    }
    out.push_str("[rate_limits]\nmax_tracked_keys = 10000000\n");
    for class in ["auth", "signup", "message_send", "general", "gateway"] {
        out.push_str(&format!(
            "[rate_limits.{class}]\nrequests = {UNLIMITED}\nwindow_secs = 1\n"
        ));
    }
    out.push_str("[gateway]\nmax_connections = 200000\nmax_pending_events = 4096\n");
    if let Some(n) = tweaks.ws_read_buffer {
        out.push_str(&format!("read_buffer_bytes = {n}\n"));
    }
    if let Some(n) = tweaks.ws_write_buffer {
        out.push_str(&format!("write_buffer_bytes = {n}\n"));
        out.push_str(&format!(
            "max_write_buffer_bytes = {}\n",
            (n * 2).max(1024 * 1024)
        ));
    }
    if let Some(secs) = tweaks.resume_window_secs {
        out.push_str(&format!("resume_window_secs = {secs}\n"));
    }
    out.push_str("[database]\nacquire_timeout_secs = 60\n");
    match tweaks.voice_rooms {
        Some(rooms) => out.push_str(&format!(
            "[p2p]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n[voice]\nmesh_size = 1\nsfu_max_rooms = {rooms}\ngrant_ttl_secs = 3600\n"
        )),
        None => out.push_str("[p2p]\nenabled = false\n"),
    }
    out
}

/// Raises this process's open-file limit (children inherit it): to fs.nr_open when allowed
/// (root), else to the hard limit. Returns the new soft limit.
pub fn raise_nofile() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let want = nr_open.min(1 << 20);
    let raised = Rlimit {
        current: Some(want),
        maximum: Some(want.max(limit.maximum.unwrap_or(0))),
    };
    if setrlimit(Resource::Nofile, raised).is_ok() {
        return want;
    }
    let hard = limit.maximum.unwrap_or(want);
    let soft = Rlimit {
        current: Some(hard),
        maximum: limit.maximum,
    };
    if setrlimit(Resource::Nofile, soft).is_ok() {
        hard
    } else {
        limit.current.unwrap_or(0)
    }
}

/// With 2+ cores: the relay on core 0, this process (every thread it starts from now on) on
/// the others. Returns the relay's core and a description of what was done.
pub fn pin(enabled: bool, external: bool) -> (Option<usize>, String) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if !enabled {
        return (None, "off (--pin off)".into());
    }
    if cores < 2 {
        return (None, format!("off ({cores} core)"));
    }
    let mut set = rustix::thread::CpuSet::new();
    for cpu in 1..cores {
        set.set(cpu);
    }
    if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
        return (None, format!("off (sched_setaffinity: {e})"));
    }
    let bench = if cores == 2 {
        "1".to_owned()
    } else {
        format!("1-{}", cores - 1)
    };
    if external {
        (
            None,
            format!("bench on cores {bench}; external relay not pinned"),
        )
    } else {
        (
            Some(0),
            format!("relay on core 0 (taskset), bench on cores {bench}"),
        )
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds since the bench's start.
    pub t: f64,
    /// Cumulative user + system CPU seconds of the process.
    pub cpu_s: f64,
    pub rss_kb: u64,
}

/// USER_HZ: /proc's clock ticks, 100 on every Linux ABI in use.
const TICKS_PER_SEC: f64 = 100.0;

/// One reading of /proc/<pid>/stat and status.
pub fn read_proc(pid: u32, start: Instant) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Sample {
        t: start.elapsed().as_secs_f64(),
        cpu_s: (utime + stime) / TICKS_PER_SEC,
        rss_kb,
    })
}

/// Open file descriptors of a process: all of them, and how many are sockets.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Fds {
    pub total: usize,
    pub sockets: usize,
}

/// Reads a process's descriptor table (`/proc/<pid>/fd`).
pub fn open_fds(pid: u32) -> Option<Fds> {
    let mut fds = Fds {
        total: 0,
        sockets: 0,
    };
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        fds.total += 1;
        if std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
        {
            fds.sockets += 1;
        }
    }
    Some(fds)
}

/// Samples a process every `every` on a thread of its own.
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(pid: Option<u32>, start: Instant, every: Duration) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = pid.map(|pid| {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(s) = read_proc(pid, start) {
                        samples.lock().expect("samples").push(s);
                    }
                    std::thread::sleep(every);
                }
            })
        });
        Sampler {
            samples,
            stop,
            thread,
        }
    }

    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.samples.lock().expect("samples"))
    }
}

/// Average CPU use between two readings, in % of one core.
pub fn cpu_pct(a: &Sample, b: &Sample) -> f64 {
    if b.t > a.t {
        (b.cpu_s - a.cpu_s) / (b.t - a.t) * 100.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(check_loopback("http://127.0.0.1:8080").is_ok());
        assert!(check_loopback("http://localhost:1/x").is_ok());
        assert!(check_loopback("http://[::1]:9").is_ok());
        assert!(check_loopback("http://10.0.0.1:8080").is_err());
        assert!(check_loopback("https://example.org").is_err());
    }

    #[test]
    fn reads_own_proc() {
        let s = read_proc(std::process::id(), Instant::now()).expect("own /proc");
        assert!(s.rss_kb > 0);
        let later = Sample {
            t: s.t + 2.0,
            cpu_s: s.cpu_s + 1.0,
            rss_kb: 0,
        };
        assert!((cpu_pct(&s, &later) - 50.0).abs() < 1e-9);
    }

    #[test]
    fn config_parses() {
        let text = config_toml(
            Path::new("/tmp/x"),
            Some("sqlite:///tmp/x/db"),
            &Tweaks {
                ws_read_buffer: Some(131_072),
                ws_write_buffer: Some(131_072),
                voice_rooms: Some(500),
                resume_window_secs: Some(5),
            },
        );
        let config: concord_relay::RelayConfig = toml::from_str(&text).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.gateway.read_buffer_bytes, 131_072);
    }
}
