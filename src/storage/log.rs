//! The log adapter: the embedded, durable default — annals' own segmented log engine.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::engine_bridge::storage_error;
use super::lifecycle::{Lifecycle, LifecycleRecord};
use super::log_compactor::{Compactor, compact_by_rules};
use super::log_lifecycle::{
    LogCursors, LogIndexFacts, fold, last_version, read_log_visible, read_matching, scan_visible,
    visible_options, visible_summary, visit_visible,
};
use super::log_reader::LogReader;
use super::log_snapshots::LogSnapshots;
use super::snapshot_storage::{SnapshotStats, SnapshotStorage};
use super::{
    AggregateIdEntry, AggregateIdsQuery, AppendEvent, AppendEventRef, DeleteMode, EventRef,
    EventStoreSummary, GetEventsOptions, Limits, LoggedEvent, Position, Retention, StorageAdapter,
    StorageError, StoredEvent, Timestamp,
};
use crate::engine::frame::{
    ENTRY_HEADER_BYTES, FRAME_ALIGN, FRAME_FOOTER_BYTES, FRAME_HEADER_BYTES,
};
use crate::engine::segment::SEGMENT_HEADER_BYTES;
use crate::engine::{
    CompactionProgress, CompactionReport, Durability, Engine, EngineOptions, EngineStats,
    FileSystem, IndexStats, LogCounters, NewEntry, OsFileSystem, VerifyReport,
};

/// Events stored in a directory on local disk, in annals' crash-safe segmented log.
///
/// Commits from concurrent tasks are grouped: one write and one fdatasync serve them all.
/// Under the default [`Durability::Immediate`], an append returns only once it is on stable
/// storage. One process (one handle) holds the store at a time; a second open fails with
/// [`StorageError::Locked`]. Other processes can read it meanwhile through a [`LogReader`]
/// ([`LogAdapter::open_reader`]).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir()?;
/// let adapter = annals::open(dir.path())?;
/// assert!(matches!(annals::open(dir.path()), Err(annals::StorageError::Locked { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
#[derive(Debug)]
pub struct LogAdapter {
    engine: Arc<Engine>,
    limits: Limits,
    /// Aggregate snapshots, in `snapshots.redb` (opened on first use).
    snapshots: LogSnapshots,
    /// Subjects' data keys, in `keys.redb` (feature `personal`; opened on first use).
    #[cfg(feature = "personal")]
    keys: super::Keys,
    /// Where recent `read_log` calls stopped, so a reader continuing from there does not have
    /// to locate its position in the log again.
    log_cursors: LogCursors,
    /// The lifecycle rules, folded from the `$lifecycle` events at open. Also the gate between
    /// pushes (shared, for their check and append) and lifecycle operations (exclusive, for
    /// their check, append and fold), so no push a delete should refuse lands after it.
    lifecycle: Arc<tokio::sync::RwLock<Lifecycle>>,
    /// The background compaction's thread, when [`LogAdapterBuilder::compact_every`] set one.
    compactor: Option<Compactor>,
}

/// Configures and opens a [`LogAdapter`]; made by [`LogAdapter::builder`].
#[derive(Debug, Clone)]
pub struct LogAdapterBuilder {
    dir: PathBuf,
    engine: EngineOptions,
    limits: Limits,
    fs: Arc<dyn FileSystem>,
    compact_every: Option<Duration>,
}

impl LogAdapterBuilder {
    /// Compacts the log in the background every `interval` (default: never, and
    /// [`LogAdapter::compact`] runs it on demand): sealed segments holding events the data
    /// lifecycle's rules hide are rewritten without them, on a thread of the adapter's own,
    /// beside appends and reads. A pass while no rule is in force reads nothing; one with
    /// rules reads the sealed segments once. Closing the adapter stops it at its next segment.
    pub fn compact_every(mut self, interval: Duration) -> Self {
        self.compact_every = Some(interval);
        self
    }

