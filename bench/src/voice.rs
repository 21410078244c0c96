//! `concord-bench voice`: the relay's SFU under R rooms of P synthetic participants, each a
//! real WebRTC peer connection (webrtc-rs's sans-IO `rtc` core, DTLS-SRTP) sending 50 packets/s of a 120-byte
//! Opus-sized payload with an RFC 6464 level (fixed per participant, so each listener's
//! top-N speakers stay put). Every payload carries its send time, speaker and sequence, so
//! each listener measures the delay through the SFU and counts what went missing per
//! speaker. The relay runs as its own process (pinned to core 0 when there are 2 cores);
//! its CPU comes from /proc and its forwarded packets from its metrics.
//!
//! In the same run, a minimal UDP forwarder (read, look up, send: no crypto, no RTP) on the
//! relay's core carries the same packet load with the same fan-out to listeners that read it
//! (and once more to listeners that do not, the earlier baseline); all are reported as
//! packets forwarded per second of one core, and our ratio to each.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bytes::Bytes;
use bytes::BytesMut;
use clap::Args as ClapArgs;
use concord_media::direct_srtp::{self, KeyTap, Srtp as SrtpContext};
use futures_util::{StreamExt, stream};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::marshal::{Marshal, Unmarshal};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use serde::Serialize;
use serde_json::{Value, json};

use crate::load::population::{self, Account};
use crate::load::relay::{Relay, Sampler, Tweaks, cpu_pct, read_proc};
use crate::load::{Common, Percentiles, percentiles, round2};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Voice rooms (voice channels on the SFU).
    #[arg(long, default_value_t = 20)]
    rooms: usize,
    /// Participants per room, every one of them speaking.
    #[arg(long, default_value_t = 10)]
    participants: usize,
    /// Seconds measured per level (after every participant is connected).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Ramp the number of rooms (×1.5 per level, from --rooms) until loss reaches 1% or the
    /// p99 delay 5 ms, and report the highest level held.
    #[arg(long)]
    find_max: bool,
    /// Stop ramping at this many rooms.
    #[arg(long, default_value_t = 400)]
    max_rooms: usize,
    #[command(flatten)]
    common: Common,
}

/// Speakers the relay forwards to each listener (its default `sfu_forwarded_speakers`).
const FORWARDED: usize = 3;
const PACKETS_PER_SEC: u64 = 50;
const PAYLOAD: usize = 120;
/// What a level must stay under to count as held.
const MAX_LOSS: f64 = 0.01;
const MAX_P99_MS: f64 = 5.0;

#[derive(Debug, Serialize, Clone)]
struct Level {
    rooms: usize,
    participants: usize,
    /// Listener × forwarded speaker pairs.
    downtracks: usize,
    /// Packets the listeners should have had in the window, and got.
    expected: u64,
    received: u64,
    loss_fraction: f64,
    /// Send → receive through the SFU (both ends in the generator, one clock).
    forward_delay_ms: Percentiles,
    relay_cpu_pct: f64,
    relay_rss_kb: u64,
    generator_cpu_pct: f64,
    /// Packets the relay forwarded per second (its own counter), and per second of a core.
    forwarded_pps: f64,
    forwarded_pps_per_core: f64,
    downtracks_per_core: f64,
    held: bool,
    setup_s: f64,
}

#[derive(Debug, Serialize)]
struct Raw {
    /// Whether the listeners read what they were sent (else their full buffers dropped it).
    listeners_read: bool,
    forwarded_pps: f64,
    received_pps: f64,
    cpu_pct: f64,
    pps_per_core: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    participants: usize,
    duration_s: u64,
    pinning: String,
    levels: Vec<Level>,
    /// The highest level held (or the one level run): its numbers are the headline.
    rooms: usize,
    downtracks: usize,
    downtracks_per_core: f64,
    loss_fraction: f64,
    forward_delay_ms: Percentiles,
    /// The minimal forwarder with listeners that read (the baseline of the ratio), and with
    /// listeners that do not (earlier runs' baseline).
    raw_forwarder: Raw,
    raw_forwarder_unread: Raw,
    raw_forwarder_unread_ratio: f64,
    /// Packets per second of one core: the minimal forwarder's, and ours / it.
    raw_forwarder_pps: f64,
    raw_forwarder_ratio: f64,
    /// The seed's voice premise on this machine: 200 rooms × 10 participants; the fraction
    /// of its down-tracks one relay held.
    seed_premise_fraction: f64,
}

