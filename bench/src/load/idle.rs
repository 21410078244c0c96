//! `concord-bench idle`: N connected clients that only heartbeat; the relay's memory per
//! connection (RSS with every client connected and idle, minus RSS before they connected).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::relay::Tweaks;
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
    #[command(flatten)]
    pub common: Common,
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
        let settled = env
            .relay
            .pid
            .and_then(|pid| super::relay::read_proc(pid, env.start))
            .map_or(0, |s| s.rss_kb);
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
