//! The SFU over real WebRTC on loopback: three participants (webrtc-rs clients, as a
//! browser would be) join a voice channel, ask the relay for its offer and answer it; each
//! sends an Opus-like RTP stream with its own RFC 6464 level. Each receives the other two,
//! on the relay's slots (one SSRC per slot, continuous sequence numbers), never itself; a
//! server-muted speaker is forwarded to nobody. With more speakers than slots, each listener
//! gets the loudest others only, and a freed slot goes to the next loudest on the same
//! stream; a speaker over the upstream bitrate cap is cut to it.

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::client::{Backend, TestRelay, TestUser, relaxed};
use concord_proto::Id;
use rtc::interceptor::{Interceptor, Packet as InterceptorPacket, Slot, StreamInfo, TaggedPacket};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use serde_json::json;
use tokio::sync::watch;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
};

/// Per SSRC: packets received, the last sequence number (for continuity), sequence gaps, and
/// the RFC 6464 level the last packet carried (its only header extension).
type Received = Arc<Mutex<HashMap<u32, (u64, u16, u64, Option<u8>)>>>;

struct Handler {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    received: Received,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }
    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        let _ = self.state.send(s);
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(p) = event {
                    let mut r = received.lock().unwrap();
                    let e =
                        r.entry(p.header.ssrc)
                            .or_insert((0, p.header.sequence_number, 0, None));
                    // Count sequence gaps bigger than one (a speaker switch must not make one).
                    if e.0 > 0 && p.header.sequence_number.wrapping_sub(e.1) > 1 {
                        e.2 += 1;
                    }
                    e.0 += 1;
                    e.1 = p.header.sequence_number;
                    e.3 = p
                        .header
                        .extensions
                        .first()
                        .and_then(|x| x.payload.first())
                        .map(|b| b & 0x7f);
                }
            }
        });
    }
}

/// The reception reports a participant got on its own stream, in order.
type Reports = Arc<Mutex<Vec<ReceptionReport>>>;
/// The latest sender report the relay sent on each of its slots (by SSRC).
type Senders = Arc<Mutex<HashMap<u32, SenderReport>>>;

/// An interceptor at the end of the participant's chain that notes the reception reports the
/// relay sends about `ssrc` and the relay's sender reports (rtc 0.21 does not put received
/// reports in `get_stats`).
struct ReportRecorder {
    ssrc: u32,
    reports: Reports,
    senders: Senders,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for ReportRecorder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = std::time::Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let InterceptorPacket::Rtcp(packets) = &msg.message.packet {
            for packet in packets {
                let blocks = if let Some(rr) = packet.as_any().downcast_ref::<ReceiverReport>() {
                    &rr.reports
                } else if let Some(sr) = packet.as_any().downcast_ref::<SenderReport>() {
                    self.senders.lock().unwrap().insert(sr.ssrc, sr.clone());
                    &sr.reports
                } else {
                    continue;
                };
                let mut reports = self.reports.lock().unwrap();
                reports.extend(blocks.iter().filter(|r| r.ssrc == self.ssrc).cloned());
            }
        }
        self.reads.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }
}

