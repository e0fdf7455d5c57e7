//! How an HTTP action fails, and the status and JSON body that answer each failure.

use std::fmt;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::model::Error;
use crate::runtime::action::error::ActionError;
use crate::storage::{LimitError, StorageError};

/// Input that is well-formed but breaks a rule: answered with 422 and the field's name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    /// The offending field (a JSON path such as `trainer` or `moves[2]`).
    pub field: String,
    /// The rule it breaks.
    pub reason: String,
}

impl ValidationError {
    /// `field` breaks the rule `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Why an HTTP action failed, and so which status answers it (see the
/// [module docs](super)).
#[derive(Debug)]
#[non_exhaustive]
pub enum HttpError {
    /// 400: the request is malformed.
    BadRequest(String),
    /// 404: what the request names does not exist.
    NotFound(String),
    /// 409: the request lost a race, or conflicts with the current state.
    Conflict(String),
    /// 413: the body is over the limit.
    PayloadTooLarge(String),
    /// 415: the body is not declared as JSON.
    UnsupportedMediaType(String),
    /// 422: the input breaks a rule.
    Invalid(ValidationError),
    /// 503: the service cannot take the request now (overloaded, stopping); retry later.
    Unavailable(String),
    /// 500: anything else; the text is logged, not sent.
    Internal(String),
}

impl HttpError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::Conflict(_) => StatusCode::CONFLICT,
            HttpError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            HttpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            HttpError::BadRequest(_) => "bad_request",
            HttpError::NotFound(_) => "not_found",
            HttpError::Conflict(_) => "conflict",
            HttpError::PayloadTooLarge(_) => "payload_too_large",
            HttpError::UnsupportedMediaType(_) => "unsupported_media_type",
            HttpError::Invalid(_) => "invalid",
            HttpError::Unavailable(_) => "unavailable",
            HttpError::Internal(_) => "internal",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::BadRequest(m)
            | HttpError::NotFound(m)
            | HttpError::Conflict(m)
            | HttpError::PayloadTooLarge(m)
            | HttpError::UnsupportedMediaType(m)
            | HttpError::Unavailable(m)
            | HttpError::Internal(m) => write!(f, "{}: {m}", self.kind()),
            HttpError::Invalid(e) => write!(f, "invalid: {e}"),
        }
    }
}

impl From<ValidationError> for HttpError {
    fn from(e: ValidationError) -> Self {
        HttpError::Invalid(e)
    }
}

/// Version conflicts are 409, missing aggregates 404, ids and sizes over the storage limits
/// 400 (they come from the request), everything else 500.
impl From<Error> for HttpError {
    fn from(e: Error) -> Self {
        match e {
            Error::EventAlreadyExists(conflict) => HttpError::Conflict(conflict.to_string()),
            Error::Storage(StorageError::EventAlreadyExists(conflict)) => {
                HttpError::Conflict(conflict.to_string())
            }
            Error::Storage(StorageError::Limit(limit)) => HttpError::from(limit),
            e @ Error::AggregateNotFound { .. } => HttpError::NotFound(e.to_string()),
            other => HttpError::Internal(other.to_string()),
        }
    }
}

/// An id, size or count over the storage [limits](crate::storage::Limits) is 400: it came
/// from the request. The message shortens the offending id, which may be huge.
impl From<LimitError> for HttpError {
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
            LimitError::InvalidEventType { event_type, reason } => {
                format!("invalid event type {}: {reason}", shortened(event_type))
            }
            LimitError::EventTooLarge {
                aggregate_id,
                version,
                bytes,
                limit,
            } => format!(
                "event {} v{version} is {bytes} bytes; the limit is {limit}",
                shortened(aggregate_id)
            ),
            other => other.to_string(),
        };
        HttpError::BadRequest(message)
    }
}

/// `text` quoted, cut after 64 characters.
pub(crate) fn shortened(text: &str) -> String {
    const SHOWN: usize = 64;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], text.len()),
        None => format!("{text:?}"),
    }
}

/// Version conflicts are 409, limits 400, everything else 500.
impl From<StorageError> for HttpError {
    fn from(e: StorageError) -> Self {
        HttpError::from(Error::from(e))
    }
}

/// A failed action is a 500.
impl From<ActionError> for HttpError {
    fn from(e: ActionError) -> Self {
        HttpError::Internal(e.reason().to_owned())
    }
}

#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub(crate) error: &'static str,
    pub(crate) message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) field: Option<&'a str>,
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (message, field) = match &self {
            HttpError::Internal(detail) => {
                tracing::error!(%detail, "HTTP action failed");
                ("internal error", None)
            }
            HttpError::Invalid(e) => (e.reason.as_str(), Some(e.field.as_str())),
            HttpError::BadRequest(m)
            | HttpError::NotFound(m)
            | HttpError::Conflict(m)
            | HttpError::PayloadTooLarge(m)
            | HttpError::UnsupportedMediaType(m)
            | HttpError::Unavailable(m) => (m.as_str(), None),
        };
        let body = ErrorBody {
            error: self.kind(),
            message,
            field,
        };
        (status, axum::Json(body)).into_response()
    }
}