    /// When appends are acknowledged (default [`Durability::Immediate`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.engine.durability = durability;
        self
    }

    /// Largest size of a segment file (default 64 MiB). A store's first segment is 64 KiB and
    /// each next one twice the one before, up to this size, so small stores stay small.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.engine.segment_bytes = bytes;
        self
    }

    /// Events kept in memory before they are checkpointed into the persisted index (default
    /// 100,000). Bounds both memory and the log replayed on open: while a checkpoint is
    /// pending, appends continue up to twice this many more events, then wait for it — or
    /// fail at once with [`StorageError::StorageFull`] while it cannot be written (a full
    /// disk), until a retry succeeds.
    pub fn checkpoint_events(mut self, events: usize) -> Self {
        self.engine.checkpoint_events = events;
        self
    }

    /// Cache of the persisted index (default 64 MiB).
    pub fn index_cache_bytes(mut self, bytes: usize) -> Self {
        self.engine.index_cache_bytes = bytes;
        self
    }

    /// Discards the persisted index (`index.redb`) on open and rebuilds it from the log. The
    /// index is derived data; this repairs one suspected of damage, at the cost of reading the
    /// whole log once. The events are untouched.
    pub fn rebuild_index(mut self) -> Self {
        self.engine.rebuild_index = true;
        self
    }

    /// Limits enforced on appends (default [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Performs I/O through `fs` instead of the operating system (fault-injection tests).
    pub fn file_system(mut self, fs: Arc<dyn FileSystem>) -> Self {
        self.fs = fs;
        self
    }

    /// Opens the store, creating it if needed, and recovers it after a crash.
    pub fn open(self) -> Result<LogAdapter, StorageError> {
        let limits = self.limits;
        // The entry format stores ids and types with 16-bit lengths (docs/format.md).
        let u16_max = usize::from(u16::MAX);
        if limits.aggregate_id_bytes_max > u16_max
            || limits.event_store_id_bytes_max > u16_max
            || limits.event_type_bytes_max > u16_max
        {
            return Err(StorageError::InvalidConfiguration {
                reason: format!(
                    "ids and event types are limited to {u16_max} bytes by the log format"
                ),
            });
        }
        let per_event = ENTRY_HEADER_BYTES + limits.event_store_id_bytes_max;
        let commit_max = (FRAME_HEADER_BYTES + limits.group_bytes_max)
            .saturating_add(limits.group_events_max.saturating_mul(per_event))
            as u64
            + FRAME_ALIGN
            + FRAME_FOOTER_BYTES as u64;
        if commit_max
            > self
                .engine
                .segment_bytes
                .saturating_sub(SEGMENT_HEADER_BYTES)
        {
            return Err(StorageError::InvalidConfiguration {
                reason: format!(
                    "a commit within the limits may take {commit_max} bytes, more than a segment \
                     of {} bytes holds; raise segment_bytes or lower the group limits",
                    self.engine.segment_bytes
                ),
            });
        }
        let engine = Engine::open_with(Arc::clone(&self.fs), &self.dir, self.engine)
            .map_err(storage_error)?;
        #[cfg(feature = "personal")]
        let keys = super::Keys::new(
            Box::new(super::keys::LogKeys::new(Arc::clone(&self.fs), &self.dir)),
            None,
        );
        let snapshots = LogSnapshots::new(self.fs, &self.dir);
        let mut rules = Lifecycle::default();
        fold(&engine, &mut rules, &mut Default::default())?;
        let engine = Arc::new(engine);
        let lifecycle = Arc::new(tokio::sync::RwLock::new(rules));
        let compactor = match self.compact_every {
            Some(interval) => Some(
                Compactor::start(Arc::clone(&engine), Arc::clone(&lifecycle), interval).map_err(
                    |source| {
                        StorageError::Io(crate::engine::IoFailure {
                            operation: "start the background compaction",
                            path: self.dir.clone(),
                            source,
                        })
                    },
                )?,
            ),
            None => None,
        };
        Ok(LogAdapter {
            engine,
            limits,
            snapshots,
            #[cfg(feature = "personal")]
            keys,
            log_cursors: LogCursors::default(),
            lifecycle,
            compactor,
        })
    }
}

/// Opens (or creates) a store in `dir` with default options: the log adapter, durable on
/// every acknowledged append.
pub fn open(dir: impl AsRef<Path>) -> Result<Arc<LogAdapter>, StorageError> {
    LogAdapter::builder(dir).open().map(Arc::new)
}

impl LogAdapter {
    /// Opens the store in `dir` read-only, as a [`LogReader`] that follows what another
    /// process (or another handle) appends, without taking the store's lock. See [`LogReader`]
    /// for what it reads and guarantees; [`LogReader::builder`] configures it.
    pub fn open_reader(dir: impl AsRef<Path>) -> Result<LogReader, StorageError> {
        LogReader::builder(dir).open()
    }

