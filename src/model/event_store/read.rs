//! The read path of an [`EventStore`]: events, aggregate ids and aggregates. With a snapshot
//! policy an aggregate's read starts from its newest usable snapshot and, past a point where the
//! policy fires, writes a new one in the background (see
//! [`snapshot_policy`](crate::model::snapshot_policy)).

use std::sync::Arc;

use crate::model::aggregate::Aggregate;
use crate::model::error::Error;
use crate::model::event::{EventDetail, Events};
use crate::model::event_store::options::{
    ExistingAggregate, GetAggregateOptions, GetAggregateResponse,
};
use crate::model::event_store::store::{EventStore, Snapshots};
use crate::storage::{
    AggregateIdsPage, GetEventsOptions, ListAggregateIdsOptions, Position, SnapshotRecord,
    SnapshotStorage, StorageAdapter, StoredEvent, event_checksum,
};

impl<E: Events, S: Clone + Send + Sync + 'static> EventStore<E, S> {
    /// The events of `aggregate_id` matching `options`, ordered by version (newest first when
    /// `options.reverse`). Empty when the aggregate does not exist.
    pub async fn get_events(
        &self,
        aggregate_id: &str,
        options: GetEventsOptions,
    ) -> Result<Vec<EventDetail<E>>, Error> {
        let adapter = self.storage_adapter()?;
        let stored = adapter
            .get_events(self.event_store_id(), aggregate_id, &options)
            .await?;
        stored.into_iter().map(|s| self.decode(s)).collect()
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
    /// [snapshot policy]: crate::model::event_store::EventStoreBuilder::snapshots
    pub async fn get_aggregate(
        &self,
        aggregate_id: &str,
        options: GetAggregateOptions,
    ) -> Result<GetAggregateResponse<E, S>, Error> {
        let adapter = self.storage_adapter()?;
        let snapshots = self
            .inner
            .snapshots
            .as_ref()
            .filter(|_| adapter.snapshots().is_some());
        let (start, anchor, stored) = match snapshots {
            Some(snapshots) => {
                self.start_from_snapshot(&adapter, snapshots, aggregate_id, options.max_version)
                    .await?
            }
            None => {
                let range = GetEventsOptions {
                    max_version: options.max_version,
                    ..Default::default()
                };
                let stored = adapter
                    .get_events(self.event_store_id(), aggregate_id, &range)
                    .await?;
                (None, None, stored)
            }
        };
        let last_version = stored.last().map_or(0, |s| s.event.version);
        let mut aggregate = start;
        let mut events = Vec::with_capacity(stored.len());
        let mut to_snapshot = None;
        for stored in stored {
            // The anchor of a possible snapshot here, taken before decoding consumes the event.
            let anchor = snapshots
                .filter(|s| s.policy.may_fire(stored.event.version, last_version))
                .map(|_| (stored.position, event_checksum(&stored.event)));
            let event = self.decode(stored)?;
            let next = self.reduce(aggregate.take(), &event);
            if let (Some(snapshots), Some(anchor)) = (snapshots, anchor)
                && snapshots.policy.fires(&next, &event, last_version)
            {
                to_snapshot = Some((next.clone(), anchor));
            }
            aggregate = Some(next);
            events.push(event);
        }
        if let (Some(snapshots), Some((snapshot, anchor))) = (snapshots, to_snapshot) {
            self.write_snapshot(&adapter, snapshots, snapshot, anchor);
        }
        let last_event = match (events.last(), anchor) {
            (Some(last), _) => Some(last.clone()),
            (None, Some(anchor)) => Some(self.decode(anchor)?),
            (None, None) => None,
        };
        Ok(GetAggregateResponse {
            aggregate,
            events,
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

    /// Where a read with snapshots starts: the aggregate of the newest usable snapshot at or
    /// below `max_version` (or none), the event it was taken at, and the events to fold.
    async fn start_from_snapshot(
        &self,
        adapter: &Arc<dyn StorageAdapter>,
        snapshots: &Snapshots<E, S>,
        aggregate_id: &str,
        max_version: Option<u64>,
    ) -> Result<(Option<Aggregate<S>>, Option<StoredEvent>, Vec<StoredEvent>), Error> {
        let store = self.event_store_id();
        let mut bound = max_version.unwrap_or(u64::MAX);
        loop {
            let candidate = adapter
                .snapshots()
                .and_then(|storage| self.usable_snapshot(storage, snapshots, aggregate_id, bound));
            let Some((aggregate, record)) = candidate else {
                let range = GetEventsOptions {
                    max_version,
                    ..Default::default()
                };
                let stored = adapter.get_events(store, aggregate_id, &range).await?;
                return Ok((None, None, stored));
            };
            let range = GetEventsOptions {
                min_version: Some(record.version),
                max_version,
                ..Default::default()
            };
            let mut stored = adapter.get_events(store, aggregate_id, &range).await?;
            let anchored = stored.first().is_some_and(|first| {
                first.event.version == record.version
                    && first.position == record.event_position
                    && event_checksum(&first.event) == record.event_checksum
            });
            if anchored {
                let rest = stored.split_off(1);
                return Ok((Some(aggregate), stored.pop(), rest));
            }
            tracing::warn!(
                event_store_id = store,
                aggregate_id,
                version = record.version,
                "ignoring a stale snapshot: its event no longer reads back as it was"
            );
            self.delete_snapshot(adapter, aggregate_id, record.version);
            // `usable_snapshot` returns versions of at least 1.
            bound = record.version - 1;
        }
    }

    /// The newest snapshot at or below `bound` that was taken under this reducer version,
    /// is intact and decodes; those in the way are deleted.
    fn usable_snapshot(
        &self,
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
                match (snapshots.decode)(&record.state) {
                    Ok(state) => {
                        let aggregate = Aggregate {
                            aggregate_id: aggregate_id.to_owned(),
                            version: record.version,
                            state,
                        };
                        return Some((aggregate, record));
                    }
                    Err(e) => Some(format!("its state does not decode: {e}")),
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
            let state = match encode(&aggregate.state) {
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
