//! `concord-turn`: parse flags, load config, init tracing, run, shut down on a signal.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use concord_svc::{init_tracing, wait_for_signal};
use concord_turn::cli::{Cli, Command};
use concord_turn::{TurnConfig, TurnServer};

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
