//! One SFU room's task: it owns the room's UDP sockets (one per local address) and every
//! participant's sans-IO peer connection (`peer.rs`). A datagram goes to the peer that sent
//! it (known address, or the ICE username of a first STUN check); an upstream packet goes
//! through the room's forwarder and straight into the chosen listeners' connections and out
//! of the socket, in the same call: no channel, lock or timer per forwarded packet.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use concord_proto::Id;
use concord_svc::udp_batch::BatchReader;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::shared::marshal::Marshal;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::StatsSelector;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::batch;
use super::demux::{Demux, Route};
use super::direct::Direct;
use super::forwarder::{Forward, Forwarder};
use super::peer::{Peer, PeerSpec};
use super::session::{MemberStats, SfuLimits, sample_stats};
use super::upstream::Taken;
use super::video::VideoRouter;

/// How often each participant's RTCP statistics are read.
const STATS_EVERY: Duration = Duration::from_secs(5);
/// How often the relay sends each participant its reports (what webrtc's report interceptors
/// do): one compound RTCP packet with a sender report per slot that has sent and the
/// reception blocks on their upstream.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Datagrams read per system call, and calls before the task looks at its commands and
/// timers again.
const READ_BATCH: usize = 16;
const READS_PER_TURN: usize = 4;
/// Largest datagram read (WebRTC stays under the path MTU).
const MAX_DATAGRAM: usize = 2048;

/// What the room's task and the API share: who forwards to whom, who watches whom, and each
/// member's latest statistics.
pub(super) struct Shared {
    pub epoch: Instant,
    pub limits: SfuLimits,
    pub forwarder: Mutex<Forwarder>,
    pub video: Mutex<VideoRouter>,
    pub members: Mutex<HashMap<Id, MemberInfo>>,
}

