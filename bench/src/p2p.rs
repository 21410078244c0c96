//! `concord-bench p2p`: a `concord` daemon process's idle memory after join and its cold start
//! to "connected" (against a `concord-relay` process), then delivery latency on loopback in
//! this process (testkit relay, two directly connected nodes, a gateway client): node → node
//! over GossipSub, node → relay → node push, node → relay → gateway, and the relay's own
//! HTTP → gateway path as a baseline measured in the same run.

mod delivery;
mod process;

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context;
use serde::Serialize;

use crate::stats::Summary;

#[derive(clap::Args)]
pub struct Args {
    /// Messages node A sends (and the gateway user sends over HTTP for the baseline).
    #[arg(long, default_value_t = 300)]
    messages: usize,
    /// Pause between sends: latency, not throughput.
    #[arg(long, default_value_t = 20)]
    pace_ms: u64,
    /// Cold starts of the node process to time.
    #[arg(long, default_value_t = 5)]
    restarts: usize,
    /// Idle time after join before reading the node's RSS.
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
    /// A message not seen on a path within this long after its send counts as lost.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench/results/p2p.json")]
    out: PathBuf,
}

#[derive(Serialize)]
struct Report {
    scenario: &'static str,
    machine: Machine,
    node_process: ProcessReport,
    delivery: DeliveryReport,
    targets: Targets,
}

#[derive(Serialize)]
struct Machine {
    cores: usize,
    os: &'static str,
    arch: &'static str,
    date: String,
}

#[derive(Serialize)]
struct ProcessReport {
    /// VmRSS after join, connected and idle; MB = 10^6 bytes.
    idle_rss_mb: f64,
    idle_rss_kib: u64,
    /// VmHWM at the same moment (the peak so far, join included).
    peak_rss_mb: f64,
    idle_secs: u64,
    /// Spawn of `concord daemon` on a joined data dir until status says relay connected.
    cold_start: Summary,
    cold_start_runs_ms: Vec<f64>,
    /// Spawn until the control API's address file appears (the part before dialing).
    control_api_up: Summary,
}

#[derive(Serialize)]
struct DeliveryReport {
    messages: usize,
    pace_ms: u64,
    timeout_secs: u64,
    /// B sees A's message unconfirmed (GossipSub over the direct connection).
    node_node_gossip: PathStats,
    /// B sees it confirmed (the relay's push).
    node_relay_node_push: PathStats,
    /// A gateway client sees its `message_create`.
    node_relay_gateway: PathStats,
    /// The gateway user's own HTTP POST seen on its own gateway socket.
    baseline_http_gateway: PathStats,
    /// node → relay → gateway over the baseline.
    gateway_vs_baseline_p50: f64,
    gateway_vs_baseline_p99: f64,
    /// Node events the bench's subscriber missed (broadcast lag); should be 0.
    events_lagged: u64,
}

#[derive(Serialize)]
struct PathStats {
    #[serde(flatten)]
    latency: Summary,
    lost: usize,
}

#[derive(Serialize)]
struct Targets {
    idle_rss_mb: f64,
    cold_start_ms: f64,
}

const TARGETS: Targets = Targets {
    idle_rss_mb: 60.0,
    cold_start_ms: 1_000.0,
};

pub fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.messages > 0 && args.restarts > 0,
        "need messages and restarts"
    );
    let bins = process::binaries()?;
    concord_relay::listener::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new()?;
    let node_process = runtime.block_on(process::node_process(&bins, args))?;
    let delivery = runtime.block_on(delivery::delivery(args))?;
    let report = Report {
        scenario: "p2p",
        machine: Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            date: iso_date(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)?
                    .as_secs(),
            ),
        },
        node_process,
        delivery,
        targets: TARGETS,
    };
    print_table(&report);
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("write {}", args.out.display()))?;
    println!("report: {}", args.out.display());
    Ok(())
}

fn print_table(r: &Report) {
    let (p, d) = (&r.node_process, &r.delivery);
    println!(
        "p2p: loopback, {} cores, {}",
        r.machine.cores, r.machine.date
    );
    println!("  {:<34} {:>22} {:>10}", "node process", "value", "target");
    println!(
        "  {:<34} {:>19.1} MB {:>10}",
        format!("idle RSS after join ({} s idle)", p.idle_secs),
        p.idle_rss_mb,
        format!("<{} MB", r.targets.idle_rss_mb)
    );
    println!(
        "  {:<34} {:>19.1} MB",
        "peak RSS so far (VmHWM)", p.peak_rss_mb
    );
    println!(
        "  {:<34} {:>22} {:>10}",
        format!("cold start → connected ×{}", p.cold_start.count),
        format!(
            "{:.0}/{:.0}/{:.0} ms",
            p.cold_start.min_ms, p.cold_start.p50_ms, p.cold_start.max_ms
        ),
        format!("<{} ms", r.targets.cold_start_ms)
    );
    println!(
        "  {:<34} {:>22}",
        "  of which control API up",
        format!(
            "{:.0}/{:.0}/{:.0} ms",
            p.control_api_up.min_ms, p.control_api_up.p50_ms, p.control_api_up.max_ms
        )
    );
    println!("  (cold start: min/median/max)");
    println!(
        "  {:<34} {:>8} {:>8} {:>8} {:>6}",
        format!("delivery ×{}, {} ms apart", d.messages, d.pace_ms),
        "p50 ms",
        "p99 ms",
        "max ms",
        "lost"
    );
    for (name, s) in [
        ("node → node (GossipSub)", &d.node_node_gossip),
        ("node → relay → node (push)", &d.node_relay_node_push),
        ("node → relay → gateway", &d.node_relay_gateway),
        ("HTTP → gateway (baseline)", &d.baseline_http_gateway),
    ] {
        println!(
            "  {:<34} {:>8.2} {:>8.2} {:>8.2} {:>6}",
            name, s.latency.p50_ms, s.latency.p99_ms, s.latency.max_ms, s.lost
        );
    }
    println!(
        "  node → relay → gateway vs baseline: p50 ×{:.2}, p99 ×{:.2}",
        d.gateway_vs_baseline_p50, d.gateway_vs_baseline_p99
    );
    if d.events_lagged > 0 {
        println!("  warning: {} node events lagged", d.events_lagged);
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn kib_to_mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// A `Field:   123 kB` line of /proc/<pid>/status, in KiB.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (days to civil date, proleptic Gregorian).
pub(crate) fn iso_date(unix: u64) -> String {
    let (days, secs) = ((unix / 86_400) as i64, unix % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_status_fields() {
        let status = "Name:\tconcord\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(40_960));
        assert_eq!(status_kib(status, "VmHWM"), Some(51_200));
        assert_eq!(status_kib(status, "VmSwap"), None);
        assert_eq!(kib_to_mb(1_000), 1.024);
    }

    #[test]
    fn dates_and_ratios() {
        assert_eq!(iso_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_date(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso_date(1_750_000_000), "2025-06-15T15:06:40Z");
        assert_eq!(ratio(3.0, 2.0), 1.5);
        assert_eq!(ratio(3.0, 0.0), 0.0);
    }
}
