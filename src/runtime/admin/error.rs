//! How a console request fails: a status and the JSON body `{"error": kind, "message": text}`
//! that the HTTP actions use too.

use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::model::Error;
use crate::runtime::action::http::shortened;
use crate::storage::{LimitError, StorageError};

/// Why a console request failed; each variant is one status.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// 400: a parameter, a page token or an id in the path is malformed or over a limit.
    BadRequest(String),
    /// 401: a mutation without the right bearer token.
    Unauthorized(&'static str),
    /// 403: a mutation while the console has no token configured.
    Forbidden(&'static str),
    /// 404: the store, aggregate or dead letter does not exist.
    NotFound(String),
    /// 503: too many live tails are open; retry later.
    Unavailable(String),
    /// 500: storage failed; the text is logged, not sent.
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &str) {
        match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error (see the application's log)",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(reason) = &self {
            tracing::error!(%reason, "console request failed");
        }
        let (status, kind, message) = self.parts();
        let body = serde_json::json!({ "error": kind, "message": message });
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Limits and page tokens come from the request (400); everything else is the server's (500).
impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Limit(limit) => ApiError::from(limit),
            StorageError::InvalidPageToken { reason } => {
                ApiError::BadRequest(format!("invalid page token: {reason}"))
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// An id over a limit is named shortened: it may be huge.
impl From<LimitError> for ApiError {
    fn from(e: LimitError) -> Self {
        let message = match &e {
            LimitError::InvalidAggregateId {
                aggregate_id,
                reason,
            } => format!("invalid aggregate id {}: {reason}", shortened(aggregate_id)),
            LimitError::InvalidEventStoreId {
                event_store_id,
                reason,
            } => format!(
                "invalid event store id {}: {reason}",
                shortened(event_store_id)
            ),
            other => other.to_string(),
        };
        ApiError::BadRequest(message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Storage(storage) => ApiError::from(storage),
            other => ApiError::Internal(other.to_string()),
        }
    }
}