impl Shared {
    pub fn new(limits: SfuLimits) -> Shared {
        Shared {
            epoch: Instant::now(),
            limits,
            forwarder: Mutex::new(Forwarder::new(limits.slots)),
            video: Mutex::new(VideoRouter::default()),
            members: Mutex::new(HashMap::new()),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.ms_at(Instant::now())
    }

    /// `now` in the room's milliseconds (the forwarder's clock).
    pub fn ms_at(&self, now: Instant) -> i64 {
        let since = now.saturating_duration_since(self.epoch);
        // Not `as_millis`: its 128-bit division showed in the per-packet profile.
        (since.as_secs() * 1000 + u64::from(since.subsec_millis())) as i64
    }
}

pub(super) struct MemberInfo {
    pub stats: MemberStats,
    pub video: bool,
}

/// What the relay offers a new participant.
pub(super) struct Offered {
    pub sdp: String,
    pub slot_ssrcs: Vec<u32>,
    pub video_ssrc: Option<u32>,
}

pub(super) enum Command {
    Offer {
        user: Id,
        video: bool,
        reply: oneshot::Sender<Result<Offered, String>>,
    },
    Answer {
        user: Id,
        sdp: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Leave {
        user: Id,
    },
    Keyframe {
        publisher: Id,
        reason: &'static str,
    },
}

/// The addresses a room's sockets bind: every usable local IPv4 address (not loopback or
/// link-local, as webrtc-rs gathers host candidates), or loopback on a machine with none.
pub(super) fn local_ips() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    if let Ok(interfaces) = rtc::shared::ifaces::ifaces() {
        for interface in interfaces {
            let Some(addr) = interface.addr else { continue };
            let ip = addr.ip();
            let link_local = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_link_local());
            if ip.is_ipv4()
                && !ip.is_loopback()
                && !ip.is_unspecified()
                && !link_local
                && !out.contains(&ip)
            {
                out.push(ip);
            }
        }
    }
    if out.is_empty() {
        out.push(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    }
    out
}

/// Binds the room's sockets (one per local address, ephemeral ports).
pub(super) fn bind_sockets() -> std::io::Result<Vec<UdpSocket>> {
    local_ips()
        .into_iter()
        .map(|ip| {
            let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
            socket.set_nonblocking(true)?;
            // Room for a burst of a whole room's fan-out between two reads.
            let s2 = socket2::SockRef::from(&socket);
            let _ = s2.set_recv_buffer_size(1 << 20);
            let _ = s2.set_send_buffer_size(1 << 20);
            UdpSocket::from_std(socket)
        })
        .collect()
}

/// A packet a peer's connection handed up, handled once the peer's borrow ends.
enum Inbound {
    Audio(rtp::Packet),
    Video(rtp::Packet),
    KeyframeRequest,
}

/// The per-packet metrics, looked up once per room rather than once per packet.
struct PacketMetrics {
    forwarded: metrics::Counter,
    forwarded_bytes: metrics::Counter,
    direct_down: metrics::Counter,
    direct_up: metrics::Counter,
    forward_seconds: metrics::Histogram,
}

impl PacketMetrics {
    fn new() -> PacketMetrics {
        PacketMetrics {
            forwarded: metrics::counter!("concord_sfu_forwarded_packets_total"),
            forwarded_bytes: metrics::counter!("concord_sfu_forwarded_bytes_total"),
            direct_down: metrics::counter!("concord_sfu_direct_packets_total", "direction" => "down"),
            direct_up: metrics::counter!("concord_sfu_direct_packets_total", "direction" => "up"),
            forward_seconds: metrics::histogram!("concord_sfu_forward_seconds"),
        }
    }
}

/// The per-packet counters of one turn of reads, added to the metrics once per turn.
#[derive(Default)]
struct Counts {
    forwarded: u64,
    forwarded_bytes: u64,
    direct_down: u64,
    direct_up: u64,
}

impl Counts {
    fn flush(&mut self, metrics: &PacketMetrics) {
        let counts = std::mem::take(self);
        for (counter, n) in [
            (&metrics.forwarded, counts.forwarded),
            (&metrics.forwarded_bytes, counts.forwarded_bytes),
            (&metrics.direct_down, counts.direct_down),
            (&metrics.direct_up, counts.direct_up),
        ] {
            if n > 0 {
                counter.increment(n);
            }
        }
    }
}

struct Task {
    shared: Arc<Shared>,
    sockets: Vec<UdpSocket>,
    local: Vec<SocketAddr>,
    /// Boxed: the map stays dense (the forwarding loop looks a listener up per packet).
    peers: HashMap<Id, Box<Peer>>,
    demux: Demux,
    inbound: Vec<Inbound>,
    /// Per socket: the short path's datagrams of the packet being forwarded.
    fanout: Vec<batch::Datagrams>,
    /// Where the packet being forwarded goes (kept: one buffer for every packet).
    forwards: Vec<Forward>,
    metrics: PacketMetrics,
    counts: Counts,
}

/// Runs the room until its command channel closes (the room left the SFU's map).
pub(super) async fn run(
    shared: Arc<Shared>,
    sockets: Vec<UdpSocket>,
    mut commands: mpsc::Receiver<Command>,
) {
    let local = sockets.iter().filter_map(|s| s.local_addr().ok()).collect();
    let mut task = Task {
        shared,
        sockets,
        local,
        peers: HashMap::new(),
        demux: Demux::default(),
        inbound: Vec::new(),
        fanout: Vec::new(),
        forwards: Vec::new(),
        metrics: PacketMetrics::new(),
        counts: Counts::default(),
    };
    task.fanout = task
        .sockets
        .iter()
        .map(|_| batch::Datagrams::default())
        .collect();
    let mut reader = BatchReader::new(READ_BATCH, MAX_DATAGRAM);
    let mut stats = tokio::time::interval(STATS_EVERY);
    stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reports = tokio::time::interval(REPORT_EVERY);
    reports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
    let timer = tokio::time::sleep_until(far());
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    loop {
        let next = task.peers.values().filter_map(|p| p.deadline).min();
        if next != armed {
            armed = next;
            timer
                .as_mut()
                .reset(next.map_or_else(far, tokio::time::Instant::from_std));
        }
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(command) => task.command(command),
                None => break,
            },
            _ = &mut timer => {
                armed = None;
                task.timeouts(Instant::now());
            }
            _ = stats.tick() => task.sample_stats(),
            _ = reports.tick() => task.send_reports(),
            index = readable(&task.sockets) => {
                for _ in 0..READS_PER_TURN {
                    let more = batch::read_all(&task.sockets[index], &mut reader);
                    // One clock reading per batch: its datagrams arrived together.
                    let now = Instant::now();
                    for (from, data) in reader.datagrams() {
                        task.datagram(index, from, data, now);
                    }
                    if !more {
                        break;
                    }
                }
            }
        }
        task.counts.flush(&task.metrics);
    }
    for peer in task.peers.values_mut() {
        let _ = peer.pc.close();
    }
    let users: Vec<Id> = task.peers.keys().copied().collect();
    for user in users {
        task.flush(user);
    }
}