    /// Starts configuring a store in `dir`.
    pub fn builder(dir: impl AsRef<Path>) -> LogAdapterBuilder {
        LogAdapterBuilder {
            dir: dir.as_ref().to_owned(),
            engine: EngineOptions::default(),
            limits: Limits::default(),
            fs: Arc::new(OsFileSystem),
            compact_every: None,
        }
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        self.engine.dir()
    }

    /// Global position of the last committed event (0 when empty).
    pub fn last_position(&self) -> Position {
        self.engine.last_position()
    }

    /// Figures about the store.
    pub fn stats(&self) -> EngineStats {
        self.engine.stats()
    }

    /// What the log's writer has done since the store opened: commits, syncs, bytes written,
    /// segment rolls, and the events not yet in the persisted index.
    pub fn counters(&self) -> LogCounters {
        self.engine.counters()
    }

    /// The persisted index: the position it is complete up to, the events only indexed in
    /// memory so far, and its file size.
    pub fn index_stats(&self) -> Result<IndexStats, StorageError> {
        self.engine.index_stats().map_err(storage_error)
    }

    /// How many aggregate snapshots the store keeps (`snapshots.redb`) and the file's size.
    pub fn snapshot_stats(&self) -> Result<SnapshotStats, StorageError> {
        self.snapshots.stats()
    }

    /// Checks the integrity of the whole store — segment headers, frame and entry checksums,
    /// gap-free positions and versions (but for what a compaction removed), and the index
    /// against the log — up to the last
    /// position published when the call starts, while appends continue. See
    /// [`annals::engine::verify`](crate::engine::verify) for what is checked; a closed store
    /// can be checked without opening it with [`verify_dir`](crate::engine::verify_dir).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let adapter = annals::open(dir.path())?;
    /// let report = adapter.verify()?;
    /// assert!(report.is_clean(), "{:?}", report.problems);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn verify(&self) -> Result<VerifyReport, StorageError> {
        self.engine.verify().map_err(storage_error)
    }

    /// Reclaims disk space: rewrites the log's sealed segments without the events the data
    /// lifecycle's rules let go (a store where no rule lets any go is left as it is), beside
    /// appends and reads, crash-safe at every step (see `docs/format.md`, "Compacted
    /// segments"). Surviving events keep their positions. See [`CompactionReport`] for what
    /// it reports.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let adapter = annals::open(dir.path())?;
    /// let report = adapter.compact().await?;
    /// assert_eq!(report.events_removed, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    pub async fn compact(&self) -> Result<CompactionReport, StorageError> {
        self.compact_reporting(|_| {}).await
    }

    /// [`LogAdapter::compact`], reporting its progress to `progress` as it goes (from a
    /// thread of its own).
    pub async fn compact_reporting(
        &self,
        progress: impl Fn(CompactionProgress) + Send + Sync + 'static,
    ) -> Result<CompactionReport, StorageError> {
        // The rules in force when the compaction starts decide; a rule recorded while it runs
        // is honoured by reads at once and by the next compaction. The predicate reads the
        // index (last versions, timestamps) from the compaction's own thread.
        let rules = self.lifecycle.read().await.clone();
        let engine = Arc::clone(&self.engine);
        self.run_compaction(move || compact_by_rules(&engine, &rules, &progress))
            .await
    }

    /// Runs a compaction on a blocking thread, so the caller's runtime is not held.
    async fn run_compaction(
        &self,
        run: impl FnOnce() -> Result<CompactionReport, crate::engine::EngineError> + Send + 'static,
    ) -> Result<CompactionReport, StorageError> {
        match tokio::task::spawn_blocking(run).await {
            Ok(result) => result.map_err(storage_error),
            Err(e) => Err(StorageError::Io(crate::engine::IoFailure {
                operation: "compact",
                path: self.dir().to_owned(),
                source: std::io::Error::other(e.to_string()),
            })),
        }
    }

    /// Compacts the log removing the entries `keep` rejects: the storage floor of
    /// [`LogAdapter::compact`], for tests.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub async fn compact_where(
        &self,
        keep: impl Fn(&crate::engine::CompactEntry<'_>) -> bool + Send + Sync + 'static,
    ) -> Result<CompactionReport, StorageError> {
        let state = self.engine.state();
        self.run_compaction(move || crate::engine::compact(&state, &keep, &|_| {}))
            .await
    }

    /// Makes every acknowledged append durable (useful under weaker durability).
    pub async fn sync(&self) -> Result<(), StorageError> {
        self.engine.sync().await.map_err(storage_error)
    }

    /// Drains pending appends, syncs and checkpoints the index. Later appends fail with
    /// [`StorageError::Closed`]. The directory's lock (and the index and snapshot files) are
    /// released when the adapter itself is dropped, with the last clone of its `Arc`: only
    /// then can another process open the store.
    pub fn close(&self) {
        // The background compaction stops at its next segment once the engine is closing.
        if let Some(compactor) = &self.compactor {
            compactor.signal();
        }
        self.snapshots.close();
        #[cfg(feature = "personal")]
        self.keys.close();
        self.engine.close();
        if let Some(compactor) = &self.compactor {
            compactor.stop();
        }
    }
}

