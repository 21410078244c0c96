//! A relay on port 0 and a small API/gateway client for end-to-end tests: real HTTP, real
//! WebSockets, real signatures.

#![allow(dead_code)]

use std::time::Duration;

use concord_proto::Id;
use concord_proto::api::LoginResponse;
use concord_proto::gateway::{ClientFrame, Identify, ServerFrame};
use concord_proto::signed::{self, DeviceCertificate};
use concord_relay::{RelayConfig, Server};
use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestRelay {
    pub server: Option<Server>,
    pub url: String,
    pub http: reqwest::Client,
    pub dir: TempDir,
}

pub fn random_key() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    SigningKey::from_bytes(&seed)
}

/// Rate limits high enough that only tests about limits meet them.
pub fn relaxed(config: &mut RelayConfig) {
    for l in [
        &mut config.rate_limits.auth,
        &mut config.rate_limits.signup,
        &mut config.rate_limits.message_send,
        &mut config.rate_limits.general,
        &mut config.rate_limits.gateway,
    ] {
        l.requests = 1_000_000;
    }
}

pub async fn database_url(backend: Backend, dir: &TempDir) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}/relay.db?mode=rwc", dir.path().display()),
        Backend::Postgres => super::db::fresh_postgres_url().await,
    }
}

impl TestRelay {
    pub async fn start(backend: Backend) -> TestRelay {
        Self::start_with(backend, relaxed).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut RelayConfig)) -> TestRelay {
        concord_relay::listener::install_crypto_provider();
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let mut config = RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_owned(),
            database_url: Some(database_url(backend, &dir).await),
            ..RelayConfig::default()
        };
        config.p2p.listen = vec![
            "/ip4/127.0.0.1/tcp/0".into(),
            "/ip4/127.0.0.1/udp/0/quic-v1".into(),
        ];
        config.database.max_write_connections = 4;
        config.database.max_read_connections = 4;
        tweak(&mut config);
        let server = Server::spawn(config).await.expect("relay starts");
        let url = server.url().to_owned();
        TestRelay {
            server: Some(server),
            url,
            http: reqwest::Client::new(),
            dir,
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    pub fn ws_url(&self) -> String {
        format!("{}/api/v1/gateway", self.url.replacen("http", "ws", 1))
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// Registers a new account with one device and logs it in.
    pub async fn register(&self, username: &str) -> TestUser {
        let account = random_key();
        let device = random_key();
        let cert = DeviceCertificate::sign(
            &account,
            &device.verifying_key(),
            "test device",
            1_700_000_000,
        );
        let login = login(&self.http, &self.url, &device, Some(&cert), Some(username)).await;
        assert_eq!(login.0, 200, "register {username}: {}", login.1);
        let body: LoginResponse = serde_json::from_value(login.1).unwrap();
        TestUser {
            id: body.user.id,
            username: username.to_owned(),
            access: body.access_token,
            refresh: body.refresh_token,
            session_id: body.session_id,
            account,
            device,
            url: self.url.clone(),
            http: self.http.clone(),
        }
    }
}

/// Challenge, sign, login. Returns (status, body).
pub async fn login(
    http: &reqwest::Client,
    url: &str,
    device: &SigningKey,
    cert: Option<&DeviceCertificate>,
    username: Option<&str>,
) -> (u16, Value) {
    login_with(http, url, device, cert, username, None).await
}

/// [`login`] with an invite code (invite-only registration).
pub async fn login_with(
    http: &reqwest::Client,
    url: &str,
    device: &SigningKey,
    cert: Option<&DeviceCertificate>,
    username: Option<&str>,
    invite: Option<&str>,
) -> (u16, Value) {
    let device_key = signed::public_key_string(&device.verifying_key());
    let challenge: Value = http
        .post(format!("{url}/api/v1/auth/challenge"))
        .json(&json!({ "device_key": device_key }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let audience = challenge["audience"].as_str().expect("audience").to_owned();
    assert_eq!(audience, url, "the audience is the origin we connected to");
    let challenge = challenge["challenge"].as_str().unwrap().to_owned();
    let signature = signed::sign_auth(device, &audience, &challenge);
    let mut body =
        json!({ "device_key": device_key, "challenge": challenge, "signature": signature });
    if let Some(cert) = cert {
        body["certificate"] = serde_json::to_value(cert).unwrap();
    }
    if let Some(name) = username {
        body["username"] = json!(name);
    }
    if let Some(code) = invite {
        body["invite"] = json!(code);
    }
    let resp = http
        .post(format!("{url}/api/v1/auth/login"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub struct TestUser {
    pub id: Id,
    pub username: String,
    pub access: String,
    pub refresh: String,
    pub session_id: Id,
    pub account: SigningKey,
    pub device: SigningKey,
    pub url: String,
    pub http: reqwest::Client,
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub fn ok(self, expected: u16) -> Value {
        assert_eq!(
            self.status, expected,
            "unexpected status, body: {}",
            self.body
        );
        self.body
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let mut req = http.request(method, url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Resp {
        status,
        body,
        headers,
    }
}

impl TestUser {
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Resp {
        send(
            &self.http,
            method,
            format!("{}{path}", self.url),
            Some(&self.access),
            body,
        )
        .await
    }
    pub async fn get(&self, path: &str) -> Resp {
        self.call(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Option<Value>) -> Resp {
        self.call(reqwest::Method::PUT, path, body).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// Creates a guild and returns (guild id, id of its first text channel).
    pub async fn create_guild(&self, name: &str) -> (Id, Id) {
        let g = self
            .post("/api/v1/guilds", json!({ "name": name }))
            .await
            .ok(201);
        let id: Id = serde_json::from_value(g["id"].clone()).unwrap();
        let text = g["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["kind"] == "text")
            .unwrap();
        (id, serde_json::from_value(text["id"].clone()).unwrap())
    }

    /// A new voice channel in `guild` (the caller manages channels there).
    pub async fn voice_channel(&self, guild: Id, name: &str) -> Id {
        let channel = self
            .post(
                &format!("/api/v1/guilds/{guild}/channels"),
                json!({ "name": name, "kind": "voice" }),
            )
            .await
            .ok(201);
        serde_json::from_value(channel["id"].clone()).unwrap()
    }

    pub async fn invite(&self, guild: Id) -> String {
        self.post(&format!("/api/v1/guilds/{guild}/invites"), json!({}))
            .await
            .ok(201)["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn join(&self, code: &str) {
        self.post(&format!("/api/v1/invites/{code}/accept"), json!({}))
            .await
            .ok(200);
    }

    pub async fn say(&self, channel: Id, content: &str) -> Value {
        let nonce = format!("n{}", rand_suffix());
        self.post(
            &format!("/api/v1/channels/{channel}/messages"),
            json!({ "content": content, "nonce": nonce }),
        )
        .await
        .ok(201)
    }

    pub async fn gateway(&self) -> Gateway {
        Gateway::identify(&self.url, &self.access).await
    }
}

pub fn rand_suffix() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Gateway {
    pub ws: Ws,
    pub ready: Value,
    pub session_id: String,
    pub last_s: u64,
}

/// What a read from the gateway gave.
#[derive(Debug)]
pub enum Got {
    Frame(ServerFrame),
    Closed(Option<u16>),
    Timeout,
}

impl Gateway {
    pub async fn connect(url: &str) -> Ws {
        let ws_url = format!("{}/api/v1/gateway", url.replacen("http", "ws", 1));
        tokio_tungstenite::connect_async(ws_url)
            .await
            .expect("gateway connects")
            .0
    }

    pub async fn identify(url: &str, token: &str) -> Gateway {
        let mut ws = Self::connect(url).await;
        ws.send(WsMessage::text(
            ClientFrame::Identify(Identify {
                token: token.to_owned(),
            })
            .to_json(),
        ))
        .await
        .unwrap();
        match read(&mut ws, Duration::from_secs(10)).await {
            Got::Frame(f) if f.op == "ready" => {
                let session_id = f.d["session_id"].as_str().unwrap().to_owned();
                Gateway {
                    ws,
                    ready: f.d,
                    session_id,
                    last_s: 0,
                }
            }
            other => panic!("expected ready, got {other:?}"),
        }
    }

    pub async fn send_json(&mut self, frame: Value) {
        self.ws
            .send(WsMessage::text(frame.to_string()))
            .await
            .unwrap();
    }

    pub async fn next(&mut self, wait: Duration) -> Got {
        let got = read(&mut self.ws, wait).await;
        if let Got::Frame(f) = &got
            && let Some(s) = f.s
        {
            assert_eq!(s, self.last_s + 1, "gateway s is gapless");
            self.last_s = s;
        }
        got
    }

    /// The next event of type `t` (others are skipped) within 10 s.
    pub async fn event(&mut self, t: &str) -> Value {
        self.event_where(t, |_| true).await
    }

    /// The next event of type `t` whose data satisfies `pred` (others are skipped).
    pub async fn event_where(&mut self, t: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Got::Frame(f) if f.op == "event" && f.t.as_deref() == Some(t) && pred(&f.d) => {
                    return f.d;
                }
                Got::Frame(_) => continue,
                other => panic!("waiting for {t}: {other:?}"),
            }
        }
    }

    /// Asserts that no event of type `t` arrives within `wait`.
    pub async fn no_event(&mut self, t: &str, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.next(left).await {
                Got::Frame(f) if f.op == "event" && f.t.as_deref() == Some(t) => {
                    panic!("unexpected {t}: {}", f.d)
                }
                Got::Frame(_) => continue,
                Got::Timeout => return,
                Got::Closed(code) => panic!("gateway closed ({code:?}) while waiting"),
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.next(Duration::from_secs(10)).await {
                Got::Closed(code) => return code,
                Got::Frame(_) => continue,
                Got::Timeout => panic!("gateway did not close"),
            }
        }
    }
}

pub async fn read(ws: &mut Ws, wait: Duration) -> Got {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Err(_) => return Got::Timeout,
            Ok(None) => return Got::Closed(None),
            Ok(Some(Err(_))) => return Got::Closed(None),
            Ok(Some(Ok(WsMessage::Text(t)))) => {
                return Got::Frame(ServerFrame::parse(&t).expect("server frames are valid"));
            }
            Ok(Some(Ok(WsMessage::Close(frame)))) => {
                return Got::Closed(frame.map(|f| u16::from(f.code)));
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}
