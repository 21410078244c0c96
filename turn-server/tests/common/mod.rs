//! Test harness: a server on loopback port 0 (UDP, TCP, TLS with a self-signed certificate),
//! transports for clients, the webrtc-rs sans-IO TURN client (`rtc_turn::client::Client`)
//! driven over them, and a raw STUN client built from rtc-stun message types for the error
//! cases the high-level client hides.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use concord_turn::config::TlsConfig;
use concord_turn::{TurnConfig, TurnServer};
use rtc_shared::{TransportContext, TransportMessage, TransportProtocol};
use rtc_stun::attributes::*;
use rtc_stun::error_code::ErrorCodeAttribute;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::*;
use rtc_stun::textattrs::TextAttribute;
use rtc_turn::client::{Client, ClientConfig, Event};
use sansio::Protocol;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub const REALM: &str = "concord.test";
pub const SECRET: &str = "test-secret";

/// A self-signed certificate for localhost / 127.0.0.1, written to a temporary directory.
pub struct Cert {
    pub pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn cert() -> Cert {
    concord_turn::tls::install_crypto_provider();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    Cert {
        pem: cert.cert.pem(),
        cert_path,
        key_path,
        _dir: dir,
    }
}

pub struct TestServer {
    pub server: TurnServer,
    pub cert: Cert,
}

impl std::ops::Deref for TestServer {
    type Target = TurnServer;
    fn deref(&self) -> &TurnServer {
        &self.server
    }
}

/// Loopback on port 0 everywhere, users ana:pw and bob:pw2, the REST secret, loopback peers
/// allowed (tests talk to peers on 127.0.0.1), relay ports below the ephemeral range.
pub fn test_config(cert: &Cert) -> TurnConfig {
    TurnConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: cert.cert_path.clone(),
            key: cert.key_path.clone(),
        }),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        realm: REALM.into(),
        users: vec!["ana:pw".into(), "bob:pw2".into()],
        auth_secret: Some(SECRET.into()),
        relay_ports: "20000-29999".parse().unwrap(),
        allow_peers: vec!["127.0.0.0/8".parse().unwrap()],
        shutdown_grace_secs: 1,
        ..TurnConfig::default()
    }
}

pub async fn start(tweak: impl FnOnce(&mut TurnConfig)) -> TestServer {
    let cert = cert();
    let mut config = test_config(&cert);
    tweak(&mut config);
    let server = TurnServer::spawn(config).await.expect("server starts");
    TestServer { server, cert }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Udp,
    Tcp,
    Tls,
}

pub const ALL_KINDS: [Kind; 3] = [Kind::Udp, Kind::Tcp, Kind::Tls];

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

enum Conn {
    Udp(UdpSocket),
    Stream(Box<dyn Io>, BytesMut),
}

/// One client transport to the server: datagrams, or framed messages on a stream.
pub struct Link {
    conn: Conn,
    pub kind: Kind,
    pub server: SocketAddr,
    pub local: SocketAddr,
}

/// Size of the next framed message on a stream (RFC 8656 §11.5), written independently of
/// the server's framing code.
fn frame_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 4 {
        return None;
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    Some(if buf[0] >> 6 == 0 {
        20 + len
    } else {
        4 + len.div_ceil(4) * 4
    })
}

impl Link {
    pub async fn connect(server: &TurnServer, kind: Kind) -> Link {
        match kind {
            Kind::Udp => Link::udp(server.udp_addr()).await,
            Kind::Tcp => Link::tcp(server.tcp_addr().unwrap()).await,
            Kind::Tls => panic!("use Link::tls with the certificate"),
        }
    }

    pub async fn open(s: &TestServer, kind: Kind) -> Link {
        match kind {
            Kind::Tls => Link::tls(s.tls_addr().unwrap(), &s.cert.pem).await,
            other => Link::connect(&s.server, other).await,
        }
    }

    pub async fn udp(server: SocketAddr) -> Link {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        Link {
            conn: Conn::Udp(socket),
            kind: Kind::Udp,
            server,
            local,
        }
    }

    pub async fn tcp(server: SocketAddr) -> Link {
        let stream = TcpStream::connect(server).await.unwrap();
        let local = stream.local_addr().unwrap();
        Link {
            conn: Conn::Stream(Box::new(stream), BytesMut::new()),
            kind: Kind::Tcp,
            server,
            local,
        }
    }

