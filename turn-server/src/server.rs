//! `TurnServer::spawn(config)`: bind the UDP, TCP, TLS and HTTP listeners, start the tasks
//! that feed the sans-IO core, serve. `shutdown()` refuses new allocations, stops accepting
//! connections, lets existing allocations finish up to the grace period, then stops.
//!
//! Tasks: one reads the UDP listener; one accepts TCP and one TLS, each connection has a
//! reader and a bounded writer queue; each allocation has a relay socket and a task reading
//! it; a timer expires allocations and exports metrics; an HTTP server answers `/healthz` and
//! `/metrics`. All of them call into one `TurnCore` behind a mutex (never held across an
//! await, nor while sending) and carry out its outputs without blocking: a full UDP socket
//! buffer drops the datagram, a full client queue disconnects that client.
//!
//! UDP sockets are registered for readability only (sends never wait), so sending a datagram
//! does not wake the reactor. The listener is read with `recvmmsg`
//! (`concord_svc::udp_batch::BatchReader`, shared with the SFU's rooms), up to 32 datagrams
//! of up to 64 KiB a call, and each batch goes to the core under one lock.

use std::cell::RefCell;
use std::collections::VecDeque;

// foldhash: several times cheaper than SipHash per lookup (every relayed packet does a few),
// randomly seeded per process so client-chosen addresses cannot be pre-computed to collide.
use foldhash::{HashMap, HashMapExt};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::BytesMut;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Credentials;
use crate::config::{ConfigError, PortRange, TurnConfig};
use crate::core::wire::stream_frame_len;
use crate::core::{AllocId, CoreConfig, Family, FiveTuple, Output, Stats, Transport, TurnCore};
use crate::policy::PeerPolicy;
use crate::tls::{TlsError, tls_acceptor};
use concord_svc::udp_batch::BatchReader;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_secs(1);
/// Datagrams read per `recvmmsg` on the UDP listener, and room for the largest UDP payload.
const RECV_BATCH: usize = 32;
const MAX_DATAGRAM: usize = 65_536;
/// Ports tried when binding a relay socket before giving up (508).
const RELAY_BIND_ATTEMPTS: u32 = 256;

struct StreamHandle {
    tx: mpsc::Sender<Vec<u8>>,
    close: CancellationToken,
}

/// A UDP socket registered for readability only. Sends never wait (a full buffer drops the
/// datagram), and a socket also registered for writability would wake the reactor after
/// every datagram it sends — one event per relayed packet for nothing.
type Udp = AsyncFd<UdpSocket>;

/// Registers `socket` with the reactor for readability only.
fn register_readable(socket: UdpSocket) -> std::io::Result<Udp> {
    // Deprecated because an arbitrary `AsRawFd` could close or swap its descriptor while
    // registered. A `std::net::UdpSocket` owns its descriptor until it is dropped, which is
    // the contract `register_with_interest` asks for (and `unsafe` is forbidden here).
    #[allow(deprecated)]
    AsyncFd::with_interest(socket, Interest::READABLE)
}

struct RelayHandle {
    socket: Arc<Udp>,
    cancel: CancellationToken,
}

