//! `concord-bench voice-mesh`: P nodes in one voice channel, all in this process, talking
//! over real WebRTC on loopback (directly, or through concord-turn with ICE forced to relay
//! candidates). Reports mouth-to-ear latency (capture of a frame at the speaker to its
//! playout at each listener, p50/p99) and the CPU and memory each node adds for the call.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args as ClapArgs;
use concord_node::daemon::VoiceOptions;
use concord_node::voice_mesh::media::SourceSpec;
use concord_node::voice_mesh::probe::LatencyProbe;
use concord_testkit::{TestNode, TestRelay};
use serde::Serialize;

use crate::proc_stats::ProcSampler;
use crate::stats::{Summary, summarize};

const TURN_SECRET: &str = "bench-voice-secret";

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Participants per call, one run per value (comma-separated; at most the mesh size, 4).
    #[arg(long, value_delimiter = ',', default_value = "2,3,4")]
    participants: Vec<usize>,
    /// Paths to measure: direct, turn.
    #[arg(long, value_delimiter = ',', default_value = "direct,turn")]
    paths: Vec<String>,
    /// Seconds each call is measured for (after the links are up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Where the JSON report goes.
    #[arg(long, default_value = "bench-voice-mesh.json")]
    json: PathBuf,
}

#[derive(Debug, Serialize)]
struct Run {
    path: String,
    participants: usize,
    /// Mouth-to-ear, every frame every listener played.
    latency: Summary,
    setup_s: f64,
    /// The whole process (relay + all nodes) while idle, then in the call, % of one core.
    cpu_idle_pct: f64,
    cpu_call_pct: f64,
    /// What the call adds per node.
    cpu_per_node_pct: f64,
    rss_per_node_kb: i64,
    packets_sent: u64,
    loss: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    duration_s: u64,
    runs: Vec<Run>,
    /// CPU each extra participant adds to every node, per path (% of one core).
    cpu_per_extra_participant_pct: Vec<(String, f64)>,
    target_p99_ms: Vec<(String, f64)>,
}

