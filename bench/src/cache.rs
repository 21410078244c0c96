//! `concord-bench cache`: fill a fresh file cache with N messages through the real event
//! path (catch-up pages applied in large transactions), then time full-text searches and
//! random history pages.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use concord_node::cache::{Applied, Cache, CacheLimits, HistoryKey};
use concord_proto::Id;
use concord_proto::model::{EventKind, Message};
use serde::Serialize;

use crate::stats::{Summary, summarize};
use crate::text::{Rng, Vocabulary};

#[derive(clap::Args)]
pub struct Args {
    /// Messages to fill the cache with.
    #[arg(long, default_value_t = 1_000_000)]
    messages: usize,
    /// Channels the messages are spread over.
    #[arg(long, default_value_t = 8)]
    channels: usize,
    /// Searches to time (1–3 words each).
    #[arg(long, default_value_t = 2_000)]
    searches: usize,
    /// History pages to time.
    #[arg(long, default_value_t = 2_000)]
    pages: usize,
    /// Messages per history page.
    #[arg(long, default_value_t = 50)]
    page_size: usize,
    /// Events per transaction while filling.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Words in the vocabulary.
    #[arg(long, default_value_t = 20_000)]
    vocabulary: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory for the cache file (a fresh temporary directory by default).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Time an existing cache file (from `--keep`) instead of filling a new one.
    #[arg(long, conflicts_with = "keep")]
    reuse: Option<PathBuf>,
    /// Fill this file and keep it afterwards (for `--reuse`).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench/results/cache.json")]
    out: PathBuf,
}

#[derive(Serialize)]
struct Report {
    scenario: &'static str,
    messages: usize,
    channels: usize,
    vocabulary: usize,
    seed: u64,
    fill_seconds: f64,
    fill_messages_per_second: f64,
    file_bytes: u64,
    search: Summary,
    search_mean_hits: f64,
    /// The slowest searches: (query, ms).
    search_slowest: Vec<(String, f64)>,
    search_limit: usize,
    history: Summary,
    history_page_size: usize,
    targets: Targets,
}

#[derive(Serialize)]
struct Targets {
    search_p99_ms: f64,
    history_p99_ms: f64,
}

const T0: i64 = 1_750_000_000_000;
const SEARCH_LIMIT: usize = 25;
/// Queries skip this many of the most common words.
const SKIP_COMMON: usize = 20;

pub fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.channels > 0 && args.messages > 0,
        "need messages and channels"
    );
    let tmp = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let path = match (&args.reuse, &args.keep) {
        (Some(path), _) | (None, Some(path)) => path.clone(),
        (None, None) => tmp.path().join("cache.db"),
    };
    let limits = CacheLimits {
        max_messages_per_channel: usize::MAX,
        max_age_days: None,
    };
    let mut cache = Cache::open(&path, limits).context("open cache")?;
    let vocab = Vocabulary::new(args.vocabulary);
    let mut rng = Rng::new(args.seed);

    let (fill, seqs) = if args.reuse.is_some() {
        let seqs = (0..args.channels)
            .map(|ch| cache.cursor(channel_id(ch)))
            .collect::<Result<Vec<_>, _>>()?;
        (Duration::ZERO, seqs)
    } else {
        eprintln!(
            "filling {} messages over {} channels…",
            args.messages, args.channels
        );
        fill(&mut cache, args, &vocab, &mut rng)?
    };
    cache.checkpoint()?;
    let file_bytes = std::fs::metadata(&path)?.len();

    for _ in 0..50 {
        cache.search(&vocab.query(&mut rng, SKIP_COMMON), SEARCH_LIMIT)?;
    }
    let mut search_times = Vec::with_capacity(args.searches);
    let mut hits = 0usize;
    let mut slowest: Vec<(String, f64)> = Vec::new();
    for _ in 0..args.searches {
        let q = vocab.query(&mut rng, SKIP_COMMON);
        let t = Instant::now();
        let found = cache.search(&q, SEARCH_LIMIT)?;
        let took = t.elapsed();
        search_times.push(took);
        hits += found.len();
        slowest.push((q, took.as_secs_f64() * 1e3));
    }
    slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
    slowest.truncate(5);

    let mut page_times = Vec::with_capacity(args.pages);
    for _ in 0..args.pages {
        let ch = rng.range(0, args.channels as u64) as usize;
        let top = seqs[ch] as u64;
        // Anywhere from the newest page back to the oldest.
        let before = match rng.range(0, 20) {
            0 => None,
            _ => Some(HistoryKey::Seq(rng.range(1, top + 2) as i64)),
        };
        let t = Instant::now();
        let page = cache.history(channel_id(ch), before, args.page_size)?;
        page_times.push(t.elapsed());
        std::hint::black_box(page);
    }

    let report = Report {
        scenario: "cache",
        messages: args.messages,
        channels: args.channels,
        vocabulary: args.vocabulary,
        seed: args.seed,
        fill_seconds: fill.as_secs_f64(),
        fill_messages_per_second: args.messages as f64 / fill.as_secs_f64(),
        file_bytes,
        search: summarize(&search_times),
        search_mean_hits: hits as f64 / args.searches.max(1) as f64,
        search_slowest: slowest,
        search_limit: SEARCH_LIMIT,
        history: summarize(&page_times),
        history_page_size: args.page_size,
        targets: Targets {
            search_p99_ms: 20.0,
            history_p99_ms: 2.0,
        },
    };
    print_table(&report);
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("write {}", args.out.display()))?;
    println!("report: {}", args.out.display());
    Ok(())
}

