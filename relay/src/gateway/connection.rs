//! One gateway connection, from the first frame to the close code.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use concord_proto::gateway::{
    self, ClientFrame, HEARTBEAT_ACK, IDENTIFY_TIMEOUT_MS, Ready, Resumed, close,
};
use concord_proto::model::User;
use tokio::time::{Instant, timeout};
use tracing::Instrument;

use crate::app::App;
use crate::auth::{AuthFailure, Caller};
use crate::hub::{CloseReason, Queued, Resume, Session};
use crate::messaging;

static OPEN: AtomicUsize = AtomicUsize::new(0);

pub fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}

/// A slow socket write longer than this closes the connection as too slow.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the 4008 close frame may wait behind what the slow client has not read yet.
const CLOSE_TIMEOUT_SLOW: Duration = Duration::from_secs(15);

struct Counted;

impl Counted {
    fn new() -> Counted {
        let n = OPEN.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("concord_gateway_connections").set(n as f64);
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let n = OPEN.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!("concord_gateway_connections").set(n as f64);
    }
}

enum End {
    /// The server closes with this code.
    Close(u16, &'static str),
    /// The client went away (close frame or dropped TCP).
    ClientGone { clean: bool },
    /// A resume on another connection took the session over.
    Replaced,
}

fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

async fn send_text(socket: &mut WebSocket, text: String) -> Result<(), End> {
    match timeout(WRITE_TIMEOUT, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::ClientGone { clean: false }),
        Err(_) => Err(End::Close(close::TOO_SLOW, "write timed out")),
    }
}

async fn send_events(socket: &mut WebSocket, events: Vec<Queued>) -> Result<(), End> {
    for q in events {
        send_text(socket, gateway::event_frame(q.t, q.s, &q.d)).await?;
    }
    Ok(())
}

pub async fn run(app: Arc<App>, mut socket: WebSocket, ip: IpAddr) {
    let _counted = Counted::new();
    let span = tracing::info_span!(
        "gateway",
        session = tracing::field::Empty,
        user = tracing::field::Empty
    );
    async move {
        let end = match start(&app, &mut socket).await {
            Ok((session, epoch)) => {
                let span = tracing::Span::current();
                span.record("session", session.id.as_str());
                span.record("user", session.user_id.0);
                tracing::debug!(%ip, "gateway session started");
                let end = serve(&app, &mut socket, &session, epoch).await;
                finish(&app, &session, epoch, &end);
                end
            }
            Err(end) => end,
        };
        let end = match end {
            End::Replaced => End::Close(
                close::INVALID_SESSION,
                "session resumed on another connection",
            ),
            other => other,
        };
        if let End::Close(code, reason) = end {
            metrics::counter!("concord_gateway_closes_total", "code" => code.to_string())
                .increment(1);
            // A client that fell behind (4008) has megabytes queued before the close frame
            // (tungstenite's buffer and both sockets'): give it time to read them, so it learns
            // it was too slow instead of seeing a bare end of stream. Others get a second.
            let wait = if code == close::TOO_SLOW {
                CLOSE_TIMEOUT_SLOW
            } else {
                Duration::from_secs(1)
            };
            let sent = timeout(wait, socket.send(close_message(code, reason))).await;
            // Then wait briefly for the client's close frame: closing a socket with unread
            // input resets it, and a reset throws away what is still queued for the client.
            if matches!(sent, Ok(Ok(()))) {
                let _ = timeout(Duration::from_secs(1), async {
                    while let Some(Ok(m)) = socket.recv().await {
                        if matches!(m, Message::Close(_)) {
                            break;
                        }
                    }
                })
                .await;
            }
        } else {
            metrics::counter!("concord_gateway_closes_total", "code" => "client").increment(1);
        }
    }
    .instrument(span)
    .await;
}

async fn next_text(socket: &mut WebSocket) -> Result<Vec<u8>, End> {
    loop {
        match socket.recv().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_bytes().to_vec()),
            Some(Ok(Message::Binary(_))) => {
                return Err(End::Close(close::DECODE_ERROR, "frames are JSON text"));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) => return Err(End::ClientGone { clean: true }),
            Some(Err(e)) => {
                // A frame over the size limit is the client's fault, not the network's.
                let inner = e.into_inner();
                if matches!(
                    inner.downcast_ref::<tungstenite::Error>(),
                    Some(tungstenite::Error::Capacity(_))
                ) {
                    return Err(End::Close(close::DECODE_ERROR, "frame too large"));
                }
                return Err(End::ClientGone { clean: false });
            }
            None => return Err(End::ClientGone { clean: false }),
        }
    }
}

