//! The live reader of a log store: reads a store directory while another process writes it.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::engine_bridge::storage_error;
use super::lifecycle::Lifecycle;
use super::log_lifecycle::{
    LogCursors, fold, read_log_visible, read_matching, scan_visible, visible_options,
    visible_summary, visit_visible,
};
use super::{
    AggregateIdEntry, AggregateIdsQuery, AppendEvent, CompactionReport, DeleteMode, EventRef,
    EventStoreSummary, GetEventsOptions, Limits, LoggedEvent, Position, Retention, StorageAdapter,
    StorageError, StoredEvent,
};
use crate::engine::{FileSystem, LiveLog, OsFileSystem};

/// A read-only view of a log store that another process may be writing, like a SQLite WAL
/// reader beside its writer: made by [`LogAdapter::open_reader`](super::LogAdapter::open_reader)
/// or [`LogReader::builder`].
///
/// It takes no lock and opens no database file of the store: it reads the segment files
/// through read-only handles and keeps its own index of them in memory, so it never blocks,
/// slows down or modifies the writer, and any number of readers can follow one writer (or a
/// store no process holds). It implements the read side of [`StorageAdapter`] — events by
/// aggregate and in global order, aggregate listings, summaries, [`watch_log`] — and refuses
/// appends with [`StorageError::ReadOnly`]. It keeps no snapshots: aggregates are read from
/// their first event. Its reads honour the lifecycle rules (deletes, truncation, retention) it
/// has read from the log; lifecycle operations are refused with [`StorageError::ReadOnly`].
///
/// **What it sees.** Only whole, verified commits (every checksum, gap-free positions,
/// versions `1..=n` — but for the events a compaction removed, whose positions are skipped
/// and below whose versions an aggregate starts): a commit or event group is visible wholly
/// or not at all, in position order. A frame the writer is still writing, a segment being
/// created, or a torn write left by a crash is where the reader's log ends for now; damage
/// anywhere else is
/// [`StorageError::Corruption`]. A commit becomes visible once its frame is written — by the
/// time the writer acknowledges it under `Durability::Immediate` at the latest.
///
/// **How fresh.** A background thread reads what was appended every
/// [`poll_interval`](LogReaderBuilder::poll_interval) (default
/// [`LogReader::DEFAULT_POLL_INTERVAL`], 10 ms) and wakes [`watch_log`] followers: an
/// acknowledged commit is seen within one interval plus the time to read it. [`refresh`] reads
/// it at once. If the thread meets damage it stops: [`watch_log`] followers find the log closed,
/// and [`refresh`] and reads past the last position report the damage.
///
/// **Cost.** Opening reads the whole log once, and the index in memory takes a few bytes per
/// event plus each aggregate's id (the writer's persisted index cannot be shared: redb files
/// are held by one process).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use annals::storage::{AppendEvent, EncodedEvent, LogAdapter, StorageAdapter};
/// let dir = tempfile::tempdir()?;
/// let writer = annals::open(dir.path())?;
/// let reader = LogAdapter::open_reader(dir.path())?;
/// let event = EncodedEvent {
///     aggregate_id: "pikachu".into(),
///     version: 1,
///     timestamp: annals::Timestamp::from_unix_millis(0),
///     event_type: "APPEARED".into(),
///     schema_version: 1,
///     payload: b"{}".to_vec(),
///     metadata: Vec::new(),
/// };
/// let append = AppendEvent { event_store_id: "POKEMONS".into(), event };
/// writer.push_event(append.clone()).await?;
/// assert_eq!(reader.refresh()?, 1);
/// assert_eq!(reader.read_log(1, 10).await?[0].event.aggregate_id, "pikachu");
/// assert!(matches!(
///     reader.push_event(append).await,
///     Err(annals::StorageError::ReadOnly { .. })
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
///
/// [`watch_log`]: StorageAdapter::watch_log
/// [`refresh`]: LogReader::refresh
#[derive(Debug)]
pub struct LogReader {
    live: Arc<LiveLog>,
    limits: Limits,
    /// Where recent `read_log` calls stopped (see [`super::LogAdapter`]).
    log_cursors: LogCursors,
    /// The lifecycle rules read so far.
    rules: std::sync::RwLock<ReaderRules>,
}

