//! The storage-adapter trait: Castore's `EventStorageAdapter`, on encoded events.

use std::ops::ControlFlow;

use async_trait::async_trait;

use super::{
    AggregateIdEntry, AggregateIdsPage, AggregateIdsQuery, AppendEvent, AppendEventRef,
    CompactionReport, DeleteMode, EventRef, EventStoreSummary, GetEventsOptions, Limits,
    ListAggregateIdsOptions, LoggedEvent, Position, Retention, SnapshotStorage, StorageError,
    StoredEvent,
};

/// Events read per call by the default [`StorageAdapter::event_store_summaries`].
const SUMMARY_READ_EVENTS: usize = 1024;

/// Where events live. One adapter can hold many event stores; an event group is atomic only
/// within one adapter.
///
/// Adapters implement the *required* methods ([`limits`](Self::limits),
/// [`read_events`](Self::read_events), [`append`](Self::append),
/// [`scan_aggregate_ids`](Self::scan_aggregate_ids), [`read_log`](Self::read_log) and
/// [`watch_log`](Self::watch_log)); callers use the *provided* methods, which validate input
/// against the limits and implement paging once for every adapter.
///
/// # Contract (checked by [`testing::conformance`](crate::testing::conformance))
/// - Versions of an aggregate are exactly `1..=n`: appending an existing version fails with
///   [`EventAlreadyExists`](super::EventAlreadyExists); any other version than `n + 1` fails
///   with [`StorageError::UnexpectedVersion`].
/// - A commit (one push or one event group, across aggregates and stores) is all or nothing,
///   also under concurrency and crashes: no reader ever sees part of it.
/// - Every committed event gets a gap-free, increasing global [`Position`]; the events of a
///   commit get consecutive positions in the order given.
/// - An append returns only once the commit is as durable as the adapter promises.
/// - [`read_log`](Self::read_log) returns every committed event, of every store, in position
///   order, and never an event of a commit that is not wholly committed; once an append has
///   returned, [`watch_log`](Self::watch_log) holds a position at least as high as its events'.
/// - An adapter that offers [`snapshots`](Self::snapshots) stores records byte for byte under
///   their key, and its newest-at-or-below and prune queries honour versions.
/// - Lifecycle rules ([`delete_aggregate`](Self::delete_aggregate),
///   [`truncate_before`](Self::truncate_before), [`set_retention`](Self::set_retention)) leave
///   each aggregate a suffix of its versions, or nothing; every read honours them as soon as
///   the operation returns, and positions skip what they hide (gaps in what `read_log`
///   returns come only from them). Their `$lifecycle` events are ordinary events of the log.
#[async_trait]
pub trait StorageAdapter: Send + Sync + 'static {
    /// The limits this adapter enforces.
    fn limits(&self) -> &Limits;

    /// Reads the events of one aggregate that match `options`, ordered by version (descending
    /// when `options.reverse`). Inputs are already validated.
    async fn read_events(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        options: &GetEventsOptions,
    ) -> Result<Vec<StoredEvent>, StorageError>;

    /// Atomically appends a validated, non-empty commit and returns the position of each
    /// event, in input order. Checks every version against the latest committed one (and
    /// earlier events of the same commit).
    async fn append(&self, events: Vec<AppendEvent>) -> Result<Vec<Position>, StorageError>;

    /// Returns up to [`query.scan_limit()`](AggregateIdsQuery::scan_limit) entries of one store
    /// admitted by [`query.admits`](AggregateIdsQuery::admits), in the query's order.
    async fn scan_aggregate_ids(
        &self,
        event_store_id: &str,
        query: &AggregateIdsQuery,
    ) -> Result<Vec<AggregateIdEntry>, StorageError>;

    /// Reads up to `limit` committed events, of every store, with positions from `from`
    /// (inclusive), in position order, skipping those the lifecycle rules hide. Returns fewer
    /// when the log holds no more visible events: a reader then waits on
    /// [`watch_log`](Self::watch_log) and reads again (positions up to the one the watch held
    /// before the read, and not returned, are hidden).
    async fn read_log(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StorageError>;

    /// The position of the last committed event (0 when none), as a receiver that is marked
    /// changed whenever commits are made: what lets subscriptions follow appends without
    /// polling.
    fn watch_log(&self) -> tokio::sync::watch::Receiver<Position>;

    /// Where this adapter keeps aggregate snapshots, if it keeps any (the default: none, so
    /// every aggregate is read from its first event). Snapshots are derived data: an adapter
    /// may lose them, and the typed layer checks each one before using it.
    fn snapshots(&self) -> Option<&dyn SnapshotStorage> {
        None
    }

    /// Where this adapter keeps the data keys of subjects whose personal data its events
    /// hold (feature `personal`), if it keeps any (the default: none, and then the typed layer
    /// refuses to write a [`Personal`](crate::model::personal::Personal) value and reads one as
    /// unreadable). Unlike snapshots, keys are not derived data: a lost key is lost data.
    #[cfg(feature = "personal")]
    fn keys(&self) -> Option<&super::Keys> {
        None
    }

    /// Every event store that holds events, with its number of aggregates and events,
    /// ordered by event store id (what an operator lists; Castore has no equivalent).
    ///
    /// The default reads the whole global log once, up to the position committed when the
    /// call starts, and keeps every aggregate id in memory; adapters that index aggregates
    /// answer from their index instead (the log adapter does).
    async fn event_store_summaries(&self) -> Result<Vec<EventStoreSummary>, StorageError> {
        let end = *self.watch_log().borrow();
        let mut stores: std::collections::BTreeMap<String, std::collections::HashSet<String>> =
            Default::default();
        let mut events: std::collections::HashMap<String, u64> = Default::default();
        let mut from = 1;
        while from <= end {
            let batch = self.read_log(from, SUMMARY_READ_EVENTS).await?;
            let Some(last) = batch.last() else { break };
            from = last.position + 1;
            for logged in batch.into_iter().filter(|e| e.position <= end) {
                *events.entry(logged.event_store_id.clone()).or_default() += 1;
                stores
                    .entry(logged.event_store_id)
                    .or_default()
                    .insert(logged.event.aggregate_id);
            }
        }
        Ok(stores
            .into_iter()
            .map(|(event_store_id, aggregates)| EventStoreSummary {
                events: events.get(&event_store_id).copied().unwrap_or(0),
                aggregates: aggregates.len() as u64,
                event_store_id,
            })
            .collect())
    }

    /// Deletes an aggregate: its events are hidden from every read and listing at once, and
    /// pushes to it are refused with [`StorageError::AggregateDeleted`]. A
    /// [`DeleteMode::Soft`] delete can be undone with
    /// [`restore_aggregate`](Self::restore_aggregate); a [`DeleteMode::Hard`] one is final and
    /// its events are removed by the next [`compact`](Self::compact). Returns the position of
    /// the `$lifecycle` event that records it.
    ///
    /// The default refuses with [`StorageError::Unsupported`]: every adapter annals ships
    /// implements it.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use annals::storage::{DeleteMode, GetEventsOptions, InMemoryAdapter, StorageAdapter};
    /// let adapter = InMemoryAdapter::new();
    /// adapter.delete_aggregate("POKEMONS", "pikachu", DeleteMode::Soft).await?;
    /// let all = GetEventsOptions::default();
    /// assert!(adapter.get_events("POKEMONS", "pikachu", &all).await?.is_empty());
    /// adapter.restore_aggregate("POKEMONS", "pikachu").await?;
    /// # Ok::<(), annals::StorageError>(()) }).unwrap();
    /// ```
    async fn delete_aggregate(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        mode: DeleteMode,
    ) -> Result<Position, StorageError> {
        let _ = (event_store_id, aggregate_id, mode);
        Err(StorageError::Unsupported {
            operation: "delete an aggregate",
        })
    }

    /// Undoes a soft delete: the aggregate's events are visible again and it accepts pushes.
    /// Refused with [`StorageError::AggregateDeleted`] (`hard: true`) after a hard delete;
    /// restoring an aggregate that is not deleted changes nothing. Returns the position of the
    /// `$lifecycle` event that records it. The default refuses with
    /// [`StorageError::Unsupported`].
    async fn restore_aggregate(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
    ) -> Result<Position, StorageError> {
        let _ = (event_store_id, aggregate_id);
        Err(StorageError::Unsupported {
            operation: "restore an aggregate",
        })
    }

    /// Hides the versions of an aggregate below `version` at once (they are removed by the
    /// next [`compact`](Self::compact)); the aggregate keeps numbering from its last version.
    /// A `version` past the last one hides every event the aggregate has, not the ones pushed
    /// later; truncating at or below an earlier truncation changes nothing. Refused with
    /// [`StorageError::AggregateDeleted`] on a deleted aggregate. Returns the position of the
    /// `$lifecycle` event that records it. The default refuses with
    /// [`StorageError::Unsupported`].
    async fn truncate_before(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        version: u64,
    ) -> Result<Position, StorageError> {
        let _ = (event_store_id, aggregate_id, version);
        Err(StorageError::Unsupported {
            operation: "truncate an aggregate",
        })
    }

    /// Sets the retention rule of an event store, replacing the one before
    /// ([`Retention::default`] removes it). Reads honour it at once; the next
    /// [`compact`](Self::compact) removes what it hides. `max_count: Some(0)` is refused with
    /// [`StorageError::InvalidRetention`]. Returns the position of the `$lifecycle` event that
    /// records it. The default refuses with [`StorageError::Unsupported`].
    async fn set_retention(
        &self,
        event_store_id: &str,
        retention: Retention,
    ) -> Result<Position, StorageError> {
        let _ = (event_store_id, retention);
        Err(StorageError::Unsupported {
            operation: "set a retention rule",
        })
    }

    /// The retention rule of an event store ([`Retention::default`] when it has none, and
    /// always on adapters without lifecycle rules).
    async fn retention(&self, event_store_id: &str) -> Result<Retention, StorageError> {
        self.limits().check_event_store_id(event_store_id)?;
        Ok(Retention::default())
    }

    /// Physically removes the events the lifecycle rules hide (hard-deleted aggregates,
    /// truncated versions, expired events), keeping every other event readable at its
    /// position. Soft-deleted aggregates and `$lifecycle` events are never removed. The
    /// default removes nothing (an adapter without lifecycle rules hides nothing).
    async fn compact(&self) -> Result<CompactionReport, StorageError> {
        Ok(CompactionReport::default())
    }

    /// Castore's `getEvents`: the events of an aggregate, ordered by version. Empty when the
    /// aggregate does not exist.
    async fn get_events(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        options: &GetEventsOptions,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        self.limits().check_event_store_id(event_store_id)?;
        self.limits().check_aggregate_id(aggregate_id)?;
        if options.limit == Some(0) {
            return Ok(Vec::new());
        }
        self.read_events(event_store_id, aggregate_id, options)
            .await
    }

    /// [`get_events`](Self::get_events) without the copies: visits the same events, in the same
    /// order, each borrowed from where the adapter holds it, until `visit` returns
    /// [`ControlFlow::Break`]. Input is validated as by `get_events`.
    ///
    /// The default reads the events with `get_events` and visits them; adapters that can hand
    /// out their own bytes override it (the log adapter visits its read buffer, so a long
    /// aggregate is decoded without an owned copy of each payload).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use std::ops::ControlFlow;
    /// use annals::storage::{GetEventsOptions, InMemoryAdapter, StorageAdapter};
    /// let adapter = InMemoryAdapter::new();
    /// let mut bytes = 0;
    /// adapter
    ///     .visit_events("POKEMONS", "pikachu", &GetEventsOptions::default(), &mut |event| {
    ///         bytes += event.payload.len();
    ///         ControlFlow::Continue(())
    ///     })
    ///     .await?;
    /// assert_eq!(bytes, 0);
    /// # Ok::<(), annals::StorageError>(()) }).unwrap();
    /// ```
    async fn visit_events(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        options: &GetEventsOptions,
        visit: &mut (dyn for<'e> FnMut(EventRef<'e>) -> ControlFlow<()> + Send),
    ) -> Result<(), StorageError> {
        let events = self
            .get_events(event_store_id, aggregate_id, options)
            .await?;
        for event in &events {
            if visit(event.as_event_ref()).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Castore's `pushEvent`: appends one event and returns its global position.
    async fn push_event(&self, event: AppendEvent) -> Result<Position, StorageError> {
        let positions = self.push_event_group(vec![event]).await?;
        Ok(positions
            .into_iter()
            .next()
            .expect("an append returns one position per event"))
    }

    /// Castore's `pushEventGroup`: appends events of several aggregates and stores, all or
    /// nothing. Returns each event's position, in input order.
    async fn push_event_group(
        &self,
        events: Vec<AppendEvent>,
    ) -> Result<Vec<Position>, StorageError> {
        self.limits().check_commit(&events)?;
        let count = events.len();
        let positions = self.append(events).await?;
        debug_assert_eq!(positions.len(), count, "one position per appended event");
        Ok(positions)
    }

    /// [`push_event_group`](Self::push_event_group) of borrowed events: validates them and
    /// appends them all or nothing, and returns the position of the first one (the others
    /// follow it, consecutively, in input order).
    ///
    /// The default copies the events and calls `push_event_group`. Adapters that can encode
    /// borrowed events straight into their commit override it, validating them as
    /// `push_event_group` does (the log adapter does: no event is copied on its way to the
    /// log but into the commit itself). The typed layer pushes through this method.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use annals::storage::{AppendEventRef, InMemoryAdapter, StorageAdapter, Timestamp};
    /// let adapter = InMemoryAdapter::new();
    /// let event = |version| AppendEventRef {
    ///     event_store_id: "POKEMONS",
    ///     aggregate_id: "pikachu",
    ///     version,
    ///     timestamp: Timestamp::from_unix_millis(0),
    ///     event_type: "POKEMON_APPEARED",
    ///     schema_version: 1,
    ///     payload: &[0xc0],
    ///     metadata: &[],
    /// };
    /// assert_eq!(adapter.push_event_group_ref(&[event(1), event(2)]).await?, 1);
    /// assert_eq!(adapter.push_event_group_ref(&[event(3)]).await?, 3);
    /// # Ok::<(), annals::StorageError>(()) }).unwrap();
    /// ```
    async fn push_event_group_ref(
        &self,
        events: &[AppendEventRef<'_>],
    ) -> Result<Position, StorageError> {
        let owned = events.iter().map(AppendEventRef::to_append_event).collect();
        let positions = self.push_event_group(owned).await?;
        Ok(positions.first().copied().unwrap_or_default())
    }

    /// Castore's `listAggregateIds`: one page of aggregate ids ordered by their first event's
    /// timestamp. See [`page`](super::page) for the paging rules.
    async fn list_aggregate_ids(
        &self,
        event_store_id: &str,
        options: &ListAggregateIdsOptions,
    ) -> Result<AggregateIdsPage, StorageError> {
        self.limits().check_event_store_id(event_store_id)?;
        let query = options.resolve(event_store_id)?;
        let entries = self.scan_aggregate_ids(event_store_id, &query).await?;
        Ok(query.into_page(event_store_id, entries))
    }
}
