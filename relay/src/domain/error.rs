//! The error every domain operation returns, whatever the transport: a stable `code` and a
//! message, grouped by kind (unauthorised, forbidden, not found, invalid, conflict, too
//! many, unavailable, …). Transports translate it: `api/error.rs` to an HTTP status and
//! `{"code","message"}`, `p2p/` to `refused{code}`, the gateway to an error frame or close
//! code. Nothing here knows HTTP.

use concord_proto::limits::Invalid;
use concord_proto::ratelimit::Decision;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
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

pub type DomainResult<T> = Result<T, DomainError>;

impl DomainError {
    pub fn missing_access() -> DomainError {
        DomainError::Forbidden("missing_access", "you cannot see this resource")
    }

    pub fn missing_permissions() -> DomainError {
        DomainError::Forbidden(
            "missing_permissions",
            "you lack the permission for this action",
        )
    }

    pub fn code(&self) -> String {
        match self {
            DomainError::Unauthorized(code, _)
            | DomainError::Forbidden(code, _)
            | DomainError::BadRequest(code, _)
            | DomainError::Conflict(code, _)
            | DomainError::Gone(code, _) => (*code).to_owned(),
            DomainError::NotFound(what) => format!("unknown_{what}"),
            DomainError::Invalid(_) => "validation_failed".into(),
            DomainError::PayloadTooLarge(_) => "payload_too_large".into(),
            DomainError::UnsupportedMediaType => "unsupported_media_type".into(),
            DomainError::RateLimited(_) => "rate_limited".into(),
            DomainError::SlowMode(_) => "slowmode".into(),
            DomainError::Unavailable(_) => "unavailable".into(),
            DomainError::Retry => "retry".into(),
            DomainError::StorageFull => "storage_full".into(),
            DomainError::Internal(_) => "internal".into(),
        }
    }
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> DomainError {
        match e {
            StoreError::NotFound => DomainError::NotFound("resource"),
            StoreError::Conflict(code) => {
                DomainError::Conflict(code, "conflicts with existing data")
            }
            StoreError::Unavailable => {
                DomainError::Unavailable("the database is unavailable; retry shortly")
            }
            StoreError::StorageFull => DomainError::StorageFull,
            StoreError::OutcomeUnknown => DomainError::Retry,
            other => DomainError::Internal(other.to_string()),
        }
    }
}

impl From<crate::domain::access::AccessError> for DomainError {
    fn from(e: crate::domain::access::AccessError) -> DomainError {
        use crate::domain::access::AccessError;
        match e {
            AccessError::UnknownDevice => {
                DomainError::Unauthorized("unknown_device", "this device is not registered here")
            }
            AccessError::DeviceRevoked => {
                DomainError::Unauthorized("device_revoked", "this device was revoked")
            }
            AccessError::AccountSuspended => DomainError::Forbidden(
                "account_suspended",
                "this account is suspended by the relay's admins",
            ),
            AccessError::Store(e) => e.into(),
        }
    }
}