impl LogAdapter {
    /// Checks a lifecycle operation against the rules in force and records it: appends its
    /// `$lifecycle` event and folds it, holding the gate exclusively.
    async fn record(&self, store: &str, record: LifecycleRecord) -> Result<Position, StorageError> {
        let mut rules = self.lifecycle.write().await;
        rules.check(store, &record)?;
        let record = record.clamped(|aggregate| last_version(&*self.engine, store, aggregate))?;
        let version = rules.next_version(store);
        let event = record.to_event(store, version, Timestamp::now());
        let position = self.append_refs(&[event.as_event_ref()]).await?;
        rules.apply(store, version, &record);
        if let LifecycleRecord::Deleted {
            aggregate_id,
            mode: DeleteMode::Hard,
        } = &record
        {
            // A hard-deleted aggregate's snapshots hold its state: they go with it. They are
            // derived data no read uses any more (their event is hidden), so a failure here
            // does not undo the delete.
            if let Err(error) = self.snapshots.prune(store, aggregate_id, 0) {
                tracing::warn!(store, aggregate = %aggregate_id, %error,
                    "the snapshots of a hard-deleted aggregate could not be removed");
            }
        }
        Ok(position)
    }

    /// Runs `f` with the compaction predicate of the rules in force now: what the engine's
    /// compaction of sealed segments is handed, entry by entry.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) async fn with_compaction_rules<R>(
        &self,
        f: impl FnOnce(&super::lifecycle::Compaction<'_>) -> R,
    ) -> R {
        let rules = self.lifecycle.read().await.clone();
        let facts = LogIndexFacts(&*self.engine);
        f(&rules.compaction(Timestamp::now(), &facts))
    }

    /// Encodes `events` (validated) straight into a commit, in a buffer reused from an earlier
    /// one, and appends it; returns the position of the first.
    async fn append_refs(&self, events: &[AppendEventRef<'_>]) -> Result<Position, StorageError> {
        let mut commit = self.engine.new_commit();
        let bytes = events
            .iter()
            .map(|e| ENTRY_HEADER_BYTES + e.event_store_id.len() + e.data_len())
            .sum();
        commit.reserve(events.len(), bytes);
        for e in events {
            commit.push(&NewEntry {
                store: e.event_store_id,
                aggregate: e.aggregate_id,
                version: e.version,
                timestamp_ms: e.timestamp.unix_millis(),
                event_type: e.event_type,
                schema_version: e.schema_version,
                payload: e.payload,
                metadata: e.metadata,
            });
        }
        self.engine.append(commit).await.map_err(storage_error)
    }
}

#[async_trait]
impl StorageAdapter for LogAdapter {
    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn snapshots(&self) -> Option<&dyn SnapshotStorage> {
        Some(&self.snapshots)
    }

    #[cfg(feature = "personal")]
    fn keys(&self) -> Option<&super::Keys> {
        Some(&self.keys)
    }