    /// TCP with a 4 KiB receive buffer (for a client that stops reading).
    pub async fn tcp_small_buffer(server: SocketAddr) -> Link {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(server).await.unwrap();
        let local = stream.local_addr().unwrap();
        Link {
            conn: Conn::Stream(Box::new(stream), BytesMut::new()),
            kind: Kind::Tcp,
            server,
            local,
        }
    }

    pub async fn tls(server: SocketAddr, cert_pem: &str) -> Link {
        concord_turn::tls::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(server).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector.connect(name, tcp).await.unwrap();
        Link {
            conn: Conn::Stream(Box::new(stream), BytesMut::new()),
            kind: Kind::Tls,
            server,
            local,
        }
    }

    pub async fn send(&mut self, data: &[u8]) {
        match &mut self.conn {
            Conn::Udp(s) => {
                s.send_to(data, self.server).await.unwrap();
            }
            Conn::Stream(s, _) => {
                // The server may have closed a connection a test misbehaved on.
                let _ = s.write_all(data).await;
            }
        }
    }

    /// One datagram or one framed message; None on timeout or a closed stream.
    pub async fn recv(&mut self, wait: Duration) -> Option<Vec<u8>> {
        match &mut self.conn {
            Conn::Udp(s) => {
                let mut buf = vec![0u8; 65_536];
                let (n, _) = tokio::time::timeout(wait, s.recv_from(&mut buf))
                    .await
                    .ok()?
                    .ok()?;
                buf.truncate(n);
                Some(buf)
            }
            Conn::Stream(s, buf) => {
                let deadline = tokio::time::Instant::now() + wait;
                loop {
                    if let Some(len) = frame_len(buf)
                        && buf.len() >= len
                    {
                        return Some(buf.split_to(len).to_vec());
                    }
                    let n = tokio::time::timeout_at(deadline, s.read_buf(buf))
                        .await
                        .ok()?
                        .ok()?;
                    if n == 0 {
                        return None;
                    }
                }
            }
        }
    }

