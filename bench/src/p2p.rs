//! `concord-bench p2p`: a `concord` daemon process's idle memory after join and its cold start
//! to "connected" (against a `concord-relay` process), then delivery latency on loopback in
//! this process (testkit relay, two directly connected nodes, a gateway client): node → node
//! over GossipSub, node → relay → node push, node → relay → gateway, and the relay's own
//! HTTP → gateway path as a baseline measured in the same run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use concord_node::daemon::LocalEvent;
use concord_node::daemon::{CONTROL_ADDR_FILE, CONTROL_TOKEN_FILE};
use concord_node::relay_http::RelayHttp;
use concord_proto::gateway::{ClientFrame, Identify, ServerFrame};
use concord_testkit::{TestNode, TestRelay};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::stats::{Summary, summarize};

#[derive(clap::Args)]
pub struct Args {
    /// Messages node A sends (and the gateway user sends over HTTP for the baseline).
    #[arg(long, default_value_t = 300)]
    messages: usize,
    /// Pause between sends: latency, not throughput.
    #[arg(long, default_value_t = 20)]
    pace_ms: u64,
    /// Cold starts of the node process to time.
    #[arg(long, default_value_t = 5)]
    restarts: usize,
    /// Idle time after join before reading the node's RSS.
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
    /// A message not seen on a path within this long after its send counts as lost.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench/results/p2p.json")]
    out: PathBuf,
}

#[derive(Serialize)]
struct Report {
    scenario: &'static str,
    machine: Machine,
    node_process: ProcessReport,
    delivery: DeliveryReport,
    targets: Targets,
}

#[derive(Serialize)]
struct Machine {
    cores: usize,
    os: &'static str,
    arch: &'static str,
    date: String,
}

#[derive(Serialize)]
struct ProcessReport {
    /// VmRSS after join, connected and idle; MB = 10^6 bytes.
    idle_rss_mb: f64,
    idle_rss_kib: u64,
    /// VmHWM at the same moment (the peak so far, join included).
    peak_rss_mb: f64,
    idle_secs: u64,
    /// Spawn of `concord daemon` on a joined data dir until status says relay connected.
    cold_start: Summary,
    cold_start_runs_ms: Vec<f64>,
    /// Spawn until the control API's address file appears (the part before dialing).
    control_api_up: Summary,
}

#[derive(Serialize)]
struct DeliveryReport {
    messages: usize,
    pace_ms: u64,
    timeout_secs: u64,
    /// B sees A's message unconfirmed (GossipSub over the direct connection).
    node_node_gossip: PathStats,
    /// B sees it confirmed (the relay's push).
    node_relay_node_push: PathStats,
    /// A gateway client sees its `message_create`.
    node_relay_gateway: PathStats,
    /// The gateway user's own HTTP POST seen on its own gateway socket.
    baseline_http_gateway: PathStats,
    /// node → relay → gateway over the baseline.
    gateway_vs_baseline_p50: f64,
    gateway_vs_baseline_p99: f64,
    /// Node events the bench's subscriber missed (broadcast lag); should be 0.
    events_lagged: u64,
}

#[derive(Serialize)]
struct PathStats {
    #[serde(flatten)]
    latency: Summary,
    lost: usize,
}

#[derive(Serialize)]
struct Targets {
    idle_rss_mb: f64,
    cold_start_ms: f64,
}

const TARGETS: Targets = Targets {
    idle_rss_mb: 60.0,
    cold_start_ms: 1_000.0,
};

pub fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.messages > 0 && args.restarts > 0,
        "need messages and restarts"
    );
    let bins = binaries()?;
    concord_relay::listener::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new()?;
    let node_process = runtime.block_on(node_process(&bins, args))?;
    let delivery = runtime.block_on(delivery(args))?;
    let report = Report {
        scenario: "p2p",
        machine: Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            date: iso_date(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)?
                    .as_secs(),
            ),
        },
        node_process,
        delivery,
        targets: TARGETS,
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

// ---- the node as a process ----

struct Binaries {
    node: PathBuf,
    relay: PathBuf,
}

/// The release binaries beside this one in the target dir.
fn binaries() -> anyhow::Result<Binaries> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the bench binary has no directory")?;
    let bins = Binaries {
        node: dir.join("concord"),
        relay: dir.join("concord-relay"),
    };
    for bin in [&bins.node, &bins.relay] {
        anyhow::ensure!(
            bin.exists(),
            "{} is missing; build it first: cargo build --release -p concord-node -p concord-relay",
            bin.display()
        );
    }
    Ok(bins)
}

