//! The one place API errors become HTTP responses: JSON `{"code","message"}` with the status
//! that fits.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use concord_proto::api::ErrorBody;

pub use crate::domain::error::{DomainError as ApiError, DomainResult as ApiResult};

/// `Retry-After` of a 507: the free-space check runs every second, but an operator needs
/// longer than that to make room.
pub const STORAGE_FULL_RETRY_SECS: u64 = 10;

impl ApiError {
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
            super::ratelimit::set_headers(response.headers_mut(), decision);
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