fn auth_error(failure: AuthFailure) -> End {
    crate::metrics::auth_failure(failure.as_str());
    match failure {
        AuthFailure::Revoked => End::Close(close::SESSION_REVOKED, "session revoked"),
        _ => End::Close(close::AUTH_FAILED, "authentication failed"),
    }
}

/// Waits for identify or resume and answers with ready or resumed.
async fn start(app: &Arc<App>, socket: &mut WebSocket) -> Result<(Arc<Session>, u64), End> {
    let first = timeout(
        Duration::from_millis(IDENTIFY_TIMEOUT_MS),
        next_text(socket),
    )
    .await
    .map_err(|_| End::Close(close::AUTH_FAILED, "identify within 10 seconds"))??;
    let frame = ClientFrame::parse(&first)
        .map_err(|_| End::Close(close::DECODE_ERROR, "malformed frame"))?;
    match frame {
        ClientFrame::Identify(identify) => {
            let caller = app
                .authenticate(&identify.token)
                .await
                .map_err(auth_error)?;
            identify_session(app, socket, caller).await
        }
        ClientFrame::Resume(resume) => {
            let caller = app.authenticate(&resume.token).await.map_err(auth_error)?;
            let invalid = End::Close(
                close::INVALID_SESSION,
                "session cannot be resumed; identify again",
            );
            let session = app.hub.session(&resume.session_id).ok_or(invalid)?;
            if session.user_id != caller.user_id {
                return Err(End::Close(
                    close::INVALID_SESSION,
                    "session cannot be resumed; identify again",
                ));
            }
            match session.resume(resume.seq) {
                Some((epoch, Resume::Replay(events))) => {
                    // From now on the session stands for the token that resumed it; a
                    // revocation that raced this is caught by the check after.
                    session.rebind(caller.session_id);
                    if app.revoked.contains(caller.session_id) {
                        session.detach(epoch);
                        return Err(End::Close(close::SESSION_REVOKED, "session revoked"));
                    }
                    let replayed = events.len() as u64;
                    if let Err(end) = replay(socket, events, replayed).await {
                        session.detach(epoch);
                        return Err(end);
                    }
                    Ok((session, epoch))
                }
                _ => Err(End::Close(
                    close::INVALID_SESSION,
                    "session cannot be resumed; identify again",
                )),
            }
        }
        _ => Err(End::Close(
            close::AUTH_FAILED,
            "the first frame must be identify or resume",
        )),
    }
}

async fn replay(socket: &mut WebSocket, events: Vec<Queued>, replayed: u64) -> Result<(), End> {
    send_events(socket, events).await?;
    send_text(socket, gateway::resumed_frame(&Resumed { replayed })).await
}

async fn identify_session(
    app: &Arc<App>,
    socket: &mut WebSocket,
    caller: Caller,
) -> Result<(Arc<Session>, u64), End> {
    let internal = |_| End::Close(close::GOING_AWAY, "internal error; reconnect");
    let account = app
        .store
        .account(caller.user_id)
        .await
        .map_err(|e| internal(e.to_string()))?;
    let Some(account) = account else {
        return Err(End::Close(close::AUTH_FAILED, "unknown account"));
    };
    let guilds = app
        .store
        .guilds_of(caller.user_id)
        .await
        .map_err(|e| internal(e.to_string()))?;
    let config = &app.config.gateway;
    let session = Session::new(
        crate::auth::tokens::random_token(16),
        caller.user_id,
        caller.session_id,
        config.resume_buffer,
        config.max_pending_events,
    );
    // Register before building ready, so no event between the two is lost: it waits in
    // the session's buffer and follows ready.
    let came_online = app
        .hub
        .register(session.clone(), guilds.iter().map(|g| g.id));
    metrics::gauge!("concord_gateway_sessions").set(app.hub.session_count() as f64);
    let ready = match ready_payload(app, &session, &caller, account, &guilds).await {
        Ok(ready) => ready,
        Err(end) => {
            app.hub.unregister(&session.id);
            return Err(end);
        }
    };
    // From here the instance owes this session every later event of these channels: the
    // store catch-up (while Redis is down) starts from these seqs at the latest.
    for c in ready
        .guilds
        .iter()
        .flat_map(|g| &g.channels)
        .chain(&ready.dms)
    {
        if c.kind != concord_proto::model::ChannelKind::Voice {
            app.hub.delivered.catch_up_from(c.id, c.last_seq);
        }
    }
    if let Err(end) = send_text(socket, gateway::ready_frame(&ready)).await {
        app.hub.unregister(&session.id);
        return Err(end);
    }
    if came_online {
        app.hub
            .announce_presence(caller.user_id, gateway::PresenceStatus::Online);
    }
    Ok((session, Session::FIRST_EPOCH))
}

