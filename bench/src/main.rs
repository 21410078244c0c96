//! `concord-bench`: benchmark scenarios. Each prints a small table and writes a JSON report;
//! none asserts timing (CI never gates on wall-clock numbers).

mod cache;
mod stats;
mod text;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "concord-bench", about = "Concord benchmarks")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// The node's local cache: fill, full-text search, history pages.
    Cache(cache::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().scenario {
        Scenario::Cache(args) => cache::run(&args),
    }
}