struct Shared {
    core: Mutex<TurnCore>,
    udp: Arc<Udp>,
    streams: Mutex<HashMap<FiveTuple, StreamHandle>>,
    relays: Mutex<HashMap<AllocId, RelayHandle>>,
    relay_bind_ip: IpAddr,
    relay_public_ip: IpAddr,
    relay_ports: PortRange,
    port_seed: AtomicU64,
    connections: AtomicUsize,
    max_connections: usize,
    stream_queue: usize,
    stream_idle: Duration,
    exported: Mutex<Stats>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the server down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

thread_local! {
    /// One receive buffer per worker thread, shared by every relay socket it reads.
    static RECV_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; 65_536]);
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, TurnCore> {
        lock(&self.core)
    }

    /// Runs `f` on the core, then carries out every output (binding relay sockets as asked).
    fn drive(self: &Arc<Self>, f: impl FnOnce(&mut TurnCore, Instant)) {
        let mut queue = VecDeque::new();
        {
            let mut core = self.core();
            f(&mut core, Instant::now());
            queue.extend(std::iter::from_fn(|| core.poll_output()));
        }
        // Held across consecutive sends to peers (a batch is mostly those), released before
        // anything that takes it again.
        let mut relays = None;
        while let Some(out) = queue.pop_front() {
            match out {
                Output::ToClient { tuple, data } => self.to_client(tuple, data),
                Output::ToPeer { alloc, peer, data } => {
                    let relays = relays.get_or_insert_with(|| lock(&self.relays));
                    if let Some(relay) = relays.get(&alloc)
                        && relay.socket.get_ref().send_to(&data, peer).is_err()
                    {
                        crate::metrics::driver_drop("send_failed");
                    }
                }
                Output::BindRelay {
                    alloc, even_port, ..
                } => {
                    relays = None;
                    let advertised = self.open_relay(alloc, even_port);
                    let mut core = self.core();
                    let accepted = core.relay_bound(Instant::now(), alloc, advertised);
                    queue.extend(std::iter::from_fn(|| core.poll_output()));
                    drop(core);
                    if !accepted {
                        self.close_relay(alloc);
                    }
                }
                Output::AllocationClosed { alloc, .. } => {
                    relays = None;
                    self.close_relay(alloc);
                }
            }
        }
    }

    fn to_client(&self, tuple: FiveTuple, data: Vec<u8>) {
        match tuple.transport {
            Transport::Udp => {
                if self.udp.get_ref().send_to(&data, tuple.client).is_err() {
                    crate::metrics::driver_drop("send_failed");
                }
            }
            Transport::Tcp | Transport::Tls => {
                let streams = lock(&self.streams);
                let Some(handle) = streams.get(&tuple) else {
                    return;
                };
                match handle.tx.try_send(data) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::debug!("client too slow: disconnecting");
                        crate::metrics::slow_client();
                        crate::metrics::driver_drop("client_queue_full");
                        handle.close.cancel();
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
    }

    fn next_port_offset(&self) -> u32 {
        // SplitMix64 over a shared counter: a fresh random start for each relay.
        let mut z = self
            .port_seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % u64::from(self.relay_ports.len())) as u32
    }

    /// Binds a relay socket in the port range, starts its reader, and returns the address to
    /// advertise; None when no port is free.
    fn open_relay(self: &Arc<Self>, alloc: AllocId, even_port: bool) -> Option<SocketAddr> {
        let range = self.relay_ports;
        let start = self.next_port_offset();
        let mut tried = 0;
        let mut socket = None;
        for i in 0..range.len() {
            if tried >= RELAY_BIND_ATTEMPTS {
                break;
            }
            let port = (u32::from(range.min) + (start + i) % range.len()) as u16;
            if even_port && port % 2 == 1 {
                continue;
            }
            tried += 1;
            if let Ok(s) = UdpSocket::bind((self.relay_bind_ip, port)) {
                socket = Some(s);
                break;
            }
        }
        let socket = socket?;
        socket.set_nonblocking(true).ok()?;
        let local = socket.local_addr().ok()?;
        let socket = Arc::new(register_readable(socket).ok()?);
        let cancel = self.stop.child_token();
        lock(&self.relays).insert(
            alloc,
            RelayHandle {
                socket: socket.clone(),
                cancel: cancel.clone(),
            },
        );
        let shared = self.clone();
        self.tasks
            .spawn(async move { shared.read_relay(alloc, socket, cancel).await });
        Some(SocketAddr::new(self.relay_public_ip, local.port()))
    }

    fn close_relay(&self, alloc: AllocId) {
        if let Some(relay) = lock(&self.relays).remove(&alloc) {
            relay.cancel.cancel();
        }
    }

    async fn read_relay(
        self: Arc<Self>,
        alloc: AllocId,
        socket: Arc<Udp>,
        cancel: CancellationToken,
    ) {
        loop {
            let mut ready = tokio::select! {
                _ = cancel.cancelled() => break,
                ready = socket.readable() => match ready {
                    Ok(guard) => guard,
                    Err(_) => break,
                },
            };
            // Drain what is there into this thread's buffer; no await while it is borrowed.
            RECV_BUF.with_borrow_mut(|buf| {
                for _ in 0..64 {
                    match socket.get_ref().recv_from(buf) {
                        Ok((n, peer)) => {
                            let data = &buf[..n];
                            self.drive(|core, now| core.handle_peer(now, alloc, peer, data));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            ready.clear_ready();
                            break;
                        }
                        Err(_) => continue,
                    }
                }
            });
        }
    }

    /// Reads the UDP listener a batch at a time (`recvmmsg`, up to
    /// [`RECV_BATCH`] datagrams per call) and hands each batch to the core
    /// under one lock: at tens of thousands of packets per second the per-datagram syscall
    /// and lock are most of the user-space cost.
    async fn read_udp(self: Arc<Self>, server: SocketAddr) {
        let mut batch = BatchReader::new(RECV_BATCH, MAX_DATAGRAM);
        loop {
            let mut ready = tokio::select! {
                _ = self.stop.cancelled() => break,
                ready = self.udp.readable() => match ready {
                    Ok(guard) => guard,
                    Err(_) => continue,
                },
            };
            // Several batches per wake-up: one select per batch costs little, one per packet
            // would cost more than the packet.
            for _ in 0..8 {
                match ready.try_io(|udp| batch.recv(udp.get_ref())) {
                    Ok(Ok(_)) => {}
                    // Drained: wait for the next readiness.
                    Err(_would_block) => break,
                    // ICMP errors surface here on some systems; they are no reason to stop.
                    Ok(Err(_)) => continue,
                }
                self.drive(|core, now| {
                    for (client, data) in batch.datagrams() {
                        let tuple = FiveTuple {
                            transport: Transport::Udp,
                            client,
                            server,
                        };
                        core.handle_client(now, tuple, data);
                    }
                });
            }
            // No explicit yield: the readiness await above yields when the socket is empty,
            // and tokio's cooperative budget bounds a busy loop.
        }
    }

    async fn accept(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        stop_accepting: CancellationToken,
    ) {
        let server = match listener.local_addr() {
            Ok(a) => a,
            Err(_) => return,
        };
        loop {
            let (stream, client) = tokio::select! {
                _ = stop_accepting.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            if self.connections.fetch_add(1, Ordering::AcqRel) >= self.max_connections {
                self.connections.fetch_sub(1, Ordering::AcqRel);
                crate::metrics::connection_rejected();
                continue;
            }
            let _ = stream.set_nodelay(true);
            let shared = self.clone();
            let tls = tls.clone();
            let span = tracing::debug_span!("stream", tls = tls.is_some());
            self.tasks.spawn(tracing::Instrument::instrument(
                async move {
                    match tls {
                        None => {
                            let tuple = FiveTuple {
                                transport: Transport::Tcp,
                                client,
                                server,
                            };
                            shared.clone().serve_stream(stream, tuple).await;
                        }
                        Some(acceptor) => {
                            let tuple = FiveTuple {
                                transport: Transport::Tls,
                                client,
                                server,
                            };
                            let handshake = tokio::time::timeout(
                                TLS_HANDSHAKE_TIMEOUT,
                                acceptor.accept(stream),
                            );
                            if let Ok(Ok(tls_stream)) = handshake.await {
                                shared.clone().serve_stream(tls_stream, tuple).await;
                            }
                        }
                    }
                    shared.connections.fetch_sub(1, Ordering::AcqRel);
                },
                span,
            ));
        }
    }

    /// One TCP or TLS client: framed reads into the core, a bounded writer queue out.
    async fn serve_stream<S>(self: Arc<Self>, stream: S, tuple: FiveTuple)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        crate::metrics::connection_opened(tuple.transport);
        let (mut rd, mut wr) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(self.stream_queue);
        let close = self.stop.child_token();
        lock(&self.streams).insert(
            tuple,
            StreamHandle {
                tx,
                close: close.clone(),
            },
        );
        let writer = async {
            while let Some(msg) = rx.recv().await {
                match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&msg)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => break,
                    Err(_) => {
                        crate::metrics::slow_client();
                        break;
                    }
                }
            }
        };
        let shared = self.clone();
        let reader = async move {
            let mut buf = BytesMut::with_capacity(4_096);
            loop {
                loop {
                    match stream_frame_len(&buf) {
                        Ok(Some(len)) if buf.len() >= len => {
                            let frame = buf.split_to(len);
                            shared.drive(|core, now| core.handle_client(now, tuple, &frame));
                        }
                        Ok(_) => break,
                        Err(e) => {
                            // No way to find the next message boundary: close.
                            tracing::debug!(error = ?e, "bad stream framing");
                            metrics::counter!("concord_turn_bad_messages_total", "reason" => "bad_framing").increment(1);
                            return;
                        }
                    }
                }
                match tokio::time::timeout(shared.stream_idle, rd.read_buf(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    Ok(Ok(_)) => {}
                    Err(_) => {
                        if !shared.core().has_allocation(&tuple) {
                            return;
                        }
                    }
                }
            }
        };
        tokio::select! {
            _ = close.cancelled() => {}
            _ = reader => {}
            _ = writer => {}
        }
        lock(&self.streams).remove(&tuple);
        self.drive(|core, now| core.connection_closed(now, tuple));
        crate::metrics::connection_closed(tuple.transport);
    }

    async fn tick(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep(TICK) => {}
            }
            self.drive(|core, now| {
                core.set_unix_time(now, unix_now());
                core.handle_timeout(now);
            });
            self.export_metrics();
        }
    }

    fn export_metrics(&self) {
        let now = self.core().stats().clone();
        let mut before = lock(&self.exported);
        crate::metrics::export(&now, &before);
        *before = now;
    }
}

