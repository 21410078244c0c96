//! The node's relationship with its relay: joining (HTTP), keeping the libp2p connection up,
//! saying hello (which registers the node for pushes and returns the state), and catching up
//! every channel by seq.

use std::sync::Arc;
use std::time::Duration;

use concord_net::Request;
use concord_net::protocol::Response;
use concord_proto::Id;
use concord_proto::gateway::ReadyGuild;
use concord_proto::model::EventKind;
use libp2p::Multiaddr;
use serde_json::json;

use super::{Inner, LocalEvent, RELAY_SETTING, RelayInfo};
use crate::cache::Applied;
use crate::relay_http::RelayHttp;

/// `concord join`: discovery, login (registering on first join), invite, then connect.
pub async fn join(
    inner: &Arc<Inner>,
    relay_url: &str,
    invite: &str,
    username: Option<&str>,
) -> Result<ReadyGuild, String> {
    let http = Arc::new(RelayHttp::new(relay_url));
    let known = http.well_known().await.map_err(|e| e.to_string())?;
    let (Some(peer_id), Some(key)) = (known.relay_peer_id.clone(), known.relay_key.clone()) else {
        return Err("this relay does not run its libp2p side (p2p.enabled = false)".into());
    };
    match http.login(&inner.identity, username).await {
        Ok(_) => {}
        Err(e) if e.code() == Some("username_required") => {
            return Err("username_required: this account is new here; pass --username NAME".into());
        }
        Err(e) => return Err(e.to_string()),
    }
    let code = invite.rsplit('/').next().unwrap_or(invite);
    let guild: ReadyGuild = http
        .authed(
            &inner.identity,
            reqwest::Method::POST,
            &format!("/api/v1/invites/{code}/accept"),
            Some(json!({})),
        )
        .await
        .map_err(|e| e.to_string())?;
    let info = RelayInfo {
        url: http.url.clone(),
        peer_id,
        key,
        addrs: known.multiaddrs,
        bootstrap: known.bootstrap_peers,
    };
    let changed = inner.relay().as_ref() != Some(&info);
    inner
        .cache()
        .set_setting(
            RELAY_SETTING,
            &serde_json::to_string(&info).expect("relay info serialises"),
        )
        .map_err(|e| e.to_string())?;
    inner
        .cache()
        .upsert_guild(&guild)
        .map_err(|e| e.to_string())?;
    if !inner.config.relay_only {
        let servers = info
            .bootstrap
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        let _ = inner
            .commands
            .send(super::swarm::Command::Bootstrap(servers))
            .await;
    }
    *inner.relay.write().expect("relay lock") = Some(info);
    *inner.http.write().expect("http lock") = Some(http);
    inner.emit(LocalEvent::StateChanged);
    if changed || !inner.is_relay_connected() {
        inner.relay_changed.notify_waiters();
    } else {
        // Already connected: say hello again so the relay pushes the new guild's events.
        tokio::spawn(on_connected(inner.clone()));
    }
    Ok(guild)
}

/// Keeps a connection to the relay: dials its addresses with backoff while disconnected.
pub async fn supervise(inner: Arc<Inner>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let wake = inner.relay_changed.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        if inner.shutdown.is_cancelled() {
            return;
        }
        if let Some(relay) = inner.relay()
            && !inner.is_relay_connected()
        {
            for addr in &relay.addrs {
                if let Ok(addr) = addr.parse::<Multiaddr>() {
                    let _ = inner.commands.send(super::swarm::Command::Dial(addr)).await;
                }
            }
            tokio::select! {
                _ = &mut wake => {}
                _ = tokio::time::sleep(backoff) => {}
                _ = inner.shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
            continue;
        }
        backoff = Duration::from_millis(250);
        tokio::select! {
            _ = wake => {}
            _ = inner.shutdown.cancelled() => return,
        }
    }
}