/// A child process, killed when dropped.
struct Proc(Child);

impl Proc {
    /// SIGTERM, so the daemon shuts down as it would for a user; SIGKILL after a grace.
    async fn stop(mut self) {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .await;
        for _ in 0..200 {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn node_process(bins: &Binaries, args: &Args) -> anyhow::Result<ProcessReport> {
    let root = tempfile::tempdir()?;
    let (node_dir, relay_dir) = (root.path().join("node"), root.path().join("relay"));
    let (_relay, url) = start_relay(&bins.relay, &relay_dir).await?;
    cli(&bins.node, &node_dir, &["init", "--label", "bench"]).await?;
    let identity = concord_node::identity::load(&node_dir)?;
    let code = create_guild(&RelayHttp::new(&url), &identity, "bench").await?;

    let mut daemon = start_daemon(&bins.node, &node_dir)?;
    control(&node_dir).await?;
    cli(&bins.node, &node_dir, &["join", &url, &code]).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: Value =
            serde_json::from_str(&cli(&bins.node, &node_dir, &["--json", "status"]).await?)?;
        if status["relay"]["connected"] == true {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the node never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "node joined; idle {} s before reading its RSS…",
        args.idle_secs
    );
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.0.id()))?;
    let rss = status_kib(&status, "VmRSS").context("no VmRSS")?;
    let peak = status_kib(&status, "VmHWM").context("no VmHWM")?;

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let (mut runs, mut up) = (Vec::new(), Vec::new());
    for i in 0..args.restarts {
        daemon.stop().await;
        let start = Instant::now();
        daemon = start_daemon(&bins.node, &node_dir)?;
        let (addr, token) = control(&node_dir).await?;
        up.push(start.elapsed());
        while !relay_connected(&http, &addr, &token).await {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(30),
                "restart {i}: never connected"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        runs.push(start.elapsed());
    }
    daemon.stop().await;
    Ok(ProcessReport {
        idle_rss_mb: kib_to_mb(rss),
        idle_rss_kib: rss,
        peak_rss_mb: kib_to_mb(peak),
        idle_secs: args.idle_secs,
        cold_start: summarize(&runs),
        cold_start_runs_ms: runs.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
        control_api_up: summarize(&up),
    })
}

/// Starts `concord-relay` on loopback ports; returns it and the URL it prints.
async fn start_relay(bin: &Path, dir: &Path) -> anyhow::Result<(Proc, String)> {
    let mut child = std::process::Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args([
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
            "--p2p-listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--log",
            "warn",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let stdout = child.stdout.take().context("relay stdout")?;
    let relay = Proc(child);
    let (tx, rx) = tokio::sync::oneshot::channel();
    // Keep draining: a relay blocked on a full stdout pipe stalls.
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix("concord-relay listening on ")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .ok()
        .and_then(Result::ok)
        .context("the relay did not print its URL")?;
    Ok((relay, url))
}

fn start_daemon(bin: &Path, dir: &Path) -> anyhow::Result<Proc> {
    // Its appearance is the "control API up" signal.
    let _ = std::fs::remove_file(dir.join(CONTROL_ADDR_FILE));
    let child = std::process::Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .args([
            "daemon",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--no-mdns",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("start the node daemon")?;
    Ok(Proc(child))
}

/// Waits for the daemon's control API; returns its address and token.
async fn control(dir: &Path) -> anyhow::Result<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Written after the token, and not atomically: wait until it parses.
        let addr = std::fs::read_to_string(dir.join(CONTROL_ADDR_FILE)).unwrap_or_default();
        if addr.trim().parse::<std::net::SocketAddr>().is_ok() {
            let token = std::fs::read_to_string(dir.join(CONTROL_TOKEN_FILE))?;
            return Ok((addr.trim().to_owned(), token.trim().to_owned()));
        }
        anyhow::ensure!(Instant::now() < deadline, "the daemon did not start");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn relay_connected(http: &reqwest::Client, addr: &str, token: &str) -> bool {
    let answer = http
        .get(format!("http://{addr}/v1/status"))
        .bearer_auth(token)
        .send()
        .await;
    match answer {
        Ok(resp) => resp
            .json::<Value>()
            .await
            .is_ok_and(|v| v["relay"]["connected"] == true),
        Err(_) => false,
    }
}

/// `concord --data-dir DIR args…`; its stdout.
async fn cli(bin: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "concord {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Registers the identity's account and creates a guild; returns an invite code.
async fn create_guild(
    http: &RelayHttp,
    identity: &concord_node::identity::Identity,
    name: &str,
) -> anyhow::Result<String> {
    http.login(identity, Some(name)).await?;
    let guild: Value = http
        .authed(
            identity,
            reqwest::Method::POST,
            "/api/v1/guilds",
            Some(json!({ "name": name })),
        )
        .await?;
    let id = guild["id"].as_str().context("guild id")?.to_owned();
    let invite: Value = http
        .authed(
            identity,
            reqwest::Method::POST,
            &format!("/api/v1/guilds/{id}/invites"),
            Some(json!({})),
        )
        .await?;
    Ok(invite["code"].as_str().context("invite code")?.to_owned())
}

// ---- delivery latency, in process ----

/// When each path first delivered a message, by content.
#[derive(Default, Clone, Copy)]
struct Seen {
    gossip: Option<Instant>,
    push: Option<Instant>,
    gateway: Option<Instant>,
}

#[derive(Default)]
struct Arrivals {
    seen: HashMap<String, Seen>,
    lagged: u64,
}

type Shared = Arc<Mutex<Arrivals>>;

async fn delivery(args: &Args) -> anyhow::Result<DeliveryReport> {
    let relay = TestRelay::start().await;
    let ana = TestNode::start("ana").await;
    let bob = TestNode::start("bob").await;
    let (_guild, general, code) = ana.create_guild(&relay, "bench").await;
    bob.join(&relay, &code).await;

    // A third account, on the gateway only.
    let carol_dir = tempfile::tempdir()?;
    let carol = concord_node::identity::init(carol_dir.path(), "gateway")?;
    let http = RelayHttp::new(&relay.url);
    let login = http.login(&carol, Some("carol")).await?;
    let _: Value = http
        .authed(
            &carol,
            reqwest::Method::POST,
            &format!("/api/v1/invites/{code}/accept"),
            Some(json!({})),
        )
        .await?;
    let ws = identify(&relay.url, &login.access_token).await?;

    ana.wait_connected().await;
    bob.wait_connected().await;
    for addr in bob.node.listen_addrs() {
        ana.node.dial(addr.clone()).await;
    }
    let bob_peer = bob.node.peer_id().to_string();
    concord_testkit::wait_for(Duration::from_secs(10), || {
        ana.node.connections().iter().any(|c| c.peer_id == bob_peer)
    })
    .await;
    // GossipSub needs a heartbeat or two (0.7 s) to put the new peer in the mesh.
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    let arrivals = Shared::default();
    let watchers = [
        tokio::spawn(watch_node(bob.node.subscribe(), arrivals.clone())),
        tokio::spawn(watch_gateway(ws, arrivals.clone())),
    ];
    let pace = Duration::from_millis(args.pace_ms);
    let timeout = Duration::from_secs(args.timeout_secs);

    eprintln!("node A sends {} messages…", args.messages);
    let mut sent = Vec::with_capacity(args.messages);
    let mut tick = pacer(pace);
    for i in 0..args.messages {
        tick.tick().await;
        let content = format!("p2p bench {i}");
        let at = Instant::now();
        ana.node
            .send(general, &content, false)
            .await
            .map_err(anyhow::Error::msg)?;
        sent.push((content, at));
    }
    let all = |s: &Seen| s.gossip.is_some() && s.push.is_some() && s.gateway.is_some();
    wait_arrivals(&arrivals, &sent, timeout, all).await;

    eprintln!(
        "baseline: the gateway user sends {} over HTTP…",
        args.messages
    );
    let mut baseline = Vec::with_capacity(args.messages);
    let mut tick = pacer(pace);
    for i in 0..args.messages {
        tick.tick().await;
        let content = format!("http baseline {i}");
        let at = Instant::now();
        let _: Value = http
            .authed(
                &carol,
                reqwest::Method::POST,
                &format!("/api/v1/channels/{general}/messages"),
                Some(json!({ "content": content, "nonce": format!("b{i}") })),
            )
            .await?;
        baseline.push((content, at));
    }
    wait_arrivals(&arrivals, &baseline, timeout, |s| s.gateway.is_some()).await;
    for w in watchers {
        w.abort();
    }

    let report = report(
        &arrivals.lock().expect("arrivals lock"),
        &sent,
        &baseline,
        args,
    );
    ana.node.shutdown().await;
    bob.node.shutdown().await;
    relay.stop().await;
    Ok(report)
}

fn report(
    a: &Arrivals,
    sent: &[(String, Instant)],
    baseline: &[(String, Instant)],
    args: &Args,
) -> DeliveryReport {
    let timeout = Duration::from_secs(args.timeout_secs);
    let path = |sent: &[(String, Instant)], pick: fn(&Seen) -> Option<Instant>| {
        let times: Vec<Duration> = sent
            .iter()
            .filter_map(|(content, at)| {
                let seen = pick(a.seen.get(content)?)?;
                Some(seen.saturating_duration_since(*at)).filter(|d| *d <= timeout)
            })
            .collect();
        if std::env::var_os("P2P_DEBUG").is_some() {
            let mut idx: Vec<(usize, Duration)> = times.iter().copied().enumerate().collect();
            idx.sort_by_key(|x| std::cmp::Reverse(x.1));
            eprintln!("slowest: {:?}", &idx[..5.min(idx.len())]);
        }
        PathStats {
            lost: sent.len() - times.len(),
            latency: summarize(&times),
        }
    };
    let gossip = path(sent, |s| s.gossip);
    let push = path(sent, |s| s.push);
    let gateway = path(sent, |s| s.gateway);
    let base = path(baseline, |s| s.gateway);
    DeliveryReport {
        messages: args.messages,
        pace_ms: args.pace_ms,
        timeout_secs: args.timeout_secs,
        gateway_vs_baseline_p50: ratio(gateway.latency.p50_ms, base.latency.p50_ms),
        gateway_vs_baseline_p99: ratio(gateway.latency.p99_ms, base.latency.p99_ms),
        node_node_gossip: gossip,
        node_relay_node_push: push,
        node_relay_gateway: gateway,
        baseline_http_gateway: base,
        events_lagged: a.lagged,
    }
}

/// Ticks `pace` apart; a slow send delays the next rather than bunching the ones after it.
fn pacer(pace: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(pace);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Until every sent message satisfies `done`, or `timeout` after the last send.
async fn wait_arrivals(
    arrivals: &Shared,
    sent: &[(String, Instant)],
    timeout: Duration,
    done: impl Fn(&Seen) -> bool,
) {
    let deadline = sent
        .last()
        .map_or_else(Instant::now, |(_, at)| *at + timeout);
    while Instant::now() < deadline {
        let complete = {
            let a = arrivals.lock().expect("arrivals lock");
            sent.iter().all(|(c, _)| a.seen.get(c).is_some_and(&done))
        };
        if complete {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn watch_node(mut events: tokio::sync::broadcast::Receiver<LocalEvent>, arrivals: Shared) {
    loop {
        match events.recv().await {
            Ok(LocalEvent::Message { message }) => {
                let now = Instant::now();
                let mut a = arrivals.lock().expect("arrivals lock");
                let seen = a.seen.entry(message.content).or_default();
                let slot = if message.confirmed {
                    &mut seen.push
                } else {
                    &mut seen.gossip
                };
                slot.get_or_insert(now);
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => arrivals.lock().expect("arrivals lock").lagged += n,
            Err(RecvError::Closed) => return,
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to the relay's gateway and identifies; returns once `ready` arrived.
async fn identify(url: &str, token: &str) -> anyhow::Result<Ws> {
    let ws_url = format!("{}/api/v1/gateway", url.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
    let identify = ClientFrame::Identify(Identify {
        token: token.to_owned(),
    });
    ws.send(WsMessage::text(identify.to_json())).await?;
    let ready = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = ws.next().await {
            if let WsMessage::Text(t) = frame?
                && ServerFrame::parse(&t).is_ok_and(|f| f.op == "ready")
            {
                return Ok(());
            }
        }
        anyhow::bail!("the gateway closed before ready")
    });
    ready.await.context("no gateway ready")??;
    Ok(ws)
}

async fn watch_gateway(ws: Ws, arrivals: Shared) {
    let (mut sink, mut stream) = ws.split();
    // The relay drops a silent session after 1.5 heartbeat intervals (41 s by default).
    let mut beat = tokio::time::interval(Duration::from_secs(20));
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else {
                    eprintln!("the gateway connection closed");
                    return;
                };
                let now = Instant::now();
                let WsMessage::Text(text) = frame else { continue };
                let Ok(f) = ServerFrame::parse(&text) else { continue };
                if f.op == "event"
                    && f.t.as_deref() == Some("message_create")
                    && let Some(content) = f.d["content"].as_str()
                {
                    let mut a = arrivals.lock().expect("arrivals lock");
                    a.seen.entry(content.to_owned()).or_default().gateway.get_or_insert(now);
                }
            }
            _ = beat.tick() => {
                let _ = sink.send(WsMessage::text(ClientFrame::Heartbeat.to_json())).await;
            }
        }
    }
}

// ---- output ----

fn print_table(r: &Report) {
    let (p, d) = (&r.node_process, &r.delivery);
    println!(
        "p2p: loopback, {} cores, {}",
        r.machine.cores, r.machine.date
    );
    println!("  {:<34} {:>22} {:>10}", "node process", "value", "target");
    println!(
        "  {:<34} {:>19.1} MB {:>10}",
        format!("idle RSS after join ({} s idle)", p.idle_secs),
        p.idle_rss_mb,
        format!("<{} MB", r.targets.idle_rss_mb)
    );
    println!(
        "  {:<34} {:>19.1} MB",
        "peak RSS so far (VmHWM)", p.peak_rss_mb
    );
    println!(
        "  {:<34} {:>22} {:>10}",
        format!("cold start → connected ×{}", p.cold_start.count),
        format!(
            "{:.0}/{:.0}/{:.0} ms",
            p.cold_start.min_ms, p.cold_start.p50_ms, p.cold_start.max_ms
        ),
        format!("<{} ms", r.targets.cold_start_ms)
    );
    println!(
        "  {:<34} {:>22}",
        "  of which control API up",
        format!(
            "{:.0}/{:.0}/{:.0} ms",
            p.control_api_up.min_ms, p.control_api_up.p50_ms, p.control_api_up.max_ms
        )
    );
    println!("  (cold start: min/median/max)");
    println!(
        "  {:<34} {:>8} {:>8} {:>8} {:>6}",
        format!("delivery ×{}, {} ms apart", d.messages, d.pace_ms),
        "p50 ms",
        "p99 ms",
        "max ms",
        "lost"
    );
    for (name, s) in [
        ("node → node (GossipSub)", &d.node_node_gossip),
        ("node → relay → node (push)", &d.node_relay_node_push),
        ("node → relay → gateway", &d.node_relay_gateway),
        ("HTTP → gateway (baseline)", &d.baseline_http_gateway),
    ] {
        println!(
            "  {:<34} {:>8.2} {:>8.2} {:>8.2} {:>6}",
            name, s.latency.p50_ms, s.latency.p99_ms, s.latency.max_ms, s.lost
        );
    }
    println!(
        "  node → relay → gateway vs baseline: p50 ×{:.2}, p99 ×{:.2}",
        d.gateway_vs_baseline_p50, d.gateway_vs_baseline_p99
    );
    if d.events_lagged > 0 {
        println!("  warning: {} node events lagged", d.events_lagged);
    }
}

// ---- pure helpers ----

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn kib_to_mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// A `Field:   123 kB` line of /proc/<pid>/status, in KiB.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (days to civil date, proleptic Gregorian).
fn iso_date(unix: u64) -> String {
    let (days, secs) = ((unix / 86_400) as i64, unix % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_status_fields() {
        let status = "Name:\tconcord\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(40_960));
        assert_eq!(status_kib(status, "VmHWM"), Some(51_200));
        assert_eq!(status_kib(status, "VmSwap"), None);
        assert_eq!(kib_to_mb(1_000), 1.024);
    }

    #[test]
    fn dates_and_ratios() {
        assert_eq!(iso_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_date(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso_date(1_750_000_000), "2025-06-15T15:06:40Z");
        assert_eq!(ratio(3.0, 2.0), 1.5);
        assert_eq!(ratio(3.0, 0.0), 0.0);
    }
}
