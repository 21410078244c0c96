//! `concord-bench turn`: N concurrent TURN allocations, each relaying an Opus-like stream
//! (50 packets/s of 160 bytes) from its client through the server to a peer, for concord-turn
//! and, as the baseline in the same run, coturn (Debian's `turnserver`). Reports loss, the
//! server's CPU and memory (from /proc), and relay latency.
//!
//! Both servers run as separate processes on loopback with the same limits lifted, pinned
//! to the same core when the machine has two or more (the load generator takes another).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args as ClapArgs;
use rtc_stun::attributes::*;
use rtc_stun::error_code::ErrorCodeAttribute;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::*;
use rtc_stun::textattrs::TextAttribute;
use rtc_turn::proto::channum::ChannelNumber;
use rtc_turn::proto::peeraddr::PeerAddress;
use rtc_turn::proto::relayaddr::RelayedAddress;
use rtc_turn::proto::reqtrans::RequestedTransport;
use serde::Serialize;
use tokio::net::UdpSocket;

use crate::proc_stats::ProcSampler;
use crate::stats::{Summary, summarize};

const USER: &str = "bench";
const PASSWORD: &str = "bench-password";
const REALM: &str = "bench";
/// Peer sockets the relayed streams land on (allocation i → sink i % SINKS).
const SINKS: usize = 8;
/// Receive buffer asked for each peer socket (clamped to net.core.rmem_max).
const SINK_BUFFER: usize = 4 << 20;
/// Bytes at the start of each payload: allocation index, sequence number, send time.
const HEADER: usize = 16;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Concurrent allocations, one run per value (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000")]
    allocations: Vec<usize>,
    /// Seconds each run sends for.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Packets per second per allocation (an Opus stream with 20 ms frames is 50).
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Payload bytes per packet (ChannelData adds 4).
    #[arg(long, default_value_t = 160)]
    payload: usize,
    /// Servers to measure, in order: concord, coturn.
    #[arg(long, value_delimiter = ',', default_value = "concord,coturn")]
    servers: Vec<String>,
    /// The concord-turn binary [default: next to this executable].
    #[arg(long)]
    concord_turn: Option<PathBuf>,
    /// coturn's binary.
    #[arg(long, default_value = "turnserver")]
    coturn: PathBuf,
    /// Do not pin the server and the load generator to separate cores.
    #[arg(long)]
    no_pin: bool,
    /// Where the JSON report goes.
    #[arg(long, default_value = "bench-turn.json")]
    json: PathBuf,
}

#[derive(Debug, Serialize)]
struct Run {
    server: String,
    allocations: usize,
    allocations_failed: usize,
    setup_s: f64,
    sent: u64,
    send_errors: u64,
    received: u64,
    loss_pct: f64,
    /// Server CPU over the send phase, percent of one core.
    cpu_pct: f64,
    cpu_pct_per_1k_allocations: f64,
    rss_kb_max: u64,
    rss_kb_per_allocation: f64,
    /// Client → server → peer, one-way on one machine.
    latency_ms: Summary,
}

#[derive(Debug, Serialize)]
struct Ratio {
    allocations: usize,
    /// concord-turn CPU / coturn CPU (lower is better; ≤ 1 meets the target).
    cpu_ratio: f64,
    loss_pct_concord: f64,
    loss_pct_coturn: f64,
    rss_ratio: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    rate_pps: u32,
    payload_bytes: usize,
    duration_s: u64,
    pinning: String,
    runs: Vec<Run>,
    ratios: Vec<Ratio>,
}

