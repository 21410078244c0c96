//! Extractors that turn malformed input into `ApiError`s: JSON bodies are size-checked,
//! parsed and validated; path and query parameters are parsed with clear messages. Malformed
//! JSON, queries and path ids become 400, oversized bodies 413, a wrong content type 415.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use concord_proto::api::Validate;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body that parsed and passed `Validate`.
pub struct Valid<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Validate> FromRequest<S> for Valid<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state)
            .await
            .map_err(json_rejection)?;
        value.validate()?;
        Ok(Valid(value))
    }
}

/// An optional JSON body: none at all (no content type, as an empty POST sends) is `None`;
/// a body that is there must parse and validate.
impl<S: Send + Sync, T: DeserializeOwned + Validate> axum::extract::OptionalFromRequest<S>
    for Valid<T>
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        if !req.headers().contains_key(axum::http::header::CONTENT_TYPE) {
            return Ok(None);
        }
        <Valid<T> as FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        JsonRejection::BytesRejection(b)
            if b.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
        {
            ApiError::PayloadTooLarge(concord_proto::limits::MAX_BODY_BYTES)
        }
        JsonRejection::JsonDataError(e) => ApiError::BadRequest("bad_json", e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest("bad_json", e.body_text()),
        other => ApiError::BadRequest("bad_request", other.body_text()),
    }
}

/// Query parameters that parsed and passed `Validate`.
pub struct ValidQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Validate> FromRequestParts<S> for ValidQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state)
                .await
                .map_err(|e: QueryRejection| ApiError::BadRequest("bad_query", e.body_text()))?;
        value.validate()?;
        Ok(ValidQuery(value))
    }
}

/// Path parameters; a malformed id is a 400 `invalid_id`.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| PathParams(v))
            .map_err(|e: PathRejection| ApiError::BadRequest("invalid_id", e.body_text()))
    }
}