    /// Whether the server closed the stream (reads EOF within `wait`).
    pub async fn closed_by_server(&mut self, wait: Duration) -> bool {
        let Conn::Stream(s, _) = &mut self.conn else {
            return false;
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut scratch = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut scratch)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// The webrtc-rs sans-IO TURN client over a `Link`.
pub struct TurnClient {
    pub link: Link,
    client: Client,
    pub events: VecDeque<Event>,
    pub relay: Option<SocketAddr>,
}

impl TurnClient {
    pub async fn new(link: Link, username: &str, password: &str) -> TurnClient {
        let protocol = match link.kind {
            Kind::Udp => TransportProtocol::UDP,
            _ => TransportProtocol::TCP,
        };
        let client = Client::new(
            ClientConfig {
                stun_serv_addr: link.server.to_string(),
                turn_serv_addr: link.server.to_string(),
                local_addr: link.local,
                transport_protocol: protocol,
                username: username.into(),
                password: password.into(),
                realm: String::new(),
                software: "concord-turn tests".into(),
                rto_in_ms: 0,
                allocation_refresh_interval_cap: None,
            },
            rtc_turn::crypto::default_provider().unwrap(),
        )
        .unwrap();
        TurnClient {
            link,
            client,
            events: VecDeque::new(),
            relay: None,
        }
    }

    async fn flush(&mut self) {
        while let Some(t) = self.client.poll_write() {
            self.link.send(&t.message).await;
        }
    }

    fn context(&self) -> TransportContext {
        TransportContext {
            local_addr: self.link.local,
            peer_addr: self.link.server,
            transport_protocol: match self.link.kind {
                Kind::Udp => TransportProtocol::UDP,
                _ => TransportProtocol::TCP,
            },
            ecn: None,
        }
    }

    /// Sends what is queued, reads and handles what arrives, runs the client's timers; stops
    /// at the first event `pick` accepts (events it declines stay queued) or after `wait`.
    pub async fn until<T>(
        &mut self,
        wait: Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + wait;
        loop {
            self.flush().await;
            while let Some(e) = self.client.poll_event() {
                self.events.push_back(e);
            }
            if let Some(i) = self.events.iter().position(|e| pick(e).is_some()) {
                let e = self.events.remove(i).unwrap();
                return pick(&e);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let slice = (deadline - now).min(Duration::from_millis(50));
            if let Some(data) = self.link.recv(slice).await {
                let msg = TransportMessage {
                    now: Instant::now(),
                    transport: self.context(),
                    message: BytesMut::from(&data[..]),
                };
                // Responses the client does not model (e.g. Refresh) come back as errors.
                let _ = self.client.handle_read(msg);
            }
            if self
                .client
                .poll_timeout()
                .is_some_and(|t| t <= Instant::now())
            {
                let _ = self.client.handle_timeout(Instant::now());
            }
        }
    }

    pub async fn binding(&mut self) -> SocketAddr {
        self.client.send_binding_request(Instant::now()).unwrap();
        self.until(Duration::from_secs(5), |e| match e {
            Event::BindingResponse(_, addr) => Some(*addr),
            _ => None,
        })
        .await
        .expect("binding response")
    }

    /// Allocates; Err carries the error text (with its code).
    pub async fn allocate(&mut self) -> Result<SocketAddr, String> {
        self.client.allocate(Instant::now()).unwrap();
        let result = self
            .until(Duration::from_secs(5), |e| match e {
                Event::AllocateResponse(_, relay) => Some(Ok(*relay)),
                Event::AllocateError(_, err) => Some(Err(err.to_string())),
                Event::TransactionTimeout(_) => Some(Err("timeout".to_string())),
                _ => None,
            })
            .await
            .unwrap_or_else(|| Err("no answer".into()));
        if let Ok(relay) = result {
            self.relay = Some(relay);
        }
        result
    }

    pub async fn create_permission(&mut self, peer: SocketAddr) -> Result<(), String> {
        let relay = self.relay.expect("allocated");
        self.client
            .relay(relay)
            .unwrap()
            .create_permission(Instant::now(), peer)
            .unwrap();
        self.until(Duration::from_secs(5), |e| match e {
            Event::CreatePermissionResponse(_, _) => Some(Ok(())),
            Event::CreatePermissionError(_, err) => Some(Err(err.to_string())),
            _ => None,
        })
        .await
        .unwrap_or_else(|| Err("no answer".into()))
    }

    /// Sends to a peer through the relay: the first send binds a channel and goes as a Send
    /// indication, later ones as ChannelData once the binding is confirmed.
    pub async fn send_to(&mut self, peer: SocketAddr, data: &[u8]) {
        let relay = self.relay.expect("allocated");
        self.client
            .relay(relay)
            .unwrap()
            .send_to(Instant::now(), data, peer)
            .unwrap();
        self.flush().await;
    }

    /// Lets pending transactions (like a channel binding) complete.
    pub async fn settle(&mut self, wait: Duration) {
        let _: Option<()> = self.until(wait, |_| None).await;
    }

    /// Data from a peer: (peer, payload, channel number if it came as ChannelData).
    pub async fn recv_data(
        &mut self,
        wait: Duration,
    ) -> Option<(SocketAddr, Vec<u8>, Option<u16>)> {
        self.until(wait, |e| match e {
            Event::DataIndicationOrChannelData(ch, from, data) => {
                Some((*from, data.to_vec(), ch.map(|c| c.0)))
            }
            _ => None,
        })
        .await
    }

    pub async fn refresh(&mut self) {
        self.client.refresh_allocations(Instant::now()).unwrap();
        self.settle(Duration::from_millis(300)).await;
    }

    /// Refresh with lifetime 0: deletes the allocation.
    pub async fn close(&mut self) {
        let relay = self.relay.take().expect("allocated");
        self.client
            .relay(relay)
            .unwrap()
            .close(Instant::now())
            .unwrap();
        self.settle(Duration::from_millis(300)).await;
    }
}

/// A UDP socket standing in for a remote peer.
pub struct Peer {
    pub socket: UdpSocket,
    pub addr: SocketAddr,
}

impl Peer {
    pub async fn new() -> Peer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        Peer { socket, addr }
    }

    pub async fn recv(&self, wait: Duration) -> Option<(SocketAddr, Vec<u8>)> {
        let mut buf = vec![0u8; 65_536];
        let (n, from) = tokio::time::timeout(wait, self.socket.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        buf.truncate(n);
        Some((from, buf))
    }
}

/// A raw STUN client: builds requests from rtc-stun types (its own MESSAGE-INTEGRITY code,
/// independent of the server's) and reads the response for each.
pub struct RawClient {
    pub link: Link,
    pub username: String,
    pub password: String,
    pub nonce: Option<String>,
}

pub fn build(method: Method, class: MessageClass, attrs: Vec<Box<dyn Setter>>) -> Message {
    let mut m = Message::new();
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(method, class)),
    ];
    setters.extend(attrs);
    m.build(&setters).unwrap();
    m
}

pub fn error_code(m: &Message) -> Option<u16> {
    let mut e = ErrorCodeAttribute::default();
    e.get_from(m).ok().map(|_| e.code.0)
}

pub fn udp_transport() -> Box<dyn Setter> {
    Box::new(rtc_turn::proto::reqtrans::RequestedTransport {
        protocol: rtc_turn::proto::PROTO_UDP,
    })
}

pub fn peer_attr(peer: SocketAddr) -> Box<dyn Setter> {
    Box::new(rtc_turn::proto::peeraddr::PeerAddress {
        ip: peer.ip(),
        port: peer.port(),
    })
}

impl RawClient {
    pub fn new(link: Link, username: &str, password: &str) -> RawClient {
        RawClient {
            link,
            username: username.into(),
            password: password.into(),
            nonce: None,
        }
    }

