//! Load scenarios against one relay process: `text` (chat traffic over HTTP sends and gateway
//! fan-out), `idle` (connected idle clients: relay memory per connection) and `history`
//! (history pages and search while text traffic runs). They share the relay process, the
//! population, the gateway clients, /proc sampling, the report and the plots.

pub mod baseline;
pub mod client;
pub mod history;
pub mod idle;
pub mod plot;
pub mod population;
pub mod relay;
pub mod text;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::json;

use crate::text::{Rng, Vocabulary};
use client::{ClientResult, Shared};
use population::{Account, Guild};
use relay::{Relay, Sample, Sampler, Tweaks};

/// Flags every load scenario takes.
#[derive(clap::Args, Clone, Debug)]
pub struct Common {
    /// PostgreSQL server for the bench's relay (postgres://…; a fresh schema is created and
    /// dropped); SQLite in a temporary directory when absent.
    #[arg(long)]
    pub database_url: Option<String>,
    /// A running relay to load instead of starting one (loopback only).
    #[arg(long)]
    pub target: Option<String>,
    /// With --target: the relay's process id, to sample its CPU and RSS.
    #[arg(long, requires = "target")]
    pub relay_pid: Option<u32>,
    /// The concord-relay binary [default: beside this executable].
    #[arg(long)]
    pub relay_bin: Option<PathBuf>,
    /// Pin the relay to core 0 and the bench to the other cores (when there are 2+).
    #[arg(long, default_value = "auto", value_parser = ["auto", "off"])]
    pub pin: String,
    /// Seed for channel sizes, senders and message text.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where to write the JSON report; plots go beside it (<stem>-*.svg).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// What to build and run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: &'static str,
    pub preset: Option<String>,
    /// Clients in the guilds that receive traffic.
    pub active: usize,
    /// More connected clients in quiet guilds (no messages).
    pub idle: usize,
    pub rate: f64,
    pub duration: u64,
    pub guilds: usize,
    pub channels_per_guild: usize,
    pub quiet_guild_size: usize,
}

impl Plan {
    pub fn connections(&self) -> usize {
        self.active + self.idle
    }
}

pub const ZIPF_S: f64 = 1.1;

/// A relay with its population, clients connected.
pub struct Env {
    pub start: Instant,
    pub relay: Relay,
    pub sampler: Sampler,
    pub http: reqwest::Client,
    pub accounts: Vec<Account>,
    pub guilds: Vec<Guild>,
    pub quiet_guilds: usize,
    pub shared: Arc<Shared>,
    pub clients: Vec<tokio::task::JoinHandle<ClientResult>>,
    pub bar: ProgressBar,
    pub pinning: String,
    pub nofile: u64,
    /// Relay RSS before and after the clients connected, KiB.
    pub rss_before_kb: u64,
    pub rss_connected_kb: u64,
    /// Relay open file descriptors before the clients connected.
    pub fds_before: Option<relay::Fds>,
    pub connect_secs: f64,
    pub setup_secs: f64,
}

pub fn progress(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:<18} [{bar:40}] {pos}/{len} {elapsed}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// What was done to the host before the runtime started.
pub struct Host {
    pub nofile: u64,
    /// The core the relay is pinned to.
    pub relay_cpu: Option<usize>,
    pub pinning: String,
}

/// Steps before the runtime starts: open files and CPU pinning (threads inherit both).
pub fn prepare(common: &Common) -> Host {
    let nofile = relay::raise_nofile();
    let (relay_cpu, pinning) = relay::pin(common.pin == "auto", common.target.is_some());
    Host {
        nofile,
        relay_cpu,
        pinning,
    }
}