pub fn run(args: &Args) -> Result<()> {
    if args.payload < HEADER {
        bail!("--payload must be at least {HEADER} bytes");
    }
    if args.rate == 0 || args.duration == 0 {
        bail!("--rate and --duration must be positive");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = !args.no_pin && cores >= 2;
    let pinning = if pin {
        // The generator on core 0, each server on core 1: both servers get the same single core.
        pin_self(0)?;
        format!("load generator on core 0, server on core 1 (of {cores})")
    } else {
        format!("not pinned ({cores} cores)")
    };
    println!("turn: {pinning}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    for &n in &args.allocations {
        for server in &args.servers {
            let r = runtime.block_on(run_one(args, server, n, pin))?;
            print_run(&r);
            runs.push(r);
        }
    }
    let ratios = ratios(&runs);
    print_table(&runs, &ratios);
    let report = Report {
        scenario: "turn",
        rate_pps: args.rate,
        payload_bytes: args.payload,
        duration_s: args.duration,
        pinning,
        runs,
        ratios,
    };
    std::fs::write(&args.json, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", args.json.display()))?;
    println!("wrote {}", args.json.display());
    Ok(())
}

fn pin_self(core: usize) -> Result<()> {
    let status = Command::new("taskset")
        .args([
            "-a",
            "-cp",
            &core.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .context("taskset (util-linux) is needed for pinning; pass --no-pin")?;
    if !status.success() {
        bail!("taskset failed to pin the load generator");
    }
    Ok(())
}

fn free_udp_port() -> Result<u16> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(s.local_addr()?.port())
}

fn concord_turn_binary(args: &Args) -> Result<PathBuf> {
    if let Some(p) = &args.concord_turn {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name("concord-turn");
    if !p.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p concord-turn) or pass --concord-turn",
            p.display()
        );
    }
    Ok(p)
}

/// Starts a server on 127.0.0.1:port with user bench, loopback peers allowed and every
/// quota lifted so only the machine limits the load.
fn start_server(args: &Args, server: &str, port: u16, pin: bool) -> Result<Child> {
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "1"]);
        c
    } else {
        Command::new("env")
    };
    match server {
        "concord" => {
            cmd.arg(concord_turn_binary(args)?).args([
                "--listen",
                &listen,
                "--no-tcp",
                "--http-listen",
                "127.0.0.1:0",
                "--realm",
                REALM,
                "--user",
                &format!("{USER}:{PASSWORD}"),
                "--allow-peer",
                "127.0.0.0/8",
                "--relay-ports",
                "20000-39999",
                "--user-quota",
                "100000",
                "--max-allocations",
                "100000",
                "--bandwidth",
                "0",
                "--log",
                "warn",
            ]);
        }
        "coturn" => {
            cmd.arg(&args.coturn).args([
                "-n",
                "--listening-ip",
                "127.0.0.1",
                "--listening-port",
                &port.to_string(),
                "--relay-ip",
                "127.0.0.1",
                "--min-port",
                "40000",
                "--max-port",
                "59999",
                "--lt-cred-mech",
                "--user",
                &format!("{USER}:{PASSWORD}"),
                "--realm",
                REALM,
                "--no-tls",
                "--no-dtls",
                "--no-tcp",
                "--allow-loopback-peers",
                // coturn refuses loopback peers without a CLI password, even with the CLI off.
                "--cli-password",
                "bench-cli",
                "--no-cli",
                "--user-quota",
                "0",
                "--total-quota",
                "0",
                "--log-file",
                "stdout",
                "--pidfile",
                "/dev/null",
            ]);
        }
        other => bail!("unknown server {other:?} (concord or coturn)"),
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.spawn().with_context(|| format!("starting {server}"))
}

async fn run_one(args: &Args, server: &str, n: usize, pin: bool) -> Result<Run> {
    let port = free_udp_port()?;
    let mut child = start_server(args, server, port, pin)?;
    let result = measure(args, server, n, port, child.id()).await;
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = &result
        && let Some(mut stderr) = child.stderr.take()
    {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        eprintln!("{server} stderr:\n{text}\nerror: {e:#}");
    }
    result
}

struct Client {
    socket: UdpSocket,
    channel: u16,
}

