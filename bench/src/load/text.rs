//! `concord-bench text`: N gateway clients in guilds whose sizes follow Zipf(1.1), a total of
//! R messages/s sent over HTTP by random members, end-to-end latency from the send to every
//! recipient's gateway socket.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::{Common, Plan, Report, relay::Tweaks};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Connected clients in the guilds that get messages [seed: 5000, 10x: 5000].
    #[arg(long)]
    pub clients: Option<usize>,
    /// More connected clients in quiet guilds (no messages) [seed: 10000, 10x: 0].
    #[arg(long)]
    pub idle: Option<usize>,
    /// Messages per second, all senders together [seed: 500, 10x: 5000].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of sending [default: 30].
    #[arg(long)]
    pub duration: Option<u64>,
    /// Guilds for the active clients (sizes drawn from Zipf(1.1)) [default: clients / 10].
    #[arg(long)]
    pub guilds: Option<usize>,
    /// Text channels in all, spread over the guilds; a channel's audience is its guild
    /// [default: one per guild].
    #[arg(long)]
    pub channels: Option<usize>,
    /// seed: 15,000 connections, 5,000 in active channels, 500 msg/s; 10x: 5,000
    /// connections over 500 channels at 5,000 msg/s.
    #[arg(long, value_parser = ["seed", "10x"])]
    pub preset: Option<String>,
    /// Seconds for each raw insert loop of the database baseline (0 skips it).
    #[arg(long, default_value_t = 3.0)]
    pub baseline_secs: f64,
    #[command(flatten)]
    pub common: Common,
}

pub fn plan(args: &Args, scenario: &'static str) -> Plan {
    let (clients, idle, rate, channels) = match args.preset.as_deref() {
        Some("seed") => (5_000, 10_000, 500.0, 500),
        Some("10x") => (5_000, 0, 5_000.0, 500),
        _ => (100, 0, 100.0, 0),
    };
    let clients = args.clients.unwrap_or(clients);
    let channels = args
        .channels
        .or((channels > 0).then_some(channels))
        .unwrap_or((clients / 10).max(1));
    let guilds = args.guilds.unwrap_or(channels).clamp(1, channels);
    Plan {
        scenario,
        preset: args.preset.clone(),
        active: clients,
        idle: args.idle.unwrap_or(idle),
        rate: args.rate.unwrap_or(rate),
        duration: args.duration.unwrap_or(30),
        guilds,
        channels_per_guild: channels.div_ceil(guilds),
        quiet_guild_size: 20,
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let plan = plan(args, "text");
    anyhow::ensure!(
        plan.active > 0 && plan.rate > 0.0 && plan.duration > 0,
        "need clients, rate and duration"
    );
    let json_path = args
        .common
        .json
        .clone()
        .unwrap_or_else(|| PathBuf::from("bench/results/text.json"));
    let host = super::prepare(&args.common);
    concord_relay::listener::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        // The database alone first, so nothing else competes with it.
        let baseline = if args.baseline_secs > 0.0 && args.common.target.is_none() {
            Some(
                super::baseline::measure(args.common.database_url.as_deref(), args.baseline_secs)
                    .await?,
            )
        } else {
            None
        };
        let out = measure(&args.common, &plan, &Tweaks::default(), &host, None).await?;
        let mut rows = Vec::new();
        let mut details = json!({});
        if let Some(b) = baseline {
            let t = &out.traffic;
            let persisted = t.sent as f64 / (t.phase.1 - t.phase.0).max(1e-9);
            let ratio = |raw: f64| {
                if raw > 0.0 {
                    super::round2(persisted / raw)
                } else {
                    0.0
                }
            };
            details = json!({
                "baseline": b,
                "persisted_msgs_per_s": super::round2(persisted),
                "persisted_vs_raw_unbatched": ratio(b.unbatched_rows_per_s),
                "persisted_vs_raw_batched": ratio(b.batched_rows_per_s),
            });
            rows.push((
                "raw inserts (1 / 256 per tx)".to_owned(),
                format!(
                    "{:.0} / {:.0} rows/s",
                    b.unbatched_rows_per_s, b.batched_rows_per_s
                ),
            ));
            rows.push((
                "persisted vs raw".to_owned(),
                format!(
                    "{persisted:.0} msg/s = ×{} unbatched, ×{} batched",
                    ratio(b.unbatched_rows_per_s),
                    ratio(b.batched_rows_per_s)
                ),
            ));
        }
        finish_report(&plan, out, &json_path, details, &rows)
    })
}