pub async fn setup(
    common: &Common,
    plan: &Plan,
    tweaks: &Tweaks,
    host: &Host,
    max_messages: usize,
    prefill: Option<&history::PrefillFn>,
) -> anyhow::Result<Env> {
    let nofile = host.nofile;
    let start = Instant::now();
    // Client sockets, HTTP connections, and the rest (the relay, a separate process, has
    // its own table).
    let needed = (plan.connections() + MAX_INFLIGHT + 1_000) as u64;
    anyhow::ensure!(
        nofile >= needed,
        "the open-file limit is {nofile}, {needed} are needed; raise it (ulimit -n)"
    );
    let bar = progress(common.quiet);
    let relay = Relay::start(common, tweaks, host.relay_cpu).await?;
    let sampler = Sampler::start(relay.pid, start, Duration::from_millis(250));
    let http = population::http_client();
    let accounts = population::accounts(&http, &relay.url, "u", plan.connections(), &bar).await?;
    let sizes = population::zipf_sizes(plan.active, plan.guilds, ZIPF_S, common.seed);
    let mut lists = population::member_lists(0, &sizes);
    let active_guilds = lists.len();
    let quiet: Vec<usize> = (0..plan.idle.div_ceil(plan.quiet_guild_size.max(1)))
        .map(|i| (plan.idle - i * plan.quiet_guild_size).min(plan.quiet_guild_size))
        .collect();
    lists.extend(population::member_lists(plan.active, &quiet));
    let mut guilds = population::guilds(
        &http,
        &relay.url,
        &accounts,
        lists,
        plan.channels_per_guild,
        &bar,
    )
    .await?;
    let quiet_guilds = guilds.len() - active_guilds;
    guilds.truncate(active_guilds);
    let mut env = Env {
        start,
        relay,
        sampler,
        http,
        accounts,
        guilds,
        quiet_guilds,
        shared: Arc::new(Shared::new(start, max_messages)),
        clients: Vec::new(),
        bar,
        pinning: host.pinning.clone(),
        nofile,
        rss_before_kb: 0,
        rss_connected_kb: 0,
        fds_before: None,
        connect_secs: 0.0,
        setup_secs: 0.0,
    };
    if let Some(prefill) = prefill {
        prefill(&env).await?;
    }
    // Let the relay settle (caches, allocator) before the baseline reading.
    let settle = Duration::from_secs_f64((1.0 + plan.connections() as f64 / 5_000.0).min(3.0));
    tokio::time::sleep(settle).await;
    env.rss_before_kb = rss_now(&env);
    env.fds_before = env.relay.pid.and_then(relay::open_fds);
    let connect_start = Instant::now();
    connect_clients(&mut env).await?;
    env.connect_secs = connect_start.elapsed().as_secs_f64();
    // Presence announcements of the connect phase drain before anything is measured.
    tokio::time::sleep(settle).await;
    env.rss_connected_kb = rss_now(&env);
    env.setup_secs = start.elapsed().as_secs_f64();
    Ok(env)
}

/// Connects every account's gateway client (128 at a time) and spawns its loop.
pub async fn connect_clients(env: &mut Env) -> anyhow::Result<()> {
    env.bar.set_length(env.accounts.len() as u64);
    env.bar.set_position(0);
    env.bar.set_message("connections");
    let heartbeat = Duration::from_secs(20);
    let url = env.relay.url.clone();
    let results: Vec<anyhow::Result<tokio::task::JoinHandle<ClientResult>>> =
        stream::iter(env.accounts.iter())
            .map(|a| {
                let (url, shared, bar) = (url.clone(), env.shared.clone(), env.bar.clone());
                async move {
                    let ws = client::connect(&url, &a.token).await?;
                    bar.inc(1);
                    Ok(tokio::spawn(client::run(ws, shared, heartbeat)))
                }
            })
            .buffer_unordered(128)
            .collect()
            .await;
    for r in results {
        env.clients.push(r?);
    }
    Ok(())
}

/// Drops every client's connection at once (no close frame, as when clients vanish).
pub async fn drop_clients(env: &mut Env) {
    for c in env.clients.drain(..) {
        c.abort();
        let _ = c.await;
    }
}

pub fn rss_now(env: &Env) -> u64 {
    env.relay
        .pid
        .and_then(|pid| relay::read_proc(pid, env.start))
        .map_or(0, |s| s.rss_kb)
}

/// What the send phase did.
#[derive(Default)]
pub struct Traffic {
    pub sent: u64,
    pub send_errors: u64,
    pub expected: u64,
    /// Sends started per second of the phase.
    pub sent_per_s: Vec<u64>,
    pub phase: (f64, f64),
    pub first_errors: Vec<String>,
}

