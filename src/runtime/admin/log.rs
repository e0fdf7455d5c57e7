//! `/api/log`: the global log, a page of events by position, every store mixed, in commit
//! order.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::params;
use super::render::{Decoded, event_json, logged_ref, mark_forgotten};
use super::shared::Shared;

/// Events per page when the request does not say, and at most.
const EVENTS_DEFAULT: usize = 100;
const EVENTS_MAX: usize = 1_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct LogQuery {
    /// The first position shown; absent: the newest page.
    from: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/log?from=&limit=`: up to `limit` events from position `from` (the newest page
/// when `from` is absent), with the position of the next page.
pub(crate) async fn page(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = params::query(query)?;
    let limit = params::limit(query.limit, EVENTS_DEFAULT, EVENTS_MAX)?;
    let head = shared.head();
    let from = match query.from {
        Some(from) => from.max(1),
        None => head.saturating_sub(limit as u64 - 1).max(1),
    };
    let events = shared.adapter.read_log(from, limit).await?;
    let shown: Vec<Value> = events
        .iter()
        .map(|logged| {
            let event = logged_ref(logged);
            let decoded = shared
                .stores
                .get(&logged.event_store_id)
                .map_or(Decoded::Untyped, |t| t.decode(&event));
            let mut shown = event_json(&logged.event_store_id, &event, decoded);
            mark_forgotten(&mut shown, shared.adapter.as_ref());
            shown
        })
        .collect();
    let next = events.last().map_or(from, |e| e.position + 1);
    Ok(Json(json!({
        "head": head,
        "from": from,
        "events": shown,
        "next": next,
        "previous": (from > 1).then(|| from.saturating_sub(limit as u64).max(1)),
    })))
}
