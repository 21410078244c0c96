//! `concord-netlab report --trials N --json FILE`: runs N trials per NAT pair in the lab and
//! writes the report (`netlab/run-report` builds the binaries and calls this).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use concord_netlab::procs::Bins;
use concord_netlab::report::{self, Report};
use concord_netlab::trial::{self, PAIRS};
use concord_netlab::world::World;

#[derive(Parser)]
#[command(name = "concord-netlab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run trials per NAT pair and write the JSON report.
    Report {
        /// Trials per NAT pair (1..=1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
        trials: u16,
        /// Messages each side sends per trial (1..=100).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=100))]
        messages: u16,
        /// Where to write the report.
        #[arg(long)]
        json: PathBuf,
        /// Directory with concord-relay, concord-bootstrap and concord [default: this
        /// binary's directory].
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Only these pairs (repeatable): eim-eim, eim-sym, sym-sym, same-lan, eim-eim-loss5.
        #[arg(long)]
        pair: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("concord-netlab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Command::Report {
        trials,
        messages,
        json,
        bin_dir,
        pair,
    } = cli.command;
    for p in &pair {
        anyhow::ensure!(PAIRS.iter().any(|k| k.name == p), "unknown pair {p:?}");
    }
    let bin_dir = match bin_dir {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .map(ToOwned::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no binary directory"))?,
    };
    let bins = Bins::in_dir(&bin_dir)?;
    let world = World::start(&bins)?;
    let mut pairs = Vec::new();
    for p in PAIRS
        .iter()
        .filter(|p| pair.is_empty() || pair.iter().any(|n| n == p.name))
    {
        let mut results = Vec::new();
        for t in 0..trials as usize {
            let r = trial::run(&world, *p, t, messages as usize)?;
            eprintln!(
                "{:<14} trial {:>3}: {} time_to_direct={:?} ms lost={}/{} in_order={}",
                p.name,
                t + 1,
                if r.direct { "direct " } else { "relayed" },
                r.time_to_direct_ms,
                r.messages_lost,
                r.messages_sent,
                r.in_order
            );
            results.push(r);
        }
        pairs.push(report::summarize(*p, &results));
    }
    let report = Report { pairs };
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("pair            trials  direct  p50 ms  p95 ms  sent  lost");
    for p in &report.pairs {
        let ms = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        println!(
            "{:<15} {:>6}  {:>5.0}%  {:>6}  {:>6}  {:>4}  {:>4}",
            p.pair,
            p.trials,
            p.direct_rate * 100.0,
            ms(p.time_to_direct_ms.p50),
            ms(p.time_to_direct_ms.p95),
            p.messages_sent,
            p.messages_lost
        );
    }
    println!(
        "reference: DCUtR hole punching succeeds about 70% of the time in the wild (arXiv 2510.27500)"
    );
    println!("report written to {}", json.display());
    Ok(())
}
