//! `concord-bootstrap`: parse flags, load config, init tracing, run, shut down on a signal.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use concord_bootstrap::cli::{Cli, Command};
use concord_bootstrap::{Bootstrap, BootstrapConfig};
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

async fn serve(config: BootstrapConfig) -> anyhow::Result<()> {
    let server = Bootstrap::spawn(config).await?;
    // What nodes put in their bootstrap list, on stdout (one multiaddr per line).
    let mut out = std::io::stdout().lock();
    for addr in server.multiaddrs() {
        let _ = writeln!(out, "concord-bootstrap listening on {addr}");
    }
    let _ = writeln!(out, "concord-bootstrap http {}", server.http_addr());
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
    let config = match cli.bootstrap_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("concord-bootstrap: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::CheckConfig => toml::to_string(&config)
            .map(|t| print!("{t}"))
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("concord-bootstrap: {e:#}");
            ExitCode::FAILURE
        }
    }
}
