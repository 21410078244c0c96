//! What every Concord server binary shares (`concord-relay`, `concord-turn`,
//! `concord-bootstrap`): tracing setup, waiting for SIGTERM/SIGINT, TLS certificate loading,
//! batched UDP reads (`recvmmsg`), and the checks that keep each `config/*.example.toml` in
//! step with its config struct.

pub mod config_example;
pub mod tls;
pub mod udp_batch;

use tracing_subscriber::EnvFilter;

/// Logs to stderr with `filter` (a `--log` flag), else `RUST_LOG`, else `info`.
pub fn init_tracing(filter: Option<&str>) {
    let filter = filter.map(EnvFilter::new).unwrap_or_else(|| {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

/// Returns on the first SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
