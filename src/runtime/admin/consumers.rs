//! `/api/consumers`: every consumer with a checkpoint in the state store (actions, views, the
//! application's own), with its lag, and the key-value views with their versions.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::error::ApiError;
use super::lag::{Lag, lags, view_consumer};
use super::shared::Shared;
use crate::runtime::view::{ViewStatus, kv};
use crate::storage::Timestamp;

/// `GET /api/consumers`.
pub(crate) async fn list(State(shared): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let head = shared.head();
    let read = shared
        .with_state(|state| {
            let checkpoints = state.checkpoints().map_err(|e| e.to_string())?;
            let views = kv::statuses(state).map_err(|e| e.to_string())?;
            Ok::<_, String>((checkpoints, views))
        })
        .await;
    let read = read?;
    let Some((checkpoints, views)) = read else {
        return Ok(Json(json!({
            "head": head, "stateStore": false, "consumers": [], "views": [],
        })));
    };
    let lags = lags(&*shared.adapter, head, checkpoints).await?;
    let now = Timestamp::now();
    let by_name: HashMap<&str, &Lag> = lags.iter().map(|l| (l.name.as_str(), l)).collect();
    let consumers: Vec<Value> = lags
        .iter()
        .map(|lag| {
            json!({
                "name": lag.name,
                "kind": if lag.name.starts_with("view:") { "view" } else { "consumer" },
                "checkpoint": lag.checkpoint,
                "lag": lag.events,
                "oldestUnhandled": lag.oldest_unhandled,
                "oldestUnhandledAgeMs": lag.age_ms(now),
            })
        })
        .collect();
    let views: Vec<Value> = views
        .iter()
        .map(|view: &ViewStatus| {
            let lag = by_name.get(view_consumer(view).as_str());
            json!({
                "name": view.name,
                "version": view.version,
                "active": view.active,
                "nextPosition": view.next_position,
                "lag": lag.map(|l| l.events),
                "oldestUnhandledAgeMs": lag.map(|l| l.age_ms(now)),
            })
        })
        .collect();
    Ok(Json(json!({
        "head": head, "stateStore": true, "consumers": consumers, "views": views,
    })))
}