fn channel_id(index: usize) -> Id {
    Id(1_000 + index as i64)
}

/// Applies `message_create` events in batches, as catch-up does; returns the time taken and
/// each channel's last seq.
fn fill(
    cache: &mut Cache,
    args: &Args,
    vocab: &Vocabulary,
    rng: &mut Rng,
) -> anyhow::Result<(Duration, Vec<i64>)> {
    let mut seqs = vec![0i64; args.channels];
    let start = Instant::now();
    let mut done = 0;
    while done < args.messages {
        let n = args.batch.min(args.messages - done);
        let mut batch = Vec::with_capacity(n);
        for i in done..done + n {
            let ch = rng.range(0, args.channels as u64) as usize;
            seqs[ch] += 1;
            let id = Id::from_unix_ms(T0 + i as i64 * 1_000).0;
            let m = Message {
                id: Id(id),
                channel_id: channel_id(ch),
                guild_id: Some(Id(1)),
                author: Id(10 + rng.range(0, 50) as i64),
                device: format!("device-{}", rng.range(0, 60)),
                nonce: format!("n{i}"),
                content: vocab.message(rng),
                created_at: T0 + i as i64 * 1_000,
                edited_at: None,
                seq: seqs[ch],
                reply_to: None,
                mentions: vec![],
                reactions: vec![],
                deleted: false,
            };
            batch.push(serde_json::to_value(m)?);
        }
        let answers = cache.apply_events(batch.iter().map(|d| (EventKind::MessageCreate, d)))?;
        anyhow::ensure!(
            answers.iter().all(|a| *a == Applied::Applied),
            "fill events must apply"
        );
        done += n;
        if done % 100_000 < args.batch {
            eprintln!("  {done} messages, {:.1} s", start.elapsed().as_secs_f64());
        }
    }
    Ok((start.elapsed(), seqs))
}

fn print_table(r: &Report) {
    println!("cache: {} messages, {} channels", r.messages, r.channels);
    println!(
        "  fill      {:>10.0} msg/s   ({:.1} s)",
        r.fill_messages_per_second, r.fill_seconds
    );
    println!(
        "  file      {:>10.1} MiB",
        r.file_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "  {:<24} {:>8} {:>8} {:>8} {:>8}",
        "", "p50 ms", "p99 ms", "max ms", "target"
    );
    println!(
        "  {:<24} {:>8.3} {:>8.3} {:>8.3} {:>8}",
        format!("search ×{}", r.search.count),
        r.search.p50_ms,
        r.search.p99_ms,
        r.search.max_ms,
        format!("<{}", r.targets.search_p99_ms)
    );
    println!(
        "  {:<24} {:>8.3} {:>8.3} {:>8.3} {:>8}",
        format!("history page ×{}", r.history.count),
        r.history.p50_ms,
        r.history.p99_ms,
        r.history.max_ms,
        format!("<{}", r.targets.history_p99_ms)
    );
    println!(
        "  mean hits per search: {:.1} (limit {})",
        r.search_mean_hits, r.search_limit
    );
    for (query, ms) in &r.search_slowest {
        println!("  slow search {ms:>8.3} ms  {query:?}");
    }
}
