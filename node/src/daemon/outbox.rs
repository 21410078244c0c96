//! The outbox loop: submits unacknowledged envelopes to the relay, oldest first, retrying with
//! backoff. The nonce makes retries idempotent, so a message is stored once however often it
//! is sent.

use std::sync::Arc;
use std::time::Duration;

use concord_net::Request;
use concord_net::protocol::Response;

use super::{Inner, now_ms};

/// Refusals that will not change on retry: the message is dropped and the sender told. The
/// others (`retry`, `storage_full`, `unavailable` …) keep it in the outbox, sent again with
/// its nonce.
fn is_permanent(code: &str) -> bool {
    !concord_proto::api::is_retryable(code)
}

pub async fn run(inner: Arc<Inner>) {
    loop {
        let wake = inner.outbox_wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        if inner.is_relay_connected() {
            drain(&inner).await;
        }
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = inner.relay_changed.notified() => {}
            _ = inner.shutdown.cancelled() => return,
        }
    }
}

async fn drain(inner: &Arc<Inner>) {
    let Some(relay) = inner.relay().and_then(|r| r.peer()) else {
        return;
    };
    let due = match inner.cache().outbox_due(now_ms(), 64) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "reading the outbox failed");
            return;
        }
    };
    for item in due {
        let nonce = item.envelope.nonce.clone();
        match inner
            .rpc(
                relay,
                Request::Submit {
                    envelope: item.envelope,
                },
            )
            .await
        {
            Ok(Response::Ack { message }) => {
                let _ = inner.cache().outbox_ack(&nonce);
                notify(inner, &nonce, Ok(message));
            }
            Ok(Response::Refused { code, message }) if is_permanent(&code) => {
                tracing::warn!(%code, %message, "the relay refused a message; dropping it from the outbox");
                let _ = inner.cache().outbox_ack(&nonce);
                notify(inner, &nonce, Err(format!("{code}: {message}")));
            }
            other => {
                tracing::debug!(?other, "submit failed; will retry");
                let _ = inner.cache().outbox_retry_later(&nonce, now_ms());
                // The relay is probably gone: stop this round, retry later in order.
                return;
            }
        }
    }
}

fn notify(inner: &Inner, nonce: &str, result: Result<concord_proto::model::Message, String>) {
    if let Some(waiters) = inner
        .ack_waiters
        .lock()
        .expect("waiters lock")
        .remove(nonce)
    {
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}
