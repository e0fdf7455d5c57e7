//! The push path of an [`EventStore`]: one event checked, encoded and appended, then the
//! response and the hook of the push. [Groups](crate::model::group) share all but the append.
//!
//! A push encodes its events' payloads and metadata into one buffer reused by the thread, and
//! appends them borrowed from it ([`StorageAdapter::push_event_group_ref`]): on the log adapter,
//! each event's bytes are copied once, into the commit the engine writes, and nothing is
//! allocated per event on the way.
//!
//! [`StorageAdapter::push_event_group_ref`]: crate::storage::StorageAdapter::push_event_group_ref

use std::borrow::Borrow;
use std::cell::RefCell;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::model::aggregate::Aggregate;
use crate::model::codec;
use crate::model::error::Error;
use crate::model::event::{EventDetail, Events, NewEvent};
use crate::model::event_store::options::{PushEventOptions, PushEventResponse, PushedEvents};
use crate::model::event_store::store::EventStore;
use crate::storage::{
    AppendEvent, AppendEventRef, LimitError, Position, StorageAdapter, Timestamp,
};

thread_local! {
    /// Where pushes encode payloads and metadata: a buffer reused by every push of the thread,
    /// so that encoding allocates nothing once it has grown to the size pushes need.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

/// Runs `f` with the thread's scratch buffer, cleared (or a fresh one if it is in use).
fn with_scratch<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            f(&mut buf)
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// The thread's scratch buffer, taken for the whole of a push (its events are appended
/// borrowed from it, across an `await`): given back when dropped, to the thread the push
/// then runs on.
struct Scratch(Vec<u8>);

impl Scratch {
    fn take() -> Self {
        let mut buf = SCRATCH
            .try_with(|s| s.try_borrow_mut().map(|mut b| std::mem::take(&mut *b)))
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        buf.clear();
        Scratch(buf)
    }
}

/// A scratch buffer grown past this by a large push is freed rather than kept by its thread.
const SCRATCH_KEPT_MAX: usize = 1 << 20;

impl Drop for Scratch {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        if buf.capacity() > SCRATCH_KEPT_MAX {
            return;
        }
        let _ = SCRATCH.try_with(|s| {
            if let Ok(mut kept) = s.try_borrow_mut()
                && kept.capacity() < buf.capacity()
            {
                *kept = buf;
            }
        });
    }
}

/// Where one event's payload and metadata lie in a scratch buffer: `start..middle` and
/// `middle..end`.
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    middle: usize,
    end: usize,
}

impl Span {
    fn payload(self, buf: &[u8]) -> &[u8] {
        &buf[self.start..self.middle]
    }

    fn metadata(self, buf: &[u8]) -> &[u8] {
        &buf[self.middle..self.end]
    }
}