    async fn read_log(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StorageError> {
        let rules = self.lifecycle.read().await;
        read_log_visible(&rules, &*self.engine, &self.log_cursors, from, limit)
    }

    fn watch_log(&self) -> tokio::sync::watch::Receiver<Position> {
        self.engine.watch_last_position()
    }

    async fn event_store_summaries(&self) -> Result<Vec<EventStoreSummary>, StorageError> {
        let summaries = self.engine.store_summaries().map_err(storage_error)?;
        let rules = self.lifecycle.read().await;
        let mut out = Vec::with_capacity(summaries.len());
        for s in summaries {
            let mut summary = EventStoreSummary {
                event_store_id: s.store,
                aggregates: s.aggregates,
                events: s.events,
            };
            visible_summary(&rules, &*self.engine, &mut summary)?;
            if summary.aggregates > 0 {
                out.push(summary);
            }
        }
        Ok(out)
    }

    async fn read_events(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        options: &GetEventsOptions,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        let rules = self.lifecycle.read().await;
        let options =
            visible_options(&rules, &*self.engine, event_store_id, aggregate_id, options)?;
        drop(rules);
        read_matching(&*self.engine, event_store_id, aggregate_id, options)
    }

    async fn visit_events(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        options: &GetEventsOptions,
        visit: &mut (dyn for<'e> FnMut(EventRef<'e>) -> ControlFlow<()> + Send),
    ) -> Result<(), StorageError> {
        self.limits.check_event_store_id(event_store_id)?;
        self.limits.check_aggregate_id(aggregate_id)?;
        if options.limit == Some(0) {
            return Ok(());
        }
        let rules = self.lifecycle.read().await;
        let options =
            visible_options(&rules, &*self.engine, event_store_id, aggregate_id, options)?;
        drop(rules);
        visit_visible(&*self.engine, event_store_id, aggregate_id, options, visit)
    }