const MAX_INFLIGHT: usize = 2_048;

/// Sends `rate` messages/s for `duration` over HTTP: each picks a text channel uniformly
/// (so channel traffic does not grow with its size) and a random member of its guild as the
/// author. Then waits up to `drain` for the deliveries.
pub async fn traffic(env: &Env, plan: &Plan, seed: u64, drain: Duration) -> Traffic {
    let channels: Vec<(usize, &str)> = env
        .guilds
        .iter()
        .enumerate()
        .flat_map(|(g, guild)| guild.channels.iter().map(move |c| (g, c.as_str())))
        .collect();
    let shared = &env.shared;
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let expected = Arc::new(AtomicU64::new(0));
    let first_errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_INFLIGHT));
    let vocab = Vocabulary::new(5_000);
    let mut rng = Rng::new(seed ^ 0x5e4d);
    let total = ((plan.rate * plan.duration as f64) as usize).min(shared.sent_at.len());
    let phase_start = env.start.elapsed().as_secs_f64();
    let begin = Instant::now();
    let mut per_s = vec![0u64; plan.duration as usize + 1];
    env.bar.set_length(plan.duration);
    env.bar.set_position(0);
    env.bar.set_message(format!("{} msg/s", plan.rate));
    let mut tasks = tokio::task::JoinSet::new();
    let mut i = 0usize;
    while i < total && !channels.is_empty() {
        let elapsed = begin.elapsed().as_secs_f64();
        if elapsed >= plan.duration as f64 {
            break;
        }
        env.bar.set_position(elapsed as u64);
        let due = ((elapsed * plan.rate) as usize + 1).min(total);
        while i < due {
            let (g, channel) = channels[rng.range(0, channels.len() as u64) as usize];
            let guild = &env.guilds[g];
            let author = guild.members[rng.range(0, guild.members.len() as u64) as usize];
            let body = json!({ "content": vocab.message(&mut rng), "nonce": format!("m{i}") });
            let permit = limit.clone().acquire_owned().await.expect("semaphore open");
            let req = env
                .http
                .post(format!(
                    "{}/api/v1/channels/{channel}/messages",
                    env.relay.url
                ))
                .bearer_auth(&env.accounts[author].token)
                .json(&body);
            let fanout = guild.members.len() as u64;
            let (sent, errors, expected, first_errors) = (
                sent.clone(),
                errors.clone(),
                expected.clone(),
                first_errors.clone(),
            );
            shared.sent_at[i].store(shared.now_us() + 1, Ordering::Relaxed);
            let second = (begin.elapsed().as_secs() as usize).min(per_s.len() - 1);
            per_s[second] += 1;
            tasks.spawn(async move {
                let answer = match req.send().await {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.bytes().await;
                        Ok(())
                    }
                    Ok(resp) => Err(format!("{}", resp.status())),
                    Err(e) => Err(e.to_string()),
                };
                drop(permit);
                match answer {
                    Ok(()) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                        expected.fetch_add(fanout, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut first = first_errors.lock().expect("errors");
                        if first.len() < 5 {
                            first.push(e);
                        }
                    }
                }
            });
            i += 1;
            // Reap finished requests now and then so the set stays small.
            while tasks.try_join_next().is_some() {}
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let phase_end = env.start.elapsed().as_secs_f64();
    while tasks.join_next().await.is_some() {}
    env.bar.set_message("draining");
    let deadline = Instant::now() + drain;
    while Instant::now() < deadline
        && shared.delivered.load(Ordering::Relaxed) < expected.load(Ordering::Relaxed)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_errors = std::mem::take(&mut *first_errors.lock().expect("errors"));
    Traffic {
        sent: sent.load(Ordering::Relaxed),
        send_errors: errors.load(Ordering::Relaxed),
        expected: expected.load(Ordering::Relaxed),
        sent_per_s: per_s,
        phase: (phase_start, phase_end),
        first_errors,
    }
}

