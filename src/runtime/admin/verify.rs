//! `POST /api/verify`: the log adapter's full integrity check, on demand. It reads the whole
//! log and index, so it is a mutation-class request: it needs the bearer token, and runs on
//! the blocking pool, one at a time.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::auth::authorize;
use super::error::ApiError;
use super::shared::Shared;

/// Problems listed at most; the answer says how many there are in all.
const PROBLEMS_LISTED_MAX: usize = 100;

/// `POST /api/verify`.
pub(crate) async fn verify(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(shared.token.as_ref(), &headers)?;
    let Some(log) = shared.log.clone() else {
        return Err(ApiError::NotFound(
            "verify checks the log adapter's files; this console has none".into(),
        ));
    };
    let _one_at_a_time = shared.verifying.lock().await;
    let report = tokio::task::spawn_blocking(move || log.verify())
        .await
        .map_err(|e| ApiError::Internal(format!("verify failed: {e}")))??;
    let problems: Vec<String> = report
        .problems
        .iter()
        .take(PROBLEMS_LISTED_MAX)
        .map(ToString::to_string)
        .collect();
    Ok(Json(json!({
        "clean": report.is_clean(),
        "segments": report.segments,
        "frames": report.frames,
        "events": report.events,
        "aggregates": report.aggregates,
        "lastPosition": report.last_position,
        "problemCount": report.problems.len(),
        "problems": problems,
    })))
}