/// The speakers listener `me` of a room gets: the loudest `FORWARDED` others (participant 0
/// is the loudest).
fn forwarded_to(me: usize, participants: usize) -> impl Iterator<Item = usize> {
    (0..participants).filter(move |s| *s != me).take(FORWARDED)
}

pub fn run(args: &Args) -> Result<()> {
    anyhow::ensure!(
        args.rooms > 0 && args.participants > 1,
        "need rooms and 2+ participants"
    );
    let host = crate::load::prepare(&args.common);
    concord_relay::listener::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new()?;
    let mut levels = Vec::new();
    let mut rooms = args.rooms;
    loop {
        let level = runtime.block_on(run_level(args, rooms, host.relay_cpu))?;
        print_level(&level);
        let held = level.held;
        levels.push(level);
        if !args.find_max || !held || rooms >= args.max_rooms {
            break;
        }
        rooms = ((rooms as f64 * 1.5).ceil() as usize).min(args.max_rooms);
    }
    let raw_rooms = levels.last().map_or(args.rooms, |l| l.rooms);
    let raw_secs = args.duration.min(10);
    let raw = raw_forwarder(raw_rooms, args.participants, raw_secs, host.relay_cpu, true)?;
    let unread = raw_forwarder(
        raw_rooms,
        args.participants,
        raw_secs,
        host.relay_cpu,
        false,
    )?;
    let best = levels
        .iter()
        .filter(|l| l.held)
        .max_by_key(|l| l.rooms)
        .or(levels.last())
        .cloned()
        .context("no level ran")?;
    let ours = levels
        .iter()
        .map(|l| l.forwarded_pps_per_core)
        .fold(0.0, f64::max);
    let seed_downtracks = 200 * 10 * FORWARDED;
    let report = Report {
        scenario: "voice",
        participants: args.participants,
        duration_s: args.duration,
        pinning: host.pinning.clone(),
        rooms: best.rooms,
        downtracks: best.downtracks,
        downtracks_per_core: best.downtracks_per_core,
        loss_fraction: best.loss_fraction,
        forward_delay_ms: best.forward_delay_ms,
        raw_forwarder_pps: raw.pps_per_core,
        raw_forwarder_ratio: round2(ours / raw.pps_per_core.max(1.0)),
        seed_premise_fraction: round2(
            (if best.held { best.downtracks } else { 0 }) as f64 / seed_downtracks as f64,
        )
        .min(1.0),
        raw_forwarder_unread_ratio: round2(ours / unread.pps_per_core.max(1.0)),
        raw_forwarder: raw,
        raw_forwarder_unread: unread,
        levels,
    };
    println!(
        "\nhighest level held (else the last run): {} rooms × {} = {} down-tracks, {:.0} per core; loss {:.4}, p99 {:.2} ms",
        report.rooms,
        report.participants,
        report.downtracks,
        report.downtracks_per_core,
        report.loss_fraction,
        report.forward_delay_ms.p99
    );
    println!(
        "forwarding, packets/s per core: ours {ours:.0}, minimal UDP forwarder {:.0} (ratio {:.2}; with listeners that do not read: {:.0}, ratio {:.2}); seed premise (200 × 10) held: {:.0}%",
        report.raw_forwarder_pps,
        report.raw_forwarder_ratio,
        report.raw_forwarder_unread.pps_per_core,
        report.raw_forwarder_unread_ratio,
        report.seed_premise_fraction * 100.0
    );
    println!("pinning: {}", report.pinning);
    let path = args
        .common
        .json
        .clone()
        .unwrap_or_else(|| PathBuf::from("bench/results/voice.json"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("JSON: {}", path.display());
    Ok(())
}

fn print_level(l: &Level) {
    println!(
        "{:>4} rooms × {:>2}: {:>6} down-tracks, loss {:.4}, delay p50 {:.2} p99 {:.2} max {:.2} ms, relay {:.0}% CPU {} MB, generator {:.0}% CPU, {:.0} pkt/s forwarded{}",
        l.rooms,
        l.participants,
        l.downtracks,
        l.loss_fraction,
        l.forward_delay_ms.p50,
        l.forward_delay_ms.p99,
        l.forward_delay_ms.max,
        l.relay_cpu_pct,
        l.relay_rss_kb / 1024,
        l.generator_cpu_pct,
        l.forwarded_pps,
        if l.held { "" } else { "  (not held)" }
    );
}

/// What each listener saw, per speaker: first and last sequence and packets, in the window.
#[derive(Default)]
struct Heard {
    per_speaker: HashMap<u32, (u32, u32, u64)>,
    delays_us: Vec<u32>,
}

/// The measurement window, in microseconds since the epoch (0: not yet).
struct Window {
    from: AtomicU64,
    to: AtomicU64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One forwarded packet heard by a listener: counted when it was sent inside the window.
fn record(heard: &Mutex<Heard>, window: &Window, payload: &[u8]) {
    let now = now_us();
    let Some((sent, speaker, seq)) = read_stamp(payload) else {
        return;
    };
    let (from, to) = (
        window.from.load(Ordering::Relaxed),
        window.to.load(Ordering::Relaxed),
    );
    if from == 0 || sent < from || sent > to {
        return;
    }
    let mut h = heard.lock().expect("heard");
    let e = h.per_speaker.entry(speaker).or_insert((seq, seq, 0));
    e.0 = e.0.min(seq);
    e.1 = e.1.max(seq);
    e.2 += 1;
    if h.delays_us.len() < 2_000_000 {
        h.delays_us
            .push(now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
    }
}

fn stamp(sent_us: u64, speaker: u32, seq: u32) -> Bytes {
    let mut payload = vec![0xf8u8; PAYLOAD];
    payload[..8].copy_from_slice(&sent_us.to_le_bytes());
    payload[8..12].copy_from_slice(&speaker.to_le_bytes());
    payload[12..16].copy_from_slice(&seq.to_le_bytes());
    Bytes::from(payload)
}

fn read_stamp(payload: &[u8]) -> Option<(u64, u32, u32)> {
    Some((
        u64::from_le_bytes(payload.get(..8)?.try_into().ok()?),
        u32::from_le_bytes(payload.get(8..12)?.try_into().ok()?),
        u32::from_le_bytes(payload.get(12..16)?.try_into().ok()?),
    ))
}

struct Participant {
    heard: Arc<Mutex<Heard>>,
    task: tokio::task::JoinHandle<()>,
}

/// What one synthetic participant sends and records.
struct Voice {
    ssrc: u32,
    speaker: u32,
    level: u8,
    heard: Arc<Mutex<Heard>>,
    window: Arc<Window>,
}

/// Joins `channel` through the SFU and starts sending at `level` dBov. Each participant is a
/// sans-IO peer connection (webrtc-rs's `rtc` core, DTLS-SRTP as in a browser) driven by one
/// task with its own socket: a generator as light as the stack allows, so that it is not
/// what limits the measurement. After the first RTP packet each way, its RTP is protected
/// and opened outside the connection (`concord_media::direct_srtp`, as the relay does for
/// forwarded audio); ICE, DTLS and RTCP still go through it.
async fn connect(
    http: &reqwest::Client,
    url: &str,
    account: &Account,
    channel: &str,
    speaker: u32,
    level: u8,
    window: Arc<Window>,
) -> Result<Participant> {
    let path = |what: &str| format!("/api/v1/voice/channels/{channel}/{what}");
    population::post(
        http,
        url,
        &account.token,
        &path("join"),
        json!({ "client": "browser" }),
    )
    .await?;
    let offer = population::post(http, url, &account.token, &path("sfu"), json!({})).await?;
    let offer = offer["sdp"].as_str().context("offer sdp")?.to_owned();
    let (engine, registry) = concord_media::media_engine().map_err(anyhow::Error::msg)?;
    let now = Instant::now();
    let tap = KeyTap::new().map_err(anyhow::Error::msg)?;
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_crypto_provider(tap.clone())
                .build(),
        )
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .build(now)?;
    pc.set_remote_description(now, RTCSessionDescription::offer(offer)?)?;
    let ssrc = concord_media::random_ssrc();
    let sender = pc.add_track(concord_media::opus_media_track(
        "bench",
        &format!("mic-{ssrc}"),
        ssrc,
    ))?;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    socket.set_nonblocking(true)?;
    let local = socket.local_addr()?;
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    pc.add_local_candidate(concord_media::host_candidate(local).map_err(anyhow::Error::msg)?)?;
    let answer = pc.create_answer(None)?;
    pc.set_local_description(now, answer)?;
    pc.add_local_candidate(RTCIceCandidateInit::default())?;
    let answer = pc.local_description().context("answer")?.sdp;
    let heard = Arc::new(Mutex::new(Heard::default()));
    let (connected_tx, connected) = tokio::sync::oneshot::channel();
    let voice = Voice {
        ssrc,
        speaker,
        level,
        heard: heard.clone(),
        window,
    };
    let task = tokio::spawn(drive(pc, socket, local, sender, tap, voice, connected_tx));
    let resp = http
        .post(format!("{url}{}", path("sfu/answer")))
        .bearer_auth(&account.token)
        .json(&json!({ "sdp": answer }))
        .send()
        .await?;
    let status = resp.status();
    anyhow::ensure!(
        status.is_success(),
        "answer: {status}: {}",
        resp.text().await.unwrap_or_default()
    );
    tokio::time::timeout(Duration::from_secs(60), connected)
        .await
        .context("no connection to the SFU within 60 s")?
        .context("the connection to the SFU failed")?
        .map_err(anyhow::Error::msg)?;
    Ok(Participant { heard, task })
}

/// One participant's event loop: datagrams in, timeouts, and a packet every 20 ms once
/// connected (the payload type and level id its answer negotiated).
async fn drive(
    mut pc: RTCPeerConnection,
    socket: tokio::net::UdpSocket,
    local: SocketAddr,
    sender: RTCRtpSenderId,
    tap: Arc<KeyTap>,
    voice: Voice,
    connected: tokio::sync::oneshot::Sender<Result<(), String>>,
) {
    let mut connected = Some(connected);
    let mut negotiated: Option<concord_media::Negotiated> = None;
    let mut buf = vec![0u8; 2048];
    let mut tick = tokio::time::interval(Duration::from_millis(1_000 / PACKETS_PER_SEC));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
    let timer = tokio::time::sleep_until(far());
    tokio::pin!(timer);
    let mut armed = None;
    let level = concord_media::audio_level_element(voice.level);
    // After the first packet each way, RTP skips the connection's pipeline (as in the relay):
    // the relay's SRTP to us, and ours to the relay with its address.
    let mut opened: Option<SrtpContext> = None;
    let mut sealed: Option<(SrtpContext, SocketAddr)> = None;
    let mut sealed_tested = false;
    for n in 0u32.. {
        while let Some(out) = pc.poll_write() {
            let _ = socket.try_send_to(&out.message, out.transport.peer_addr);
        }
        while let Some(event) = pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                match state {
                    RTCPeerConnectionState::Connected => {
                        negotiated = pc.rtp_sender(sender).map(|mut s| {
                            concord_media::Negotiated::in_parameters(s.get_parameters())
                        });
                        let ok = negotiated
                            .is_some_and(|n| n.payload_type.is_some())
                            .then_some(())
                            .ok_or_else(|| "opus not negotiated".to_owned());
                        if let Some(tx) = connected.take() {
                            let _ = tx.send(ok);
                        }
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => return,
                    _ => {}
                }
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = pc.poll_read() {
            if let RTCMessage::RtpPacket(_, packet) = message {
                record(&voice.heard, &voice.window, &packet.payload);
            }
        }
        let next = pc.poll_timeout();
        if next != armed {
            armed = next;
            timer
                .as_mut()
                .reset(next.map_or_else(far, tokio::time::Instant::from_std));
        }
        let sending = negotiated.and_then(|n| n.payload_type.map(|pt| (pt, n.level_id)));
        tokio::select! {
            _ = &mut timer => {
                armed = None;
                let _ = pc.handle_timeout(Instant::now());
            }
            received = socket.recv_from(&mut buf) => {
                let Ok((len, peer_addr)) = received else { continue };
                let data = &buf[..len];
                let rtp = direct_srtp::is_rtp(data);
                if rtp && let Some(context) = opened.as_mut() {
                    if let Ok(plain) = context.unprotect_rtp(data)
                        && let Ok(packet) = rtc::rtp::Packet::unmarshal(&mut &plain[..])
                    {
                        record(&voice.heard, &voice.window, &packet.payload);
                    }
                    continue;
                }
                let _ = pc.handle_read(TaggedBytesMut {
                    now: Instant::now(),
                    transport: TransportContext {
                        local_addr: local,
                        peer_addr,
                        ecn: None,
                        transport_protocol: TransportProtocol::UDP,
                    },
                    message: BytesMut::from(data),
                });
                if rtp && opened.is_none() {
                    opened = direct_srtp::remote_context(&tap, data).map(|(context, _)| context);
                }
            }
            _ = tick.tick(), if sending.is_some() => {
                let (pt, level_id) = sending.unwrap_or_default();
                let mut packet = rtc::rtp::Packet {
                    header: rtc::rtp::header::Header {
                        version: 2,
                        payload_type: pt,
                        sequence_number: n as u16,
                        timestamp: n.wrapping_mul(960),
                        ssrc: voice.ssrc,
                        ..Default::default()
                    },
                    payload: stamp(now_us(), voice.speaker, n),
                };
                if let Some(id) = level_id {
                    let _ = packet.header.set_extension(id, level.clone());
                }
                let Ok(plain) = packet.marshal() else { continue };
                if let Some((context, to)) = sealed.as_mut() {
                    let mut datagram = plain.to_vec();
                    if context.protect_rtp(&mut datagram).is_ok() {
                        let _ = socket.try_send_to(&datagram, *to);
                    }
                    continue;
                }
                let _ = pc.handle_write(TaggedRTCMessage {
                    now: Instant::now(),
                    message: RTCMessage::RtpPacket(String::new(), packet),
                });
                // The first packet out shows the context that protects as the connection does.
                while let Some(out) = pc.poll_write() {
                    let _ = socket.try_send_to(&out.message, out.transport.peer_addr);
                    if direct_srtp::is_rtp(&out.message) && !sealed_tested {
                        sealed_tested = true;
                        sealed = direct_srtp::local_context(&tap, &plain, &out.message)
                            .map(|context| (context, out.transport.peer_addr));
                    }
                }
            }
        }
    }
}

/// The relay's forwarded-packet counter.
async fn forwarded_total(http: &reqwest::Client, url: &str) -> f64 {
    let Ok(resp) = http.get(format!("{url}/metrics")).send().await else {
        return 0.0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("concord_sfu_forwarded_packets_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn run_level(args: &Args, rooms: usize, relay_cpu: Option<usize>) -> Result<Level> {
    let started = Instant::now();
    let tweaks = Tweaks {
        voice_rooms: Some(rooms.max(1) * 2),
        ..Tweaks::default()
    };
    let relay = Relay::start(&args.common, &tweaks, relay_cpu).await?;
    let url = relay.url.clone();
    let http = population::http_client();
    let bar = crate::load::progress(args.common.quiet);
    let p = args.participants;
    let accounts = population::accounts(&http, &url, "voice", rooms * p, &bar).await?;
    let owner = &accounts[0];
    let guild = population::post(
        &http,
        &url,
        &owner.token,
        "/api/v1/guilds",
        json!({ "name": "voice bench" }),
    )
    .await?;
    let guild = guild["id"].as_str().context("guild id")?.to_owned();
    let invite = population::post(
        &http,
        &url,
        &owner.token,
        &format!("/api/v1/guilds/{guild}/invites"),
        json!({}),
    )
    .await?;
    let code = invite["code"].as_str().context("invite code")?.to_owned();
    let accept = format!("/api/v1/invites/{code}/accept");
    let joined: Vec<Result<Value>> = stream::iter(&accounts[1..])
        .map(|a| population::post(&http, &url, &a.token, &accept, json!({})))
        .buffered(32)
        .collect()
        .await;
    joined.into_iter().collect::<Result<Vec<_>>>()?;
    let mut channels = Vec::new();
    for r in 0..rooms {
        let c = population::post(
            &http,
            &url,
            &owner.token,
            &format!("/api/v1/guilds/{guild}/channels"),
            json!({ "name": format!("room-{r}"), "kind": "voice" }),
        )
        .await?;
        channels.push(c["id"].as_str().context("channel id")?.to_owned());
    }
    let window = Arc::new(Window {
        from: AtomicU64::new(0),
        to: AtomicU64::new(u64::MAX),
    });
    bar.set_length((rooms * p) as u64);
    bar.set_position(0);
    bar.set_message("participants");
    let connected: Vec<Result<Participant>> = stream::iter(0..rooms * p)
        .map(|i| {
            let (http, url, window, bar) = (&http, &url, window.clone(), &bar);
            let (room, seat) = (i / p, i % p);
            let account = &accounts[i];
            let channel = &channels[room];
            async move {
                // Participant 0 of a room is the loudest; levels are -dBov, 127 silent.
                let level = (10 + 5 * seat).min(120) as u8;
                let joined = connect(http, url, account, channel, i as u32, level, window).await;
                bar.inc(1);
                joined
            }
        })
        .buffered(8)
        .collect()
        .await;
    let participants = connected.into_iter().collect::<Result<Vec<_>>>()?;
    bar.finish_and_clear();
    let setup_s = started.elapsed().as_secs_f64();
    // Settle: the forwarder ranks speakers, slots fill.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = relay.pid;
    let t0 = Instant::now();
    let sampler = Sampler::start(pid, t0, Duration::from_millis(500));
    let me = std::process::id();
    let gen_before = read_proc(me, t0);
    let fwd_before = forwarded_total(&http, &url).await;
    let from = now_us();
    window.from.store(from, Ordering::Relaxed);
    window
        .to
        .store(from + args.duration * 1_000_000, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let gen_after = read_proc(me, t0);
    let fwd_after = forwarded_total(&http, &url).await;
    let elapsed = t0.elapsed().as_secs_f64();
    // Packets sent at the window's end are still on their way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let samples = sampler.finish();
    for part in &participants {
        part.task.abort();
    }
    let mut expected = 0u64;
    let mut received = 0u64;
    let mut delays: Vec<f64> = Vec::new();
    for (i, part) in participants.iter().enumerate() {
        let (room, seat) = (i / p, i % p);
        let heard = part.heard.lock().expect("heard");
        // Each speaker this listener should get: packets from the first to the last sent
        // in the window (those missing at either end count as lost too).
        let per_speaker = args.duration * PACKETS_PER_SEC;
        for s in forwarded_to(seat, p) {
            let speaker = (room * p + s) as u32;
            expected += per_speaker;
            if let Some(&(_, _, n)) = heard.per_speaker.get(&speaker) {
                received += n.min(per_speaker);
            }
        }
        delays.extend(heard.delays_us.iter().map(|d| f64::from(*d) / 1000.0));
    }
    delays.sort_by(f64::total_cmp);
    let forward_delay_ms = percentiles(&delays);
    let relay_cpu_pct = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => cpu_pct(a, b),
        _ => 0.0,
    };
    let relay_rss_kb = samples.iter().map(|s| s.rss_kb).max().unwrap_or(0);
    let generator_cpu_pct = match (gen_before, gen_after) {
        (Some(a), Some(b)) => cpu_pct(&a, &b),
        _ => 0.0,
    };
    let forwarded_pps = (fwd_after - fwd_before) / elapsed;
    let cores = (relay_cpu_pct / 100.0).max(0.01);
    let downtracks = rooms * p * FORWARDED.min(p - 1);
    let loss_fraction = 1.0 - received as f64 / expected.max(1) as f64;
    drop(participants);
    relay.stop().await;
    Ok(Level {
        rooms,
        participants: p,
        downtracks,
        expected,
        received,
        loss_fraction: (loss_fraction.max(0.0) * 1e4).round() / 1e4,
        held: loss_fraction < MAX_LOSS && forward_delay_ms.p99 < MAX_P99_MS,
        forward_delay_ms,
        relay_cpu_pct: round2(relay_cpu_pct),
        relay_rss_kb,
        generator_cpu_pct: round2(generator_cpu_pct),
        forwarded_pps: round2(forwarded_pps),
        forwarded_pps_per_core: round2(forwarded_pps / cores),
        downtracks_per_core: round2(downtracks as f64 / cores),
        setup_s: round2(setup_s),
    })
}

/// The same packet load through read → look up → send on plain UDP, on the relay's core,
/// measured as packets sent per CPU second of the forwarder's thread. With `read`, the
/// listeners read what they get as the SFU's participants do (one task per socket on the
/// generator's cores), so each send wakes a reader as the SFU's sends do; without, their
/// full buffers drop it, which spares the forwarder that wake-up (an easier baseline, kept
/// for comparison with earlier runs).
fn raw_forwarder(
    rooms: usize,
    p: usize,
    secs: u64,
    core: Option<usize>,
    read: bool,
) -> Result<Raw> {
    let forwarder = UdpSocket::bind("127.0.0.1:0")?;
    forwarder.set_read_timeout(Some(Duration::from_millis(100)))?;
    let forwarder_addr = forwarder.local_addr()?;
    let sockets: Vec<UdpSocket> = (0..rooms * p)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    let addrs: Vec<SocketAddr> = sockets
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<std::io::Result<_>>()?;
    // speaker address → the listeners it is forwarded to.
    let mut routes: HashMap<SocketAddr, Vec<SocketAddr>> = HashMap::new();
    for room in 0..rooms {
        for listener in 0..p {
            for s in forwarded_to(listener, p) {
                routes
                    .entry(addrs[room * p + s])
                    .or_default()
                    .push(addrs[room * p + listener]);
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let readers = if read {
        let listeners = sockets
            .iter()
            .map(UdpSocket::try_clone)
            .collect::<std::io::Result<Vec<_>>>()?;
        Some(spawn_readers(listeners, stop.clone(), received.clone()))
    } else {
        None
    };
    let thread = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || -> Result<f64> {
            if let Some(core) = core {
                let mut set = rustix::thread::CpuSet::new();
                set.set(core);
                rustix::thread::sched_setaffinity(None, &set)?;
            }
            // This thread's CPU time in nanoseconds (schedstat: finer than stat's ticks).
            let cpu = || -> Result<f64> {
                let stat = std::fs::read_to_string("/proc/thread-self/schedstat")?;
                let ns: f64 = stat
                    .split_whitespace()
                    .next()
                    .context("schedstat")?
                    .parse()?;
                Ok(ns / 1e9)
            };
            let before = cpu()?;
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = forwarder.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(to) = routes.get(&from) {
                    for dest in to {
                        if forwarder.send_to(&buf[..n], dest).is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            Ok(cpu()? - before)
        })
    };
    // The publishers: every participant sends 50 packets/s.
    let start = Instant::now();
    let payload = vec![0xf8u8; PAYLOAD + 12];
    let mut tick = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        for s in &sockets {
            let _ = s.send_to(&payload, forwarder_addr);
        }
        tick += 1;
        let next = start + Duration::from_millis(tick * 1_000 / PACKETS_PER_SEC);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let cpu_s = thread
        .join()
        .map_err(|_| anyhow::anyhow!("forwarder panicked"))??;
    if let Some(readers) = readers {
        readers
            .join()
            .map_err(|_| anyhow::anyhow!("readers panicked"))??;
    }
    let forwarded = sent.load(Ordering::Relaxed) as f64;
    let cpu_pct = cpu_s / elapsed * 100.0;
    Ok(Raw {
        listeners_read: read,
        forwarded_pps: round2(forwarded / elapsed),
        received_pps: round2(received.load(Ordering::Relaxed) as f64 / elapsed),
        cpu_pct: round2(cpu_pct),
        pps_per_core: round2(forwarded / cpu_s.max(1e-6)),
    })
}

/// The raw forwarder's listeners, reading until `stop`: one task per socket on a runtime of
/// its own (on the generator's cores, as the bench's participants).
fn spawn_readers(
    sockets: Vec<UdpSocket>,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Result<()>> {
    std::thread::spawn(move || -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            for socket in sockets {
                socket.set_nonblocking(true)?;
                let socket = tokio::net::UdpSocket::from_std(socket)?;
                let received = received.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    while socket.recv(&mut buf).await.is_ok() {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_listener_gets_the_loudest_others() {
        assert_eq!(forwarded_to(0, 10).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(forwarded_to(5, 10).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(forwarded_to(1, 2).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn a_stamp_reads_back() {
        let p = stamp(123_456_789, 42, 7);
        assert_eq!(p.len(), PAYLOAD);
        assert_eq!(read_stamp(&p), Some((123_456_789, 42, 7)));
        assert_eq!(read_stamp(&[1, 2, 3]), None);
    }
}
