//! Login by device key: challenge → signed login → access + refresh tokens; refresh with
//! rotation; logout.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use concord_proto::api::{
    ChallengeRequest, ChallengeResponse, LoginRequest, LoginResponse, RefreshRequest,
};
use concord_proto::model::User;
use concord_proto::signed;

use super::error::{ApiError, ApiResult};
use super::extract::Valid;
use crate::app::{App, now_ms};
use crate::auth::Caller;
use crate::auth::tokens::{hash_refresh, random_token};
use crate::config::Registration;
use crate::domain::access;
use crate::store::{
    AccountRecord, ChallengeRecord, DeviceRecord, RefreshOutcome, SessionRecord, StoreError,
};

/// The public origin the client reached us on, if it is one of ours; else the first.
fn audience_for(app: &App, headers: &HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    app.audiences
        .iter()
        .find(|a| {
            a.split_once("://")
                .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
        })
        .unwrap_or(&app.audiences[0])
        .clone()
}

fn unauthorized(code: &'static str, message: &'static str) -> ApiError {
    crate::metrics::auth_failure(code);
    ApiError::Unauthorized(code, message)
}

#[utoipa::path(post, path = "/api/v1/auth/challenge", tag = "auth",
    request_body = ChallengeRequest,
    responses((status = 200, body = ChallengeResponse), (status = 400, body = concord_proto::api::ErrorBody), (status = 429, body = concord_proto::api::ErrorBody)))]
pub async fn challenge(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Valid(body): Valid<ChallengeRequest>,
) -> ApiResult<Json<ChallengeResponse>> {
    let record = ChallengeRecord {
        challenge: random_token(24),
        device_key: body.device_key,
        audience: audience_for(&app, &headers),
        expires_at: now_ms() + app.config.auth.challenge_ttl_secs as i64 * 1000,
    };
    app.store.put_challenge(&record).await?;
    Ok(Json(ChallengeResponse {
        challenge: record.challenge,
        audience: record.audience,
        expires_at: record.expires_at,
    }))
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 400, body = concord_proto::api::ErrorBody),
        (status = 401, body = concord_proto::api::ErrorBody), (status = 403, body = concord_proto::api::ErrorBody),
        (status = 409, body = concord_proto::api::ErrorBody), (status = 429, body = concord_proto::api::ErrorBody)))]
pub async fn login(
    State(app): State<Arc<App>>,
    client_ip: Option<axum::Extension<super::ratelimit::ClientIp>>,
    Valid(body): Valid<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let now = now_ms();
    let challenge = app
        .store
        .take_challenge(&body.challenge, now)
        .await?
        .ok_or_else(|| unauthorized("invalid_challenge", "unknown, used or expired challenge"))?;
    if challenge.device_key != body.device_key {
        return Err(unauthorized(
            "invalid_challenge",
            "the challenge was issued to another device key",
        ));
    }
    signed::verify_auth(
        &body.device_key,
        &challenge.audience,
        &challenge.challenge,
        &body.signature,
    )
    .map_err(|_| {
        unauthorized(
            "bad_signature",
            "the signature does not verify for this audience and challenge",
        )
    })?;

    let (account, kind) = match app.store.device(&body.device_key).await? {
        Some(device) if device.revoked_at.is_some() => {
            return Err(unauthorized("device_revoked", "this device was revoked"));
        }
        Some(device) => {
            access::account_not_suspended(app.store.as_ref(), device.account_id).await?;
            let account = app
                .store
                .account(device.account_id)
                .await?
                .ok_or(ApiError::Internal("device without account".into()))?;
            (account, "login")
        }
        None => {
            let cert = body.certificate.as_ref().ok_or(ApiError::BadRequest(
                "certificate_required",
                "this device is not known here: send its certificate (and a username for a new account)".into(),
            ))?;
            let device = DeviceRecord {
                device_key: cert.device_key.clone(),
                account_id: concord_proto::Id(0),
                label: cert.label.clone(),
                certificate: serde_json::to_string(cert).expect("certificate serialises"),
                certified_at: cert.created_at,
                added_at: now,
                revoked_at: None,
            };
            match app.store.account_by_key(&cert.account_key).await? {
                Some(account) => {
                    // A suspended account gets no new device either.
                    access::account_not_suspended(app.store.as_ref(), account.id).await?;
                    register_device(
                        &app,
                        DeviceRecord {
                            account_id: account.id,
                            ..device
                        },
                    )
                    .await?;
                    (account, "login")
                }
                None => {
                    match app.config.auth.registration() {
                        Registration::Closed => {
                            return Err(ApiError::Forbidden(
                                "registration_closed",
                                "this relay does not accept new accounts",
                            ));
                        }
                        Registration::InviteOnly if body.invite.is_none() => {
                            return Err(ApiError::Forbidden(
                                "invite_required",
                                "new accounts on this relay need an invite",
                            ));
                        }
                        _ => {}
                    }
                    let username = body.username.clone().ok_or(ApiError::BadRequest(
                        "username_required",
                        "a new account needs a username".into(),
                    ))?;
                    // A bad invite refuses the sign-up before anything is written.
                    let invite_kind = match &body.invite {
                        Some(code) => Some(super::invites::check_usable(&app, code).await?),
                        None => None,
                    };
                    let ip = client_ip.map_or(std::net::IpAddr::from([127, 0, 0, 1]), |c| c.0.0);
                    let decision = app
                        .limiter
                        .check(
                            &format!("signup:{ip}"),
                            crate::ratelimit::rule(app.config.rate_limits.signup),
                        )
                        .await;
                    if !decision.allowed {
                        return Err(ApiError::RateLimited(decision));
                    }
                    let account = AccountRecord {
                        id: app.next_id(),
                        username,
                        account_key: cert.account_key.clone(),
                        created_at: now,
                    };
                    match app
                        .store
                        .create_account(
                            &account,
                            &DeviceRecord {
                                account_id: account.id,
                                ..device
                            },
                        )
                        .await
                    {
                        Err(StoreError::Conflict("username_taken")) => {
                            return Err(ApiError::Conflict(
                                "username_taken",
                                "that username is taken",
                            ));
                        }
                        other => other?,
                    }
                    if let (Some(code), Some(kind)) = (&body.invite, invite_kind) {
                        // Checked above; a race (last use taken meanwhile) leaves the account
                        // without the guild, which the user can join later.
                        let used = match kind {
                            super::invites::SignupInvite::Guild => {
                                super::invites::join_with_invite(&app, code, account.id)
                                    .await
                                    .map(|_| ())
                            }
                            super::invites::SignupInvite::Instance => {
                                super::invites::use_instance_invite(&app, code).await
                            }
                        };
                        if let Err(e) = used {
                            tracing::info!(error = %e, "new account could not use its invite");
                        }
                    }
                    (account, "register")
                }
            }
        }
    };
    let session = SessionRecord {
        id: app.next_id(),
        account_id: account.id,
        device_key: body.device_key.clone(),
        created_at: now,
        revoked_at: None,
    };
    let refresh_token = app.tokens.new_refresh_token();
    app.store
        .create_session(&session, &hash_refresh(&refresh_token))
        .await?;
    metrics::counter!("concord_logins_total", "kind" => kind).increment(1);
    let caller = Caller {
        user_id: account.id,
        session_id: session.id,
        device_key: body.device_key,
    };
    Ok(Json(LoginResponse {
        access_token: app.tokens.issue_access(&caller, now),
        refresh_token,
        expires_in: app.tokens.access_ttl_secs(),
        session_id: session.id,
        user: User {
            id: account.id,
            username: account.username,
        },
    }))
}