impl Interceptor for ReportRecorder {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

struct Client {
    pc: Arc<dyn PeerConnection>,
    received: Received,
    reports: Reports,
    senders: Senders,
    sender: tokio::task::JoinHandle<()>,
}

impl Client {
    fn total(&self) -> u64 {
        self.received.lock().unwrap().values().map(|e| e.0).sum()
    }
    fn streams(&self) -> HashMap<u32, (u64, u16, u64, Option<u8>)> {
        self.received.lock().unwrap().clone()
    }
    /// Stops sending and closes the connection.
    async fn close(self) {
        self.sender.abort();
        let _ = self.pc.close().await;
    }
}

/// Joins the voice channel through the SFU and sends 50 packets/s at `level`.
async fn connect(user: &TestUser, channel: Id, level: u8) -> Client {
    let path = |what: &str| format!("/api/v1/voice/channels/{channel}/{what}");
    let joined = user
        .post(&path("join"), json!({ "client": "browser" }))
        .await
        .ok(200);
    assert_eq!(
        joined["mode"], "sfu",
        "a browser moves the channel to the SFU"
    );
    let offer = user.post(&path("sfu"), json!({})).await.ok(200);
    let offer = offer["sdp"].as_str().unwrap().to_owned();
    assert!(offer.contains(concord_media::AUDIO_LEVEL_URI), "{offer}");

    let ssrc = 1_000 + u32::from(level);
    let reports = Reports::default();
    let senders = Senders::default();
    let (engine, registry) = concord_media::media_engine().unwrap();
    let registry = registry.with(
        Slot::from(14_000),
        ReportRecorder {
            ssrc,
            reports: reports.clone(),
            senders: senders.clone(),
            reads: VecDeque::new(),
            writes: VecDeque::new(),
        },
    );
    let (gathered_tx, mut gathered) = watch::channel(false);
    let (state_tx, mut state) = watch::channel(RTCPeerConnectionState::New);
    let received: Received = Arc::default();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::default().build())
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler {
            gathered: gathered_tx,
            state: state_tx,
            received: received.clone(),
        }))
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await
        .unwrap();
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    pc.set_remote_description(RTCSessionDescription::offer(offer).unwrap())
        .await
        .unwrap();
    let track = Arc::new(concord_media::opus_track(
        "mic",
        &format!("mic-{ssrc}"),
        ssrc,
    ));
    let sender = pc
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let answer = pc.create_answer(None).await.unwrap();
    pc.set_local_description(answer).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), gathered.wait_for(|d| *d)).await;
    let answer = pc.local_description().await.unwrap().sdp;
    user.post(&path("sfu/answer"), json!({ "sdp": answer }))
        .await
        .ok(204);
    tokio::time::timeout(
        Duration::from_secs(20),
        state.wait_for(|s| *s == RTCPeerConnectionState::Connected),
    )
    .await
    .expect("connected to the SFU")
    .unwrap();
    let pt = concord_media::Negotiated::of(&sender)
        .await
        .and_then(|n| n.payload_type)
        .expect("opus negotiated");
    let sending = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for n in 0u32.. {
            tick.tick().await;
            let packet = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    payload_type: pt,
                    sequence_number: n as u16,
                    timestamp: n.wrapping_mul(960),
                    ssrc,
                    ..Default::default()
                },
                // An Opus frame's worth of bytes (the SFU does not decode).
                payload: Bytes::from(vec![0xf8; 60]),
            };
            let _ = track
                .write_rtp_with_extensions(packet, &[concord_media::audio_level(level)])
                .await;
        }
    });
    Client {
        pc,
        received,
        reports,
        senders,
        sender: sending,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_participants_hear_each_other_through_the_sfu_and_server_mute_stops_one() {
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.voice.sfu_forwarded_speakers = 3;
    })
    .await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let cat = relay.register("cat").await;
    let (guild, _) = ana.create_guild("sfu").await;
    let code = ana.invite(guild).await;
    bob.join(&code).await;
    cat.join(&code).await;
    let channel = ana.voice_channel(guild, "stage").await;

    let a = connect(&ana, channel, 10).await;
    let b = connect(&bob, channel, 20).await;
    let c = connect(&cat, channel, 30).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, client) in [("ana", &a), ("bob", &b), ("cat", &c)] {
        let streams = client.streams();
        eprintln!("{name} receives {streams:?}");
        let busy: Vec<_> = streams.values().filter(|e| e.0 >= 50).collect();
        assert_eq!(busy.len(), 2, "{name} hears the two others: {streams:?}");
        // Each forwarded packet carries its speaker's level (one of the others' 10/20/30).
        let own = match name {
            "ana" => 10,
            "bob" => 20,
            _ => 30,
        };
        for e in &busy {
            assert!(
                matches!(e.3, Some(l) if [10, 20, 30].contains(&l) && l != own),
                "{name}: forwarded packets carry a speaker's level: {streams:?}"
            );
        }
        assert!(
            !streams.contains_key(&(1_000 + u32::from(own))),
            "{name} never gets its own stream back"
        );
        assert!(
            streams.values().all(|e| e.2 == 0),
            "no sequence gaps: {streams:?}"
        );
    }

    // A moderator server-mutes cat: nobody receives cat any more.
    let cat_id = cat.id;
    ana.patch(
        &format!("/api/v1/guilds/{guild}/voice-states/{cat_id}"),
        json!({ "server_mute": true }),
    )
    .await
    .ok(200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = a.total();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per_second = (a.total() - before) as f64 / 2.0;
    eprintln!("ana receives {per_second} packets/s with cat muted");
    assert!(
        (35.0..70.0).contains(&per_second),
        "one stream (bob's) at 50 packets/s, not two: {per_second}"
    );

    // RTCP statistics per participant (sampled every 5 s): loopback loses nothing; the round
    // trip comes from RTCP.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stats = ana
        .get(&format!("/api/v1/voice/channels/{channel}/sfu/stats"))
        .await
        .ok(200);
    eprintln!("room stats: {stats}");
    let stats = stats.as_array().expect("a list").clone();
    assert_eq!(stats.len(), 3, "{stats:?}");
    for s in &stats {
        assert!(s["upstream_loss"].as_f64().unwrap() < 0.05, "{s}");
        let jitter = s["upstream_jitter_ms"].as_f64().unwrap();
        assert!((0.0..100.0).contains(&jitter), "{s}");
        let rtt = s["rtt_ms"].as_f64().expect("a round-trip time");
        assert!((0.0..1_000.0).contains(&rtt), "{s}");
        // From RTCP: their receiver reports on the relay's sender reports.
        assert_eq!(s["rtt_from"], "rtcp", "{s}");
    }
    // The room-level summaries (one observation per room every 5 s) are exported too;
    // the recorder is process-wide, so only this room's (the only one with RTT) moved them.
    relay.server().app().voice.sfu.record_room_quality();
    let text = metrics_text(&relay).await;
    for name in [
        "concord_sfu_room_loss_ratio_count",
        "concord_sfu_room_jitter_seconds_count",
        "concord_sfu_room_rtt_seconds_count",
    ] {
        let count = metric_value(&text, name, &[]);
        assert!(count >= 1.0, "{name} in\n{text}");
    }
    // Every listener's forwarded audio took the short path (SRTP past the connection's
    // pipeline) once its first packet matched, and so did every speaker's upstream: the
    // streams above arrived intact through it.
    let metric = |name: &str, labels: &[&str]| metric_value(&text, name, labels);
    for direction in ["direction=\"down\"", "direction=\"up\""] {
        let srtp = "concord_sfu_direct_srtp_total";
        assert_eq!(
            metric(srtp, &[direction, "result=\"matched\""]),
            3.0,
            "{direction}: {text}"
        );
        assert_eq!(metric(srtp, &[direction, "result=\"mismatch\""]), 0.0);
    }
    let forwarded = metric("concord_sfu_forwarded_packets_total", &[]);
    let down = metric("concord_sfu_direct_packets_total", &["direction=\"down\""]);
    assert!(
        down > 0.9 * forwarded && forwarded > 500.0,
        "{down} of {forwarded} forwarded packets took the short path"
    );
    // Three speakers at 50 packets/s, all connected for over 9 s: all but their first
    // packets were opened past the connection.
    let up = metric("concord_sfu_direct_packets_total", &["direction=\"up\""]);
    assert!(up > 1_200.0, "{up} upstream packets took the short path");
    // So the relay reports on each upstream itself (RTCP receiver reports, one a second), and
    // the reports are current: the highest sequence number they show is that of the packets
    // the participant has sent (one per 20 ms from 0, for over 9 s), not that of the
    // connection's first packets; nothing is lost on loopback; and once the participant's
    // sender reports arrived, they carry its LSR (from which it gets its RTT).
    for (name, client) in [("ana", &a), ("bob", &b), ("cat", &c)] {
        let reports = client.reports.lock().unwrap().clone();
        let last = reports
            .last()
            .unwrap_or_else(|| panic!("{name}: no receiver report from the relay"));
        eprintln!(
            "{name}: {} reports from the relay, the last {last:?}",
            reports.len()
        );
        assert!(reports.len() >= 5, "{name}: {reports:?}");
        assert!(
            last.last_sequence_number > 400,
            "{name}: the relay's report shows sequence {}",
            last.last_sequence_number
        );
        assert_eq!((last.total_lost, last.fraction_lost), (0, 0), "{name}");
        assert!(last.last_sender_report != 0, "{name}: no LSR in {last:?}");
        assert!(last.delay < 65_536 * 10, "{name}: {last:?}");
        // The relay's sender reports on the slots it forwards on count what it sent there,
        // short path included (at most a second behind what arrived): 60-byte payloads.
        let senders = client.senders.lock().unwrap().clone();
        let mut checked = 0;
        for (ssrc, (received, ..)) in client.streams() {
            if received < 400 {
                continue;
            }
            checked += 1;
            let sr = senders
                .get(&ssrc)
                .unwrap_or_else(|| panic!("{name}: no sender report on slot {ssrc}: {senders:?}"));
            let sent = u64::from(sr.packet_count);
            assert!(
                sent + 120 >= received && sent <= received + 10,
                "{name}: slot {ssrc} received {received}, its sender report says {sr:?}"
            );
            assert_eq!(sr.octet_count, sr.packet_count * 60, "{name}: {sr:?}");
            assert!(
                sr.ntp_time >> 32 > 3_900_000_000,
                "{name}: an NTP time: {sr:?}"
            );
        }
        assert!(checked >= 1, "{name}: no busy slot: {:?}", client.streams());
    }
    // Leaving frees the room.
    for (user, client) in [(&ana, a), (&bob, b), (&cat, c)] {
        client.close().await;
        user.post(
            &format!("/api/v1/voice/channels/{channel}/leave"),
            json!({}),
        )
        .await
        .ok(204);
    }
    assert_eq!(relay.server().app().voice.sfu.room_count(), 0);
}