async fn ready_payload(
    app: &Arc<App>,
    session: &Session,
    caller: &Caller,
    account: crate::store::AccountRecord,
    guilds: &[concord_proto::model::Guild],
) -> Result<Ready, End> {
    let mut views = Vec::with_capacity(guilds.len());
    for guild in guilds {
        if let Ok(Some(snapshot)) = app.perms.snapshot(guild.id).await
            && let Ok(view) = crate::api::guilds::guild_view(app, &snapshot, caller.user_id).await
        {
            views.push(view);
        }
    }
    let dms = app
        .store
        .dm_channels(caller.user_id)
        .await
        .map_err(|_| End::Close(close::GOING_AWAY, "internal error; reconnect"))?;
    Ok(Ready {
        session_id: session.id.clone(),
        user: User {
            id: account.id,
            username: account.username,
        },
        guilds: views,
        dms,
        presences: app.hub.co_member_presences(caller.user_id),
        heartbeat_interval_ms: app.config.gateway.heartbeat_interval_ms,
    })
}

/// The main loop: client frames, queued events, heartbeat deadline, shutdown.
async fn serve(app: &Arc<App>, socket: &mut WebSocket, session: &Arc<Session>, epoch: u64) -> End {
    let config = &app.config.gateway;
    // Clients heartbeat every interval; allow one and a half before giving up.
    let heartbeat_grace = Duration::from_millis(config.heartbeat_interval_ms * 3 / 2);
    let mut deadline = Instant::now() + heartbeat_grace;
    let rule = crate::ratelimit::rule(app.config.rate_limits.gateway);
    let limiter_key = format!("gateway:{}", session.id);
    let caller = Caller {
        user_id: session.user_id,
        session_id: session.auth_session(),
        device_key: String::new(),
    };
    loop {
        // Registered before the checks below, so a push between them still wakes us.
        let notified = session.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(reason) = session.close_reason() {
            return End::Close(reason.code(), reason.text());
        }
        // Flush what is already queued before waiting.
        let Some(pending) = session.take_unsent(epoch) else {
            return End::Replaced;
        };
        if !pending.is_empty() {
            if let Err(end) = send_events(socket, pending).await {
                return end;
            }
            continue;
        }
        tokio::select! {
            _ = notified => {}
            _ = app.shutdown.cancelled() => return End::Close(close::GOING_AWAY, CloseReason::GoingAway.text()),
            _ = tokio::time::sleep_until(deadline) => return End::Close(close::GOING_AWAY, "no heartbeat; reconnect"),
            text = next_text(socket) => {
                let text = match text {
                    Ok(t) => t,
                    Err(end) => return end,
                };
                if !app.limiter.check(&limiter_key, rule).await.allowed {
                    crate::metrics::rate_limited("gateway");
                    return End::Close(close::RATE_LIMITED, "too many frames");
                }
                let frame = match ClientFrame::parse(&text) {
                    Ok(f) => f,
                    Err(_) => return End::Close(close::DECODE_ERROR, "malformed frame"),
                };
                match frame {
                    ClientFrame::Heartbeat => {
                        deadline = Instant::now() + heartbeat_grace;
                        if let Err(end) = send_text(socket, HEARTBEAT_ACK.to_owned()).await {
                            return end;
                        }
                    }
                    ClientFrame::Typing(t) => {
                        // A refused typing notice is not worth a disconnect.
                        if let Err(e) = messaging::typing(app, &caller, t.channel_id).await {
                            tracing::debug!(error = %e, "typing refused");
                        }
                    }
                    ClientFrame::Presence(p) => app.hub.announce_presence(session.user_id, p.status),
                    ClientFrame::Identify(_) | ClientFrame::Resume(_) => {
                        return End::Close(close::DECODE_ERROR, "already identified");
                    }
                }
            }
        }
    }
}

/// After the socket ends: a clean client close or a fatal reason ends the session; a dropped
/// connection leaves it resumable for the resume window.
fn finish(app: &App, session: &Arc<Session>, epoch: u64, end: &End) {
    let resumable = matches!(end, End::ClientGone { clean: false })
        || matches!(end, End::Close(code, _) if *code == close::GOING_AWAY && !app.shutdown.is_cancelled());
    if matches!(end, End::Replaced) {
        // Another connection owns the session now.
    } else if resumable {
        session.detach(epoch);
    } else {
        app.hub.unregister(&session.id);
    }
    metrics::gauge!("concord_gateway_sessions").set(app.hub.session_count() as f64);
}