/// The index of a socket with datagrams to read.
async fn readable(sockets: &[UdpSocket]) -> usize {
    poll_fn(|cx| {
        for (i, socket) in sockets.iter().enumerate() {
            if socket.poll_recv_ready(cx).is_ready() {
                return Poll::Ready(i);
            }
        }
        Poll::Pending
    })
    .await
}

impl Task {
    fn command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Offer { user, video, reply } => {
                self.remove(user);
                let limits = self.shared.limits;
                let spec = PeerSpec {
                    user,
                    video,
                    local_addrs: &self.local,
                    slots: limits.slots,
                    max_upstream_kbps: limits.max_upstream_kbps,
                    max_video_kbps: limits.max_video_kbps,
                };
                let made = Peer::offer(spec, now).map(|(peer, sdp)| {
                    let offered = Offered {
                        sdp,
                        slot_ssrcs: peer.slot_ssrcs.clone(),
                        video_ssrc: peer.video_slot.as_ref().map(|v| v.ssrc),
                    };
                    self.demux.add(user, peer.ufrag.clone());
                    self.peers.insert(user, Box::new(peer));
                    self.drain(user, now);
                    offered
                });
                let _ = reply.send(made);
            }
            Command::Answer { user, sdp, reply } => {
                let result = match self.peers.get_mut(&user) {
                    None => Err("no SFU session: ask for an offer first".to_owned()),
                    Some(peer) => RTCSessionDescription::answer(sdp)
                        .and_then(|answer| peer.pc.set_remote_description(now, answer))
                        .map_err(|e| format!("answer: {e}")),
                };
                self.drain(user, now);
                let _ = reply.send(result);
            }
            Command::Leave { user } => self.remove(user),
            Command::Keyframe { publisher, reason } => {
                self.request_keyframe(publisher, reason, now);
            }
        }
    }

    /// Closes and forgets a peer (its last writes, the DTLS close, still go out).
    fn remove(&mut self, user: Id) {
        let Some(mut peer) = self.peers.remove(&user) else {
            return;
        };
        let _ = peer.pc.close();
        send_writes(&mut peer, &self.sockets, &self.local, None);
        self.demux.remove(user);
    }

    fn datagram(&mut self, index: usize, from: SocketAddr, data: &[u8], now: Instant) {
        let Some(Route { user, moves }) = self.demux.route(from, data) else {
            metrics::counter!("concord_sfu_dropped_packets_total", "reason" => "unknown_source")
                .increment(1);
            return;
        };
        let Some(peer) = self.peers.get_mut(&user) else {
            return;
        };
        match peer.upstream.take(&peer.tap, data, now) {
            Taken::Audio(packet) => {
                self.counts.direct_up += 1;
                let level_id = peer.negotiated.level_id;
                if peer.audio_allowed(&packet, now) {
                    self.audio(user, packet, level_id, now);
                }
                return;
            }
            Taken::Refused => {
                metrics::counter!("concord_sfu_dropped_packets_total", "reason" => "srtp")
                    .increment(1);
                return;
            }
            Taken::Connection => {}
        }
        let input = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local[index],
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        };
        match peer.pc.handle_read(input) {
            Ok(()) if moves => self.demux.learn(user, from),
            Ok(()) => {}
            Err(e) => tracing::debug!(%user, error = %e, "sfu: datagram refused"),
        }
        self.drain(user, now);
    }

    fn timeouts(&mut self, now: Instant) {
        let due: Vec<Id> = self
            .peers
            .values()
            .filter(|p| p.deadline.is_some_and(|d| d <= now))
            .map(|p| p.user)
            .collect();
        for user in due {
            if let Some(peer) = self.peers.get_mut(&user) {
                let _ = peer.pc.handle_timeout(now);
            }
            self.drain(user, now);
        }
    }

    /// Sends what a peer wrote.
    fn flush(&mut self, user: Id) {
        if let Some(peer) = self.peers.get_mut(&user) {
            send_writes(peer, &self.sockets, &self.local, None);
        }
    }

    /// Everything a peer has for us after an input: datagrams out, events, media up (handled
    /// after, as forwarding needs the other peers), and its next deadline.
    fn drain(&mut self, user: Id, now: Instant) {
        let Some(peer) = self.peers.get_mut(&user) else {
            return;
        };
        send_writes(peer, &self.sockets, &self.local, None);
        while let Some(event) = peer.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state)
                    if state == RTCPeerConnectionState::Connected && !peer.connected =>
                {
                    peer.connected = true;
                    peer.read_negotiated();
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    if let Some(receiver) = peer.pc.rtp_receiver(init.receiver_id) {
                        let kind = receiver.track().kind();
                        peer.tracks.insert(init.track_id, (kind, init.receiver_id));
                    }
                }
                _ => {}
            }
        }
        let mut inbound = std::mem::take(&mut self.inbound);
        while let Some(TaggedRTCMessage { message, .. }) = peer.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(track, packet) => match peer.tracks.get(&track) {
                    Some((RtpCodecKind::Video, receiver)) => {
                        peer.upstream.on_delivered(true, &packet.header, now);
                        if peer
                            .video_in
                            .is_none_or(|(_, ssrc)| ssrc != packet.header.ssrc)
                        {
                            peer.video_in = Some((*receiver, packet.header.ssrc));
                        }
                        if peer.video_budget.allow(12 + packet.payload.len(), now) {
                            inbound.push(Inbound::Video(packet));
                        } else {
                            metrics::counter!("concord_sfu_dropped_packets_total", "reason" => "video_bitrate").increment(1);
                        }
                    }
                    Some(_) => {
                        peer.upstream.on_delivered(false, &packet.header, now);
                        if peer.audio_allowed(&packet, now) {
                            inbound.push(Inbound::Audio(packet));
                        }
                    }
                    None => {}
                },
                // Only keyframe requests reach us (media's `KeyframeRequests`); from a
                // participant they concern the one video we send them.
                RTCMessage::RtcpPacket(_, packets)
                    if packets
                        .iter()
                        .any(|p| concord_media::keyframe::is_keyframe_request(p.as_ref())) =>
                {
                    inbound.push(Inbound::KeyframeRequest);
                }
                _ => {}
            }
        }
        // Events and reads can queue writes (RTCP, DTLS).
        send_writes(peer, &self.sockets, &self.local, None);
        peer.deadline = peer.pc.poll_timeout();
        let level_id = peer.negotiated.level_id;
        for item in inbound.drain(..) {
            match item {
                Inbound::Audio(packet) => self.audio(user, packet, level_id, now),
                Inbound::Video(packet) => self.video(user, packet, now),
                Inbound::KeyframeRequest => {
                    let now_ms = self.shared.ms_at(now);
                    let target = self
                        .shared
                        .video
                        .lock()
                        .expect("video")
                        .viewer_wants_keyframe(user, now_ms);
                    if let Some(publisher) = target {
                        self.request_keyframe(publisher, "viewer", now);
                    }
                }
            }
        }
        self.inbound = inbound;
    }

    /// One packet from `from`'s microphone, to the listeners whose slots carry it.
    fn audio(&mut self, from: Id, packet: rtp::Packet, level_id: Option<u8>, now: Instant) {
        let level = concord_media::level_of(&packet, level_id);
        let now_ms = self.shared.ms_at(now);
        let mut forwards = std::mem::take(&mut self.forwards);
        self.shared.forwarder.lock().expect("forwarder").on_packet(
            from,
            packet.header.sequence_number,
            packet.header.timestamp,
            level,
            now_ms,
            &mut forwards,
        );
        if !forwards.is_empty() {
            self.forward_audio(&forwards, from, packet, level, now);
        }
        self.forwards = forwards;
    }

    /// Sends one packet of `from`'s on the slots `forwards` name.
    fn forward_audio(
        &mut self,
        forwards: &[Forward],
        from: Id,
        mut packet: rtp::Packet,
        level: u8,
        now: Instant,
    ) {
        let started = Instant::now();
        packet.header.extensions.clear();
        packet.header.extension = false;
        // Who is speaking on the slot (browsers: getContributingSources).
        packet.header.csrc = vec![super::session::audio_source(from)];
        let level_element = concord_media::audio_level_element(level);
        let (mut sent, mut bytes) = (0u64, 0u64);
        for f in forwards {
            let Some(peer) = self.peers.get_mut(&f.listener) else {
                continue;
            };
            let Some(pt) = peer.negotiated.payload_type else {
                continue;
            };
            // One packet rewritten per listener (every field a listener sees is set here): the
            // short path protects it where it is, the connection gets a copy.
            let out = &mut packet;
            out.header.ssrc = f.ssrc;
            out.header.sequence_number = f.seq;
            out.header.timestamp = f.timestamp;
            out.header.marker = f.marker;
            out.header.payload_type = pt;
            out.header.extensions.clear();
            out.header.extension = false;
            if let Some(id) = peer.negotiated.level_id {
                let _ = out.header.set_extension(id, level_element.clone());
            }
            let size = 12 + 4 + out.payload.len();
            let written = match &mut peer.direct {
                Direct::Ready(ready) => {
                    let index = socket_index(&self.local, ready.from);
                    self.fanout.get_mut(index).is_some_and(|batch| {
                        let protected = ready.protect(out, batch.push(ready.to));
                        if !protected {
                            batch.pop();
                        }
                        protected
                    })
                }
                _ => write_rtp(peer, out.clone(), now, &self.sockets, &self.local),
            };
            if written {
                sent += 1;
                // Header with one CSRC, and the payload (extensions and SRTP not counted).
                bytes += size as u64;
                peer.on_sent(
                    f.ssrc,
                    concord_media::OPUS_CLOCK_RATE,
                    f.timestamp,
                    packet.payload.len(),
                    now,
                );
            }
        }
        // The short path's datagrams: one sendmmsg per socket.
        let mut direct = 0u64;
        for (socket, batch) in self.sockets.iter().zip(&mut self.fanout) {
            let datagrams = batch.as_slice();
            if datagrams.is_empty() {
                continue;
            }
            let taken = batch::send_all(socket, datagrams);
            direct += taken as u64;
            if taken < datagrams.len() {
                metrics::counter!("concord_sfu_dropped_packets_total", "reason" => "send")
                    .increment((datagrams.len() - taken) as u64);
            }
            batch.clear();
        }
        self.counts.forwarded += sent;
        self.counts.direct_down += direct;
        self.counts.forwarded_bytes += bytes;
        self.metrics
            .forward_seconds
            .record(started.elapsed().as_secs_f64());
    }

    /// One packet of `from`'s screen or camera, to the viewers watching them once each
    /// viewer's stream has started on a keyframe.
    fn video(&mut self, from: Id, mut packet: rtp::Packet, now: Instant) {
        if self
            .shared
            .forwarder
            .lock()
            .expect("forwarder")
            .is_muted(from)
        {
            return;
        }
        let keyframe = super::video::vp8_keyframe_start(&packet.payload);
        let now_ms = self.shared.ms_at(now);
        let actions = self.shared.video.lock().expect("video").on_packet(
            from,
            packet.header.sequence_number,
            packet.header.timestamp,
            keyframe,
            now_ms,
        );
        if let Some(publisher) = actions.keyframe_request {
            self.request_keyframe(publisher, "waiting", now);
        }
        packet.header.extensions.clear();
        packet.header.extension = false;
        let (mut sent, mut bytes) = (0u64, 0u64);
        for f in actions.forwards {
            let Some(peer) = self.peers.get_mut(&f.viewer) else {
                continue;
            };
            let Some(pt) = peer.video_pt else {
                continue;
            };
            let mut out = packet.clone();
            out.header.ssrc = f.ssrc;
            out.header.sequence_number = f.seq;
            out.header.timestamp = f.timestamp;
            out.header.payload_type = pt;
            let size = 12 + out.payload.len();
            if write_rtp(peer, out, now, &self.sockets, &self.local) {
                sent += 1;
                bytes += size as u64;
                peer.on_sent(
                    f.ssrc,
                    concord_media::VP8_CLOCK_RATE,
                    f.timestamp,
                    size - 12,
                    now,
                );
            }
        }
        metrics::counter!("concord_sfu_forwarded_video_packets_total").increment(sent);
        metrics::counter!("concord_sfu_forwarded_video_bytes_total").increment(bytes);
    }

    /// Asks `publisher` for a keyframe (RTCP PLI on their video upstream). Not publishing
    /// yet: their first packets are held until a keyframe, which the `waiting` path asks for.
    fn request_keyframe(&mut self, publisher: Id, reason: &'static str, now: Instant) {
        let Some(peer) = self.peers.get_mut(&publisher) else {
            return;
        };
        let Some((receiver, ssrc)) = peer.video_in else {
            return;
        };
        let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: ssrc,
        };
        let written = peer
            .pc
            .rtp_receiver(receiver)
            .is_some_and(|mut r| r.write_rtcp(now, vec![Box::new(pli)]).is_ok());
        if written {
            metrics::counter!("concord_sfu_keyframe_requests_total", "reason" => reason)
                .increment(1);
        }
        self.drain(publisher, now);
    }

    /// Each connected participant's reports (`Peer::reports`): one compound RTCP packet,
    /// sent through the connection.
    fn send_reports(&mut self) {
        let now = Instant::now();
        let ntp = rtc::shared::time::SystemInstant::now(now).ntp(now);
        let users: Vec<Id> = self
            .peers
            .values()
            .filter(|p| p.connected)
            .map(|p| p.user)
            .collect();
        for user in users {
            let Some(peer) = self.peers.get_mut(&user) else {
                continue;
            };
            let packets = peer.reports(now, ntp);
            if packets.is_empty() {
                continue;
            }
            // Any of the connection's senders writes it: RTCP is not tied to a track.
            if let Some(&sender) = peer.slot_senders.first()
                && let Some(mut sender) = peer.pc.rtp_sender(sender)
            {
                let _ = sender.write_rtcp(now, packets);
            }
            self.drain(user, now);
        }
    }

    fn sample_stats(&mut self) {
        let now = Instant::now();
        for peer in self.peers.values_mut().filter(|p| p.connected) {
            let report = peer.pc.get_stats(now, StatsSelector::None);
            let sample = sample_stats(
                peer.user,
                &report,
                peer.upstream.audio_counts(),
                peer.upstream.rtcp_rtt(),
                &mut peer.last_counts,
            );
            metrics::histogram!("concord_sfu_loss_ratio", "direction" => "up")
                .record(sample.upstream_loss);
            metrics::histogram!("concord_sfu_loss_ratio", "direction" => "down")
                .record(sample.downstream_loss);
            metrics::histogram!("concord_sfu_jitter_seconds")
                .record(sample.upstream_jitter_ms / 1000.0);
            if let Some(rtt) = sample.rtt_ms {
                metrics::histogram!("concord_sfu_rtt_seconds").record(rtt / 1000.0);
            }
            if let Some(member) = self
                .shared
                .members
                .lock()
                .expect("members")
                .get_mut(&peer.user)
            {
                member.stats = sample;
            }
        }
    }
}