impl<E: Events, S: Clone + Send + Sync + 'static> EventStore<E, S> {
    /// Pushes one event. The timestamp is set to now unless given. Fails with
    /// [`Error::EventAlreadyExists`] when the version is taken and with
    /// [`StorageError::UnexpectedVersion`](crate::storage::StorageError::UnexpectedVersion)
    /// when it is not the next one.
    #[tracing::instrument(
        name = "annals.push",
        level = "debug",
        skip_all,
        fields(store = %self.event_store_id()),
    )]
    pub async fn push_event(
        &self,
        event: NewEvent<E>,
        options: PushEventOptions<S>,
    ) -> Result<PushEventResponse<E, S>, Error> {
        let adapter = self.storage_adapter()?;
        self.check_prev_aggregate(&event, options.prev_aggregate.as_ref())?;
        let timestamp = event.timestamp.unwrap_or_else(Timestamp::now);
        let mut scratch = Scratch::take();
        let span = self.encode_parts(
            Some(&adapter),
            &event.event,
            &event.metadata,
            &mut scratch.0,
        )?;
        let append = self.append_ref(
            &event.aggregate_id,
            event.version,
            timestamp,
            &event.event,
            span.payload(&scratch.0),
            span.metadata(&scratch.0),
        );
        let position = adapter
            .push_event_group_ref(std::slice::from_ref(&append))
            .await?;
        drop(scratch);
        let response = self.pushed(
            event.into_detail(timestamp),
            position,
            options.prev_aggregate,
        );
        if let Some(hook) = self.hook(&response) {
            hook.await;
        }
        Ok(response)
    }

    /// Pushes `events` to `aggregate_id` as its versions `after_version + 1`, `+ 2`, … in one
    /// atomic commit: all are written or none is. Each gets `metadata` and the same
    /// timestamp (now). `after_version` is the aggregate's current version (0 for a new one).
    ///
    /// Fails like [`push_event`](Self::push_event) when `after_version` is not the
    /// aggregate's last version (then nothing was written), and with
    /// [`LimitError::EmptyGroup`] when there is no event. The payloads are encoded in one pass
    /// into a reused buffer, the metadata once for all events.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Credited { pub cents: i64 }
    /// # annals::events! { pub enum AccountEvent { Credited(Credited) = "CREDITED" } }
    /// use annals::{EventDetail, EventStore, storage::InMemoryAdapter};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let accounts = EventStore::builder("ACCOUNTS", |_, _: &EventDetail<AccountEvent>| ())
    ///     .storage_adapter(std::sync::Arc::new(InMemoryAdapter::new()))
    ///     .build()?;
    /// let credits: Vec<_> = (1..=3).map(|cents| AccountEvent::Credited(Credited { cents }))
    ///     .collect();
    /// let pushed = accounts.push_events("acct-1", 0, &credits, &()).await?;
    /// assert_eq!(pushed.positions(), 1..4);
    /// // The same versions again: refused, nothing written.
    /// assert!(accounts.push_events("acct-1", 0, &credits, &()).await.is_err());
    /// let pushed = accounts.push_events("acct-1", 3, credits, &()).await?;
    /// assert_eq!(pushed.positions(), 4..7);
    /// # Ok::<(), annals::Error>(()) }).unwrap();
    /// ```
    #[tracing::instrument(
        name = "annals.push",
        level = "debug",
        skip_all,
        fields(store = %self.event_store_id()),
    )]
    pub async fn push_events<I>(
        &self,
        aggregate_id: &str,
        after_version: u64,
        events: I,
        metadata: &E::Metadata,
    ) -> Result<PushedEvents, Error>
    where
        I: IntoIterator,
        I::Item: Borrow<E>,
    {
        let adapter = self.storage_adapter()?;
        let timestamp = Timestamp::now();
        let mut scratch = Scratch::take();
        // In hand, so that an encoding that meets a personal value can run again in a key
        // scope (feature `personal`).
        let events: Vec<I::Item> = events.into_iter().collect();
        let buf = &mut scratch.0;
        // One key scope for the whole batch (personal values, feature `personal`).
        let (metadata_end, spans, pushed) = self.within_keys(Some(&adapter), || {
            buf.clear();
            codec::encode_into(metadata, buf).map_err(|e| Error::Encode {
                event_store_id: self.event_store_id().to_owned(),
                event_type: "(metadata)".to_owned(),
                reason: e.0,
            })?;
            let metadata_end = buf.len();
            let mut spans = Vec::with_capacity(events.len());
            let mut pushed = self.inner.on_event_pushed.as_ref().map(|_| Vec::new());
            let mut version = after_version;
            for item in &events {
                let event: &E = item.borrow();
                // Past u64::MAX the version repeats, and the adapter refuses it as taken.
                version = version.saturating_add(1);
                let start = buf.len();
                self.encode_payload(event, buf)?;
                spans.push((event.event_type(), start, buf.len()));
                if let Some(pushed) = &mut pushed {
                    pushed.push(EventDetail {
                        aggregate_id: aggregate_id.to_owned(),
                        version,
                        timestamp,
                        event: event.clone(),
                        metadata: metadata.clone(),
                    });
                }
            }
            Ok((metadata_end, spans, pushed))
        })?;
        let buf = &scratch.0;
        let appends: Vec<AppendEventRef<'_>> = spans
            .iter()
            .zip(after_version.saturating_add(1)..)
            .map(|(&(event_type, start, end), version)| AppendEventRef {
                event_store_id: self.event_store_id(),
                aggregate_id,
                version,
                timestamp,
                event_type,
                schema_version: E::schema_version(event_type),
                payload: &buf[start..end],
                metadata: &buf[..metadata_end],
            })
            .collect();
        self.commit(adapter.as_ref(), &appends, timestamp, pushed)
            .await
    }

    /// Pushes `events`, of any aggregates of this store, in one atomic commit: all are written
    /// or none is. Events without a timestamp all get the same one (now).
    ///
    /// Every event must be its aggregate's next version (counting the batch's earlier events
    /// of that aggregate); otherwise the error names the first conflicting event and nothing
    /// was written. Fails with [`LimitError::EmptyGroup`] when there is no event.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Credited { pub cents: i64 }
    /// # annals::events! { pub enum AccountEvent { Credited(Credited) = "CREDITED" } }
    /// use annals::{EventDetail, EventStore, NewEvent, storage::InMemoryAdapter};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let accounts = EventStore::builder("ACCOUNTS", |_, _: &EventDetail<AccountEvent>| ())
    ///     .storage_adapter(std::sync::Arc::new(InMemoryAdapter::new()))
    ///     .build()?;
    /// let credit = |cents| AccountEvent::Credited(Credited { cents });
    /// let pushed = accounts
    ///     .push_batch([
    ///         NewEvent::new("acct-1", 1, credit(10)),
    ///         NewEvent::new("acct-2", 1, credit(20)),
    ///         NewEvent::new("acct-1", 2, credit(30)),
    ///     ])
    ///     .await?;
    /// assert_eq!(pushed.count, 3);
    /// # Ok::<(), annals::Error>(()) }).unwrap();
    /// ```
    #[tracing::instrument(
        name = "annals.push",
        level = "debug",
        skip_all,
        fields(store = %self.event_store_id()),
    )]
    pub async fn push_batch<I>(&self, events: I) -> Result<PushedEvents, Error>
    where
        I: IntoIterator,
        I::Item: Borrow<NewEvent<E>>,
    {
        let adapter = self.storage_adapter()?;
        let timestamp = Timestamp::now();
        let events: Vec<I::Item> = events.into_iter().collect();
        let mut scratch = Scratch::take();
        let mut spans = Vec::with_capacity(events.len());
        for event in &events {
            let event = event.borrow();
            spans.push(self.encode_parts(
                Some(&adapter),
                &event.event,
                &event.metadata,
                &mut scratch.0,
            )?);
        }
        let buf = &scratch.0;
        let appends: Vec<AppendEventRef<'_>> = events
            .iter()
            .zip(&spans)
            .map(|(event, &span)| {
                let event = event.borrow();
                self.append_ref(
                    &event.aggregate_id,
                    event.version,
                    event.timestamp.unwrap_or(timestamp),
                    &event.event,
                    span.payload(buf),
                    span.metadata(buf),
                )
            })
            .collect();
        let pushed = self.inner.on_event_pushed.as_ref().map(|_| {
            events
                .iter()
                .map(|event| event.borrow().clone().into_detail(timestamp))
                .collect()
        });
        self.commit(adapter.as_ref(), &appends, timestamp, pushed)
            .await
    }

    /// Appends `appends` in one commit, then runs the push hook for each of `pushed` (the
    /// same events, typed; `None` when the store has no hook).
    async fn commit(
        &self,
        adapter: &dyn crate::storage::StorageAdapter,
        appends: &[AppendEventRef<'_>],
        timestamp: Timestamp,
        pushed: Option<Vec<EventDetail<E>>>,
    ) -> Result<PushedEvents, Error> {
        if appends.is_empty() {
            return Err(Error::Storage(LimitError::EmptyGroup.into()));
        }
        let count = appends.len() as u64;
        let first_position = adapter.push_event_group_ref(appends).await?;
        for (event, position) in pushed.into_iter().flatten().zip(first_position..) {
            let response = self.pushed(event, position, None);
            if let Some(hook) = self.hook(&response) {
                hook.await;
            }
        }
        Ok(PushedEvents {
            first_position,
            count,
            timestamp,
        })
    }

    /// Appends `event`'s payload, encoded, to `out`.
    fn encode_payload(&self, event: &E, out: &mut Vec<u8>) -> Result<(), Error> {
        event.encode_payload_into(out).map_err(|e| Error::Encode {
            event_store_id: self.event_store_id().to_owned(),
            event_type: event.event_type().to_owned(),
            reason: e.0,
        })
    }

    /// Appends `event`'s payload and `metadata`, encoded, to `out`; returns where they lie.
    /// With the feature `personal`, personal values are encrypted with `adapter`'s keys.
    fn encode_parts(
        &self,
        adapter: Option<&Arc<dyn StorageAdapter>>,
        event: &E,
        metadata: &E::Metadata,
        out: &mut Vec<u8>,
    ) -> Result<Span, Error> {
        let start = out.len();
        self.within_keys(adapter, || {
            out.truncate(start);
            self.encode_parts_plain(event, metadata, out)
        })
    }

    /// Runs the encoding `f` with `adapter`'s keys available to personal values (feature
    /// `personal`; without it, just runs `f`), once the store has met one (`f` may run twice:
    /// it must start from the same state each time). An encoding that failed for want of keys,
    /// or because the key store failed, says so.
    fn within_keys<R>(
        &self,
        adapter: Option<&Arc<dyn StorageAdapter>>,
        f: impl FnMut() -> Result<R, Error>,
    ) -> Result<R, Error> {
        #[cfg(feature = "personal")]
        {
            let (encoded, outcome) = crate::model::personal::scoped(
                &self.inner.personal_seen,
                || adapter.cloned().or_else(|| self.storage_adapter().ok()),
                f,
            );
            encoded.map_err(|e| {
                if let Some(failure) = outcome.failure {
                    Error::Storage(failure)
                } else if outcome.no_key_store {
                    Error::NoKeyStore {
                        event_store_id: self.event_store_id().to_owned(),
                    }
                } else {
                    e
                }
            })
        }
        #[cfg(not(feature = "personal"))]
        {
            let _ = adapter;
            let mut f = f;
            f()
        }
    }

    /// [`encode_parts`](Self::encode_parts) within whatever key scope is current.
    fn encode_parts_plain(
        &self,
        event: &E,
        metadata: &E::Metadata,
        out: &mut Vec<u8>,
    ) -> Result<Span, Error> {
        let start = out.len();
        self.encode_payload(event, out)?;
        let middle = out.len();
        codec::encode_into(metadata, out).map_err(|e| Error::Encode {
            event_store_id: self.event_store_id().to_owned(),
            event_type: event.event_type().to_owned(),
            reason: e.0,
        })?;
        Ok(Span {
            start,
            middle,
            end: out.len(),
        })
    }

    /// The event to append for `event`, of this store, with its encoded parts.
    fn append_ref<'a>(
        &'a self,
        aggregate_id: &'a str,
        version: u64,
        timestamp: Timestamp,
        event: &E,
        payload: &'a [u8],
        metadata: &'a [u8],
    ) -> AppendEventRef<'a> {
        AppendEventRef {
            event_store_id: self.event_store_id(),
            aggregate_id,
            version,
            timestamp,
            event_type: event.event_type(),
            schema_version: E::schema_version(event.event_type()),
            payload,
            metadata,
        }
    }

    /// Encodes an event for the storage adapter, owned (what an event group holds until it
    /// is pushed).
    pub(crate) fn encode(
        &self,
        event: &NewEvent<E>,
        timestamp: Timestamp,
    ) -> Result<AppendEvent, Error> {
        with_scratch(|scratch| {
            let span = self.encode_parts(None, &event.event, &event.metadata, scratch)?;
            Ok(self
                .append_ref(
                    &event.aggregate_id,
                    event.version,
                    event.timestamp.unwrap_or(timestamp),
                    &event.event,
                    span.payload(scratch),
                    span.metadata(scratch),
                )
                .to_append_event())
        })
    }

    /// The response to a successful push of `event`.
    pub(crate) fn pushed(
        &self,
        event: EventDetail<E>,
        position: Position,
        prev_aggregate: Option<Aggregate<S>>,
    ) -> PushEventResponse<E, S> {
        let next_aggregate = match prev_aggregate {
            Some(prev) => Some(self.reduce(Some(prev), &event)),
            None if event.version == 1 => Some(self.reduce(None, &event)),
            None => None,
        };
        PushEventResponse {
            event,
            position,
            next_aggregate,
        }
    }

    /// The `on_event_pushed` call for `response`, if the store has a hook.
    pub(crate) fn hook(
        &self,
        response: &PushEventResponse<E, S>,
    ) -> Option<BoxFuture<'static, ()>> {
        self.inner
            .on_event_pushed
            .as_ref()
            .map(|hook| hook(response.clone()))
    }

    /// Checks that `prev`, if given, is the aggregate just before `event`.
    pub(crate) fn check_prev_aggregate(
        &self,
        event: &NewEvent<E>,
        prev: Option<&Aggregate<S>>,
    ) -> Result<(), Error> {
        match prev {
            Some(prev)
                if prev.aggregate_id != event.aggregate_id
                    || prev.version.checked_add(1) != Some(event.version) =>
            {
                Err(Error::PrevAggregateMismatch {
                    event_store_id: self.event_store_id().to_owned(),
                    aggregate_id: event.aggregate_id.clone(),
                    version: event.version,
                    prev_aggregate_id: prev.aggregate_id.clone(),
                    prev_version: prev.version,
                })
            }
            _ => Ok(()),
        }
    }
}