async fn measure(args: &Args, server: &str, n: usize, port: u16, pid: u32) -> Result<Run> {
    let server_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_for_server(server_addr).await?;

    let mut sinks = Vec::with_capacity(SINKS);
    for _ in 0..SINKS {
        let sink = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        // Each sink takes 1/8 of the whole relayed rate: with the default buffer a short
        // stall of this process would drop packets and count them against the server.
        socket2::SockRef::from(&sink).set_recv_buffer_size(SINK_BUFFER)?;
        sinks.push(Arc::new(sink));
    }
    let sink_addrs: Vec<SocketAddr> = sinks
        .iter()
        .map(|s| s.local_addr())
        .collect::<std::io::Result<_>>()?;

    // Allocate and bind channels, 64 at a time.
    let setup_started = Instant::now();
    let mut clients: Vec<Option<Client>> = Vec::with_capacity(n);
    let mut failed = 0;
    for chunk_start in (0..n).step_by(64) {
        let chunk = chunk_start..(chunk_start + 64).min(n);
        let tasks: Vec<_> = chunk
            .map(|i| {
                let peer = sink_addrs[i % SINKS];
                tokio::spawn(async move { setup_client(server_addr, peer).await })
            })
            .collect();
        for t in tasks {
            match t.await? {
                Ok(c) => clients.push(Some(c)),
                Err(e) => {
                    if failed == 0 {
                        eprintln!("{server}: allocation failed: {e:#}");
                    }
                    failed += 1;
                    clients.push(None);
                }
            }
        }
    }
    let setup_s = setup_started.elapsed().as_secs_f64();

    // Receivers: count per allocation and record latency.
    let received: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let epoch = Instant::now();
    let stop_receiving = Arc::new(tokio::sync::Notify::new());
    let mut receivers = Vec::new();
    for sink in &sinks {
        let (sink, received, stop) = (sink.clone(), received.clone(), stop_receiving.clone());
        receivers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut buf = vec![0u8; 2048];
            loop {
                tokio::select! {
                    r = sink.recv_from(&mut buf) => {
                        let Ok((len, _)) = r else { continue };
                        if len < HEADER { continue; }
                        let i = u32::from_be_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
                        let sent_ns = u64::from_be_bytes(buf[8..16].try_into().expect("8 bytes"));
                        if let Some(c) = received.get(i) {
                            c.fetch_add(1, Ordering::Relaxed);
                        }
                        let now_ns = epoch.elapsed().as_nanos() as u64;
                        latencies.push(Duration::from_nanos(now_ns.saturating_sub(sent_ns)));
                    }
                    _ = stop.notified() => break,
                }
            }
            latencies
        }));
    }

    // Send: allocation i sends in slot i % slots of every period (spreads the load evenly).
    let period = Duration::from_secs(1) / args.rate;
    let slots = (period.as_millis() as usize).max(1);
    let tick = period / slots as u32;
    let total_periods = args.duration * args.rate as u64;
    let sampler = ProcSampler::start(pid, Duration::from_millis(250))?;
    let mut sent = 0u64;
    let mut send_errors = 0u64;
    let mut packet = vec![0u8; 4 + args.payload.div_ceil(4) * 4];
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut seq = 0u32;
    for _ in 0..total_periods {
        for slot in 0..slots {
            interval.tick().await;
            let now_ns = epoch.elapsed().as_nanos() as u64;
            for (i, client) in clients.iter().enumerate().skip(slot).step_by(slots) {
                let Some(client) = client else { continue };
                let len = encode_channel_data(
                    &mut packet,
                    client.channel,
                    i as u32,
                    seq,
                    now_ns,
                    args.payload,
                );
                match client.socket.try_send(&packet[..len]) {
                    Ok(_) => sent += 1,
                    Err(_) => send_errors += 1,
                }
            }
        }
        seq = seq.wrapping_add(1);
    }
    let usage = sampler.stop().await;
    // Let in-flight packets land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_receiving.notify_waiters();
    let mut latencies = Vec::new();
    for r in receivers {
        latencies.extend(r.await?);
    }
    let received_total: u64 = received.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    let ok = n - failed;
    Ok(Run {
        server: if server == "concord" {
            "concord-turn"
        } else {
            "coturn"
        }
        .into(),
        allocations: n,
        allocations_failed: failed,
        setup_s,
        sent,
        send_errors,
        received: received_total,
        loss_pct: if sent == 0 {
            100.0
        } else {
            100.0 * sent.saturating_sub(received_total) as f64 / sent as f64
        },
        cpu_pct: usage.cpu_pct,
        cpu_pct_per_1k_allocations: if ok == 0 {
            0.0
        } else {
            usage.cpu_pct * 1000.0 / ok as f64
        },
        rss_kb_max: usage.rss_kb_max,
        rss_kb_per_allocation: if ok == 0 {
            0.0
        } else {
            usage.rss_kb_max.saturating_sub(usage.rss_kb_first) as f64 / ok as f64
        },
        latency_ms: summarize(&latencies),
    })
}

