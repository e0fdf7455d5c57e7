//! `/api/queues` and `/api/entities`: the registered queues with their depth and dead
//! letters, and the registered entity kinds with their live instances and pending timers.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::error::ApiError;
use super::parts::queue_json;
use super::shared::Shared;

/// Pending timers listed per entity kind at most; the answer says how many there are.
const TIMERS_LISTED_MAX: usize = 500;

/// `GET /api/queues`.
pub(crate) async fn queues(State(shared): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let queues: Vec<_> = shared.queues.values().cloned().collect();
    let shown = tokio::task::spawn_blocking(move || queues.iter().map(queue_json).collect())
        .await
        .map_err(|e| ApiError::Internal(format!("reading the queues failed: {e}")))?;
    Ok(Json(json!({ "queues": Value::Array(shown) })))
}

/// `GET /api/entities`.
pub(crate) async fn entities(State(shared): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let mut kinds = Vec::new();
    for (name, probe) in &shared.entities {
        let mut kind = json!({
            "name": name,
            "eventStoreId": probe.event_store_id(),
            "liveInstances": probe.live_instances(),
            "mailboxDepth": probe.mailbox_depth(),
        });
        match probe.pending_timers().await {
            Ok(timers) => {
                kind["pendingTimers"] = json!(timers.len());
                let shown: Vec<Value> = timers.into_iter().take(TIMERS_LISTED_MAX).collect();
                kind["timers"] = Value::Array(shown);
            }
            Err(e) => kind["timersError"] = json!(e),
        }
        kinds.push(kind);
    }
    Ok(Json(json!({ "entities": kinds })))
}
