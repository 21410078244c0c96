//! `concord-bench`: benchmark scenarios. Each prints a small table and writes a JSON report;
//! none asserts timing (CI never gates on wall-clock numbers).

mod cache;
mod load;
mod p2p;
mod proc_stats;
mod stats;
mod text;
mod turn;
mod voice;
mod voice_mesh;

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
    /// Node process memory and cold start; delivery latency node → node, node → relay →
    /// node, node → relay → gateway (loopback).
    P2p(p2p::Args),
    /// Chat load: N gateway clients in Zipf-sized guilds, R messages/s over HTTP; delivery
    /// latency to every recipient, relay CPU and memory (starts the relay unless --target).
    Text(load::text::Args),
    /// N idle gateway connections: the relay's memory per connection.
    Idle(load::idle::Args),
    /// History pages and full-text search under text load.
    History(load::history::Args),
    /// TURN relaying: concord-turn against coturn with N Opus-like allocations.
    Turn(turn::Args),
    /// Voice between nodes over WebRTC (direct and through concord-turn): mouth-to-ear
    /// latency, CPU and memory per node and per extra participant.
    VoiceMesh(voice_mesh::Args),
    /// The relay's SFU: R rooms of P WebRTC participants; down-tracks per core at < 1% loss
    /// and p99 < 5 ms (--find-max ramps), against a minimal UDP forwarder.
    Voice(voice::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().scenario {
        Scenario::Cache(args) => cache::run(&args),
        Scenario::P2p(args) => p2p::run(&args),
        Scenario::Text(args) => load::text::run(&args),
        Scenario::Idle(args) => load::idle::run(&args),
        Scenario::History(args) => load::history::run(&args),
        Scenario::Turn(args) => turn::run(&args),
        Scenario::VoiceMesh(args) => voice_mesh::run(&args),
        Scenario::Voice(args) => voice::run(&args),
    }
}
