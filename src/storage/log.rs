//! The log adapter: the embedded, durable default — annals' own segmented log engine.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::engine_bridge::{event_ref, logged_event, storage_error};
use super::log_reader::LogReader;
use super::log_snapshots::LogSnapshots;
use super::snapshot_storage::{SnapshotStats, SnapshotStorage};
use super::{
    AggregateIdEntry, AggregateIdsQuery, AppendEvent, AppendEventRef, EventRef, EventStoreSummary,
    GetEventsOptions, Limits, LoggedEvent, Position, StorageAdapter, StorageError, StoredEvent,
    Timestamp,
};
use crate::engine::frame::{
    ENTRY_HEADER_BYTES, FRAME_ALIGN, FRAME_FOOTER_BYTES, FRAME_HEADER_BYTES,
};
use crate::engine::segment::SEGMENT_HEADER_BYTES;
use crate::engine::{
    Durability, Engine, EngineOptions, EngineStats, FileSystem, IndexStats, LogCounters, LogCursor,
    NewEntry, OsFileSystem, VerifyReport,
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
    engine: Engine,
    limits: Limits,
    /// Aggregate snapshots, in `snapshots.redb` (opened on first use).
    snapshots: LogSnapshots,
    /// Subjects' data keys, in `keys.redb` (feature `personal`; opened on first use).
    #[cfg(feature = "personal")]
    keys: super::Keys,
    /// Where recent `read_log` calls stopped, so a reader continuing from there does not have
    /// to locate its position in the log again.
    log_cursors: std::sync::Mutex<Vec<LogCursor>>,
}

/// How many `read_log` continuation points a log adapter remembers.
const LOG_CURSORS: usize = 16;

/// Configures and opens a [`LogAdapter`]; made by [`LogAdapter::builder`].
#[derive(Debug, Clone)]
pub struct LogAdapterBuilder {
    dir: PathBuf,
    engine: EngineOptions,
    limits: Limits,
    fs: Arc<dyn FileSystem>,
}

impl LogAdapterBuilder {
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
        Ok(LogAdapter {
            engine,
            limits,
            snapshots,
            #[cfg(feature = "personal")]
            keys,
            log_cursors: std::sync::Mutex::default(),
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
    /// gap-free positions and versions, and the index against the log — up to the last
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

    /// Makes every acknowledged append durable (useful under weaker durability).
    pub async fn sync(&self) -> Result<(), StorageError> {
        self.engine.sync().await.map_err(storage_error)
    }

    /// Drains pending appends, syncs and checkpoints the index. Later appends fail with
    /// [`StorageError::Closed`]. The directory's lock (and the index and snapshot files) are
    /// released when the adapter itself is dropped, with the last clone of its `Arc`: only
    /// then can another process open the store.
    pub fn close(&self) {
        self.snapshots.close();
        #[cfg(feature = "personal")]
        self.keys.close();
        self.engine.close();
    }
}

impl LogAdapter {
    /// Visits the events of one aggregate matching `options` in ascending version order,
    /// borrowed from the engine's read buffer, until `visit` breaks.
    fn visit_log(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        options: &GetEventsOptions,
        visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        self.engine
            .visit_events(
                event_store_id,
                aggregate_id,
                options.min_version.unwrap_or(1),
                options.max_version.unwrap_or(u64::MAX),
                options.limit,
                options.reverse,
                &mut |position, e| visit(event_ref(position, aggregate_id, e)),
            )
            .map_err(storage_error)
    }
}

impl LogAdapter {
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
        let from = from.max(1);
        let cursor = {
            let mut cursors = self.log_cursors.lock().unwrap_or_else(|p| p.into_inner());
            match cursors.iter().position(|c| c.position() == from) {
                Some(i) => cursors.remove(i),
                None => LogCursor::at(from),
            }
        };
        let batch = self.engine.read_log(cursor, limit).map_err(storage_error)?;
        {
            let mut cursors = self.log_cursors.lock().unwrap_or_else(|p| p.into_inner());
            if cursors.len() >= LOG_CURSORS {
                cursors.remove(0);
            }
            cursors.push(batch.next);
        }
        Ok(batch
            .events
            .into_iter()
            .map(|(position, e)| logged_event(position, e))
            .collect())
    }

    fn watch_log(&self) -> tokio::sync::watch::Receiver<Position> {
        self.engine.watch_last_position()
    }

    async fn event_store_summaries(&self) -> Result<Vec<EventStoreSummary>, StorageError> {
        let summaries = self.engine.store_summaries().map_err(storage_error)?;
        Ok(summaries
            .into_iter()
            .map(|s| EventStoreSummary {
                event_store_id: s.store,
                aggregates: s.aggregates,
                events: s.events,
            })
            .collect())
    }

    async fn read_events(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        options: &GetEventsOptions,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        let mut events = Vec::new();
        self.visit_log(event_store_id, aggregate_id, options, &mut |event| {
            events.push(event.to_stored());
            ControlFlow::Continue(())
        })?;
        if options.reverse {
            events.reverse();
        }
        Ok(events)
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
        if options.reverse {
            // The engine visits in ascending order; newest first needs the events in hand.
            let events = self
                .read_events(event_store_id, aggregate_id, options)
                .await?;
            for event in &events {
                if visit(event.as_event_ref()).is_break() {
                    break;
                }
            }
            return Ok(());
        }
        self.visit_log(event_store_id, aggregate_id, options, visit)
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
        let first = self.append_refs(&refs).await?;
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
        self.append_refs(events).await
    }

    async fn scan_aggregate_ids(
        &self,
        event_store_id: &str,
        query: &AggregateIdsQuery,
    ) -> Result<Vec<AggregateIdEntry>, StorageError> {
        let cursor = query.after_entry.as_ref().map(|c| {
            (
                c.initial_event_timestamp.unix_millis(),
                c.aggregate_id.as_str(),
            )
        });
        let found = self
            .engine
            .list_aggregates(
                event_store_id,
                query.initial_event_after.map(Timestamp::unix_millis),
                query.initial_event_before.map(Timestamp::unix_millis),
                query.reverse,
                cursor,
                query.scan_limit().unwrap_or(usize::MAX),
            )
            .map_err(storage_error)?;
        Ok(found
            .into_iter()
            .map(|(t, aggregate_id)| AggregateIdEntry {
                initial_event_timestamp: Timestamp::from_unix_millis(t),
                aggregate_id,
            })
            .collect())
    }
}