/// Hello, state, subscriptions, catch-up, then the outbox.
pub async fn on_connected(inner: Arc<Inner>) {
    let Some(relay) = inner.relay().and_then(|r| r.peer()) else {
        return;
    };
    match inner
        .rpc(
            relay,
            Request::Hello {
                allow_direct: inner.allow_direct(),
            },
        )
        .await
    {
        Ok(Response::State { user, guilds, dms }) => {
            if let Err(e) = inner.cache().replace_state(&user, &guilds, &dms) {
                tracing::warn!(error = %e, "could not store the relay's state");
                return;
            }
            inner.emit(LocalEvent::StateChanged);
            let channels: Vec<_> = guilds
                .iter()
                .flat_map(|g| g.channels.iter())
                .chain(dms.iter())
                .cloned()
                .collect();
            for channel in &channels {
                super::apply::follow_channel(&inner, channel);
            }
            inner
                .relay_ready
                .store(true, std::sync::atomic::Ordering::Relaxed);
            inner.outbox_wake.notify_one();
            tokio::spawn(super::directory::refresh(
                inner.clone(),
                guilds.iter().map(|g| g.guild.id).collect(),
            ));
            for channel in channels {
                if channel.last_seq > inner.cache().cursor(channel.id).unwrap_or(0) {
                    catch_up(inner.clone(), channel.id).await;
                }
            }
        }
        Ok(Response::Refused { code, message }) => {
            tracing::warn!(%code, %message, "the relay refused hello")
        }
        Ok(other) => tracing::warn!(?other, "unexpected answer to hello"),
        Err(e) => tracing::debug!(error = %e, "hello failed"),
    }
}

/// Fetches and applies a channel's events after its cursor, page by page, until caught up.
/// One catch-up per channel at a time; a gap found meanwhile is covered by the running one.
pub async fn catch_up(inner: Arc<Inner>, channel_id: Id) {
    if !inner
        .catching_up
        .lock()
        .expect("catch-up lock")
        .insert(channel_id)
    {
        return;
    }
    let result = catch_up_pages(&inner, channel_id).await;
    inner
        .catching_up
        .lock()
        .expect("catch-up lock")
        .remove(&channel_id);
    if let Err(e) = result {
        tracing::debug!(error = %e, %channel_id, "catch-up stopped");
    }
}

async fn catch_up_pages(inner: &Arc<Inner>, channel_id: Id) -> Result<(), String> {
    let relay = inner.relay().ok_or("no relay")?;
    let peer = relay.peer().ok_or("bad relay peer id")?;
    let key = relay.verifying_key().ok_or("bad relay key")?;
    const PAGE: u32 = 100;
    loop {
        let after = inner
            .cache()
            .cursor(channel_id)
            .map_err(|e| e.to_string())?;
        let events = match inner
            .rpc(
                peer,
                Request::Sync {
                    channel_id,
                    after_seq: after,
                    limit: PAGE,
                },
            )
            .await?
        {
            Response::Events { events } => events,
            Response::Refused { code, message } => return Err(format!("{code}: {message}")),
            other => return Err(format!("unexpected answer to sync: {other:?}")),
        };
        let count = events.len();
        let mut verified = Vec::with_capacity(count);
        for e in &events {
            e.verify(&key)
                .map_err(|err| format!("bad relay signature in sync: {err}"))?;
            let kind =
                EventKind::parse(&e.t).ok_or_else(|| format!("unknown event kind {}", e.t))?;
            let data: serde_json::Value =
                serde_json::from_str(&e.d).map_err(|err| err.to_string())?;
            verified.push((kind, data));
        }
        let results = inner
            .cache()
            .apply_events(verified.iter().map(|(k, d)| (*k, d)))
            .map_err(|e| e.to_string())?;
        for ((kind, data), result) in verified.iter().zip(results) {
            if result == Applied::Applied {
                super::apply::announce(inner, *kind, data);
            }
        }
        if count < PAGE as usize {
            return Ok(());
        }
    }
}
