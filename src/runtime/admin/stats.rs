//! `/api/stats`: figures about the store that are cheap to read at any time: the head
//! position, and on the log adapter its writer's running totals and its files' sizes.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::error::ApiError;
use super::shared::Shared;
use crate::storage::{LogAdapter, Position, Timestamp};

/// The figures of one reading.
#[derive(Clone, Debug, Default)]
pub(crate) struct Figures {
    pub(crate) head: Position,
    /// Present on the log adapter only.
    pub(crate) log: Option<LogFigures>,
}

/// The log adapter's figures.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogFigures {
    pub(crate) commits: u64,
    pub(crate) events: u64,
    pub(crate) syncs: u64,
    pub(crate) sync_time: std::time::Duration,
    pub(crate) sync_time_max: std::time::Duration,
    pub(crate) bytes_written: u64,
    pub(crate) segment_rolls: u64,
    pub(crate) checkpoint_lag: u64,
    pub(crate) segments: u64,
    pub(crate) segment_bytes: u64,
    pub(crate) index_bytes: u64,
    pub(crate) snapshot_bytes: u64,
    pub(crate) snapshots: u64,
}

/// Reads the figures (file sizes on the blocking pool).
pub(crate) async fn figures(shared: &Shared) -> Result<Figures, ApiError> {
    let head = shared.head();
    let log = match shared.log.clone() {
        Some(log) => Some(
            tokio::task::spawn_blocking(move || log_figures(&log))
                .await
                .map_err(|e| ApiError::Internal(format!("reading the log's figures: {e}")))??,
        ),
        None => None,
    };
    Ok(Figures { head, log })
}

fn log_figures(log: &LogAdapter) -> Result<LogFigures, ApiError> {
    let counters = log.counters();
    let stats = log.stats();
    let index = log.index_stats()?;
    let snapshots = log.snapshot_stats()?;
    Ok(LogFigures {
        commits: counters.commits,
        events: counters.events,
        syncs: counters.syncs,
        sync_time: counters.sync_time,
        sync_time_max: counters.sync_time_max,
        bytes_written: counters.bytes_written,
        segment_rolls: counters.segment_rolls,
        checkpoint_lag: counters.checkpoint_lag,
        segments: stats.segments as u64,
        segment_bytes: stats.segment_bytes,
        index_bytes: index.file_bytes,
        snapshot_bytes: snapshots.file_bytes,
        snapshots: snapshots.records,
    })
}

/// `GET /api/stats`.
pub(crate) async fn stats(State(shared): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let figures = figures(&shared).await?;
    let log = figures.log.map(|l| {
        json!({
            "commits": l.commits,
            "events": l.events,
            "syncs": l.syncs,
            "syncSecondsSum": l.sync_time.as_secs_f64(),
            "syncSecondsMax": l.sync_time_max.as_secs_f64(),
            "bytesWritten": l.bytes_written,
            "segmentRolls": l.segment_rolls,
            "checkpointLag": l.checkpoint_lag,
            "segments": l.segments,
            "segmentBytes": l.segment_bytes,
            "indexBytes": l.index_bytes,
            "snapshotBytes": l.snapshot_bytes,
            "snapshots": l.snapshots,
        })
    });
    Ok(Json(json!({
        "head": figures.head,
        "now": Timestamp::now(),
        "log": log,
    })))
}