/// ChannelData with the payload header (allocation, sequence, send time) and zero padding.
fn encode_channel_data(
    packet: &mut [u8],
    channel: u16,
    index: u32,
    seq: u32,
    now_ns: u64,
    payload: usize,
) -> usize {
    packet[0..2].copy_from_slice(&channel.to_be_bytes());
    packet[2..4].copy_from_slice(&(payload as u16).to_be_bytes());
    packet[4..8].copy_from_slice(&index.to_be_bytes());
    packet[8..12].copy_from_slice(&seq.to_be_bytes());
    packet[12..20].copy_from_slice(&now_ns.to_be_bytes());
    // Over UDP the padding may be left off (RFC 8656 §12.5).
    4 + payload
}

async fn wait_for_server(addr: SocketAddr) -> Result<()> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    socket.connect(addr).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let m = build(METHOD_BINDING, vec![])?;
        // Before the server binds, the send or recv fails at once (ICMP port unreachable).
        if socket.send(&m.raw).await.is_ok() {
            let mut buf = [0u8; 1500];
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(100), socket.recv(&mut buf)).await
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("server on {addr} does not answer STUN binding requests")
}

fn build(method: Method, attrs: Vec<Box<dyn Setter>>) -> Result<Message> {
    let mut m = Message::new();
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(method, CLASS_REQUEST)),
    ];
    setters.extend(attrs);
    m.build(&setters)
        .map_err(|e| anyhow::anyhow!("building STUN message: {e}"))?;
    Ok(m)
}

fn signed(method: Method, attrs: Vec<Box<dyn Setter>>, nonce: &str) -> Result<Message> {
    let mut all = attrs;
    all.push(Box::new(TextAttribute::new(ATTR_USERNAME, USER.into())));
    all.push(Box::new(TextAttribute::new(ATTR_REALM, REALM.into())));
    all.push(Box::new(TextAttribute::new(ATTR_NONCE, nonce.into())));
    let mut m = build(method, all)?;
    let crypto = rtc_stun::crypto::default_provider()
        .map_err(|e| anyhow::anyhow!("crypto provider: {e}"))?;
    MessageIntegrity::new_long_term_integrity_with_provider(
        USER.into(),
        REALM.into(),
        PASSWORD.into(),
        crypto.crypto(),
    )
    .map_err(|e| anyhow::anyhow!("integrity: {e}"))?
    .add_to(&mut m)
    .map_err(|e| anyhow::anyhow!("integrity: {e}"))?;
    rtc_stun::fingerprint::FINGERPRINT
        .add_to(&mut m)
        .map_err(|e| anyhow::anyhow!("fingerprint: {e}"))?;
    Ok(m)
}

/// Sends a request and waits for its response, retransmitting (RFC 8489 §6.2.1, shortened).
async fn exchange(socket: &UdpSocket, m: &Message) -> Result<Message> {
    let mut buf = vec![0u8; 1500];
    for attempt in 0..6u32 {
        socket.send(&m.raw).await?;
        let deadline = Instant::now() + Duration::from_millis(250 << attempt.min(3));
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(r) = tokio::time::timeout(left, socket.recv(&mut buf)).await else {
                break;
            };
            let len = r?;
            let mut answer = Message::new();
            if answer.unmarshal_binary(&buf[..len]).is_ok()
                && answer.transaction_id == m.transaction_id
            {
                return Ok(answer);
            }
        }
    }
    bail!("no answer to {}", m.typ)
}

fn error_code(m: &Message) -> Option<u16> {
    let mut e = ErrorCodeAttribute::default();
    e.get_from(m).ok().map(|_| e.code.0)
}

fn expect_success(m: &Message, what: &str) -> Result<()> {
    if m.typ.class == CLASS_SUCCESS_RESPONSE {
        Ok(())
    } else {
        bail!("{what} refused with {:?}", error_code(m))
    }
}

