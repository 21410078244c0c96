//! `concord-bench history`: history pages and full-text search while text traffic runs. The
//! guilds are prefilled with messages; readers then fetch pages of 50 (newest, or before a
//! random earlier message) and run searches of 1–3 words, each at a fixed rate, beside the
//! message load.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, stream};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Common, Env, Plan, relay::Tweaks};
use crate::text::{Rng, Vocabulary};

pub type PrefillFn = dyn for<'a> Fn(&'a Env) -> BoxFuture<'a, anyhow::Result<()>> + Sync;
pub type DuringFn =
    dyn for<'a> Fn(&'a Env, CancellationToken) -> BoxFuture<'a, anyhow::Result<Value>> + Sync;

/// Work the text run does before connecting and beside its traffic.
pub struct Hooks {
    pub prefill: Box<PrefillFn>,
    pub during: Box<DuringFn>,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Connected clients (they receive the traffic and do the reading).
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// Messages per second of background traffic.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Guilds (Zipf sizes), one text channel each [default: clients / 10].
    #[arg(long)]
    pub guilds: Option<usize>,
    /// Messages stored before the load starts.
    #[arg(long, default_value_t = 20_000)]
    pub prefill: usize,
    /// History page requests per second.
    #[arg(long, default_value_t = 200.0)]
    pub history_rate: f64,
    /// Search requests per second.
    #[arg(long, default_value_t = 50.0)]
    pub search_rate: f64,
    #[command(flatten)]
    pub common: Common,
}

/// Message ids by channel (guild index, channel index), from the prefill.
type Anchors = Arc<Mutex<Vec<Vec<String>>>>;

#[derive(Default)]
struct Reads {
    ok: AtomicU64,
    errors: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.clients > 0 && args.duration > 0,
        "need clients and duration"
    );
    let channels = args.guilds.unwrap_or((args.clients / 10).max(1));
    let plan = Plan {
        scenario: "history",
        preset: None,
        active: args.clients,
        idle: 0,
        rate: args.rate,
        duration: args.duration,
        guilds: channels,
        channels_per_guild: 1,
        quiet_guild_size: 20,
    };
    let json_path = args
        .common
        .json
        .clone()
        .unwrap_or_else(|| PathBuf::from("bench/results/history.json"));
    let anchors: Anchors = Arc::default();
    let prefill_n = args.prefill;
    let (history_rate, search_rate, seed) = (args.history_rate, args.search_rate, args.common.seed);
    let prefill_anchors = anchors.clone();
    let hooks = Hooks {
        prefill: Box::new(move |env: &Env| {
            prefill(env, prefill_n, seed, prefill_anchors.clone()).boxed()
        }),
        during: Box::new(move |env: &Env, stop| {
            readers(env, anchors.clone(), history_rate, search_rate, seed, stop).boxed()
        }),
    };
    let host = super::prepare(&args.common);
    concord_relay::listener::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let out = super::text::measure(
            &args.common,
            &plan,
            &Tweaks::default(),
            &host,
            Some(&hooks),
        )
        .await?;
        let e = out.extra.clone();
        let row = |name: &str| {
            let r = &e[name];
            (
                format!("{name} p50 / p95 / p99 / max"),
                format!(
                    "{} / {} / {} / {} ms ({} ok, {} errors)",
                    r["ms"]["p50"], r["ms"]["p95"], r["ms"]["p99"], r["ms"]["max"], r["ok"], r["errors"]
                ),
            )
        };
        let rows = [row("history"), row("search")];
        let details = json!({ "prefill": prefill_n, "history_rate": history_rate, "search_rate": search_rate });
        super::text::finish_report(&plan, out, &json_path, details, &rows)
    })
}