pub(crate) async fn register_device(app: &App, device: DeviceRecord) -> ApiResult<()> {
    let live = app
        .store
        .devices(device.account_id)
        .await?
        .iter()
        .filter(|d| d.revoked_at.is_none())
        .count();
    if live >= concord_proto::limits::MAX_DEVICES_PER_ACCOUNT {
        return Err(ApiError::Conflict(
            "too_many_devices",
            "revoke a device before adding another",
        ));
    }
    match app.store.add_device(&device).await {
        Err(StoreError::Conflict(_)) => Err(ApiError::Conflict(
            "device_exists",
            "this device key is already registered",
        )),
        other => Ok(other?),
    }
}

#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = concord_proto::api::ErrorBody), (status = 429, body = concord_proto::api::ErrorBody)))]
pub async fn refresh(
    State(app): State<Arc<App>>,
    Valid(body): Valid<RefreshRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let now = now_ms();
    let successor = app.tokens.successor(&body.refresh_token);
    let grace_ms = app.config.auth.refresh_grace_secs as i64 * 1000;
    let session = match app
        .store
        .rotate_refresh(
            &hash_refresh(&body.refresh_token),
            &hash_refresh(&successor),
            now,
            grace_ms,
            app.config.auth.refresh_idle_days as i64 * 86_400_000,
        )
        .await?
    {
        RefreshOutcome::Rotated(s) | RefreshOutcome::Grace(s) => s,
        RefreshOutcome::Reused(s) => {
            // A stolen token was probably used: the whole family dies.
            app.revoke_sessions(&[s.id]);
            return Err(unauthorized(
                "refresh_reused",
                "this refresh token was already used; the session is revoked",
            ));
        }
        RefreshOutcome::Invalid => {
            return Err(unauthorized(
                "invalid_refresh_token",
                "unknown or revoked refresh token",
            ));
        }
    };
    let account = app
        .store
        .account(session.account_id)
        .await?
        .ok_or(ApiError::Internal("session without account".into()))?;
    let caller = Caller {
        user_id: account.id,
        session_id: session.id,
        device_key: session.device_key,
    };
    Ok(Json(LoginResponse {
        access_token: app.tokens.issue_access(&caller, now),
        refresh_token: successor,
        expires_in: app.tokens.access_ttl_secs(),
        session_id: session.id,
        user: User {
            id: account.id,
            username: account.username,
        },
    }))
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    request_body = RefreshRequest,
    responses((status = 204), (status = 401, body = concord_proto::api::ErrorBody), (status = 429, body = concord_proto::api::ErrorBody)))]
pub async fn logout(
    State(app): State<Arc<App>>,
    Valid(body): Valid<RefreshRequest>,
) -> ApiResult<StatusCode> {
    let session = app
        .store
        .session_by_refresh(&hash_refresh(&body.refresh_token))
        .await?
        .ok_or_else(|| unauthorized("invalid_refresh_token", "unknown refresh token"))?;
    app.store.revoke_session(session.id, now_ms()).await?;
    app.revoke_sessions(&[session.id]);
    Ok(StatusCode::NO_CONTENT)
}