/// The lifecycle rules a reader has read, and the last `$lifecycle` version folded per store.
type ReaderRules = (Lifecycle, HashMap<String, u64>);

/// Configures and opens a [`LogReader`]; made by [`LogReader::builder`].
#[derive(Debug, Clone)]
pub struct LogReaderBuilder {
    dir: PathBuf,
    poll: Option<Duration>,
    limits: Limits,
    fs: Arc<dyn FileSystem>,
}

/// Figures about what a [`LogReader`] has read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogReaderStats {
    /// The position of the last event read (0 when none).
    pub last_position: Position,
    /// Segment files read.
    pub segments: usize,
    /// Bytes of those segment files (they are preallocated).
    pub segment_bytes: u64,
}

impl LogReaderBuilder {
    /// How often the background thread reads what was appended (default
    /// [`LogReader::DEFAULT_POLL_INTERVAL`]); the bound on how late a reader sees a commit,
    /// plus the time to read it. Each poll of an idle store reads one frame header and lists
    /// the log directory.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll = Some(every);
        self
    }

    /// No background thread: the reader sees new commits only when [`LogReader::refresh`] is
    /// called.
    pub fn manual_refresh(mut self) -> Self {
        self.poll = None;
        self
    }

    /// Limits that reads check ids against (default [`Limits::default`]): give the writer's
    /// when it raised them.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Performs I/O through `fs` instead of the operating system (fault-injection tests).
    pub fn file_system(mut self, fs: Arc<dyn FileSystem>) -> Self {
        self.fs = fs;
        self
    }

    /// Opens the store read-only and reads every commit verified so far. The directory must
    /// hold a store (a `log/` directory); nothing is created, locked or modified.
    pub fn open(self) -> Result<LogReader, StorageError> {
        if self.poll == Some(Duration::ZERO) {
            return Err(StorageError::InvalidConfiguration {
                reason: "a live reader's poll interval must be longer than zero".into(),
            });
        }
        let live = LiveLog::open(self.fs, &self.dir).map_err(storage_error)?;
        if let Some(every) = self.poll {
            live.follow(every).map_err(storage_error)?;
        }
        let reader = LogReader {
            live,
            limits: self.limits,
            log_cursors: LogCursors::default(),
            rules: std::sync::RwLock::default(),
        };
        drop(reader.rules()?);
        Ok(reader)
    }
}

impl LogReader {
    /// How often a reader looks for new commits unless told otherwise.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(10);

    /// Starts configuring a reader of the store in `dir`.
    pub fn builder(dir: impl AsRef<Path>) -> LogReaderBuilder {
        LogReaderBuilder {
            dir: dir.as_ref().to_owned(),
            poll: Some(Self::DEFAULT_POLL_INTERVAL),
            limits: Limits::default(),
            fs: Arc::new(OsFileSystem),
        }
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        self.live.dir()
    }

    /// The position of the last event read (0 when none).
    pub fn last_position(&self) -> Position {
        self.live.last_position()
    }

    /// Reads the commits appended since the last refresh, up to the last whole, verified one,
    /// makes them visible and returns the last position. Damage is
    /// [`StorageError::Corruption`]; what was visible stays as it was.
    pub fn refresh(&self) -> Result<Position, StorageError> {
        self.live.refresh().map_err(storage_error)
    }

    /// What the reader has read: its last position and the segment files.
    pub fn stats(&self) -> LogReaderStats {
        let (segments, segment_bytes) = self.live.segment_sizes();
        LogReaderStats {
            last_position: self.last_position(),
            segments,
            segment_bytes,
        }
    }