/// The levels each client's slots carry now (each slot's last packet names its speaker).
fn slot_levels(client: &Client) -> Vec<u8> {
    let mut levels: Vec<u8> = client.streams().values().filter_map(|e| e.3).collect();
    levels.sort_unstable();
    levels
}

/// The relay's Prometheus text.
async fn metrics_text(relay: &TestRelay) -> String {
    reqwest::get(format!("{}/metrics", relay.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A metric's value in the Prometheus text (0 when absent).
fn metric_value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
                && labels.iter().all(|x| l.contains(x))
        })
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_loudest_others_up_to_the_bound_and_a_freed_slot_goes_to_the_next() {
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.voice.sfu_forwarded_speakers = 2;
    })
    .await;
    let names = ["ana", "bob", "cat", "dan"];
    let mut users = Vec::new();
    for name in names {
        users.push(relay.register(name).await);
    }
    let (guild, _) = users[0].create_guild("sfu").await;
    let code = users[0].invite(guild).await;
    for u in &users[1..] {
        u.join(&code).await;
    }
    let channel = users[0].voice_channel(guild, "stage").await;
    // Four speakers, ana loudest (-10 dBov) to dan quietest (-40), two slots each.
    let levels = [10u8, 20, 30, 40];
    let mut clients = Vec::new();
    for (u, level) in users.iter().zip(levels) {
        clients.push(connect(u, channel, level).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let expected = |heard: &[u8; 4]| -> Vec<Vec<u8>> {
        (0..4)
            .map(|me| {
                let mut others: Vec<u8> = (0..4)
                    .filter(|s| *s != me && heard[*s] != 0)
                    .map(|s| heard[s])
                    .collect();
                others.sort_unstable();
                others.truncate(2);
                others
            })
            .collect()
    };
    let all = expected(&levels);
    for ((name, client), want) in names.iter().zip(&clients).zip(&all) {
        let streams = client.streams();
        eprintln!("{name} receives {streams:?}");
        assert_eq!(streams.len(), 2, "{name}: two slots, no more: {streams:?}");
        assert!(
            streams.values().all(|e| e.0 >= 50),
            "{name}: both slots busy: {streams:?}"
        );
        assert_eq!(
            &slot_levels(client),
            want,
            "{name} hears the two loudest others"
        );
    }
    // Nobody is sent dan (the quietest): three listeners × two slots at 50 packets/s each.
    let before: Vec<u64> = clients.iter().map(Client::total).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rate: Vec<f64> = clients
        .iter()
        .zip(&before)
        .map(|(c, b)| (c.total() - b) as f64 / 2.0)
        .collect();
    assert!(
        rate.iter().all(|r| (80.0..130.0).contains(r)),
        "two streams of 50 packets/s each: {rate:?}"
    );

    // Server-muting ana frees her slot at every listener: dan (the next loudest) takes it,
    // on the same slot's continuous stream.
    let ana = users[0].id;
    users[0]
        .patch(
            &format!("/api/v1/guilds/{guild}/voice-states/{ana}"),
            json!({ "server_mute": true }),
        )
        .await
        .ok(200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = expected(&[0, 20, 30, 40]);
    for ((name, client), want) in names.iter().zip(&clients).zip(&now) {
        let streams = client.streams();
        eprintln!("{name} receives {streams:?} with ana muted");
        assert_eq!(streams.len(), 2, "{name}: still two slots: {streams:?}");
        // Ana herself still hears bob and cat; the others now hear dan in her place.
        assert_eq!(&slot_levels(client), want, "{name}: {streams:?}");
        assert!(
            streams.values().all(|e| e.2 == 0),
            "{name}: no sequence gap across the switch: {streams:?}"
        );
    }

    // The packet metrics: participants, forwarded packets and bytes, time per packet.
    let text = metrics_text(&relay).await;
    assert_eq!(metric_value(&text, "concord_sfu_rooms", &[]), 1.0, "{text}");
    assert_eq!(
        metric_value(&text, "concord_sfu_participants", &[]),
        4.0,
        "{text}"
    );
    let packets = metric_value(&text, "concord_sfu_forwarded_packets_total", &[]);
    let bytes = metric_value(&text, "concord_sfu_forwarded_bytes_total", &[]);
    // Each forwarded packet: a 12-byte header, one CSRC and the 60-byte payload.
    assert!(packets > 1_000.0, "{packets} packets forwarded");
    assert_eq!(bytes, packets * 76.0, "{bytes} bytes for {packets} packets");
    let timed = metric_value(&text, "concord_sfu_forward_seconds_count", &[]);
    let seconds = metric_value(&text, "concord_sfu_forward_seconds_sum", &[]);
    assert!(
        timed > 500.0 && seconds > 0.0 && seconds / timed < 0.01,
        "time per forwarded packet: {timed} observations, {seconds} s"
    );
    for client in clients {
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_speaker_over_the_upstream_cap_is_cut_to_it() {
    // 16 kbit/s (the smallest allowed) is 2,000 bytes/s; the clients send 72 bytes of
    // header and payload 50 times a second (3,600 bytes/s).
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.voice.sfu_max_upstream_kbps = 16;
    })
    .await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let (guild, _) = ana.create_guild("sfu").await;
    bob.join(&ana.invite(guild).await).await;
    let channel = ana.voice_channel(guild, "stage").await;
    let a = connect(&ana, channel, 10).await;
    let b = connect(&bob, channel, 20).await;
    // Past the bucket's one-second burst.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = a.total();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let per_second = (a.total() - before) as f64 / 4.0;
    eprintln!("ana receives bob at {per_second} packets/s under a 16 kbit/s cap");
    // 2,000 / 72 ≈ 27.8 packets/s pass.
    assert!(
        (22.0..34.0).contains(&per_second),
        "bob cut to the cap: {per_second} packets/s"
    );
    let text = metrics_text(&relay).await;
    let dropped = metric_value(
        &text,
        "concord_sfu_dropped_packets_total",
        &["reason=\"upstream_bitrate\""],
    );
    assert!(dropped > 100.0, "{dropped} packets dropped at the cap");
    for client in [a, b] {
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_sfu_refuses_new_rooms_clearly_until_one_empties() {
    let relay = TestRelay::start_with(Backend::Sqlite, |c| {
        relaxed(c);
        c.voice.sfu_max_rooms = 1;
    })
    .await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let (guild, _) = ana.create_guild("full").await;
    let code = ana.invite(guild).await;
    bob.join(&code).await;
    let channels = [
        ana.voice_channel(guild, "one").await,
        ana.voice_channel(guild, "two").await,
    ];
    let join = |channel: Id| format!("/api/v1/voice/channels/{channel}/join");
    let browser = json!({ "client": "browser" });
    ana.post(&join(channels[0]), browser.clone()).await.ok(200);
    let sfu = |channel: Id| format!("/api/v1/voice/channels/{channel}/sfu");
    ana.post(&sfu(channels[0]), json!({})).await.ok(200);
    bob.post(&join(channels[1]), browser).await.ok(200);
    let full = bob.post(&sfu(channels[1]), json!({})).await;
    assert_eq!(full.status, 409, "{}", full.body);
    assert_eq!(full.body["code"], "sfu_full");
    assert_eq!(relay.server().app().voice.sfu.room_count(), 1);
    // The first room empties: the second channel gets its room.
    ana.post(
        &format!("/api/v1/voice/channels/{}/leave", channels[0]),
        json!({}),
    )
    .await
    .ok(204);
    bob.post(&sfu(channels[1]), json!({})).await.ok(200);
}

/// The video side's rules at the API: sharing needs the right to speak and ends with a server
/// mute; renewals keep it; watching needs an SFU session with video, someone else, and
/// someone in the channel; an offer asked for with video carries one video m-line (both ways)
/// after the audio ones (audio-only clients see the same offer as before).
#[tokio::test(flavor = "multi_thread")]
async fn screen_share_state_and_watch_requests_are_checked() {
    let relay = TestRelay::start_with(Backend::Sqlite, relaxed).await;
    let ana = relay.register("ana").await;
    let bob = relay.register("bob").await;
    let cy = relay.register("cy").await;
    let (guild, _) = ana.create_guild("video").await;
    let code = ana.invite(guild).await;
    bob.join(&code).await;
    cy.join(&code).await;
    let channel = ana.voice_channel(guild, "stage").await;
    let path = |tail: &str| format!("/api/v1/voice/channels/{channel}{tail}");
    let browser = json!({ "client": "browser" });
    for u in [&ana, &bob] {
        u.post(&path("/join"), browser.clone()).await.ok(200);
    }

    // Offers: audio only by default, video m-lines last when asked for.
    let audio_only = ana.post(&path("/sfu"), json!({})).await.ok(200);
    let sdp = audio_only["sdp"].as_str().unwrap();
    assert!(!sdp.contains("m=video"), "{sdp}");
    // Watching needs a session with video.
    let no_video = ana
        .post(
            &path("/sfu/watch"),
            json!({ "user_id": bob.id.to_string() }),
        )
        .await;
    assert_eq!(no_video.status, 404, "{}", no_video.body);
    let with_video = ana
        .post(&path("/sfu"), json!({ "video": true }))
        .await
        .ok(200);
    let sdp = with_video["sdp"].as_str().unwrap();
    let kinds: Vec<&str> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("m="))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(kinds.last().copied(), Some("video"), "{sdp}");
    assert_eq!(kinds.iter().filter(|k| **k == "video").count(), 1, "{sdp}");
    let video_section = &sdp[sdp.find("m=video").unwrap()..];
    assert!(video_section.contains("a=sendrecv"), "{sdp}");
    assert!(kinds[0] == "audio" && sdp.contains("VP8/90000"), "{sdp}");
    assert!(!sdp.contains("H264") && !sdp.contains("rtx"), "{sdp}");
    let bad = ana.post(&path("/sfu"), json!({ "video": "yes" })).await;
    assert_eq!(bad.status, 400, "{}", bad.body);

    // Watch: someone else in the channel, or nobody.
    let watch = |id: Option<Id>| json!({ "user_id": id.map(|i| i.to_string()) });
    ana.post(&path("/sfu/watch"), watch(Some(bob.id)))
        .await
        .ok(204);
    assert_eq!(
        relay.server().app().voice.sfu.watching(channel, ana.id),
        Some(bob.id)
    );
    let own = ana.post(&path("/sfu/watch"), watch(Some(ana.id))).await;
    assert_eq!(
        (own.status, own.body["code"].as_str()),
        (400, Some("bad_user"))
    );
    let absent = ana.post(&path("/sfu/watch"), watch(Some(cy.id))).await;
    assert_eq!(
        (absent.status, absent.body["code"].as_str()),
        (400, Some("bad_user"))
    );
    let outsider = cy.post(&path("/sfu/watch"), watch(Some(ana.id))).await;
    assert_eq!(outsider.status, 404, "{}", outsider.body);
    // A new offer (a renegotiation) keeps whom one watches.
    ana.post(&path("/sfu"), json!({ "video": true }))
        .await
        .ok(200);
    assert_eq!(
        relay.server().app().voice.sfu.watching(channel, ana.id),
        Some(bob.id)
    );
    ana.post(&path("/sfu/watch"), watch(None)).await.ok(204);
    assert_eq!(
        relay.server().app().voice.sfu.watching(channel, ana.id),
        None
    );

    // Sharing: announced, kept across renewals, ended by a server mute, refused while muted.
    let state = bob
        .patch(&path("/state"), json!({ "self_video": true }))
        .await
        .ok(200);
    assert_eq!(state["self_video"], true);
    let renewed = bob.post(&path("/join"), browser.clone()).await.ok(200);
    assert_eq!(renewed["state"]["self_video"], true);
    ana.patch(
        &format!("/api/v1/guilds/{guild}/voice-states/{}", bob.id),
        json!({ "server_mute": true }),
    )
    .await
    .ok(200);
    let muted = bob.get(&path("")).await.ok(200);
    let bob_state = muted
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["user_id"] == bob.id.to_string())
        .unwrap()
        .clone();
    assert_eq!(bob_state["self_video"], false);
    let refused = bob
        .patch(&path("/state"), json!({ "self_video": true }))
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let nothing = bob.patch(&path("/state"), json!({})).await;
    assert_eq!(nothing.status, 400, "{}", nothing.body);
}