    #[tracing::instrument(
        name = "annals.commit",
        level = "debug",
        skip_all,
        fields(events = events.len()),
    )]
    async fn append(&self, events: Vec<AppendEvent>) -> Result<Vec<Position>, StorageError> {
        let count = events.len() as u64;
        let refs: Vec<AppendEventRef<'_>> = events.iter().map(AppendEvent::as_event_ref).collect();
        let rules = self.lifecycle.read().await;
        rules.check_push(refs.iter().map(|e| (e.event_store_id, e.aggregate_id)))?;
        let first = self.append_refs(&refs).await?;
        drop(rules);
        Ok((first..first + count).collect())
    }

    #[tracing::instrument(
        name = "annals.commit",
        level = "debug",
        skip_all,
        fields(events = events.len()),
    )]
    async fn push_event_group_ref(
        &self,
        events: &[AppendEventRef<'_>],
    ) -> Result<Position, StorageError> {
        self.limits
            .check_events(events.len(), events.iter().copied())?;
        let rules = self.lifecycle.read().await;
        rules.check_push(events.iter().map(|e| (e.event_store_id, e.aggregate_id)))?;
        let first = self.append_refs(events).await;
        drop(rules);
        first
    }

    async fn scan_aggregate_ids(
        &self,
        event_store_id: &str,
        query: &AggregateIdsQuery,
    ) -> Result<Vec<AggregateIdEntry>, StorageError> {
        let rules = self.lifecycle.read().await;
        scan_visible(&rules, &*self.engine, event_store_id, query)
    }

    async fn delete_aggregate(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        mode: DeleteMode,
    ) -> Result<Position, StorageError> {
        let record =
            LifecycleRecord::checked_delete(&self.limits, event_store_id, aggregate_id, mode)?;
        self.record(event_store_id, record).await
    }

    async fn restore_aggregate(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
    ) -> Result<Position, StorageError> {
        let record = LifecycleRecord::checked_restore(&self.limits, event_store_id, aggregate_id)?;
        self.record(event_store_id, record).await
    }

    async fn truncate_before(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        version: u64,
    ) -> Result<Position, StorageError> {
        let record =
            LifecycleRecord::checked_truncate(&self.limits, event_store_id, aggregate_id, version)?;
        self.record(event_store_id, record).await
    }

    async fn set_retention(
        &self,
        event_store_id: &str,
        retention: Retention,
    ) -> Result<Position, StorageError> {
        let record = LifecycleRecord::checked_retention(&self.limits, event_store_id, retention)?;
        self.record(event_store_id, record).await
    }

    async fn retention(&self, event_store_id: &str) -> Result<Retention, StorageError> {
        self.limits.check_event_store_id(event_store_id)?;
        Ok(self.lifecycle.read().await.retention(event_store_id))
    }

    /// Reclaims nothing yet: the engine's compaction of sealed segments plugs in here, handed
    /// the predicate of the rules in force (reads already hide everything it would remove).
    async fn compact(&self) -> Result<CompactionReport, StorageError> {
        LogAdapter::compact(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::LogCursor;
    use crate::storage::EncodedEvent;

    fn event(aggregate: &str, version: u64, millis: i64) -> AppendEvent {
        AppendEvent {
            event_store_id: "S".into(),
            event: EncodedEvent {
                aggregate_id: aggregate.into(),
                version,
                timestamp: Timestamp::from_unix_millis(millis),
                event_type: "E".into(),
                schema_version: 1,
                payload: Vec::new(),
                metadata: Vec::new(),
            },
        }
    }

    /// The predicate handed to the engine's compaction keeps exactly what reads show (plus
    /// every `$lifecycle` entry and soft-deleted events), asking the log for last versions and
    /// timestamps: checked over every entry of a real log, read raw.
    #[tokio::test]
    async fn the_compaction_predicate_keeps_what_reads_show_over_the_raw_log() {
        let dir = tempfile::tempdir().unwrap();
        let adapter = LogAdapter::builder(dir.path()).open().unwrap();
        let young = Timestamp::now().unix_millis() + 86_400_000;
        for (aggregate, stamps) in [
            ("hard", vec![1, 2]),
            ("soft", vec![1, 2]),
            ("cut", vec![young; 3]),
            ("aged", vec![1, young, 2, young]),
            ("counted", vec![young; 5]),
        ] {
            for (i, millis) in stamps.into_iter().enumerate() {
                adapter
                    .push_event(event(aggregate, i as u64 + 1, millis))
                    .await
                    .unwrap();
            }
        }
        adapter
            .delete_aggregate("S", "hard", DeleteMode::Hard)
            .await
            .unwrap();
        adapter
            .delete_aggregate("S", "soft", DeleteMode::Soft)
            .await
            .unwrap();
        adapter.truncate_before("S", "cut", 3).await.unwrap();
        let rule = Retention {
            max_age: Some(std::time::Duration::from_secs(3_600)),
            max_count: Some(3),
        };
        adapter.set_retention("S", rule).await.unwrap();

        let raw = adapter
            .engine
            .read_log(LogCursor::at(1), usize::MAX)
            .unwrap()
            .events;
        let kept: Vec<(String, String, u64)> = adapter
            .with_compaction_rules(|rules| {
                raw.iter()
                    .filter(|(_, e)| {
                        let at = Timestamp::from_unix_millis(e.timestamp_ms);
                        rules.keeps(&e.store, &e.aggregate, e.version, at)
                    })
                    .map(|(_, e)| (e.store.clone(), e.aggregate.clone(), e.version))
                    .collect()
            })
            .await;
        let ids = |store: &str, aggregate: &str, versions: &[u64]| {
            versions
                .iter()
                .map(|v| (store.to_owned(), aggregate.to_owned(), *v))
                .collect::<Vec<_>>()
        };
        let mut want = [
            ids("S", "soft", &[1, 2]),
            ids("S", "cut", &[3]),
            // max_count 3 leaves 2..=4; version 2 is young, so nothing more expires.
            ids("S", "aged", &[2, 3, 4]),
            ids("S", "counted", &[3, 4, 5]),
            ids(LIFECYCLE_STORE_ID, "S", &[1, 2, 3, 4]),
        ]
        .concat();
        want.sort();
        let mut kept = kept;
        kept.sort();
        assert_eq!(kept, want);
        // What reads show is what is kept, the soft-deleted aggregate aside.
        for aggregate in ["cut", "aged", "counted"] {
            let shown: Vec<u64> = adapter
                .get_events("S", aggregate, &GetEventsOptions::default())
                .await
                .unwrap()
                .iter()
                .map(|e| e.event.version)
                .collect();
            let kept: Vec<u64> = want
                .iter()
                .filter(|(s, a, _)| s == "S" && a == aggregate)
                .map(|(_, _, v)| *v)
                .collect();
            assert_eq!(shown, kept, "{aggregate}");
        }
    }

    const LIFECYCLE_STORE_ID: &str = crate::storage::LIFECYCLE_STORE;
}