async fn prefill(env: &Env, n: usize, seed: u64, anchors: Anchors) -> anyhow::Result<()> {
    let vocab = Vocabulary::new(5_000);
    let mut rng = Rng::new(seed ^ 0xf111);
    let channels: Vec<(usize, String)> = env
        .guilds
        .iter()
        .enumerate()
        .flat_map(|(g, guild)| guild.channels.iter().map(move |c| (g, c.clone())))
        .collect();
    anyhow::ensure!(!channels.is_empty(), "no channels to fill");
    *anchors.lock().expect("anchors") = vec![Vec::new(); channels.len()];
    let jobs: Vec<(usize, usize, String)> = (0..n)
        .map(|i| {
            let c = rng.range(0, channels.len() as u64) as usize;
            let members = &env.guilds[channels[c].0].members;
            let author = members[rng.range(0, members.len() as u64) as usize];
            let _ = i;
            (c, author, vocab.message(&mut rng))
        })
        .collect();
    env.bar.set_length(n as u64);
    env.bar.set_position(0);
    env.bar.set_message("prefill");
    let results: Vec<anyhow::Result<()>> = stream::iter(jobs.into_iter().enumerate())
        .map(|(i, (c, author, content))| {
            let (channels, anchors) = (&channels, anchors.clone());
            async move {
                let m = super::population::post(
                    &env.http,
                    &env.relay.url,
                    &env.accounts[author].token,
                    &format!("/api/v1/channels/{}/messages", channels[c].1),
                    json!({ "content": content, "nonce": format!("p{i}") }),
                )
                .await?;
                if let Some(id) = m["id"].as_str() {
                    anchors.lock().expect("anchors")[c].push(id.to_owned());
                }
                env.bar.inc(1);
                Ok(())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect()
}

fn summary(reads: &Reads) -> Value {
    let mut v: Vec<f64> = reads
        .latencies_us
        .lock()
        .expect("latencies")
        .iter()
        .map(|us| *us as f64 / 1e3)
        .collect();
    v.sort_by(f64::total_cmp);
    let p = super::percentiles(&v);
    json!({
        "ok": reads.ok.load(Ordering::Relaxed),
        "errors": reads.errors.load(Ordering::Relaxed),
        "ms": { "p50": super::round2(p.p50), "p95": super::round2(p.p95), "p99": super::round2(p.p99), "max": super::round2(p.max) },
    })
}

/// History pages and searches at fixed rates until `stop`.
async fn readers(
    env: &Env,
    anchors: Anchors,
    history_rate: f64,
    search_rate: f64,
    seed: u64,
    stop: CancellationToken,
) -> anyhow::Result<Value> {
    let history = Arc::new(Reads::default());
    let search = Arc::new(Reads::default());
    let vocab = Vocabulary::new(5_000);
    let mut rng = Rng::new(seed ^ 0x4ead);
    let channels: Vec<(usize, String)> = env
        .guilds
        .iter()
        .enumerate()
        .flat_map(|(g, guild)| guild.channels.iter().map(move |c| (g, c.clone())))
        .collect();
    let limit = Arc::new(tokio::sync::Semaphore::new(512));
    let mut tasks = tokio::task::JoinSet::new();
    let begin = Instant::now();
    let (mut h_done, mut s_done) = (0u64, 0u64);
    while !stop.is_cancelled() {
        let t = begin.elapsed().as_secs_f64();
        let (h_due, s_due) = ((t * history_rate) as u64, (t * search_rate) as u64);
        while h_done < h_due || s_done < s_due {
            let is_search = s_done < s_due && (h_done >= h_due || rng.range(0, 2) == 0);
            let c = rng.range(0, channels.len() as u64) as usize;
            let (g, channel) = &channels[c];
            let guild = &env.guilds[*g];
            let reader = guild.members[rng.range(0, guild.members.len() as u64) as usize];
            let path = if is_search {
                s_done += 1;
                let q: String = vocab.query(&mut rng, 20);
                format!(
                    "/api/v1/guilds/{}/search?q={}&limit=25",
                    guild.id,
                    q.replace(' ', "+")
                )
            } else {
                h_done += 1;
                let anchor = {
                    let a = anchors.lock().expect("anchors");
                    let list = &a[c];
                    (!list.is_empty() && rng.range(0, 2) == 0)
                        .then(|| list[rng.range(0, list.len() as u64) as usize].clone())
                };
                match anchor {
                    Some(id) => format!("/api/v1/channels/{channel}/messages?before={id}&limit=50"),
                    None => format!("/api/v1/channels/{channel}/messages?limit=50"),
                }
            };
            let reads = if is_search {
                search.clone()
            } else {
                history.clone()
            };
            let req = env
                .http
                .get(format!("{}{path}", env.relay.url))
                .bearer_auth(&env.accounts[reader].token);
            let permit = limit.clone().acquire_owned().await.expect("semaphore open");
            tasks.spawn(async move {
                let started = Instant::now();
                let ok = match req.send().await {
                    Ok(resp) if resp.status().is_success() => resp.bytes().await.is_ok(),
                    _ => false,
                };
                drop(permit);
                if ok {
                    reads.ok.fetch_add(1, Ordering::Relaxed);
                    let us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    reads.latencies_us.lock().expect("latencies").push(us);
                } else {
                    reads.errors.fetch_add(1, Ordering::Relaxed);
                }
            });
            while tasks.try_join_next().is_some() {}
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while tasks.join_next().await.is_some() {}
    Ok(json!({ "history": summary(&history), "search": summary(&search) }))
}
