//! `concord-relay`: parse flags, load config, init tracing, run, shut down on a signal.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use concord_relay::cli::{Cli, Command};
use concord_relay::store::sql::SqlStore;
use concord_relay::{RelayConfig, Server};
use concord_svc::{init_tracing, wait_for_signal};

async fn serve(config: RelayConfig) -> anyhow::Result<()> {
    let server = Server::spawn(config).await?;
    // The lines a self-hoster (or a script) needs, on stdout. A closed stdout is no reason
    // to stop serving.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "concord-relay listening on {}", server.url());
    for addr in server.p2p_addrs() {
        let _ = writeln!(out, "concord-relay libp2p {addr}");
    }
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
    let config = match cli.relay_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("concord-relay: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            if config.database_url.is_none() {
                let _ = std::fs::create_dir_all(&config.data_dir);
            }
            SqlStore::connect(&config.database_url(), &config.database.pool())
                .await
                .map(|_| println!("migrations applied"))
                .map_err(Into::into)
        }
        Command::CheckConfig => toml::to_string(&config)
            .map(|t| print!("{t}"))
            .map_err(Into::into),
        Command::Openapi => {
            println!("{}", concord_relay::api::openapi_json());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("concord-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}
