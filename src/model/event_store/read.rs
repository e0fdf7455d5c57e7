//! The read path of an [`EventStore`]: events, aggregate ids and aggregates. With a snapshot
//! policy an aggregate's read starts from its newest usable snapshot and, past a point where the
//! policy fires, writes a new one in the background (see
//! [`snapshot_policy`](crate::model::snapshot_policy)).
//!
//! Every read visits the adapter's events where they lie
//! ([`StorageAdapter::visit_events`]): each payload is decoded from the adapter's bytes and
//! folded at once, and only what the caller asked for is kept (the events of
//! [`get_aggregate`](EventStore::get_aggregate), or just the state and the last event of
//! [`get_aggregate_state`](EventStore::get_aggregate_state)).

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use futures::Stream;

use crate::model::aggregate::{Aggregate, apply};
use crate::model::error::Error;
use crate::model::event::{EventDetail, Events};
use crate::model::event_store::options::{
    AggregateState, ExistingAggregate, GetAggregateOptions, GetAggregateResponse,
};
use crate::model::event_store::store::{EventStore, Snapshots};
use crate::storage::{
    AggregateIdsPage, EventRef, GetEventsOptions, ListAggregateIdsOptions, Position,
    SnapshotRecord, SnapshotStorage, StorageAdapter, StoredEvent, event_ref_checksum,
};

/// Events decoded per read of [`EventStore::stream_events`]: what a stream holds in memory.
const STREAM_PAGE_EVENTS: usize = 1024;

/// How often (in events folded) a fold under a policy by replay cost looks at the clock.
const BUDGET_CHECK_EVENTS: u64 = 16;

/// What one fold of an aggregate's events found.
struct Fold<E: Events, S> {
    aggregate: Option<Aggregate<S>>,
    /// Every folded event, when the caller wants them; otherwise only `last` is kept.
    events: Option<Vec<EventDetail<E>>>,
    last: Option<EventDetail<E>>,
    /// The snapshot the fold starts from, until its event is met.
    expect_anchor: Option<(u64, Position, u32)>,
    /// The event the snapshot was taken at, as read back.
    anchor: Option<StoredEvent>,
    /// The snapshot's event does not read back as it was.
    stale: bool,
    /// The aggregate at the last point where the policy fired, and its event's anchor.
    to_snapshot: Option<(Aggregate<S>, (Position, u32))>,
    /// Under a policy by replay cost: when the fold started, whether it has run past its
    /// budget, and the anchor of the last event folded since.
    started: Instant,
    folded: u64,
    over_budget: bool,
    last_anchor: Option<(Position, u32)>,
    error: Option<Error>,
}

impl<E: Events, S: Clone + Send + Sync + 'static> Fold<E, S> {
    fn visit(
        &mut self,
        store: &EventStore<E, S>,
        adapter: &Arc<dyn StorageAdapter>,
        snapshots: Option<&Snapshots<E, S>>,
        stored: EventRef<'_>,
    ) -> ControlFlow<()> {
        if let Some((version, position, checksum)) = self.expect_anchor.take() {
            if stored.version != version
                || stored.position != position
                || event_ref_checksum(&stored) != checksum
            {
                self.stale = true;
                return ControlFlow::Break(());
            }
            self.anchor = Some(stored.to_stored());
            return ControlFlow::Continue(());
        }
        let budget = snapshots.and_then(|s| s.policy.budget());
        self.folded += 1;
        if let Some(budget) = budget
            && !self.over_budget
            && self.folded.is_multiple_of(BUDGET_CHECK_EVENTS)
            && self.started.elapsed() >= budget
        {
            self.over_budget = true;
        }
        // The anchor of a possible snapshot here, taken from the bytes as stored.
        let anchor = snapshots
            .filter(|s| self.over_budget || s.policy.may_fire(stored.version))
            .map(|_| (stored.position, event_ref_checksum(&stored)));
        // The previous last event's id is reused: no allocation per event for it.
        let id = self.last.take().map(|l| l.aggregate_id).unwrap_or_default();
        let event = match store.decode_into(adapter, &stored, id) {
            Ok(event) => event,
            Err(e) => {
                self.error = Some(e);
                return ControlFlow::Break(());
            }
        };
        let next = apply(store.reducer(), self.aggregate.take(), &event);
        if budget.is_some() {
            // The snapshot, if the fold ran past its budget, is taken at its end.
            self.last_anchor = anchor;
        } else if let (Some(snapshots), Some(anchor)) = (snapshots, anchor)
            && snapshots.policy.fires(&next, &event)
        {
            self.to_snapshot = Some((next.clone(), anchor));
        }
        self.aggregate = Some(next);
        match &mut self.events {
            Some(events) => events.push(event),
            None => self.last = Some(event),
        }
        ControlFlow::Continue(())
    }
}

