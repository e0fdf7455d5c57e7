//! [`TimedAdapter`]: a storage adapter that times its commits, for the console's commit-latency
//! histogram.
//!
//! The engine times only its syncs, not whole commits, so the histogram is measured where the
//! application hands its commits to the adapter: wrap the adapter the stores use, and register
//! the wrapper with [`Console::commit_latency`](super::Console::commit_latency). Each commit
//! costs two clock readings and three atomic additions; what is timed is what a push waits for
//! (the adapter's group commit and its sync, or the database's commit), from the call to the
//! acknowledgement. Every other method is passed through unchanged, the adapter's own
//! optimisations (visiting events in place, indexed store summaries, snapshots) included.

use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;

use crate::storage::{
    AggregateIdEntry, AggregateIdsQuery, AppendEvent, CompactionReport, DeleteMode, EventRef,
    EventStoreSummary, GetEventsOptions, Limits, LoggedEvent, Position, Retention, SnapshotStorage,
    StorageAdapter, StorageError, StoredEvent,
};

/// The histogram's upper bounds, in seconds: from a fast group commit to a stalled disk.
const BOUNDS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// Commit latencies, counted per bucket: safe to read while commits are recorded.
#[derive(Debug, Default)]
pub(crate) struct CommitLatency {
    /// Commits at or below each bound (not cumulative; summed when rendered).
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    failed: AtomicU64,
    sum_nanos: AtomicU64,
}

impl CommitLatency {
    fn record(&self, seconds: f64, nanos: u64) {
        if let Some(i) = BOUNDS.iter().position(|bound| seconds <= *bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The histogram in Prometheus text format, as `annals_commit_seconds`, and the failed
    /// commits as `annals_commit_failures_total`.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP annals_commit_seconds Time from handing a commit to the adapter to its \
             acknowledgement\n# TYPE annals_commit_seconds histogram"
        );
        let mut cumulative = 0;
        for (bound, bucket) in BOUNDS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "annals_commit_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "annals_commit_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "annals_commit_seconds_sum {sum}");
        let _ = writeln!(out, "annals_commit_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP annals_commit_failures_total Commits the adapter refused or failed\n\
             # TYPE annals_commit_failures_total counter\n\
             annals_commit_failures_total {}",
            self.failed.load(Ordering::Relaxed)
        );
        out
    }
}

/// A storage adapter that times the commits of the adapter it wraps, for the console's
/// commit-latency histogram ([`Console::commit_latency`](super::Console::commit_latency)):
/// each commit costs two clock readings and three atomic additions, every other method is
/// passed through unchanged.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use annals::admin::{Console, TimedAdapter};
/// use annals::storage::{InMemoryAdapter, StorageAdapter};
///
/// let timed = Arc::new(TimedAdapter::new(Arc::new(InMemoryAdapter::new())));
/// // The stores push through `timed`; the console reads its histogram.
/// let adapter: Arc<dyn StorageAdapter> = timed.clone();
/// let router = Console::new(adapter).commit_latency(&timed).router()?;
/// # drop(router);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct TimedAdapter {
    inner: Arc<dyn StorageAdapter>,
    latency: Arc<CommitLatency>,
}

impl std::fmt::Debug for TimedAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimedAdapter")
            .field("commits", &self.latency.count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl TimedAdapter {
    /// Times the commits of `inner`.
    pub fn new(inner: Arc<dyn StorageAdapter>) -> Self {
        TimedAdapter {
            inner,
            latency: Arc::default(),
        }
    }

    /// The adapter it wraps.
    pub fn inner(&self) -> &Arc<dyn StorageAdapter> {
        &self.inner
    }

    pub(crate) fn latency(&self) -> Arc<CommitLatency> {
        self.latency.clone()
    }
}

#[async_trait]
impl StorageAdapter for TimedAdapter {
    fn limits(&self) -> &Limits {
        self.inner.limits()
    }

    async fn read_events(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        options: &GetEventsOptions,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        self.inner
            .read_events(event_store_id, aggregate_id, options)
            .await
    }

    async fn append(&self, events: Vec<AppendEvent>) -> Result<Vec<Position>, StorageError> {
        let started = Instant::now();
        let appended = self.inner.append(events).await;
        let elapsed = started.elapsed();
        match &appended {
            Ok(_) => self.latency.record(
                elapsed.as_secs_f64(),
                u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            ),
            Err(_) => {
                self.latency.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        appended
    }

    async fn scan_aggregate_ids(
        &self,
        event_store_id: &str,
        query: &AggregateIdsQuery,
    ) -> Result<Vec<AggregateIdEntry>, StorageError> {
        self.inner.scan_aggregate_ids(event_store_id, query).await
    }

    async fn read_log(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StorageError> {
        self.inner.read_log(from, limit).await
    }

    fn watch_log(&self) -> tokio::sync::watch::Receiver<Position> {
        self.inner.watch_log()
    }

    fn snapshots(&self) -> Option<&dyn SnapshotStorage> {
        self.inner.snapshots()
    }

    #[cfg(feature = "personal")]
    fn keys(&self) -> Option<&crate::storage::Keys> {
        self.inner.keys()
    }

    async fn event_store_summaries(&self) -> Result<Vec<EventStoreSummary>, StorageError> {
        self.inner.event_store_summaries().await
    }

    async fn visit_events(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        options: &GetEventsOptions,
        visit: &mut (dyn for<'e> FnMut(EventRef<'e>) -> ControlFlow<()> + Send),
    ) -> Result<(), StorageError> {
        self.inner
            .visit_events(event_store_id, aggregate_id, options, visit)
            .await
    }

    async fn delete_aggregate(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        mode: DeleteMode,
    ) -> Result<Position, StorageError> {
        self.inner
            .delete_aggregate(event_store_id, aggregate_id, mode)
            .await
    }

    async fn restore_aggregate(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
    ) -> Result<Position, StorageError> {
        self.inner
            .restore_aggregate(event_store_id, aggregate_id)
            .await
    }

    async fn truncate_before(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        version: u64,
    ) -> Result<Position, StorageError> {
        self.inner
            .truncate_before(event_store_id, aggregate_id, version)
            .await
    }

    async fn set_retention(
        &self,
        event_store_id: &str,
        retention: Retention,
    ) -> Result<Position, StorageError> {
        self.inner.set_retention(event_store_id, retention).await
    }

    async fn retention(&self, event_store_id: &str) -> Result<Retention, StorageError> {
        self.inner.retention(event_store_id).await
    }

    async fn compact(&self) -> Result<CompactionReport, StorageError> {
        self.inner.compact().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_and_counts_every_commit() {
        let latency = CommitLatency::default();
        latency.record(0.000_1, 100_000);
        latency.record(0.003, 3_000_000);
        latency.record(10.0, 10_000_000_000);
        let text = latency.render();
        assert!(
            text.contains("annals_commit_seconds_bucket{le=\"0.00025\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("annals_commit_seconds_bucket{le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("annals_commit_seconds_bucket{le=\"5\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("annals_commit_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("annals_commit_seconds_count 3\n"), "{text}");
        assert!(
            text.contains("annals_commit_seconds_sum 10.0031\n"),
            "{text}"
        );
    }
}
