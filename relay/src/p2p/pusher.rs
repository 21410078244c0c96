//! One task per connected node: drains its hub session and pushes the events, signed by the
//! relay, one batch at a time. A node that cannot keep up is disconnected; it catches up by
//! seq when it comes back.

use std::sync::Arc;
use std::time::Duration;

use concord_net::protocol::{MAX_PUSH_EVENTS, Response};
use concord_proto::signed::SignedEvent;
use libp2p::PeerId;
use tokio::sync::oneshot;

use super::{Command, Shared};
use crate::app::App;
use crate::hub::Session;

const PUSH_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(app: Arc<App>, p2p: Shared, peer: PeerId, session: Arc<Session>, epoch: u64) {
    loop {
        let notified = session.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if session.close_reason().is_some() {
            break;
        }
        let Some(events) = session.take_unsent(epoch) else {
            break;
        };
        if events.is_empty() {
            tokio::select! {
                _ = notified => continue,
                _ = app.shutdown.cancelled() => break,
            }
        }
        for batch in events.chunks(MAX_PUSH_EVENTS) {
            let signed: Vec<SignedEvent> = batch
                .iter()
                .filter(|_| !take_drop(&p2p, &peer))
                .map(|q| SignedEvent::sign(&p2p.key, q.t, &q.d))
                .collect();
            if signed.is_empty() {
                continue;
            }
            let signed_len = signed.len();
            let (reply, answer) = oneshot::channel();
            if p2p
                .commands
                .send(Command::Push {
                    peer,
                    events: signed,
                    reply,
                })
                .await
                .is_err()
            {
                return;
            }
            let count = signed_len;
            match tokio::time::timeout(PUSH_TIMEOUT, answer).await {
                Ok(Ok(Ok(Response::Received))) => {
                    metrics::counter!("concord_p2p_events_pushed_total").increment(count as u64);
                }
                other => {
                    tracing::debug!(%peer, ?other, "push failed; disconnecting the node");
                    let _ = p2p.commands.send(Command::Disconnect { peer }).await;
                    return;
                }
            }
        }
    }
    if session.close_reason() == Some(crate::hub::CloseReason::TooSlow) {
        let _ = p2p.commands.send(Command::Disconnect { peer }).await;
    }
}

/// Consumes one "drop this push" from the test hook.
fn take_drop(p2p: &Shared, peer: &PeerId) -> bool {
    let mut drops = p2p.drop_next_pushes.lock().expect("drops lock");
    match drops.get_mut(peer) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}