impl<E: Events, S: Clone + Send + Sync + 'static> EventStore<E, S> {
    /// The events of `aggregate_id` matching `options`, ordered by version (newest first when
    /// `options.reverse`). Empty when the aggregate does not exist.
    ///
    /// Payloads are decoded straight from the adapter's bytes. For a long aggregate,
    /// [`stream_events`](Self::stream_events) gives the same events without holding them all.
    #[tracing::instrument(
        name = "annals.read",
        level = "debug",
        skip_all,
        fields(store = %self.event_store_id(), aggregate = aggregate_id),
    )]
    pub async fn get_events(
        &self,
        aggregate_id: &str,
        options: GetEventsOptions,
    ) -> Result<Vec<EventDetail<E>>, Error> {
        let adapter = self.storage_adapter()?;
        let mut events = Vec::new();
        let mut error = None;
        adapter
            .visit_events(
                self.event_store_id(),
                aggregate_id,
                &options,
                &mut |stored| match self.decode_ref_with(Some(&adapter), &stored) {
                    Ok(event) => {
                        events.push(event);
                        ControlFlow::Continue(())
                    }
                    Err(e) => {
                        error = Some(e);
                        ControlFlow::Break(())
                    }
                },
            )
            .await?;
        match error {
            Some(e) => Err(e),
            None => Ok(events),
        }
    }

    /// The events [`get_events`](Self::get_events) gives, as a [`Stream`] read from the
    /// adapter a page at a time (1,024 events): memory stays bounded however long the
    /// aggregate is. Each page reads the events committed when it is read, so without
    /// `max_version` a stream may end with events pushed after it started. The first error
    /// ends the stream.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Credited { pub cents: i64 }
    /// # annals::events! { pub enum AccountEvent { Credited(Credited) = "CREDITED" } }
    /// use futures::TryStreamExt;
    /// use annals::{EventDetail, EventStore, storage::InMemoryAdapter};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let accounts = EventStore::builder("ACCOUNTS", |_, _: &EventDetail<AccountEvent>| ())
    ///     .storage_adapter(std::sync::Arc::new(InMemoryAdapter::new()))
    ///     .build()?;
    /// let credits = (1..=3).map(|cents| AccountEvent::Credited(Credited { cents }));
    /// accounts.push_events("acct-1", 0, credits, &()).await?;
    ///
    /// let mut total = 0;
    /// let mut events = std::pin::pin!(accounts.stream_events("acct-1", Default::default()));
    /// while let Some(event) = events.try_next().await? {
    ///     let AccountEvent::Credited(c) = &event.event;
    ///     total += c.cents;
    /// }
    /// assert_eq!(total, 6);
    /// # Ok::<(), annals::Error>(()) }).unwrap();
    /// ```
    pub fn stream_events(
        &self,
        aggregate_id: &str,
        options: GetEventsOptions,
    ) -> impl Stream<Item = Result<EventDetail<E>, Error>> + Send + 'static {
        struct Paging<E: Events, S> {
            store: EventStore<E, S>,
            aggregate_id: String,
            /// The range still to read.
            options: GetEventsOptions,
            page: VecDeque<EventDetail<E>>,
            done: bool,
        }
        let state = Paging {
            store: self.clone(),
            aggregate_id: aggregate_id.to_owned(),
            options,
            page: VecDeque::new(),
            done: false,
        };
        futures::stream::unfold(state, |mut state| async move {
            loop {
                if let Some(event) = state.page.pop_front() {
                    return Some((Ok(event), state));
                }
                if state.done {
                    return None;
                }
                let remaining = state.options.limit.unwrap_or(usize::MAX);
                let page = GetEventsOptions {
                    limit: Some(remaining.min(STREAM_PAGE_EVENTS)),
                    ..state.options
                };
                let events = match state.store.get_events(&state.aggregate_id, page).await {
                    Ok(events) => events,
                    Err(e) => {
                        state.done = true;
                        return Some((Err(e), state));
                    }
                };
                let read = events.len();
                match events.last() {
                    Some(last) if read == STREAM_PAGE_EVENTS && read < remaining => {
                        if state.options.reverse {
                            state.options.max_version = last.version.checked_sub(1);
                            state.done = state.options.max_version.is_none();
                        } else {
                            state.options.min_version = last.version.checked_add(1);
                            state.done = state.options.min_version.is_none();
                        }
                        state.options.limit = state.options.limit.map(|l| l - read);
                    }
                    _ => state.done = true,
                }
                state.page = events.into();
            }
        })
    }

    /// One page of aggregate ids, ordered by the timestamp of their first event. See
    /// [`storage::page`](crate::storage::page) for the paging rules.
    pub async fn list_aggregate_ids(
        &self,
        options: ListAggregateIdsOptions,
    ) -> Result<AggregateIdsPage, Error> {
        let adapter = self.storage_adapter()?;
        Ok(adapter
            .list_aggregate_ids(self.event_store_id(), &options)
            .await?)
    }

    /// The aggregate built from its events (up to `options.max_version`), with those events.
    ///
    /// With a [snapshot policy], the read starts from the newest valid snapshot at or below
    /// `max_version` and folds only the later events; the aggregate is the one a full replay
    /// gives. If the fold passes a point where the policy fires, a snapshot of the aggregate
    /// there is written in the background (the read does not wait). See
    /// [`snapshot_policy`](crate::model::snapshot_policy).
    ///
    /// To fold without keeping the events, use
    /// [`get_aggregate_state`](Self::get_aggregate_state).
    ///
    /// [snapshot policy]: crate::model::event_store::EventStoreBuilder::snapshots
    #[tracing::instrument(
        name = "annals.read",
        level = "debug",
        skip_all,
        fields(store = %self.event_store_id(), aggregate = aggregate_id),
    )]
    pub async fn get_aggregate(
        &self,
        aggregate_id: &str,
        options: GetAggregateOptions,
    ) -> Result<GetAggregateResponse<E, S>, Error> {
        let (aggregate, events, last_event) = self.fold(aggregate_id, options, true).await?;
        Ok(GetAggregateResponse {
            aggregate,
            events: events.unwrap_or_default(),
            last_event,
        })
    }

    /// The aggregate and its last event, as [`get_aggregate`](Self::get_aggregate) builds
    /// them (snapshots included), without keeping the events folded: each event is decoded,
    /// folded and dropped, so folding a long aggregate takes memory for its state only.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Credited { pub cents: i64 }
    /// # annals::events! { pub enum AccountEvent { Credited(Credited) = "CREDITED" } }
    /// use annals::{EventDetail, EventStore, storage::InMemoryAdapter};
    ///
    /// fn reduce(balance: Option<i64>, e: &EventDetail<AccountEvent>) -> i64 {
    ///     let AccountEvent::Credited(c) = &e.event;
    ///     balance.unwrap_or(0) + c.cents
    /// }
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let accounts = EventStore::builder("ACCOUNTS", reduce)
    ///     .storage_adapter(std::sync::Arc::new(InMemoryAdapter::new()))
    ///     .build()?;
    /// let credits = (1..=100).map(|cents| AccountEvent::Credited(Credited { cents }));
    /// accounts.push_events("acct-1", 0, credits, &()).await?;
    ///
    /// let folded = accounts.get_aggregate_state("acct-1", Default::default()).await?;
    /// let account = folded.aggregate.unwrap();
    /// assert_eq!((account.version, account.state), (100, 5050));
    /// assert_eq!(folded.last_event.unwrap().version, 100);
    /// # Ok::<(), annals::Error>(()) }).unwrap();
    /// ```
    #[tracing::instrument(
        name = "annals.read",
        level = "debug",
        skip_all,
        fields(store = %self.event_store_id(), aggregate = aggregate_id),
    )]
    pub async fn get_aggregate_state(
        &self,
        aggregate_id: &str,
        options: GetAggregateOptions,
    ) -> Result<AggregateState<E, S>, Error> {
        let (aggregate, _, last_event) = self.fold(aggregate_id, options, false).await?;
        Ok(AggregateState {
            aggregate,
            last_event,
        })
    }

    /// Like [`get_aggregate`](Self::get_aggregate), but fails with
    /// [`Error::AggregateNotFound`] when the aggregate has no event.
    pub async fn get_existing_aggregate(
        &self,
        aggregate_id: &str,
        options: GetAggregateOptions,
    ) -> Result<ExistingAggregate<E, S>, Error> {
        let GetAggregateResponse {
            aggregate,
            events,
            last_event,
        } = self.get_aggregate(aggregate_id, options).await?;
        match (aggregate, last_event) {
            (Some(aggregate), Some(last_event)) => Ok(ExistingAggregate {
                aggregate,
                events,
                last_event,
            }),
            _ => Err(Error::AggregateNotFound {
                event_store_id: self.event_store_id().to_owned(),
                aggregate_id: aggregate_id.to_owned(),
            }),
        }
    }

    /// Folds the events of `aggregate_id` up to `options.max_version`, from the newest usable
    /// snapshot if the store takes snapshots: the aggregate, the events folded (when
    /// `keep_events`) and the last event.
    #[allow(clippy::type_complexity)]
    async fn fold(
        &self,
        aggregate_id: &str,
        options: GetAggregateOptions,
        keep_events: bool,
    ) -> Result<
        (
            Option<Aggregate<S>>,
            Option<Vec<EventDetail<E>>>,
            Option<EventDetail<E>>,
        ),
        Error,
    > {
        let adapter = self.storage_adapter()?;
        let snapshots = self
            .inner
            .snapshots
            .as_ref()
            .filter(|_| adapter.snapshots().is_some());
        let max_version = options.max_version;
        let mut bound = max_version.unwrap_or(u64::MAX);
        loop {
            let start = match (snapshots, adapter.snapshots()) {
                (Some(snapshots), Some(storage)) => {
                    self.usable_snapshot(&adapter, storage, snapshots, aggregate_id, bound)
                }
                _ => None,
            };
            let mut fold = Fold {
                expect_anchor: start
                    .as_ref()
                    .map(|(_, r)| (r.version, r.event_position, r.event_checksum)),
                aggregate: start.map(|(aggregate, _)| aggregate),
                events: keep_events.then(Vec::new),
                last: None,
                anchor: None,
                stale: false,
                to_snapshot: None,
                started: Instant::now(),
                folded: 0,
                over_budget: false,
                last_anchor: None,
                error: None,
            };
            let range = GetEventsOptions {
                min_version: fold.expect_anchor.map(|(version, _, _)| version),
                max_version,
                ..Default::default()
            };
            adapter
                .visit_events(self.event_store_id(), aggregate_id, &range, &mut |stored| {
                    fold.visit(self, &adapter, snapshots, stored)
                })
                .await?;
            if let Some(e) = fold.error {
                return Err(e);
            }
            // Still expected: the snapshot's event was not met at all, it is gone.
            if fold.stale || fold.expect_anchor.is_some() {
                let version = range.min_version.unwrap_or(1);
                tracing::warn!(
                    event_store_id = self.event_store_id(),
                    aggregate_id,
                    version,
                    "ignoring a stale snapshot: its event no longer reads back as it was"
                );
                self.delete_snapshot(&adapter, aggregate_id, version);
                // Snapshots are taken at versions of at least 1.
                bound = version - 1;
                continue;
            }
            if let (Some(anchor), Some(aggregate)) = (fold.last_anchor, &fold.aggregate) {
                fold.to_snapshot = Some((aggregate.clone(), anchor));
            }
            if let (Some(snapshots), Some((snapshot, anchor))) = (snapshots, fold.to_snapshot) {
                self.write_snapshot(&adapter, snapshots, snapshot, anchor);
            }
            let last_event = match (&fold.events, fold.last, fold.anchor) {
                (Some(events), _, anchor) => match events.last() {
                    Some(last) => Some(last.clone()),
                    None => anchor.map(|a| self.decode(a)).transpose()?,
                },
                (None, Some(last), _) => Some(last),
                (None, None, anchor) => anchor.map(|a| self.decode(a)).transpose()?,
            };
            return Ok((fold.aggregate, fold.events, last_event));
        }
    }

    /// The newest snapshot at or below `bound` that was taken under this reducer version,
    /// is intact and decodes; those in the way are deleted.
    fn usable_snapshot(
        &self,
        adapter: &Arc<dyn StorageAdapter>,
        storage: &dyn SnapshotStorage,
        snapshots: &Snapshots<E, S>,
        aggregate_id: &str,
        mut bound: u64,
    ) -> Option<(Aggregate<S>, SnapshotRecord)> {
        let store = self.event_store_id();
        loop {
            let record = match storage.latest(store, aggregate_id, bound) {
                Ok(Some(record)) => record,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(
                        event_store_id = store,
                        aggregate_id,
                        error = %e,
                        "snapshot storage failed; replaying the aggregate from its first event"
                    );
                    return None;
                }
            };
            let problem = if record.version == 0 || record.version > bound {
                Some("it is outside the requested versions".to_owned())
            } else if record.reducer_version != self.inner.reducer_version {
                tracing::debug!(
                    event_store_id = store,
                    aggregate_id,
                    version = record.version,
                    snapshot_reducer_version = record.reducer_version,
                    reducer_version = self.inner.reducer_version,
                    "deleting a snapshot of another reducer version"
                );
                None
            } else if !record.is_intact() {
                Some("its checksum does not match".to_owned())
            } else {
                match self.decode_snapshot(adapter, snapshots, &record.state) {
                    Ok(state) => {
                        let aggregate = Aggregate {
                            aggregate_id: aggregate_id.to_owned(),
                            version: record.version,
                            state,
                        };
                        return Some((aggregate, record));
                    }
                    Err(e) => Some(e),
                }
            };
            if let Some(problem) = problem {
                tracing::warn!(
                    event_store_id = store,
                    aggregate_id,
                    version = record.version,
                    problem,
                    "ignoring a damaged snapshot"
                );
            }
            if let Err(e) = storage.delete(store, aggregate_id, record.version) {
                tracing::warn!(
                    event_store_id = store,
                    aggregate_id,
                    error = %e,
                    "could not delete a snapshot"
                );
            }
            bound = record.version.checked_sub(1)?.min(bound.saturating_sub(1));
        }
    }

    /// A snapshot's state, decoded with `adapter`'s keys for personal values (feature
    /// `personal`). A state holding an encrypted value whose key is gone (or that does not
    /// authenticate) is refused: the aggregate is replayed, so that the reducer decides what
    /// the forgotten value means.
    fn decode_snapshot(
        &self,
        adapter: &Arc<dyn StorageAdapter>,
        snapshots: &Snapshots<E, S>,
        state: &[u8],
    ) -> Result<S, String> {
        #[cfg(feature = "personal")]
        {
            let (decoded, outcome) =
                crate::model::personal::within(Some(adapter), || (snapshots.decode)(state));
            if let Some(failure) = outcome.failure {
                return Err(format!("the key store failed: {failure}"));
            }
            if outcome.lost {
                return Err("it holds personal data that is forgotten or unreadable".to_owned());
            }
            decoded.map_err(|e| format!("its state does not decode: {e}"))
        }
        #[cfg(not(feature = "personal"))]
        {
            let _ = adapter;
            (snapshots.decode)(state).map_err(|e| format!("its state does not decode: {e}"))
        }
    }

    fn delete_snapshot(&self, adapter: &Arc<dyn StorageAdapter>, aggregate_id: &str, version: u64) {
        if let Some(storage) = adapter.snapshots()
            && let Err(e) = storage.delete(self.event_store_id(), aggregate_id, version)
        {
            tracing::warn!(
                event_store_id = self.event_store_id(),
                aggregate_id,
                error = %e,
                "could not delete a snapshot"
            );
        }
    }

    /// Encodes and writes a snapshot of `aggregate`, then prunes the aggregate's older ones,
    /// on a blocking task of the current Tokio runtime (inline without one). Failures are
    /// warnings: the snapshot is only an optimisation.
    fn write_snapshot(
        &self,
        adapter: &Arc<dyn StorageAdapter>,
        snapshots: &Snapshots<E, S>,
        aggregate: Aggregate<S>,
        (event_position, event_checksum): (Position, u32),
    ) {
        let Some(slot) = snapshots
            .writes
            .claim(&aggregate.aggregate_id, aggregate.version)
        else {
            return;
        };
        let adapter = Arc::clone(adapter);
        let store = self.event_store_id().to_owned();
        let reducer_version = self.inner.reducer_version;
        let keep = snapshots.policy.kept();
        let encode = snapshots.encode;
        let job = move || {
            let _slot = slot;
            let Some(storage) = adapter.snapshots() else {
                return;
            };
            let id = aggregate.aggregate_id.as_str();
            #[cfg(feature = "personal")]
            let (state, _) =
                crate::model::personal::within(Some(&adapter), || encode(&aggregate.state));
            #[cfg(not(feature = "personal"))]
            let state = encode(&aggregate.state);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(
                        event_store_id = store,
                        aggregate_id = id,
                        error = %e,
                        "cannot encode a snapshot"
                    );
                    return;
                }
            };
            let record = SnapshotRecord::new(
                aggregate.version,
                reducer_version,
                event_position,
                event_checksum,
                state,
            );
            let written = storage
                .put(&store, id, &record)
                .and_then(|()| storage.prune(&store, id, keep));
            if let Err(e) = written {
                tracing::warn!(
                    event_store_id = store,
                    aggregate_id = id,
                    error = %e,
                    "cannot write a snapshot"
                );
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(job)),
            Err(_) => job(),
        }
    }
}
