//! Gateway clients: one WebSocket per account with small buffers (so 15,000 of them fit in the
//! bench), identify, heartbeats, and per-message delivery latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use concord_proto::gateway::{ClientFrame, Identify};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// State shared by the sender and every client.
pub struct Shared {
    pub start: Instant,
    /// Send time of message `i` (nonce `m<i>`), µs since `start` plus one; 0 = not sent.
    pub sent_at: Vec<AtomicU64>,
    pub delivered: AtomicU64,
    /// Sockets that closed or failed before the end.
    pub dropped: AtomicU64,
    pub stop: CancellationToken,
}

impl Shared {
    pub fn new(start: Instant, max_messages: usize) -> Shared {
        Shared {
            start,
            sent_at: (0..max_messages).map(|_| AtomicU64::new(0)).collect(),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            stop: CancellationToken::new(),
        }
    }

    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// What one client saw.
#[derive(Default)]
pub struct ClientResult {
    /// (arrival ms since start, latency µs) per delivered bench message.
    pub samples: Vec<(u32, u32)>,
    pub dropped: bool,
}

/// Connects and identifies; returns once `ready` arrived.
pub async fn connect(url: &str, token: &str) -> anyhow::Result<Ws> {
    let ws_url = format!("{}/api/v1/gateway", url.replacen("http", "ws", 1));
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(ws_url, Some(config), true).await?;
    let identify = ClientFrame::Identify(Identify {
        token: token.to_owned(),
    });
    ws.send(WsMessage::text(identify.to_json())).await?;
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(frame) = ws.next().await {
            if let WsMessage::Text(t) = frame?
                && concord_proto::gateway::ServerFrame::parse(&t).is_ok_and(|f| f.op == "ready")
            {
                return Ok(());
            }
        }
        anyhow::bail!("the gateway closed before ready")
    });
    ready.await.context("no gateway ready")??;
    Ok(ws)
}

/// The index `i` of a bench message (nonce `m<i>`) in a `message_create` frame.
pub fn bench_message(frame: &str) -> Option<usize> {
    if !frame.starts_with(r#"{"op":"event","t":"message_create""#) {
        return None;
    }
    let at = frame.find(r#""nonce":"m"#)? + r#""nonce":"m"#.len();
    let digits = &frame[at..];
    let end = digits.find('"')?;
    digits[..end].parse().ok()
}

/// Reads events until `shared.stop`, heartbeating every `heartbeat`; records latencies.
pub async fn run(ws: Ws, shared: Arc<Shared>, heartbeat: Duration) -> ClientResult {
    let (mut sink, mut stream) = ws.split();
    let mut result = ClientResult::default();
    // Spread the heartbeats of many clients over the interval.
    let first = heartbeat.mul_f64(0.2 + 0.6 * (shared.now_us() % 1000) as f64 / 1000.0);
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + first, heartbeat);
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            frame = stream.next() => {
                let text = match frame {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => {
                        result.dropped = true;
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                };
                if let Some(i) = bench_message(&text)
                    && let Some(sent) = shared.sent_at.get(i)
                {
                    let now = shared.now_us();
                    let sent = sent.load(Ordering::Relaxed);
                    if sent > 0 {
                        let latency = now.saturating_sub(sent - 1);
                        result.samples.push(((now / 1000) as u32, latency.min(u32::MAX as u64) as u32));
                        shared.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ = beat.tick() => {
                if sink.send(WsMessage::text(ClientFrame::Heartbeat.to_json())).await.is_err() {
                    result.dropped = true;
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    if !result.dropped {
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_bench_nonces() {
        let f = concord_proto::gateway::event_frame(
            "message_create",
            3,
            r#"{"id":"1","nonce":"m42","content":"hi \"nonce\":\"m7\""}"#,
        );
        assert_eq!(bench_message(&f), Some(42));
        let other = concord_proto::gateway::event_frame("presence_update", 1, r#"{"nonce":"m1"}"#);
        assert_eq!(bench_message(&other), None);
        let foreign = concord_proto::gateway::event_frame("message_create", 1, r#"{"nonce":"x1"}"#);
        assert_eq!(bench_message(&foreign), None);
    }
}
