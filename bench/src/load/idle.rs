//! `concord-bench idle`: N connected clients that only heartbeat; the relay's memory per
//! connection (RSS with every client connected and idle, minus RSS before they connected).
//!
//! With `--rounds R`, then R times: every connection dropped at once, a wait past the resume
//! window, readings of RSS and open descriptors, every client connected again. Sockets must
//! return to their count before the first connect; other descriptors (the database pool,
//! opened on demand during the first burst) and RSS must stay flat from round to round: flat
//! RSS above the first reading is memory the allocator keeps for reuse, climbing RSS a leak.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::relay::{Fds, Tweaks};
use super::{Common, Plan};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Connected idle clients (one account each).
    #[arg(long, default_value_t = 1_000)]
    pub clients: usize,
    /// Members per guild (every client is in one guild, so ready carries a guild).
    #[arg(long, default_value_t = 20)]
    pub guild_size: usize,
    /// Seconds to stay connected and idle before the last reading.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// The relay's WebSocket read buffer per connection (bytes) [relay default: 1024;
    /// tungstenite's own default: 131072].
    #[arg(long)]
    pub ws_read_buffer: Option<usize>,
    /// The relay's WebSocket write buffer per connection (bytes) [relay default: 0;
    /// tungstenite's own default: 131072].
    #[arg(long)]
    pub ws_write_buffer: Option<usize>,
    /// Disconnect/reconnect rounds after the idle period (0: none).
    #[arg(long, default_value_t = 0)]
    pub rounds: usize,
    /// The relay's `resume_window_secs` (how long a dropped session is kept) [default: the
    /// relay's 60 s, or 5 s with --rounds so each round waits it out].
    #[arg(long)]
    pub resume_window: Option<u64>,
    #[command(flatten)]
    pub common: Common,
}