pub fn run(args: &Args) -> Result<()> {
    if args.participants.iter().any(|p| !(2..=4).contains(p)) {
        bail!("--participants: 2 to 4 (the default mesh size is 4)");
    }
    for path in &args.paths {
        if path != "direct" && path != "turn" {
            bail!("--paths: direct or turn, not {path:?}");
        }
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let mut runs = Vec::new();
    for path in &args.paths {
        for &p in &args.participants {
            let run = runtime.block_on(call(path, p, args.duration))?;
            println!(
                "{:<6} {} nodes: mouth-to-ear p50 {:.1} ms p99 {:.1} ms ({} frames), CPU per node {:.1} %, RSS per node {} KB, loss {:.3} %",
                run.path,
                run.participants,
                run.latency.p50_ms,
                run.latency.p99_ms,
                run.latency.count,
                run.cpu_per_node_pct,
                run.rss_per_node_kb,
                run.loss * 100.0
            );
            runs.push(run);
        }
    }
    let mut per_extra = Vec::new();
    for path in &args.paths {
        let of_path: Vec<&Run> = runs.iter().filter(|r| &r.path == path).collect();
        if let (Some(first), Some(last)) = (of_path.first(), of_path.last())
            && last.participants > first.participants
        {
            let slope = (last.cpu_per_node_pct - first.cpu_per_node_pct)
                / (last.participants - first.participants) as f64;
            println!("{path}: each extra participant adds {slope:.2} % of a core to every node");
            per_extra.push((path.clone(), slope));
        }
    }
    let report = Report {
        duration_s: args.duration,
        runs,
        cpu_per_extra_participant_pct: per_extra,
        target_p99_ms: vec![("direct".into(), 60.0), ("turn".into(), 200.0)],
    };
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    println!("report: {}", args.json.display());
    Ok(())
}

async fn call(path: &str, participants: usize, duration: u64) -> Result<Run> {
    let turn = if path == "turn" {
        Some(
            concord_turn::TurnServer::spawn(concord_turn::TurnConfig {
                listen: "127.0.0.1:0".parse()?,
                http_listen: "127.0.0.1:0".parse()?,
                realm: "bench".into(),
                auth_secret: Some(TURN_SECRET.into()),
                allow_peers: vec!["127.0.0.0/8".parse()?],
                shutdown_grace_secs: 1,
                ..concord_turn::TurnConfig::default()
            })
            .await?,
        )
    } else {
        None
    };
    let turn_url = turn
        .as_ref()
        .map(|t| format!("turn:127.0.0.1:{}?transport=udp", t.udp_addr().port()));
    let relay = TestRelay::start_with(tempfile::tempdir()?, |c| {
        if let Some(url) = turn_url {
            c.voice.turn_urls = vec![url];
            c.voice.turn_secret = Some(TURN_SECRET.into());
        }
    })
    .await;
    let probe = Arc::new(LatencyProbe::default());
    let mut nodes = Vec::new();
    for i in 0..participants {
        let probe = probe.clone();
        nodes.push(
            TestNode::start_with(&format!("n{i}"), |c| {
                c.voice = VoiceOptions {
                    source: SourceSpec::Sine(300.0 + 200.0 * i as f64),
                    sink: None,
                    speaker: false,
                    force_turn: path == "turn",
                    probe: Some(probe),
                };
            })
            .await,
        );
    }
    let (guild, _, code) = nodes[0].create_guild(&relay, "bench").await;
    for n in &nodes[1..] {
        n.join(&relay, &code).await;
    }
    for n in &nodes {
        n.wait_connected().await;
    }
    let channel = nodes[0].create_voice_channel(&relay, guild, "bench").await;
    let pid = std::process::id();
    let idle = ProcSampler::start(pid, Duration::from_millis(200))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = idle.stop().await;

    let started = Instant::now();
    for n in &nodes {
        n.node
            .voice_join(channel, false)
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let linked = nodes.iter().all(|n| {
            n.node.voice_status().is_some_and(|v| {
                v.peers.len() == participants - 1
                    && v.peers.iter().all(|p| {
                        p.link.state == "connected"
                            && p.audio.as_ref().is_some_and(|a| a.received > 10)
                    })
            })
        });
        if linked {
            break;
        }
        if Instant::now() > deadline {
            bail!("{participants} nodes did not link up within 60 s ({path})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let setup_s = started.elapsed().as_secs_f64();
    // Warm-up frames (jitter buffers filling) are not counted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    probe.take();
    let sent_before: u64 = nodes
        .iter()
        .filter_map(|n| n.node.voice_status())
        .map(|v| v.packets_sent)
        .sum();
    let in_call = ProcSampler::start(pid, Duration::from_millis(200))?;
    tokio::time::sleep(Duration::from_secs(duration)).await;
    let in_call = in_call.stop().await;
    let latencies = probe.take();
    let statuses: Vec<_> = nodes.iter().filter_map(|n| n.node.voice_status()).collect();
    let packets_sent = statuses.iter().map(|v| v.packets_sent).sum::<u64>() - sent_before;
    let losses: Vec<f64> = statuses
        .iter()
        .flat_map(|v| {
            v.peers
                .iter()
                .filter_map(|p| p.audio.as_ref().map(|a| a.loss))
        })
        .collect();
    for n in &nodes {
        let _ = n.node.voice_leave().await;
    }
    for n in nodes {
        n.node.shutdown().await;
    }
    if let Some(turn) = turn {
        turn.shutdown().await;
    }
    let per_node = |x: f64| x / participants as f64;
    Ok(Run {
        path: path.to_owned(),
        participants,
        latency: summarize(&latencies),
        setup_s,
        cpu_idle_pct: idle.cpu_pct,
        cpu_call_pct: in_call.cpu_pct,
        cpu_per_node_pct: per_node((in_call.cpu_pct - idle.cpu_pct).max(0.0)),
        rss_per_node_kb: (in_call.rss_kb_max as i64 - idle.rss_kb_max as i64) / participants as i64,
        packets_sent,
        loss: if losses.is_empty() {
            0.0
        } else {
            losses.iter().sum::<f64>() / losses.len() as f64
        },
    })
}
