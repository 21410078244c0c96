//! Requests from nodes. The peer's device key comes from the Noise handshake (its PeerId); the
//! device's certificate, registered over HTTP at join, maps it to an account. Every request
//! re-checks that the device is not revoked and its account not suspended. Requests: hello,
//! submit, sync and peers.

use std::sync::Arc;

use concord_net::identity::device_key;
use concord_net::protocol::{MAX_PEERS, PeerInfo, Request, Response};
use concord_proto::api::SendMessage;
use concord_proto::signed::SignedEvent;
use concord_proto::{Id, Permissions, limits};
use libp2p::PeerId;

use super::{PeerMeta, Shared};
use crate::api::error::ApiError;
use crate::app::App;
use crate::auth::Caller;
use crate::domain::access::AccessError;
use crate::hub::Session;
use crate::messaging;

fn refused(e: ApiError) -> Response {
    Response::refused(&e.code(), e.to_string())
}

/// The caller behind a peer: a registered, unrevoked device of an account that is not
/// suspended (`domain::access`, checked on every request: node requests carry no token).
async fn caller(app: &App, peer: &PeerId) -> Result<Caller, Response> {
    let Some(key) = device_key(peer) else {
        return Err(Response::refused(
            "unknown_device",
            "only ed25519 device identities can talk to a relay",
        ));
    };
    match crate::domain::access::live_device(app.store.as_ref(), &key).await {
        // Node requests have no HTTP session; Id(0) never matches a revocable session.
        Ok(device) => Ok(Caller {
            user_id: device.account_id,
            session_id: Id(0),
            device_key: key,
        }),
        Err(AccessError::UnknownDevice) => Err(Response::refused(
            "unknown_device",
            "register this device over HTTP (concord join) first",
        )),
        Err(AccessError::Store(e)) => Err(refused(e.into())),
        Err(e) => Err(Response::refused(
            e.code().unwrap_or("refused"),
            e.to_string(),
        )),
    }
}

pub async fn handle(app: &Arc<App>, p2p: &Shared, peer: PeerId, request: Request) -> Response {
    let kind = match &request {
        Request::Hello { .. } => "hello",
        Request::Submit { .. } => "submit",
        Request::Sync { .. } => "sync",
        Request::Peers { .. } => "peers",
        Request::Push { .. } => "push",
        Request::Direct { .. } => "direct",
        Request::VoiceOffer { .. } => "voice_offer",
        Request::VoiceBye { .. } => "voice_bye",
    };
    let response = answer(app, p2p, peer, request).await;
    let outcome = if matches!(response, Response::Refused { .. }) {
        "refused"
    } else {
        "ok"
    };
    metrics::counter!("concord_p2p_requests_total", "type" => kind, "outcome" => outcome)
        .increment(1);
    response
}

async fn answer(app: &Arc<App>, p2p: &Shared, peer: PeerId, request: Request) -> Response {
    let caller = match caller(app, &peer).await {
        Ok(c) => c,
        Err(response) => return response,
    };
    let result = match request {
        Request::Hello { allow_direct } => hello(app, p2p, peer, &caller, allow_direct).await,
        Request::Submit { envelope } => {
            if envelope.device_key != caller.device_key {
                return Response::refused(
                    "wrong_device",
                    "the envelope is signed for another device",
                );
            }
            if let Err(e) = envelope.verify() {
                crate::metrics::auth_failure("bad_envelope");
                return Response::refused("bad_envelope", e.to_string());
            }
            let body = SendMessage {
                content: envelope.content,
                nonce: envelope.nonce,
                reply_to: envelope.reply_to,
            };
            messaging::send(app, &caller, envelope.channel_id, body)
                .await
                .map(|sent| Response::Ack {
                    message: sent.message,
                })
        }
        Request::Sync {
            channel_id,
            after_seq,
            limit,
        } => sync(app, p2p, &caller, channel_id, after_seq, limit).await,
        Request::Peers { guild_id } => peers(app, p2p, &caller, guild_id, peer).await,
        Request::Push { .. }
        | Request::Direct { .. }
        | Request::VoiceOffer { .. }
        | Request::VoiceBye { .. } => {
            return Response::refused("unsupported", "relays accept hello, submit, sync and peers");
        }
    };
    result.unwrap_or_else(refused)
}

