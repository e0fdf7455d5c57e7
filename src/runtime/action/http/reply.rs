//! What a successful HTTP action answers.

use axum::http::StatusCode;

/// A successful reply: a status (200 or 201) and a body serialized as JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply<T> {
    /// The status code.
    pub status: StatusCode,
    /// The body.
    pub body: T,
}

impl<T> Reply<T> {
    /// `200 OK` with `body`.
    pub fn ok(body: T) -> Self {
        Reply {
            status: StatusCode::OK,
            body,
        }
    }

    /// `201 Created` with `body`.
    pub fn created(body: T) -> Self {
        Reply {
            status: StatusCode::CREATED,
            body,
        }
    }
}
