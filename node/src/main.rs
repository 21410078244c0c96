//! `concord`: the node's command line (see `concord --help`).

use std::process::ExitCode;

use clap::Parser;
use concord_node::cli::{Cli, Command, default_data_dir, run_client};
use concord_node::{Node, NodeConfig, identity};
use serde_json::json;

async fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    match cli.command {
        Command::Init { label, link } => {
            if link {
                let key = identity::init_unlinked(&dir)?;
                let code = concord_proto::signed::public_key_string(&key.verifying_key());
                println!(
                    "device key created in {}\non a device of your account, run:\n  concord device link {code}",
                    dir.display()
                );
            } else {
                let id = identity::init(&dir, &label)?;
                println!(
                    "created account {} with device {} in {}",
                    id.account_key().unwrap_or("?"),
                    id.device_key(),
                    dir.display()
                );
            }
        }
        Command::Id => {
            let id = identity::load(&dir)?;
            let v = json!({ "account_key": id.account_key(), "device_key": id.device_key(), "peer_id": id.peer_id().to_string(), "holds_account_key": id.account.is_some() });
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "account  {}\ndevice   {}\npeer id  {}",
                    v["account_key"]
                        .as_str()
                        .unwrap_or("(linked device: certificate at the relay)"),
                    v["device_key"].as_str().unwrap_or(""),
                    v["peer_id"].as_str().unwrap_or("")
                );
            }
        }
        Command::Daemon {
            listen,
            control_listen,
            relay_only,
            no_direct,
            no_mdns,
            bootstrap,
            max_messages_per_channel,
            max_age_days,
            voice_source,
            voice_sink,
            voice_speaker,
            voice_force_turn,
        } => {
            let mut config = NodeConfig::new(dir.clone());
            if !listen.is_empty() {
                config.listen = listen.iter().map(|a| a.parse()).collect::<Result<_, _>>()?;
            }
            config.control_listen = control_listen;
            config.relay_only = relay_only;
            config.allow_direct = !no_direct;
            config.mdns = !no_mdns;
            config.bootstrap = bootstrap
                .iter()
                .map(|a| concord_node::parse_bootstrap(a))
                .collect::<Result<_, String>>()
                .map_err(std::io::Error::other)?;
            config.cache_limits = concord_node::cache::CacheLimits {
                max_messages_per_channel,
                max_age_days,
            };
            config.voice = concord_node::daemon::VoiceOptions {
                source: voice_source,
                sink: voice_sink,
                speaker: voice_speaker,
                force_turn: voice_force_turn,
                probe: None,
            };
            let node = Node::spawn(config).await?;
            println!(
                "concord node {} running; control API on {}",
                node.peer_id(),
                node.control_addr()
            );
            wait_for_signal().await;
            node.shutdown().await;
        }
        other => run_client(&dir, cli.json, other).await?,
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("CONCORD_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("concord: {e:#}");
            ExitCode::FAILURE
        }
    }
}
