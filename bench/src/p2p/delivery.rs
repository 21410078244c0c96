//! Delivery latency in this process: a testkit relay, node A and node B connected directly,
//! and a gateway client as a third member.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use concord_node::daemon::LocalEvent;
use concord_node::relay_http::RelayHttp;
use concord_proto::gateway::{ClientFrame, Identify, ServerFrame};
use concord_testkit::{TestNode, TestRelay};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{Args, DeliveryReport, PathStats, ratio};
use crate::stats::summarize;

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

pub(super) async fn delivery(args: &Args) -> anyhow::Result<DeliveryReport> {
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

    let report = summarize_paths(
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

fn summarize_paths(
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