/// A finished load run.
pub struct Outcome {
    pub env_pid: bool,
    pub database: String,
    pub pinning: String,
    pub nofile: u64,
    pub traffic: super::Traffic,
    pub samples: Vec<(u32, u32)>,
    pub dropped: u64,
    pub relay_samples: Vec<super::Sample>,
    pub rss_before_kb: u64,
    pub rss_connected_kb: u64,
    pub connect_secs: f64,
    pub setup_secs: f64,
    pub active_guilds: usize,
    pub quiet_guilds: usize,
    pub channels: usize,
    pub largest_guild: usize,
    pub extra: serde_json::Value,
    /// This process's CPU over the traffic phase (the load generator), % of one core.
    pub bench_cpu_start: Option<super::Sample>,
    pub bench_cpu_pct: f64,
}

/// A load run: set up, connect, optionally run `during` beside the traffic, tear down.
pub async fn measure(
    common: &Common,
    plan: &Plan,
    tweaks: &Tweaks,
    host: &super::Host,
    hooks: Option<&super::history::Hooks>,
) -> anyhow::Result<Outcome> {
    let max_messages = (plan.rate * plan.duration as f64) as usize + 16;
    let prefill = hooks.map(|h| &h.prefill as &super::history::PrefillFn);
    let env = super::setup(common, plan, tweaks, host, max_messages, prefill).await?;
    let drain = Duration::from_secs(10);
    let bench_cpu_start = super::relay::read_proc(std::process::id(), env.start);
    let (traffic, extra) = match hooks {
        Some(h) => {
            let stop = tokio_util::sync::CancellationToken::new();
            let during = (h.during)(&env, stop.clone());
            let (traffic, extra) = tokio::join!(
                async {
                    let t = super::traffic(&env, plan, common.seed, drain).await;
                    stop.cancel();
                    t
                },
                during
            );
            (traffic, extra?)
        }
        None if plan.rate > 0.0 => (
            super::traffic(&env, plan, common.seed, drain).await,
            json!({}),
        ),
        None => (super::Traffic::default(), json!({})),
    };
    let out = Outcome {
        env_pid: env.relay.pid.is_some(),
        database: env.relay.database.clone(),
        pinning: env.pinning.clone(),
        nofile: env.nofile,
        rss_before_kb: env.rss_before_kb,
        rss_connected_kb: env.rss_connected_kb,
        connect_secs: env.connect_secs,
        setup_secs: env.setup_secs,
        active_guilds: env.guilds.len(),
        quiet_guilds: env.quiet_guilds,
        channels: env.guilds.iter().map(|g| g.channels.len()).sum(),
        largest_guild: env
            .guilds
            .iter()
            .map(|g| g.members.len())
            .max()
            .unwrap_or(0),
        traffic,
        samples: Vec::new(),
        dropped: 0,
        relay_samples: Vec::new(),
        extra,
        bench_cpu_start,
        bench_cpu_pct: 0.0,
    };
    let own = super::relay::read_proc(std::process::id(), env.start);
    let (samples, dropped, relay_samples) = super::finish(env).await;
    let bench_cpu_pct = match (out.bench_cpu_start, own) {
        (Some(a), Some(b)) => super::round2(super::relay::cpu_pct(&a, &b)),
        _ => 0.0,
    };
    Ok(Outcome {
        bench_cpu_pct,
        samples,
        dropped,
        relay_samples,
        ..out
    })
}