/// Registers the node for pushes (replacing an earlier registration of the same peer) and
/// answers with the user's state.
async fn hello(
    app: &Arc<App>,
    p2p: &Shared,
    peer: PeerId,
    caller: &Caller,
    allow_direct: bool,
) -> Result<Response, ApiError> {
    let account = app
        .store
        .account(caller.user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let guilds = app.store.guilds_of(caller.user_id).await?;
    let session = Session::new(
        format!("node-{}", crate::auth::tokens::random_token(12)),
        caller.user_id,
        Id(0),
        app.config.gateway.resume_buffer,
        app.config.p2p.max_pending_events,
    );
    let addrs = p2p
        .observed
        .lock()
        .expect("observed lock")
        .remove(&peer)
        .unwrap_or_default();
    let meta = PeerMeta {
        user_id: caller.user_id,
        device_key: caller.device_key.clone(),
        allow_direct,
        session_id: session.id.clone(),
        addrs,
    };
    if let Some(old) = p2p.peers.lock().expect("peers lock").insert(peer, meta)
        && let Some(old_session) = app.hub.session(&old.session_id)
    {
        old_session.close(crate::hub::CloseReason::GoingAway);
        app.hub.unregister(&old.session_id);
    }
    metrics::gauge!("concord_p2p_nodes").set(p2p.connected_nodes() as f64);
    // Known as a peer before anyone hears it came online (members ask for addresses then);
    // registered before the state is built, so events in between wait in its session.
    if app
        .hub
        .register(session.clone(), guilds.iter().map(|g| g.id))
    {
        app.hub.announce_presence(
            caller.user_id,
            concord_proto::gateway::PresenceStatus::Online,
        );
    }
    let mut views = Vec::with_capacity(guilds.len());
    for guild in &guilds {
        if let Some(snapshot) = app.perms.snapshot(guild.id).await? {
            views.push(crate::api::guilds::guild_view(app, &snapshot, caller.user_id).await?);
        }
    }
    let dms = app.store.dm_channels(caller.user_id).await?;
    tokio::spawn(super::pusher::run(
        app.clone(),
        p2p.clone(),
        peer,
        session,
        Session::FIRST_EPOCH,
    ));
    Ok(Response::State {
        user: concord_proto::model::User {
            id: account.id,
            username: account.username,
        },
        guilds: views,
        dms,
    })
}

async fn sync(
    app: &App,
    p2p: &Shared,
    caller: &Caller,
    channel_id: Id,
    after_seq: i64,
    limit: u32,
) -> Result<Response, ApiError> {
    if after_seq < 0 {
        return Err(limits::invalid("after_seq", "must be 0 or more").into());
    }
    let limit = limits::page_limit(Some(limit))?;
    app.perms
        .require_channel(channel_id, caller.user_id, Permissions::READ_HISTORY)
        .await?;
    let events = app.store.events(channel_id, after_seq, limit).await?;
    let signed = events
        .iter()
        .map(|e| SignedEvent::sign(&p2p.key, e.kind.as_str(), &e.data.to_string()))
        .collect();
    Ok(Response::Events { events: signed })
}

/// Addresses of members of a guild the caller belongs to, who are online here and allow
/// direct connections. Bounded, and never the caller's own devices' addresses to strangers.
async fn peers(
    app: &App,
    p2p: &Shared,
    caller: &Caller,
    guild_id: Id,
    me: PeerId,
) -> Result<Response, ApiError> {
    app.perms
        .require_guild(guild_id, caller.user_id, Permissions::NONE)
        .await?;
    let candidates: Vec<(PeerId, PeerMeta)> = p2p
        .peers
        .lock()
        .expect("peers lock")
        .iter()
        .filter(|(peer, meta)| **peer != me && meta.allow_direct)
        .map(|(p, m)| (*p, m.clone()))
        .collect();
    let mut out = Vec::new();
    for (peer, meta) in candidates {
        if out.len() == MAX_PEERS {
            break;
        }
        if app
            .perms
            .member_roles(guild_id, meta.user_id)
            .await?
            .is_some()
        {
            out.push(PeerInfo {
                user_id: meta.user_id,
                device_key: meta.device_key,
                peer_id: peer.to_string(),
                addrs: meta.addrs.iter().map(|a| a.to_string()).collect(),
            });
        }
    }
    Ok(Response::Peers { peers: out })
}
