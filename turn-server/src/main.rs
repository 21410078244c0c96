//! `concord-turn`: parse flags, load config, init tracing, run, shut down on a signal.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use concord_turn::cli::{Cli, Command};
use concord_turn::{TurnConfig, TurnServer};
use tracing_subscriber::EnvFilter;

fn init_tracing(filter: Option<&str>) {
    let filter = filter.map(EnvFilter::new).unwrap_or_else(|| {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

async fn serve(config: TurnConfig) -> anyhow::Result<()> {
    let server = TurnServer::spawn(config).await?;
    // The lines an operator (or a script) needs, on stdout.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "concord-turn listening on udp {}", server.udp_addr());
    if let Some(addr) = server.tcp_addr() {
        let _ = writeln!(out, "concord-turn listening on tcp {addr}");
    }
    if let Some(addr) = server.tls_addr() {
        let _ = writeln!(out, "concord-turn listening on tls {addr}");
    }
    let _ = writeln!(out, "concord-turn http {}", server.http_addr());
    let _ = out.flush();
    drop(out);
    wait_for_signal().await;
    server.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log.as_deref());
    let config = match cli.turn_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("concord-turn: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::CheckConfig => toml::to_string(&config.redacted())
            .map(|t| print!("{t}"))
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("concord-turn: {e:#}");
            ExitCode::FAILURE
        }
    }
}