/// Stops the clients and the relay; returns every latency sample and the relay samples.
pub async fn finish(env: Env) -> (Vec<(u32, u32)>, u64, Vec<Sample>) {
    env.shared.stop.cancel();
    let mut samples = Vec::new();
    let mut dropped = 0;
    for c in env.clients {
        if let Ok(r) = c.await {
            samples.extend(r.samples);
            dropped += u64::from(r.dropped);
        }
    }
    env.bar.finish_and_clear();
    let relay_samples = env.sampler.finish();
    env.relay.stop().await;
    (samples, dropped, relay_samples)
}

#[derive(Debug, Serialize, Clone, Copy, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Nearest-rank percentiles of sorted values.
pub fn percentiles(sorted: &[f64]) -> Percentiles {
    let rank = |p: f64| {
        if sorted.is_empty() {
            return 0.0;
        }
        let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[i.clamp(1, sorted.len()) - 1]
    };
    Percentiles {
        p50: rank(50.0),
        p95: rank(95.0),
        p99: rank(99.0),
        max: sorted.last().copied().unwrap_or(0.0),
    }
}

#[derive(Serialize)]
pub struct RelayStats {
    /// Average over the measured phase, % of one core.
    pub cpu_pct: Option<f64>,
    pub rss_kb_max: Option<u64>,
    /// (RSS with every client connected − RSS before they connected) / connections.
    pub rss_kb_per_conn: Option<f64>,
}

/// The pinned report fields first, then the details.
#[derive(Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub clients: usize,
    pub rate: f64,
    pub duration_s: u64,
    pub sent: u64,
    pub delivered: u64,
    pub errors: u64,
    pub delivery_ms: Percentiles,
    pub relay: RelayStats,
    pub details: serde_json::Value,
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn relay_stats(
    env_pid: bool,
    samples: &[Sample],
    phase: (f64, f64),
    rss_before: u64,
    rss_connected: u64,
    connections: usize,
) -> RelayStats {
    if !env_pid || samples.is_empty() {
        return RelayStats {
            cpu_pct: None,
            rss_kb_max: None,
            rss_kb_per_conn: None,
        };
    }
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t >= phase.0 && s.t <= phase.1 + 0.3)
        .collect();
    let cpu = match (inside.first(), inside.last()) {
        (Some(a), Some(b)) if b.t > a.t => relay::cpu_pct(a, b),
        _ => 0.0,
    };
    RelayStats {
        cpu_pct: Some(round2(cpu)),
        rss_kb_max: samples.iter().map(|s| s.rss_kb).max(),
        rss_kb_per_conn: (connections > 0)
            .then(|| round2(rss_connected.saturating_sub(rss_before) as f64 / connections as f64)),
    }
}

/// Per-second latency percentiles and delivery counts from the samples.
pub fn per_second(samples: &[(u32, u32)], from_s: f64, to_s: f64) -> Vec<(f64, f64, f64, u64)> {
    let (a, b) = (from_s.floor() as usize, to_s.ceil() as usize);
    let mut buckets: Vec<Vec<u32>> = vec![Vec::new(); b.saturating_sub(a) + 1];
    for (at_ms, lat) in samples {
        let s = (*at_ms / 1000) as usize;
        if s >= a && s - a < buckets.len() {
            buckets[s - a].push(*lat);
        }
    }
    buckets
        .into_iter()
        .enumerate()
        .map(|(k, mut v)| {
            v.sort_unstable();
            let ms: Vec<f64> = v.iter().map(|x| *x as f64 / 1e3).collect();
            let p = percentiles(&ms);
            ((a + k) as f64 - from_s, p.p50, p.p99, v.len() as u64)
        })
        .collect()
}

