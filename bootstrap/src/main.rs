//! `concord-bootstrap`: parse flags, load config, init tracing, run, print the multiaddrs it
//! listens on, shut down on a signal.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use concord_bootstrap::cli::{Cli, Command};
use concord_bootstrap::{Bootstrap, BootstrapConfig};
use concord_svc::{init_tracing, wait_for_signal};

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
