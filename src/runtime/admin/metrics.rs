//! `/metrics`: Prometheus text exposition of figures that already exist, read at scrape
//! time.
//!
//! Each scrape records the current figures into a fresh [`PrometheusRecorder`] (through the
//! `metrics` facade, with a local recorder: the application's global recorder, if any, is left
//! alone) and renders it, so a consumer or queue that is gone leaves no stale series. Nothing
//! is added to the engine's write path: the log's totals are its own running counters.
//!
//! - `annals_log_head_position` (gauge): the position of the last committed event;
//! - `annals_store_events`, `annals_store_aggregates` (gauges, label `store`);
//! - `annals_log_commits_total`, `annals_log_events_total`, `annals_log_syncs_total`,
//!   `annals_log_bytes_written_total`, `annals_log_segment_rolls_total` (counters since the
//!   store opened);
//! - `annals_log_sync_seconds_sum`, `annals_log_sync_seconds_max` (gauges: the time spent in
//!   those syncs, and the longest; the sum over `annals_log_syncs_total` is the mean fsync
//!   latency);
//! - `annals_log_unindexed_events`, `annals_log_segments` (gauges);
//! - `annals_disk_bytes` (gauge, label `file`: `segments`, `index`, `snapshots`);
//! - `annals_consumer_lag_events`, `annals_consumer_oldest_unhandled_age_seconds` (gauges,
//!   label `consumer`);
//! - `annals_action_dead_letters` (gauge, label `action`);
//! - `annals_queue_depth`, `annals_queue_in_flight`, `annals_queue_dead_letters` (gauges,
//!   label `queue`);
//! - `annals_entity_live_instances`, `annals_entity_mailbox_depth` (gauges, label `entity`);
//! - `annals_commit_seconds` (histogram) and `annals_commit_failures_total` (counter), when a
//!   [`TimedAdapter`](super::TimedAdapter) is registered: measured where commits are handed to
//!   the adapter, not in the engine.
//!
//! The `annals_log_*` counters and `annals_disk_bytes` exist on the log adapter only; the
//! consumer and dead-letter figures when the console has the state store.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use super::error::ApiError;
use super::lag::lags;
use super::shared::Shared;
use super::stats::figures;
use crate::runtime::action::dead_letter;
use crate::storage::Timestamp;