/// A running TURN server.
pub struct TurnServer {
    shared: Arc<Shared>,
    udp_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    http_addr: SocketAddr,
    relay_ip: IpAddr,
    stop_accepting: CancellationToken,
    grace: Duration,
}

async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError::Bind(addr, e))
}

/// UDP on `listen`, and TCP on the same port when `tcp`. With port 0, retries until the OS
/// hands out a port free for both.
async fn bind_main(
    listen: SocketAddr,
    tcp: bool,
) -> Result<(UdpSocket, Option<TcpListener>), ServerError> {
    let mut attempts = 0;
    loop {
        let udp = UdpSocket::bind(listen).map_err(|e| ServerError::Bind(listen, e))?;
        udp.set_nonblocking(true)
            .map_err(|e| ServerError::Bind(listen, e))?;
        enlarge_buffers(&udp);
        if !tcp {
            return Ok((udp, None));
        }
        let port = udp
            .local_addr()
            .map_err(|e| ServerError::Bind(listen, e))?
            .port();
        match bind_tcp(SocketAddr::new(listen.ip(), port)).await {
            Ok(t) => return Ok((udp, Some(t))),
            Err(e) if listen.port() != 0 || attempts >= 10 => return Err(e),
            Err(_) => attempts += 1,
        }
    }
}