/// Latency CDF, latency and throughput over time, relay RSS over time.
pub fn write_plots(
    json_path: &Path,
    sorted_ms: &[f64],
    timeline: &[(f64, f64, f64, u64)],
    sent_per_s: &[u64],
    relay_samples: &[Sample],
) -> anyhow::Result<Vec<PathBuf>> {
    let dir = json_path.parent().unwrap_or(Path::new("."));
    let stem = json_path
        .file_stem()
        .map_or("load".into(), |s| s.to_string_lossy().into_owned());
    let path = |name: &str| dir.join(format!("{stem}-{name}.svg"));
    let mut written = Vec::new();
    let cdf = path("latency-cdf");
    plot::lines(
        &cdf,
        "delivery latency CDF",
        "latency (ms)",
        "fraction of deliveries",
        &[plot::Series {
            name: "send → gateway recipient",
            points: plot::cdf(sorted_ms),
        }],
    )?;
    written.push(cdf);
    let over_time = path("timeline");
    plot::stacked(
        &over_time,
        (
            "delivery latency per second",
            "ms",
            &[
                plot::Series {
                    name: "p50",
                    // Seconds with no delivery have no latency to show.
                    points: timeline
                        .iter()
                        .filter(|t| t.3 > 0)
                        .map(|t| (t.0, t.1))
                        .collect(),
                },
                plot::Series {
                    name: "p99",
                    points: timeline
                        .iter()
                        .filter(|t| t.3 > 0)
                        .map(|t| (t.0, t.2))
                        .collect(),
                },
            ],
        ),
        (
            "throughput",
            "per second",
            &[
                plot::Series {
                    name: "messages sent",
                    points: sent_per_s
                        .iter()
                        .enumerate()
                        .map(|(s, n)| (s as f64, *n as f64))
                        .collect(),
                },
                plot::Series {
                    name: "deliveries",
                    points: timeline.iter().map(|t| (t.0, t.3 as f64)).collect(),
                },
            ],
        ),
        "seconds since the send phase began",
    )?;
    written.push(over_time);
    if !relay_samples.is_empty() {
        let rss = path("relay-rss");
        plot::stacked(
            &rss,
            (
                "relay RSS",
                "MiB",
                &[plot::Series {
                    name: "VmRSS",
                    points: relay_samples
                        .iter()
                        .map(|s| (s.t, s.rss_kb as f64 / 1024.0))
                        .collect(),
                }],
            ),
            (
                "relay CPU",
                "% of one core",
                &[plot::Series {
                    name: "user + system",
                    points: relay_samples
                        .windows(2)
                        .map(|w| (w[1].t, relay::cpu_pct(&w[0], &w[1])))
                        .collect(),
                }],
            ),
            "seconds since the bench started",
        )?;
        written.push(rss);
    }
    Ok(written)
}

pub fn write_json(path: &Path, report: &Report) -> anyhow::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("write {}", path.display()))
}

pub fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    json!({
        // The machine's, not this (pinned) process's.
        "cores": std::fs::read_to_string("/proc/cpuinfo")
            .map_or(0, |c| c.lines().filter(|l| l.starts_with("processor")).count()),
        "cpu": cpu,
        "os": std::env::consts::OS,
        // Other work on the machine during the run (these machines are shared).
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "date": crate::p2p::iso_date(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        ),
    })
}

/// Prints the summary table shared by the scenarios.
pub fn print_summary(r: &Report, extra_rows: &[(String, String)]) {
    println!(
        "{} — {}",
        r.scenario,
        r.details["title"].as_str().unwrap_or("")
    );
    let row = |k: &str, v: String| println!("  {k:<34} {v}");
    row("connections", r.clients.to_string());
    if r.rate > 0.0 {
        row(
            "rate (target)",
            format!("{} msg/s for {} s", r.rate, r.duration_s),
        );
        row(
            "sent / delivered / errors",
            format!("{} / {} / {}", r.sent, r.delivered, r.errors),
        );
        let d = &r.delivery_ms;
        row(
            "delivery p50 / p95 / p99 / max",
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2} ms",
                d.p50, d.p95, d.p99, d.max
            ),
        );
    }
    let opt =
        |v: Option<f64>, unit: &str| v.map_or("not sampled".into(), |v| format!("{v:.1}{unit}"));
    row(
        "relay CPU (measured phase)",
        opt(r.relay.cpu_pct, " % of a core"),
    );
    row(
        "relay RSS max",
        r.relay.rss_kb_max.map_or("not sampled".into(), |v| {
            format!("{:.1} MiB", v as f64 / 1024.0)
        }),
    );
    row(
        "relay RSS per connection",
        opt(r.relay.rss_kb_per_conn, " KiB"),
    );
    for (k, v) in extra_rows {
        row(k, v.clone());
    }
}
