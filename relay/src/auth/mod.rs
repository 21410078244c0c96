//! Who is calling: access tokens (JWT), refresh tokens, the revocation set, and the extractor
//! that every authenticated route uses (`Caller`).

pub mod revocation;
pub mod tokens;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use concord_proto::Id;

use crate::app::App;
use crate::domain::error::DomainError;

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Id,
    pub session_id: Id,
    pub device_key: String,
}

/// Why a token was refused (a metric label and a log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    BadSignature,
    Expired,
    Revoked,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::Expired => "expired",
            AuthFailure::Revoked => "revoked",
        }
    }

    pub fn into_api_error(self) -> DomainError {
        crate::metrics::auth_failure(self.as_str());
        match self {
            AuthFailure::Missing => {
                DomainError::Unauthorized("unauthorized", "missing Authorization: Bearer token")
            }
            AuthFailure::Expired => DomainError::Unauthorized(
                "token_expired",
                "the access token has expired; refresh it",
            ),
            AuthFailure::Revoked => DomainError::Unauthorized(
                "session_revoked",
                "the session was revoked; log in again",
            ),
            AuthFailure::Malformed | AuthFailure::BadSignature => {
                DomainError::Unauthorized("invalid_token", "the access token is not valid")
            }
        }
    }
}

impl App {
    /// Verifies an access token and checks the revocation set.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, AuthFailure> {
        let claims = self.tokens.verify_access(token)?;
        if self.revoked.contains(claims.session_id) {
            return Err(AuthFailure::Revoked);
        }
        Ok(claims)
    }
}

pub fn bearer(parts: &Parts) -> Option<&str> {
    bearer_token(&parts.headers)
}

/// The access token of an `Authorization: Bearer <token>` header; any other scheme (`Basic`,
/// `Token`, …) is no access token.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = DomainError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Caller, DomainError> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let token = bearer(parts)
            .ok_or(AuthFailure::Missing)
            .map_err(AuthFailure::into_api_error)?;
        let caller = app
            .authenticate(token)
            .await
            .map_err(AuthFailure::into_api_error)?;
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}