/// One disconnect/reconnect round's readings.
#[derive(Debug, serde::Serialize)]
struct Round {
    round: usize,
    closed_rss_kb: u64,
    closed_fds: Option<Fds>,
    connected_rss_kb: u64,
    connected_fds: Option<Fds>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients > 0, "need clients");
    let plan = Plan {
        scenario: "idle",
        preset: None,
        active: 0,
        idle: args.clients,
        rate: 0.0,
        duration: args.duration,
        guilds: 1,
        channels_per_guild: 1,
        quiet_guild_size: args.guild_size.max(1),
    };
    let tweaks = Tweaks {
        ws_read_buffer: args.ws_read_buffer,
        ws_write_buffer: args.ws_write_buffer,
        voice_rooms: None,
        resume_window_secs: args.resume_window.or((args.rounds > 0).then_some(5)),
    };
    let json_path = args
        .common
        .json
        .clone()
        .unwrap_or_else(|| PathBuf::from("bench/results/idle.json"));
    let host = super::prepare(&args.common);
    concord_relay::listener::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut env = super::setup(&args.common, &plan, &tweaks, &host, 0, None).await?;
        let phase_start = env.start.elapsed().as_secs_f64();
        env.bar.set_length(args.duration);
        env.bar.set_position(0);
        env.bar.set_message("idle");
        for s in 0..args.duration {
            tokio::time::sleep(Duration::from_secs(1)).await;
            env.bar.set_position(s + 1);
        }
        let phase_end = env.start.elapsed().as_secs_f64();
        let settled = super::rss_now(&env);
        let pid = env.relay.pid;
        let fds = move || pid.and_then(super::relay::open_fds);
        let connected_fds = fds();
        let mut rounds = Vec::with_capacity(args.rounds);
        // Past the resume window (sessions dropped) and the relay's own sweeps.
        let wait_out = Duration::from_secs(tweaks.resume_window_secs.unwrap_or(60) + 3);
        for round in 1..=args.rounds {
            env.bar
                .set_message(format!("churn {round}/{}", args.rounds));
            super::drop_clients(&mut env).await;
            tokio::time::sleep(wait_out).await;
            let (closed_rss_kb, closed_fds) = (super::rss_now(&env), fds());
            super::connect_clients(&mut env).await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            rounds.push(Round {
                round,
                closed_rss_kb,
                closed_fds,
                connected_rss_kb: super::rss_now(&env),
                connected_fds: fds(),
            });
        }
        let last_closed = if args.rounds > 0 {
            super::drop_clients(&mut env).await;
            tokio::time::sleep(wait_out).await;
            Some((super::rss_now(&env), fds()))
        } else {
            None
        };
        let fds_before = env.fds_before;
        let connected_after_connect = env.rss_connected_kb;
        // The reading after the idle period is the one that counts.
        env.rss_connected_kb = settled.max(connected_after_connect);
        let (rss_before, rss_connected) = (env.rss_before_kb, env.rss_connected_kb);
        let (pid, database, pinning, connect_secs) = (
            env.relay.pid.is_some(),
            env.relay.database.clone(),
            env.pinning.clone(),
            env.connect_secs,
        );
        let quiet_guilds = env.quiet_guilds;
        let (_, dropped, relay_samples) = super::finish(env).await;
        let relay = super::relay_stats(
            pid,
            &relay_samples,
            (phase_start, phase_end),
            rss_before,
            rss_connected,
            args.clients,
        );
        let report = super::Report {
            scenario: "idle",
            clients: args.clients,
            rate: 0.0,
            duration_s: args.duration,
            sent: 0,
            delivered: 0,
            errors: dropped,
            delivery_ms: super::Percentiles::default(),
            relay,
            details: json!({
                "title": format!("{} idle connections on {database}", args.clients),
                "database": database,
                "guilds": quiet_guilds,
                "guild_size": args.guild_size,
                "ws_read_buffer": args.ws_read_buffer.unwrap_or(1024),
                "ws_write_buffer": args.ws_write_buffer.unwrap_or(0),
                "relay_rss_kb_before_connect": rss_before,
                "relay_rss_kb_after_connect": connected_after_connect,
                "relay_rss_kb_after_idle": settled,
                "relay_fds_before_connect": fds_before,
                "relay_fds_connected": connected_fds,
                "churn_rounds": rounds,
                "relay_rss_kb_after_last_close": last_closed.map(|c| c.0),
                "relay_fds_after_last_close": last_closed.and_then(|c| c.1),
                // RSS kept after every connection closed, over the RSS before the first
                // connect; and over the first round's (growth across rounds = a leak).
                "rss_after_close_over_before": last_closed.map(|c| ratio(c.0, rss_before)),
                "rss_after_close_over_first_round": last_closed
                    .zip(rounds.first())
                    .map(|(c, r)| ratio(c.0, r.closed_rss_kb)),
                "sockets_leaked": last_closed
                    .and_then(|c| c.1)
                    .zip(fds_before)
                    .map(|(after, before)| after.sockets as i64 - before.sockets as i64),
                // Other descriptors gained from the first round's close to the last (the
                // database pool opens during the first burst, then must not grow).
                "files_grown_over_rounds": last_closed
                    .and_then(|c| c.1)
                    .zip(rounds.first().and_then(|r| r.closed_fds))
                    .map(|(after, first)| {
                        (after.total - after.sockets) as i64 - (first.total - first.sockets) as i64
                    }),
                "dropped_connections": dropped,
                "connect_s": super::round2(connect_secs),
                "pinning": pinning,
                "nofile": host.nofile,
                "machine": super::machine(),
            }),
        };
        super::write_json(&json_path, &report)?;
        let plots = if relay_samples.is_empty() {
            Vec::new()
        } else {
            super::write_plots(&json_path, &[], &[], &[], &relay_samples)?
                .into_iter()
                .filter(|p| p.to_string_lossy().ends_with("relay-rss.svg"))
                .collect()
        };
        super::print_summary(
            &report,
            &[
                (
                    "RSS before / after connect / idle".to_owned(),
                    format!(
                        "{:.1} / {:.1} / {:.1} MiB",
                        rss_before as f64 / 1024.0,
                        connected_after_connect as f64 / 1024.0,
                        settled as f64 / 1024.0
                    ),
                ),
                (
                    "WebSocket buffers (read / write)".to_owned(),
                    format!(
                        "{} / {} bytes",
                        args.ws_read_buffer.unwrap_or(1024),
                        args.ws_write_buffer.unwrap_or(0)
                    ),
                ),
                ("dropped connections".to_owned(), dropped.to_string()),
                (
                    "descriptors before / connected / after close".to_owned(),
                    format!(
                        "{} / {} / {}",
                        show(fds_before),
                        show(connected_fds),
                        show(last_closed.and_then(|c| c.1))
                    ),
                ),
                (
                    "RSS after each round's close".to_owned(),
                    rounds
                        .iter()
                        .map(|r| format!("{:.1}", r.closed_rss_kb as f64 / 1024.0))
                        .chain(last_closed.map(|c| format!("{:.1}", c.0 as f64 / 1024.0)))
                        .collect::<Vec<_>>()
                        .join(" / ")
                        + " MiB",
                ),
                ("connect".to_owned(), format!("{connect_secs:.1} s")),
                ("pinning".to_owned(), pinning),
            ],
        );
        println!("report: {}", json_path.display());
        for p in plots {
            println!("plot:   {}", p.display());
        }
        Ok(())
    })
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        super::round2(a as f64 / b as f64)
    }
}

fn show(n: Option<Fds>) -> String {
    n.map_or_else(
        || "?".to_owned(),
        |n| format!("{} ({} sockets)", n.total, n.sockets),
    )
}
