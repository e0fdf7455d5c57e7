//! Entities over HTTP: `POST /<entity>/<id>/<command>` with the command's fields as a JSON body.
//!
//! The command is rebuilt from the path and the body as serde's externally tagged form of the
//! entity's command enum, `{"<command>": <body>}` (an empty body is `null`, for unit variants),
//! so `Command` only needs `Deserialize`. The answer, once the events are durable, is
//! `200 {"version": …, "events": [<event detail>…]}`; failures use the same JSON error shape
//! and statuses as [`action::http`](crate::action::http):
//!
//! | status | when |
//! |---|---|
//! | 400 | the body is not JSON, or not the command's fields |
//! | 404 | no command of that name |
//! | 409 | the entity rejected the command, or other writers kept winning the version |
//! | 413 | the body is over the limit |
//! | 503 | the entity's mailbox is full, or its instance stopped before answering |
//! | 500 | the store failed |

use std::fmt;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::de::DeserializeOwned;

use super::{Entities, Entity, EntityError};
use crate::action::http::HttpError;

/// The router serving `POST /{name}/{id}/{command}` for `entities`, refusing bodies over
/// `body_limit` bytes. Merge it into the application's router.
///
/// `name` must be a plain path segment (ASCII letters, digits, `-`, `_`); anything else is
/// refused with `None`.
pub fn router<T>(name: &str, entities: Entities<T>, body_limit: usize) -> Option<Router>
where
    T: Entity,
    T::Command: DeserializeOwned,
    T::Rejection: fmt::Debug,
{
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !plain {
        return None;
    }
    let handler = move |Path((id, command)): Path<(String, String)>,
                        body: Result<Bytes, BytesRejection>| {
        let entities = entities.clone();
        async move { send(&entities, id, &command, body).await }
    };
    Some(
        Router::new()
            .route(&format!("/{name}/{{id}}/{{command}}"), post(handler))
            .layer(DefaultBodyLimit::max(body_limit)),
    )
}

async fn send<T>(
    entities: &Entities<T>,
    id: String,
    command_name: &str,
    body: Result<Bytes, BytesRejection>,
) -> Response
where
    T: Entity,
    T::Command: DeserializeOwned,
{
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return HttpError::PayloadTooLarge(rejection.body_text()).into_response();
        }
        Err(rejection) => return HttpError::BadRequest(rejection.body_text()).into_response(),
    };
    let fields: serde_json::Value = if body.is_empty() {
        serde_json::Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(fields) => fields,
            Err(e) => {
                return HttpError::BadRequest(format!("the body is not JSON: {e}")).into_response();
            }
        }
    };
    let tagged = serde_json::json!({ command_name: fields });
    let command: T::Command = match serde_json::from_value(tagged) {
        Ok(command) => command,
        Err(e) if e.to_string().starts_with("unknown variant") => {
            return HttpError::NotFound(format!("no command {command_name:?}")).into_response();
        }
        Err(e) => {
            return HttpError::BadRequest(format!("not the fields of {command_name}: {e}"))
                .into_response();
        }
    };
    match entities.get(id).send(command).await {
        Ok(reply) => match serde_json::to_value(&reply.events) {
            Ok(events) => {
                let body = serde_json::json!({ "version": reply.version, "events": events });
                (StatusCode::OK, axum::Json(body)).into_response()
            }
            Err(e) => HttpError::Internal(format!("cannot render the events: {e}")).into_response(),
        },
        Err(EntityError::Rejected(rejection)) => {
            HttpError::Conflict(format!("rejected: {rejection:?}")).into_response()
        }
        Err(e @ EntityError::Contended { .. }) => {
            HttpError::Conflict(e.to_string()).into_response()
        }
        Err(e @ (EntityError::Overloaded { .. } | EntityError::Stopped { .. })) => {
            let body = serde_json::json!({ "error": "unavailable", "message": e.to_string() });
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        }
        Err(e) => HttpError::Internal(e.to_string()).into_response(),
    }
}
