//! `/api/dead-letters`: the events actions gave up on, and the two things an operator does
//! with one: ask the running action to retry it, or drop it. Both need the bearer token.
//!
//! A retry is a durable request ([`dead_letter::request_retry`]): the action's runner, which
//! alone has the action's code, retries the letter within its retry-requests interval, and
//! removes it on success.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::auth::authorize;
use super::error::ApiError;
use super::params;
use super::shared::Shared;
use crate::runtime::action::dead_letter;
use crate::storage::Position;

/// Dead letters listed at most; the answer says how many there are in all.
const LISTED_MAX: usize = 1_000;

/// `GET /api/dead-letters`: every action's dead letters, by action then position.
pub(crate) async fn list(State(shared): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let letters = shared.with_state(dead_letter::list_all).await?;
    let Some(letters) = letters else {
        return Ok(Json(
            json!({ "stateStore": false, "total": 0, "deadLetters": [] }),
        ));
    };
    let total = letters.len();
    let shown: Vec<Value> = letters
        .into_iter()
        .take(LISTED_MAX)
        .map(|l| {
            json!({
                "action": l.action,
                "position": l.position,
                "eventStoreId": l.event_store_id,
                "aggregateId": l.aggregate_id,
                "version": l.version,
                "type": l.event_type,
                "error": l.error,
                "attempts": l.attempts,
                "failedAt": l.failed_at,
                "retryRequestedAt": l.retry_requested_at,
            })
        })
        .collect();
    Ok(Json(
        json!({ "stateStore": true, "total": total, "deadLetters": shown }),
    ))
}

/// `POST /api/dead-letters/{action}/{position}/retry`: marks the letter for retry.
pub(crate) async fn retry(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    key: Result<Path<(String, Position)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(shared.token.as_ref(), &headers)?;
    let (action, position) = params::path(key)?;
    let name = action.clone();
    let marked = shared
        .with_state(move |state| dead_letter::request_retry(state, &name, position))
        .await?;
    answer(marked, &action, position, "retryRequested")
}

/// `DELETE /api/dead-letters/{action}/{position}`: drops the letter (the action will not
/// handle that event).
pub(crate) async fn drop_letter(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    key: Result<Path<(String, Position)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(shared.token.as_ref(), &headers)?;
    let (action, position) = params::path(key)?;
    let name = action.clone();
    let removed = shared
        .with_state(move |state| dead_letter::remove(state, &name, position))
        .await?;
    answer(removed, &action, position, "dropped")
}

fn answer(
    done: Option<bool>,
    action: &str,
    position: Position,
    what: &str,
) -> Result<Json<Value>, ApiError> {
    match done {
        None => Err(ApiError::NotFound("the console has no state store".into())),
        Some(false) => Err(ApiError::NotFound(format!(
            "action {} has no dead letter at position {position}",
            crate::runtime::action::http::shortened(action)
        ))),
        Some(true) => {
            let mut body = json!({ "action": action, "position": position });
            body[what] = json!(true);
            Ok(Json(body))
        }
    }
}
