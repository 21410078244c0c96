//! The one place API errors become HTTP responses: JSON `{"code","message"}` with the status
//! that fits.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use concord_proto::api::ErrorBody;
use concord_proto::limits::Invalid;
use concord_proto::ratelimit::Decision;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no credentials, or credentials that do not verify.
    #[error("{1}")]
    Unauthorized(&'static str, &'static str),
    /// 403: authenticated, but not allowed (`missing_access`, `missing_permissions`, …).
    #[error("{1}")]
    Forbidden(&'static str, &'static str),
    /// 404 `unknown_<what>`.
    #[error("unknown {0}")]
    NotFound(&'static str),
    /// 400 `validation_failed`.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// 400 with a specific code (`bad_json`, `invalid_id`, …).
    #[error("{1}")]
    BadRequest(&'static str, String),
    /// 409.
    #[error("{1}")]
    Conflict(&'static str, &'static str),
    /// 410: the thing existed but cannot be used any more (expired invites …).
    #[error("{1}")]
    Gone(&'static str, &'static str),
    /// 413.
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 415.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// 429.
    #[error("rate limited")]
    RateLimited(Decision),
    /// 429 `slowmode`: the channel's slow mode; retry after this many milliseconds.
    #[error("slow mode is on in this channel; wait {}s", (.0 + 999) / 1000)]
    SlowMode(i64),
    /// 503 while shutting down or when a dependency is down.
    #[error("{0}")]
    Unavailable(&'static str),
    /// 503 `retry`: the write's outcome is unknown (the database connection was lost during
    /// its commit); retrying it with the same nonce returns the stored message or stores it
    /// once.
    #[error("the outcome of this write is unknown; retry it with the same nonce")]
    Retry,
    /// 507 `storage_full`: the server's disk is full or under its free-space floor; nothing
    /// was written. Reads go on; retry after `Retry-After`.
    #[error("the server's storage is full; retry later")]
    StorageFull,
    /// 500; the detail is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

/// `Retry-After` of a 507: the free-space check runs every second, but an operator needs
/// longer than that to make room.
pub const STORAGE_FULL_RETRY_SECS: u64 = 10;

impl ApiError {
    pub fn missing_access() -> ApiError {
        ApiError::Forbidden("missing_access", "you cannot see this resource")
    }

    pub fn missing_permissions() -> ApiError {
        ApiError::Forbidden(
            "missing_permissions",
            "you lack the permission for this action",
        )
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(..) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(..) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Invalid(_) | ApiError::BadRequest(..) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(..) => StatusCode::CONFLICT,
            ApiError::Gone(..) => StatusCode::GONE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited(_) | ApiError::SlowMode(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Retry => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> String {
        match self {
            ApiError::Unauthorized(code, _)
            | ApiError::Forbidden(code, _)
            | ApiError::BadRequest(code, _)
            | ApiError::Conflict(code, _)
            | ApiError::Gone(code, _) => (*code).to_owned(),
            ApiError::NotFound(what) => format!("unknown_{what}"),
            ApiError::Invalid(_) => "validation_failed".into(),
            ApiError::PayloadTooLarge(_) => "payload_too_large".into(),
            ApiError::UnsupportedMediaType => "unsupported_media_type".into(),
            ApiError::RateLimited(_) => "rate_limited".into(),
            ApiError::SlowMode(_) => "slowmode".into(),
            ApiError::Unavailable(_) => "unavailable".into(),
            ApiError::Retry => "retry".into(),
            ApiError::StorageFull => "storage_full".into(),
            ApiError::Internal(_) => "internal".into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => ApiError::NotFound("resource"),
            StoreError::Conflict(code) => ApiError::Conflict(code, "conflicts with existing data"),
            StoreError::Unavailable => {
                ApiError::Unavailable("the database is unavailable; retry shortly")
            }
            StoreError::StorageFull => ApiError::StorageFull,
            StoreError::OutcomeUnknown => ApiError::Retry,
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::domain::access::AccessError> for ApiError {
    fn from(e: crate::domain::access::AccessError) -> ApiError {
        use crate::domain::access::AccessError;
        match e {
            AccessError::UnknownDevice => {
                ApiError::Unauthorized("unknown_device", "this device is not registered here")
            }
            AccessError::DeviceRevoked => {
                ApiError::Unauthorized("device_revoked", "this device was revoked")
            }
            AccessError::AccountSuspended => ApiError::Forbidden(
                "account_suspended",
                "this account is suspended by the relay's admins",
            ),
            AccessError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let status = self.status();
        let body = ErrorBody {
            code: self.code(),
            message: self.to_string(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let ApiError::RateLimited(decision) = &self {
            crate::ratelimit::set_headers(response.headers_mut(), decision);
            let retry = HeaderValue::from(decision.reset_secs());
            response.headers_mut().insert(header::RETRY_AFTER, retry);
        }
        let retry_after = match &self {
            ApiError::StorageFull => Some(STORAGE_FULL_RETRY_SECS),
            ApiError::Retry | ApiError::Unavailable(_) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let ApiError::SlowMode(ms) = &self {
            let retry = HeaderValue::from(((ms + 999) / 1000).max(1));
            response.headers_mut().insert(header::RETRY_AFTER, retry);
        }
        response
    }
}