/// Socket buffers asked of the kernel for the UDP listener: every client's packets queue on
/// this one socket, and the default (~200 KB, a few hundred small datagrams) overflows
/// within milliseconds at tens of thousands of packets per second whenever the reader is
/// descheduled. 16 MiB holds about a quarter of a second at 100,000 packets/s; it takes
/// CAP_NET_ADMIN to pass net.core.rmem_max/wmem_max (often 4 MiB or less), without it the
/// kernel's maximum applies. Memory is only used while datagrams wait.
const UDP_LISTENER_BUFFER: usize = 16 << 20;

fn enlarge_buffers(udp: &UdpSocket) {
    use rustix::net::sockopt;
    if sockopt::set_socket_recv_buffer_size_force(udp, UDP_LISTENER_BUFFER).is_err()
        && let Err(e) = sockopt::set_socket_recv_buffer_size(udp, UDP_LISTENER_BUFFER)
    {
        tracing::warn!("cannot enlarge the UDP receive buffer: {e}");
    }
    if sockopt::set_socket_send_buffer_size_force(udp, UDP_LISTENER_BUFFER).is_err()
        && let Err(e) = sockopt::set_socket_send_buffer_size(udp, UDP_LISTENER_BUFFER)
    {
        tracing::warn!("cannot enlarge the UDP send buffer: {e}");
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

impl TurnServer {
    pub async fn spawn(config: TurnConfig) -> Result<TurnServer, ServerError> {
        config.validate()?;
        crate::metrics::install();
        let tls = match &config.tls {
            Some(t) => Some((tls_acceptor(&t.cert, &t.key)?, t.listen)),
            None => None,
        };
        let (udp, tcp) = bind_main(config.listen, config.tcp).await?;
        let udp_addr = udp
            .local_addr()
            .map_err(|e| ServerError::Bind(config.listen, e))?;
        let tcp_addr = tcp.as_ref().and_then(|t| t.local_addr().ok());
        let tls_listener = match &tls {
            Some((_, addr)) => Some(bind_tcp(*addr).await?),
            None => None,
        };
        let tls_addr = tls_listener.as_ref().and_then(|t| t.local_addr().ok());
        let http = bind_tcp(config.http_listen).await?;
        let http_addr = http
            .local_addr()
            .map_err(|e| ServerError::Bind(config.http_listen, e))?;

        let relay_ip = config.relay_bind_ip().expect("validated");
        let relay_public_ip = config.external_ip.unwrap_or(relay_ip);
        let mut own_ips = vec![relay_ip, relay_public_ip];
        for addr in [Some(udp_addr), tls_addr, Some(http_addr)]
            .into_iter()
            .flatten()
        {
            if !addr.ip().is_unspecified() && !own_ips.contains(&addr.ip()) {
                own_ips.push(addr.ip());
            }
        }
        let listeners: Vec<SocketAddr> = [Some(udp_addr), tcp_addr, tls_addr, Some(http_addr)]
            .into_iter()
            .flatten()
            .collect();
        let users = config.parsed_users();
        if users.is_empty() && config.auth_secret.is_none() {
            tracing::warn!("no users and no auth secret: only STUN Binding will work");
        }
        let core_config = CoreConfig {
            credentials: Credentials::new(
                &config.realm,
                users.iter().map(|(u, p)| (u.as_str(), p.as_str())),
                config.auth_secret.as_deref(),
            ),
            policy: PeerPolicy {
                allow: config.allow_peers.clone(),
                deny: config.deny_peers.clone(),
                own_ips,
                listeners,
                relay_ports: Some(config.relay_ports.min..=config.relay_ports.max),
            },
            limits: config.limits.core(),
            relay_family: Family::of(relay_ip),
            software: config.software.clone(),
        };
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the OS random number generator works");
        let core = TurnCore::new(core_config, seed, Instant::now(), unix_now());

        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            udp: Arc::new(register_readable(udp).map_err(|e| ServerError::Bind(udp_addr, e))?),
            streams: Mutex::new(HashMap::new()),
            relays: Mutex::new(HashMap::new()),
            relay_bind_ip: relay_ip,
            relay_public_ip,
            relay_ports: config.relay_ports,
            port_seed: AtomicU64::new(u64::from_le_bytes(seed[8..16].try_into().expect("8"))),
            connections: AtomicUsize::new(0),
            max_connections: config.limits.max_connections,
            stream_queue: config.limits.stream_queue,
            stream_idle: Duration::from_secs(config.limits.stream_idle_secs),
            exported: Mutex::new(Stats::default()),
            stop: stop.clone(),
            tasks: tasks.clone(),
        });
        let stop_accepting = stop.child_token();
        tasks.spawn(shared.clone().read_udp(udp_addr));
        if let Some(tcp) = tcp {
            tasks.spawn(shared.clone().accept(tcp, None, stop_accepting.clone()));
        }
        if let (Some(listener), Some((acceptor, _))) = (tls_listener, tls) {
            tasks.spawn(
                shared
                    .clone()
                    .accept(listener, Some(acceptor), stop_accepting.clone()),
            );
        }
        tasks.spawn(shared.clone().tick());
        let metrics_shared = shared.clone();
        let router = Router::new().route("/healthz", get(healthz)).route(
            "/metrics",
            get(move || {
                let shared = metrics_shared.clone();
                async move {
                    shared.export_metrics();
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        crate::metrics::render(),
                    )
                        .into_response()
                }
            }),
        );
        let http_stop = stop.clone();
        tasks.spawn(async move {
            let serve = axum::serve(http, router)
                .with_graceful_shutdown(async move { http_stop.cancelled().await });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "HTTP server stopped");
            }
        });
        tracing::info!(%udp_addr, ?tcp_addr, ?tls_addr, %http_addr, "TURN server listening");
        Ok(TurnServer {
            shared,
            udp_addr,
            tcp_addr,
            tls_addr,
            http_addr,
            relay_ip: relay_public_ip,
            stop_accepting,
            grace: Duration::from_secs(config.shutdown_grace_secs),
        })
    }

    /// The UDP listener (`turn:host:port?transport=udp`, and STUN).
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The TCP listener (`turn:host:port?transport=tcp`), same port as UDP.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The TLS listener (`turns:host:port?transport=tcp`).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// `/healthz` and `/metrics`.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The IP relayed addresses carry.
    pub fn relay_ip(&self) -> IpAddr {
        self.relay_ip
    }

    pub fn allocation_count(&self) -> usize {
        self.shared.core().allocation_count()
    }

    /// Open TCP and TLS connections.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::Acquire)
    }

    /// A snapshot of the core's counters.
    pub fn stats(&self) -> Stats {
        self.shared.core().stats().clone()
    }

    /// No new allocations or connections; existing allocations carry on until they end or the
    /// grace period passes; then everything stops.
    pub async fn shutdown(self) {
        self.shared.core().start_draining();
        self.stop_accepting.cancel();
        let deadline = tokio::time::Instant::now() + self.grace;
        while self.allocation_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.allocation_count();
        if left > 0 {
            tracing::info!(allocations = left, "grace period over: closing the rest");
        }
        self.shared.stop.cancel();
        self.shared.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not stop in time");
        }
        // Take what is left out of the shared gauge.
        let mut final_stats = self.shared.core().stats().clone();
        self.shared.export_metrics();
        final_stats.active_allocations = 0;
        let before = lock(&self.shared.exported).clone();
        crate::metrics::export(&final_stats, &before);
        tracing::info!("TURN server stopped");
    }
}