/// `GET /metrics`.
pub(crate) async fn metrics(
    State(shared): State<Arc<Shared>>,
) -> Result<impl IntoResponse, ApiError> {
    let figures = figures(&shared).await?;
    let stores = shared.summaries().await?;
    let state = shared
        .with_state(|state| {
            let checkpoints = state.checkpoints()?;
            let letters = dead_letter::list_all(state)?;
            Ok::<_, crate::storage::StorageError>((checkpoints, letters))
        })
        .await?;
    let (lags, dead_letters) = match state {
        Some((checkpoints, letters)) => {
            let lags = lags(&*shared.adapter, figures.head, checkpoints).await?;
            let mut by_action: BTreeMap<String, u64> = BTreeMap::new();
            for letter in letters {
                *by_action.entry(letter.action).or_default() += 1;
            }
            (lags, by_action)
        }
        None => Default::default(),
    };
    let queues: Vec<_> = shared.queues.values().cloned().collect();
    let queue_figures = tokio::task::spawn_blocking(move || {
        queues
            .iter()
            .map(|q| {
                let depth = q.len().ok();
                let in_flight = q.in_flight().ok();
                let dead = q.dead_letters().ok().map(|d| d.len() as u64);
                (q.name().to_owned(), depth, in_flight, dead)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError::Internal(format!("reading the queues failed: {e}")))?;
    let entities: Vec<(String, usize, usize)> = shared
        .entities
        .iter()
        .map(|(name, probe)| (name.clone(), probe.live_instances(), probe.mailbox_depth()))
        .collect();

    let recorder: PrometheusRecorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let now = Timestamp::now();
    metrics::with_local_recorder(&recorder, || {
        describe();
        gauge!("annals_log_head_position").set(figures.head as f64);
        for store in &stores {
            let id = store.event_store_id.clone();
            gauge!("annals_store_events", "store" => id.clone()).set(store.events as f64);
            gauge!("annals_store_aggregates", "store" => id).set(store.aggregates as f64);
        }
        if let Some(log) = &figures.log {
            counter!("annals_log_commits_total").absolute(log.commits);
            counter!("annals_log_events_total").absolute(log.events);
            counter!("annals_log_syncs_total").absolute(log.syncs);
            gauge!("annals_log_sync_seconds_sum").set(log.sync_time.as_secs_f64());
            gauge!("annals_log_sync_seconds_max").set(log.sync_time_max.as_secs_f64());
            counter!("annals_log_bytes_written_total").absolute(log.bytes_written);
            counter!("annals_log_segment_rolls_total").absolute(log.segment_rolls);
            gauge!("annals_log_unindexed_events").set(log.checkpoint_lag as f64);
            gauge!("annals_log_segments").set(log.segments as f64);
            gauge!("annals_disk_bytes", "file" => "segments").set(log.segment_bytes as f64);
            gauge!("annals_disk_bytes", "file" => "index").set(log.index_bytes as f64);
            gauge!("annals_disk_bytes", "file" => "snapshots").set(log.snapshot_bytes as f64);
        }
        for lag in &lags {
            let name = lag.name.clone();
            gauge!("annals_consumer_lag_events", "consumer" => name.clone()).set(lag.events as f64);
            gauge!("annals_consumer_oldest_unhandled_age_seconds", "consumer" => name)
                .set(lag.age_ms(now) as f64 / 1000.0);
        }
        for (action, count) in &dead_letters {
            gauge!("annals_action_dead_letters", "action" => action.clone()).set(*count as f64);
        }
        for (queue, depth, in_flight, dead) in &queue_figures {
            if let Some(depth) = depth {
                gauge!("annals_queue_depth", "queue" => queue.clone()).set(*depth as f64);
            }
            if let Some(in_flight) = in_flight {
                gauge!("annals_queue_in_flight", "queue" => queue.clone()).set(*in_flight as f64);
            }
            if let Some(dead) = dead {
                gauge!("annals_queue_dead_letters", "queue" => queue.clone()).set(*dead as f64);
            }
        }
        for (entity, live, queued) in &entities {
            gauge!("annals_entity_live_instances", "entity" => entity.clone()).set(*live as f64);
            gauge!("annals_entity_mailbox_depth", "entity" => entity.clone()).set(*queued as f64);
        }
    });
    let mut text = handle.render();
    if let Some(latency) = &shared.commit_latency {
        text.push_str(&latency.render());
    }
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    ))
}

/// The HELP lines.
fn describe() {
    describe_gauge!(
        "annals_log_head_position",
        "Position of the last committed event"
    );
    describe_gauge!("annals_store_events", "Events of the event store");
    describe_gauge!("annals_store_aggregates", "Aggregates of the event store");
    describe_counter!(
        "annals_log_commits_total",
        "Commits acknowledged since open"
    );
    describe_counter!("annals_log_events_total", "Events committed since open");
    describe_counter!("annals_log_syncs_total", "Data syncs of the log since open");
    describe_gauge!(
        "annals_log_sync_seconds_sum",
        "Time spent in the log's data syncs since open (over annals_log_syncs_total: the mean)"
    );
    describe_gauge!(
        "annals_log_sync_seconds_max",
        "The longest data sync of the log since open"
    );
    describe_counter!(
        "annals_log_bytes_written_total",
        "Bytes of commit frames written since open"
    );
    describe_counter!(
        "annals_log_segment_rolls_total",
        "Moves to a new segment file since open"
    );
    describe_gauge!(
        "annals_log_unindexed_events",
        "Events not yet in the persisted index"
    );
    describe_gauge!("annals_log_segments", "Segment files of the log");
    describe_gauge!("annals_disk_bytes", "Bytes on disk, by file kind");
    describe_gauge!(
        "annals_consumer_lag_events",
        "Events committed after the last one the consumer handled"
    );
    describe_gauge!(
        "annals_consumer_oldest_unhandled_age_seconds",
        "Age of the oldest event the consumer has not handled"
    );
    describe_gauge!("annals_action_dead_letters", "Dead letters of the action");
    describe_gauge!(
        "annals_queue_depth",
        "Messages in the queue, visible or in flight"
    );
    describe_gauge!(
        "annals_queue_in_flight",
        "Messages of the queue received and not yet acknowledged or visible again"
    );
    describe_gauge!("annals_queue_dead_letters", "Dead letters of the queue");
    describe_gauge!(
        "annals_entity_live_instances",
        "Live instances of the entity kind"
    );
    describe_gauge!(
        "annals_entity_mailbox_depth",
        "Commands waiting in the mailboxes of the entity kind's live instances"
    );
}