/// Allocate (after the 401 challenge) and bind channel 0x4000 to the peer.
async fn setup_client(server: SocketAddr, peer: SocketAddr) -> Result<Client> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    socket.connect(server).await?;
    let transport = || -> Box<dyn Setter> {
        Box::new(RequestedTransport {
            protocol: rtc_turn::proto::PROTO_UDP,
        })
    };
    let challenge = exchange(&socket, &build(METHOD_ALLOCATE, vec![transport()])?).await?;
    if error_code(&challenge) != Some(401) {
        bail!("expected a 401 challenge, got {:?}", error_code(&challenge));
    }
    let nonce = TextAttribute::get_from_as(&challenge, ATTR_NONCE)
        .map_err(|e| anyhow::anyhow!("challenge without a nonce: {e}"))?
        .text;
    let allocated = exchange(
        &socket,
        &signed(METHOD_ALLOCATE, vec![transport()], &nonce)?,
    )
    .await?;
    expect_success(&allocated, "allocate")?;
    let mut relayed = RelayedAddress::default();
    relayed
        .get_from(&allocated)
        .map_err(|e| anyhow::anyhow!("allocate answer without a relayed address: {e}"))?;
    let channel = 0x4000;
    let bind = signed(
        METHOD_CHANNEL_BIND,
        vec![
            Box::new(ChannelNumber(channel)),
            Box::new(PeerAddress {
                ip: peer.ip(),
                port: peer.port(),
            }),
        ],
        &nonce,
    )?;
    let bound = exchange(&socket, &bind).await?;
    expect_success(&bound, "channel bind")?;
    Ok(Client { socket, channel })
}

fn ratios(runs: &[Run]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for c in runs.iter().filter(|r| r.server == "concord-turn") {
        if let Some(b) = runs
            .iter()
            .find(|r| r.server == "coturn" && r.allocations == c.allocations)
        {
            let div = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            out.push(Ratio {
                allocations: c.allocations,
                cpu_ratio: div(c.cpu_pct, b.cpu_pct),
                loss_pct_concord: c.loss_pct,
                loss_pct_coturn: b.loss_pct,
                rss_ratio: div(c.rss_kb_max as f64, b.rss_kb_max as f64),
            });
        }
    }
    out
}

fn print_run(r: &Run) {
    println!(
        "{:<13} n={:<5} setup {:>5.1}s  sent {:>8}  loss {:>6.3}%  cpu {:>5.1}%  rss {:>7} KB  p50 {:.2} ms  p99 {:.2} ms",
        r.server,
        r.allocations,
        r.setup_s,
        r.sent,
        r.loss_pct,
        r.cpu_pct,
        r.rss_kb_max,
        r.latency_ms.p50_ms,
        r.latency_ms.p99_ms
    );
}

fn print_table(runs: &[Run], ratios: &[Ratio]) {
    println!();
    println!(
        "{:<13} {:>6} {:>7} {:>10} {:>10} {:>8} {:>8} {:>12} {:>9} {:>9} {:>9}",
        "server",
        "allocs",
        "failed",
        "sent",
        "received",
        "loss %",
        "cpu %",
        "cpu%/1k",
        "rss MB",
        "p50 ms",
        "p99 ms"
    );
    for r in runs {
        println!(
            "{:<13} {:>6} {:>7} {:>10} {:>10} {:>8.3} {:>8.1} {:>12.2} {:>9.1} {:>9.2} {:>9.2}",
            r.server,
            r.allocations,
            r.allocations_failed,
            r.sent,
            r.received,
            r.loss_pct,
            r.cpu_pct,
            r.cpu_pct_per_1k_allocations,
            r.rss_kb_max as f64 / 1024.0,
            r.latency_ms.p50_ms,
            r.latency_ms.p99_ms
        );
    }
    for q in ratios {
        println!(
            "n={:<5} concord-turn / coturn: cpu ×{:.2}, rss ×{:.2}, loss {:.3}% vs {:.3}%",
            q.allocations, q.cpu_ratio, q.rss_ratio, q.loss_pct_concord, q.loss_pct_coturn
        );
    }
}