/// Writes one forwarded packet into a peer's connection (interceptors, SRTP) and sends what
/// comes out. The sender's checks (payload type, extension ids) were settled at negotiation.
/// The first such packet also tests the short path (`direct.rs`).
fn write_rtp(
    peer: &mut Peer,
    packet: rtp::Packet,
    now: Instant,
    sockets: &[UdpSocket],
    local: &[SocketAddr],
) -> bool {
    let test = matches!(peer.direct, Direct::Untested)
        .then(|| packet.marshal().ok())
        .flatten();
    let written = peer
        .pc
        .handle_write(TaggedRTCMessage {
            now,
            message: RTCMessage::RtpPacket(String::new(), packet),
        })
        .is_ok();
    send_writes(peer, sockets, local, test.as_deref());
    written
}

/// Sends everything a peer's connection has written so far; the short path follows it, or
/// with `test` (a forwarded packet, marshalled) is tested on it.
fn send_writes(peer: &mut Peer, sockets: &[UdpSocket], local: &[SocketAddr], test: Option<&[u8]>) {
    while let Some(out) = peer.pc.poll_write() {
        send(sockets, local, &out);
        match test {
            Some(plaintext) if matches!(peer.direct, Direct::Untested) => {
                peer.direct.test(&peer.tap, plaintext, &out);
            }
            _ => peer.direct.follow(&out),
        }
    }
}

/// Sends a datagram the connection wrote, from the socket bound to its local address (a full
/// send buffer drops it, as the network would: audio does not wait).
fn send(sockets: &[UdpSocket], local: &[SocketAddr], out: &TaggedBytesMut) {
    if let Some(socket) = sockets.get(socket_index(local, out.transport.local_addr))
        && socket
            .try_send_to(&out.message, out.transport.peer_addr)
            .is_err()
    {
        metrics::counter!("concord_sfu_dropped_packets_total", "reason" => "send").increment(1);
    }
}

/// The room's socket bound to `addr` (the first if none is: a connection only uses ours).
fn socket_index(local: &[SocketAddr], addr: SocketAddr) -> usize {
    local.iter().position(|a| *a == addr).unwrap_or(0)
}