    /// The lifecycle rules, with the `$lifecycle` events read since the last call folded in.
    fn rules(&self) -> Result<std::sync::RwLockReadGuard<'_, ReaderRules>, StorageError> {
        {
            let mut rules = self.rules.write().unwrap_or_else(|p| p.into_inner());
            let (lifecycle, folded) = &mut *rules;
            fold(&*self.live, lifecycle, folded)?;
        }
        Ok(self.rules.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn read_only(&self) -> StorageError {
        StorageError::ReadOnly {
            path: self.dir().to_owned(),
        }
    }

    /// Stops following the store: the background thread ends and [`watch_log`] followers
    /// find the log closed. What was read stays readable.
    ///
    /// [`watch_log`]: StorageAdapter::watch_log
    pub fn close(&self) {
        self.live.close();
    }
}

#[async_trait]
impl StorageAdapter for LogReader {
    fn limits(&self) -> &Limits {
        &self.limits
    }

    async fn read_log(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StorageError> {
        let rules = self.rules()?;
        read_log_visible(&rules.0, &*self.live, &self.log_cursors, from, limit)
    }

    fn watch_log(&self) -> tokio::sync::watch::Receiver<Position> {
        self.live.watch_last_position()
    }

    async fn event_store_summaries(&self) -> Result<Vec<EventStoreSummary>, StorageError> {
        let rules = self.rules()?;
        let mut out = Vec::new();
        for s in self.live.store_summaries() {
            let mut summary = EventStoreSummary {
                event_store_id: s.store,
                aggregates: s.aggregates,
                events: s.events,
            };
            visible_summary(&rules.0, &*self.live, &mut summary)?;
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
        let options = self.visible_options(event_store_id, aggregate_id, options)?;
        read_matching(&*self.live, event_store_id, aggregate_id, options)
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
        let options = self.visible_options(event_store_id, aggregate_id, options)?;
        visit_visible(&*self.live, event_store_id, aggregate_id, options, visit)
    }

    async fn append(&self, _events: Vec<AppendEvent>) -> Result<Vec<Position>, StorageError> {
        Err(StorageError::ReadOnly {
            path: self.dir().to_owned(),
        })
    }

    async fn scan_aggregate_ids(
        &self,
        event_store_id: &str,
        query: &AggregateIdsQuery,
    ) -> Result<Vec<AggregateIdEntry>, StorageError> {
        let rules = self.rules()?;
        scan_visible(&rules.0, &*self.live, event_store_id, query)
    }

    async fn delete_aggregate(
        &self,
        _event_store_id: &str,
        _aggregate_id: &str,
        _mode: DeleteMode,
    ) -> Result<Position, StorageError> {
        Err(self.read_only())
    }

    async fn restore_aggregate(
        &self,
        _event_store_id: &str,
        _aggregate_id: &str,
    ) -> Result<Position, StorageError> {
        Err(self.read_only())
    }

    async fn truncate_before(
        &self,
        _event_store_id: &str,
        _aggregate_id: &str,
        _version: u64,
    ) -> Result<Position, StorageError> {
        Err(self.read_only())
    }

    async fn set_retention(
        &self,
        _event_store_id: &str,
        _retention: Retention,
    ) -> Result<Position, StorageError> {
        Err(self.read_only())
    }

    async fn retention(&self, event_store_id: &str) -> Result<Retention, StorageError> {
        self.limits.check_event_store_id(event_store_id)?;
        Ok(self.rules()?.0.retention(event_store_id))
    }

    async fn compact(&self) -> Result<CompactionReport, StorageError> {
        Err(self.read_only())
    }
}

impl LogReader {
    /// `options` narrowed to what the rules leave of the aggregate (`None`: nothing).
    fn visible_options(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        options: &GetEventsOptions,
    ) -> Result<Option<GetEventsOptions>, StorageError> {
        let rules = self.rules()?;
        visible_options(&rules.0, &*self.live, event_store_id, aggregate_id, options)
    }
}
