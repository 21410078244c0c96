//! Sending: sign an envelope, show it at once as unconfirmed, keep it in the outbox, gossip it
//! for public channels, deliver a DM straight to the recipient's connected devices, and
//! (with `wait`) return when the relay acknowledges it (ack waiters).

use std::sync::Arc;
use std::time::Duration;

use concord_proto::Id;
use concord_proto::model::{Channel, Message};
use concord_proto::signed::Envelope;
use serde::Serialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::{Inner, now_ms};

/// How long `send --wait` waits for the relay before reporting the message as queued.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Tries of a direct (peer-to-peer) delivery before leaving it to the relay.
const DIRECT_ATTEMPTS: u32 = 6;

#[derive(Debug, Clone, Serialize)]
pub struct SendOutcome {
    pub channel_id: Id,
    pub nonce: String,
    /// The relay's stored message, when it acknowledged in time (`wait`).
    pub message: Option<Message>,
    /// False when the message waits in the outbox for the relay.
    pub acknowledged: bool,
}

fn nonce() -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    concord_proto::b64::encode(bytes)
}

pub async fn send(
    inner: &Arc<Inner>,
    channel_id: Id,
    content: &str,
    reply_to: Option<Id>,
    wait: bool,
) -> Result<SendOutcome, String> {
    let ack_wait = wait.then_some(ACK_WAIT);
    send_with_nonce(inner, channel_id, content, reply_to, &nonce(), ack_wait).await
}

/// Sends with the caller's nonce (the web client's, so its retries stay one message) and
/// waits up to `ack_wait` for the relay's ack.
pub async fn send_with_nonce(
    inner: &Arc<Inner>,
    channel_id: Id,
    content: &str,
    reply_to: Option<Id>,
    nonce: &str,
    ack_wait: Option<Duration>,
) -> Result<SendOutcome, String> {
    concord_proto::limits::nonce(nonce).map_err(|e| e.to_string())?;
    let channel = inner
        .cache()
        .channel(channel_id)
        .map_err(|e| e.to_string())?;
    let Some(channel) = channel else {
        return Err(format!(
            "unknown channel {channel_id}: not in this node's cache (join its guild first)"
        ));
    };
    let envelope = Envelope::sign(
        &inner.identity.device,
        channel_id,
        nonce,
        content,
        reply_to,
        now_ms(),
    );
    envelope.verify().map_err(|e| e.to_string())?;
    let me = inner.cache().me().map_err(|e| e.to_string())?.map(|u| u.id);
    let waiter = ack_wait.map(|_| {
        let (tx, rx) = oneshot::channel();
        inner
            .ack_waiters
            .lock()
            .expect("waiters lock")
            .entry(envelope.nonce.clone())
            .or_default()
            .push(tx);
        rx
    });
    {
        let mut cache = inner.cache();
        cache
            .insert_unconfirmed(&envelope, me, now_ms())
            .map_err(|e| e.to_string())?;
        cache
            .outbox_push(&envelope, now_ms())
            .map_err(|e| e.to_string())?;
    }
    super::apply::emit_unconfirmed(inner, &envelope);
    gossip(inner, &channel, &envelope).await;
    direct(inner, &channel, &envelope);
    inner.outbox_wake.notify_one();
    let mut outcome = SendOutcome {
        channel_id,
        nonce: envelope.nonce.clone(),
        message: None,
        acknowledged: false,
    };
    if let Some(rx) = waiter {
        match tokio::time::timeout(ack_wait.unwrap_or(ACK_WAIT), rx).await {
            Ok(Ok(Ok(message))) => {
                outcome.message = Some(message);
                outcome.acknowledged = true;
            }
            Ok(Ok(Err(refusal))) => return Err(refusal),
            _ => {}
        }
    }
    Ok(outcome)
}

/// Public channels also go out on GossipSub, over direct connections, so online members see
/// the message before the relay's push arrives.
async fn gossip(inner: &Inner, channel: &Channel, envelope: &Envelope) {
    if super::apply::is_public(inner, channel) && inner.allow_direct() {
        let data = serde_json::to_vec(envelope).expect("envelopes serialise");
        let _ = inner
            .commands
            .send(super::swarm::Command::Publish {
                channel: channel.id,
                data,
            })
            .await;
    }
}

/// DMs also go straight to the recipient's devices this node is connected to (faster, and
/// the only path on a LAN without a relay); the relay still confirms them later.
fn direct(inner: &Arc<Inner>, channel: &Channel, envelope: &Envelope) {
    if channel.kind != concord_proto::model::ChannelKind::Dm || !inner.allow_direct() {
        return;
    }
    let me = inner.cache().me().ok().flatten().map(|u| u.id);
    let recipients: Vec<Id> = channel
        .recipients
        .iter()
        .map(|u| u.id)
        .filter(|u| Some(*u) != me)
        .collect();
    let connected: Vec<libp2p::PeerId> =
        inner.connections.lock().expect("connections lock").peers();
    let targets: Vec<libp2p::PeerId> = {
        let directory = inner.directory.lock().expect("directory lock");
        connected
            .into_iter()
            .filter(|p| {
                directory
                    .user_of(p)
                    .is_some_and(|u| recipients.contains(&u))
            })
            .collect()
    };
    for peer in targets {
        let (inner, envelope) = (inner.clone(), envelope.clone());
        tokio::spawn(async move {
            // A connection can be dead without our knowing yet (a QUIC peer that vanished);
            // a few spaced attempts let libp2p notice and use or make a live one.
            for attempt in 0..DIRECT_ATTEMPTS {
                match inner
                    .rpc(
                        peer,
                        concord_net::Request::Direct {
                            envelope: envelope.clone(),
                        },
                    )
                    .await
                {
                    Ok(concord_net::protocol::Response::Received) => return,
                    Ok(refused @ concord_net::protocol::Response::Refused { .. }) => {
                        tracing::debug!(%peer, ?refused, "direct delivery refused; the relay will deliver");
                        return;
                    }
                    other => tracing::debug!(%peer, ?other, attempt, "direct delivery failed"),
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }
}

/// Sends a DM: opens (or finds) the DM channel through the relay's HTTP API, then sends.
pub async fn send_dm(
    inner: &Arc<Inner>,
    user_id: Id,
    content: &str,
    wait: bool,
) -> Result<SendOutcome, String> {
    let existing = inner
        .cache()
        .dm_channels()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|c| c.recipients.iter().any(|u| u.id == user_id));
    let channel = match existing {
        Some(c) => c,
        None => {
            let http = inner.http().ok_or("join a relay first")?;
            let channel: Channel = http
                .authed(
                    &inner.identity,
                    reqwest::Method::POST,
                    "/api/v1/users/@me/dms",
                    Some(json!({ "recipient": user_id })),
                )
                .await
                .map_err(|e| e.to_string())?;
            inner
                .cache()
                .upsert_channel(&channel)
                .map_err(|e| e.to_string())?;
            channel
        }
    };
    send(inner, channel.id, content, None, wait).await
}
