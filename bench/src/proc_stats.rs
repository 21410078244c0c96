//! CPU and memory of another process, sampled from /proc while a scenario runs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// CPU time over the sampled interval, percent of one core.
    pub cpu_pct: f64,
    pub rss_kb_first: u64,
    pub rss_kb_max: u64,
}

/// Samples RSS every `every` until stopped; CPU is the difference of the process's
/// user + system time between start and stop.
pub struct ProcSampler {
    pid: u32,
    started: Instant,
    cpu_start: u64,
    rss_first: u64,
    task: tokio::task::JoinHandle<u64>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// Clock ticks per second of /proc/<pid>/stat times (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// utime + stime of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    Ok(utime + stime)
}

/// Resident set size in KB (VmRSS).
pub fn rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0))
}

impl ProcSampler {
    pub fn start(pid: u32, every: Duration) -> Result<ProcSampler> {
        let cpu_start = cpu_ticks(pid)?;
        let rss_first = rss_kb(pid)?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut max = rss_first;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {
                        if let Ok(kb) = rss_kb(pid) { max = max.max(kb); }
                    }
                    _ = stopped.changed() => return max,
                }
            }
        });
        Ok(ProcSampler {
            pid,
            started: Instant::now(),
            cpu_start,
            rss_first,
            task,
            stop,
        })
    }

    pub async fn stop(self) -> Usage {
        let elapsed = self.started.elapsed().as_secs_f64();
        let cpu_end = cpu_ticks(self.pid).unwrap_or(self.cpu_start);
        let _ = self.stop.send(true);
        let rss_last = rss_kb(self.pid).unwrap_or(0);
        let rss_max = self.task.await.unwrap_or(0).max(rss_last);
        let cpu_s = cpu_end.saturating_sub(self.cpu_start) as f64 / clock_ticks() as f64;
        Usage {
            cpu_pct: if elapsed > 0.0 {
                100.0 * cpu_s / elapsed
            } else {
                0.0
            },
            rss_kb_first: self.rss_first,
            rss_kb_max: rss_max,
        }
    }
}