/// Writes the JSON and the plots, prints the table.
pub fn finish_report(
    plan: &Plan,
    out: Outcome,
    json_path: &std::path::Path,
    mut details: serde_json::Value,
    extra_rows: &[(String, String)],
) -> anyhow::Result<()> {
    let t = &out.traffic;
    let mut ms: Vec<f64> = out.samples.iter().map(|(_, us)| *us as f64 / 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let delivered = out.samples.len() as u64;
    let lost = t.expected.saturating_sub(delivered);
    // History and search requests that failed (history scenario).
    let read_errors: u64 = ["history", "search"]
        .iter()
        .filter_map(|k| out.extra[k]["errors"].as_u64())
        .sum();
    let phase_secs = (t.phase.1 - t.phase.0).max(1e-9);
    let timeline = super::per_second(&out.samples, t.phase.0, t.phase.1 + 2.0);
    let relay = super::relay_stats(
        out.env_pid,
        &out.relay_samples,
        t.phase,
        out.rss_before_kb,
        out.rss_connected_kb,
        plan.connections(),
    );
    let title = format!(
        "{} on {}{}",
        plan.preset
            .as_deref()
            .map_or("custom".to_owned(), |p| format!("--preset {p}")),
        out.database,
        if out.env_pid {
            ", relay process sampled"
        } else {
            ""
        }
    );
    let mut base = json!({
        "title": title,
        "preset": plan.preset,
        "database": out.database,
        "active_clients": plan.active,
        "idle_clients": plan.idle,
        "guilds": out.active_guilds,
        "quiet_guilds": out.quiet_guilds,
        "channels": out.channels,
        "largest_guild": out.largest_guild,
        "zipf_s": super::ZIPF_S,
        "expected": t.expected,
        "lost": lost,
        "send_errors": t.send_errors,
        "dropped_connections": out.dropped,
        "first_errors": t.first_errors,
        "sent_per_s": super::round2(t.sent as f64 / phase_secs),
        "deliveries_per_s": super::round2(delivered as f64 / phase_secs),
        "relay_rss_kb_before_connect": out.rss_before_kb,
        "relay_rss_kb_connected": out.rss_connected_kb,
        "connect_s": super::round2(out.connect_secs),
        "setup_s": super::round2(out.setup_secs),
        "bench_cpu_pct": out.bench_cpu_pct,
        "pinning": out.pinning,
        "nofile": out.nofile,
        "machine": super::machine(),
    });
    if let (Some(b), Some(d)) = (base.as_object_mut(), details.as_object_mut()) {
        b.append(d);
    }
    if let (Some(b), Some(e)) = (base.as_object_mut(), out.extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let report = Report {
        scenario: plan.scenario,
        clients: plan.connections(),
        rate: plan.rate,
        duration_s: plan.duration,
        sent: t.sent,
        delivered,
        errors: t.send_errors + out.dropped + lost + read_errors,
        delivery_ms: {
            let p = super::percentiles(&ms);
            super::Percentiles {
                p50: super::round2(p.p50),
                p95: super::round2(p.p95),
                p99: super::round2(p.p99),
                max: super::round2(p.max),
            }
        },
        relay,
        details: base,
    };
    super::write_json(json_path, &report)?;
    let plots = super::write_plots(json_path, &ms, &timeline, &t.sent_per_s, &out.relay_samples)?;
    let mut rows = vec![
        (
            "population".to_owned(),
            format!(
                "{} active in {} guilds / {} channels (largest {}), {} idle in {} quiet guilds",
                plan.active,
                out.active_guilds,
                out.channels,
                out.largest_guild,
                plan.idle,
                out.quiet_guilds
            ),
        ),
        (
            "throughput".to_owned(),
            format!(
                "{:.0} msg/s sent, {:.0} deliveries/s",
                t.sent as f64 / phase_secs,
                delivered as f64 / phase_secs
            ),
        ),
        (
            "expected / lost / dropped sockets".to_owned(),
            format!("{} / {} / {}", t.expected, lost, out.dropped),
        ),
    ];
    rows.extend_from_slice(extra_rows);
    rows.push((
        "setup / connect".to_owned(),
        format!("{:.1} s / {:.1} s", out.setup_secs, out.connect_secs),
    ));
    rows.push((
        "load generator CPU".to_owned(),
        format!("{:.0} % of a core", out.bench_cpu_pct),
    ));
    rows.push(("pinning".to_owned(), out.pinning.clone()));
    print_report(&report, &rows);
    for e in &t.first_errors {
        println!("  send error: {e}");
    }
    println!("report: {}", json_path.display());
    for p in plots {
        println!("plot:   {}", p.display());
    }
    Ok(())
}

fn print_report(report: &Report, rows: &[(String, String)]) {
    super::print_summary(report, rows);
}