    /// Sends raw bytes and waits for the response to `transaction_id`.
    pub async fn exchange(&mut self, raw: &[u8], transaction_id: TransactionId) -> Option<Message> {
        self.link.send(raw).await;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let data = self.link.recv(Duration::from_millis(200)).await?;
            let mut m = Message::new();
            if m.unmarshal_binary(&data).is_ok() && m.transaction_id == transaction_id {
                if let Ok(n) = TextAttribute::get_from_as(&m, ATTR_NONCE) {
                    self.nonce = Some(n.text);
                }
                return Some(m);
            }
        }
        None
    }

    pub async fn unsigned(&mut self, method: Method, attrs: Vec<Box<dyn Setter>>) -> Message {
        let m = build(method, CLASS_REQUEST, attrs);
        self.exchange(&m.raw, m.transaction_id)
            .await
            .expect("a response")
    }

    /// A request with USERNAME, REALM, NONCE and MESSAGE-INTEGRITY (fetching a nonce first
    /// when there is none).
    pub fn signed_raw(&self, method: Method, attrs: Vec<Box<dyn Setter>>) -> Message {
        let crypto = rtc_stun::crypto::default_provider().unwrap();
        let mut all = attrs;
        all.push(Box::new(TextAttribute::new(
            ATTR_USERNAME,
            self.username.clone(),
        )));
        all.push(Box::new(TextAttribute::new(ATTR_REALM, REALM.into())));
        all.push(Box::new(TextAttribute::new(
            ATTR_NONCE,
            self.nonce.clone().unwrap_or_default(),
        )));
        let mut m = build(method, CLASS_REQUEST, all);
        MessageIntegrity::new_long_term_integrity_with_provider(
            self.username.clone(),
            REALM.into(),
            self.password.clone(),
            crypto.crypto(),
        )
        .unwrap()
        .add_to(&mut m)
        .unwrap();
        rtc_stun::fingerprint::FINGERPRINT.add_to(&mut m).unwrap();
        m
    }

    pub async fn signed(&mut self, method: Method, attrs: Vec<Box<dyn Setter>>) -> Message {
        if self.nonce.is_none() {
            let m = self.unsigned(METHOD_ALLOCATE, vec![udp_transport()]).await;
            assert_eq!(
                error_code(&m),
                Some(401),
                "the first answer is a 401 challenge"
            );
        }
        let m = self.signed_raw(method, attrs);
        self.exchange(&m.raw, m.transaction_id)
            .await
            .expect("a response")
    }
}

pub fn wait() -> Duration {
    Duration::from_secs(3)
}

/// Polls `f` until it holds or `within` passes.
pub async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}
