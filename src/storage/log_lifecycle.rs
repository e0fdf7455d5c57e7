//! The lifecycle rules on the log: what the log adapter and the live reader share to fold the
//! `$lifecycle` events and honour the rules on every read — and so their reads themselves,
//! written once over a [`LogSource`] (the engine, or the live reader's view of the log).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Mutex;

use super::engine_bridge::{event_ref, logged_event, storage_error};
use super::lifecycle::{AggregateFacts, IndexFacts, Lifecycle, Visible};
use super::{
    AggregateIdEntry, AggregateIdsQuery, EventRef, EventStoreSummary, GetEventsOptions,
    LIFECYCLE_STORE, LoggedEvent, Position, StorageError, StoredEvent, Timestamp,
};
use crate::engine::{Engine, EntryView, LiveLog, LogCursor};

/// A log that can be read by aggregate and listed: the engine, or a live reader's view.
pub(super) trait LogSource: Sync {
    /// Visits versions `min..=max` of an aggregate (at most `limit`, the newest when
    /// `reverse`), in ascending order.
    #[allow(clippy::too_many_arguments)]
    fn visit(
        &self,
        store: &str,
        aggregate: &str,
        min: u64,
        max: u64,
        limit: Option<usize>,
        reverse: bool,
        visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), StorageError>;

    /// Up to `want` events of the global log from `from`, and where the next read goes on.
    fn read_from(
        &self,
        from: LogCursor,
        want: usize,
    ) -> Result<(Vec<LoggedEvent>, LogCursor), StorageError>;

    /// Aggregates of a store by initial-event timestamp, as `Engine::list_aggregates`.
    #[allow(clippy::too_many_arguments)]
    fn list(
        &self,
        store: &str,
        after: Option<i64>,
        before: Option<i64>,
        reverse: bool,
        cursor: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StorageError>;
}

/// The engine and the live reader read alike (their listings differ only in that the
/// engine's can fail): one implementation for both.
macro_rules! log_source {
    ($($log:ty => $listed:expr),* $(,)?) => {$(
        impl LogSource for $log {
            fn visit(
                &self,
                store: &str,
                aggregate: &str,
                min: u64,
                max: u64,
                limit: Option<usize>,
                reverse: bool,
                visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
            ) -> Result<(), StorageError> {
                self.visit_events(
                    store,
                    aggregate,
                    min,
                    max,
                    limit,
                    reverse,
                    &mut |position, e: EntryView<'_>| visit(event_ref(position, aggregate, e)),
                )
                .map_err(storage_error)
            }

            fn read_from(
                &self,
                from: LogCursor,
                want: usize,
            ) -> Result<(Vec<LoggedEvent>, LogCursor), StorageError> {
                let batch = self.read_log(from, want).map_err(storage_error)?;
                let events = batch
                    .events
                    .into_iter()
                    .map(|(position, e)| logged_event(position, e))
                    .collect();
                Ok((events, batch.next))
            }

            fn list(
                &self,
                store: &str,
                after: Option<i64>,
                before: Option<i64>,
                reverse: bool,
                cursor: Option<(i64, &str)>,
                limit: usize,
            ) -> Result<Vec<(i64, String)>, StorageError> {
                ($listed)(self.list_aggregates(store, after, before, reverse, cursor, limit))
            }
        }
    )*};
}

log_source! {
    Engine => |listed: Result<_, _>| listed.map_err(storage_error),
    LiveLog => Ok,
}

/// Visits the events of one aggregate matching `options` (already narrowed to what the rules
/// leave visible) in ascending version order.
fn visit_matching(
    log: &dyn LogSource,
    store: &str,
    aggregate: &str,
    options: &GetEventsOptions,
    visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
) -> Result<(), StorageError> {
    log.visit(
        store,
        aggregate,
        options.min_version.unwrap_or(1),
        options.max_version.unwrap_or(u64::MAX),
        options.limit,
        options.reverse,
        visit,
    )
}

/// `read_events` of the log adapter and the live reader: the events of one aggregate
/// matching `options` (narrowed by [`visible_options`]; `None`, nothing is visible), in the
/// order they ask for.
pub(super) fn read_matching(
    log: &dyn LogSource,
    store: &str,
    aggregate: &str,
    options: Option<GetEventsOptions>,
) -> Result<Vec<StoredEvent>, StorageError> {
    let mut events = Vec::new();
    let Some(options) = options else {
        return Ok(events);
    };
    visit_matching(log, store, aggregate, &options, &mut |event| {
        events.push(event.to_stored());
        ControlFlow::Continue(())
    })?;
    if options.reverse {
        events.reverse();
    }
    Ok(events)
}

/// `visit_events` of the log adapter and the live reader, on `options` narrowed by
/// [`visible_options`]: ascending reads go straight from the log's read buffer; newest-first
/// ones need the events in hand, since the log is read in ascending order.
pub(super) fn visit_visible(
    log: &dyn LogSource,
    store: &str,
    aggregate: &str,
    options: Option<GetEventsOptions>,
    visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
) -> Result<(), StorageError> {
    let Some(options) = options else {
        return Ok(());
    };
    if !options.reverse {
        return visit_matching(log, store, aggregate, &options, visit);
    }
    for event in &read_matching(log, store, aggregate, Some(options))? {
        if visit(event.as_event_ref()).is_break() {
            break;
        }
    }
    Ok(())
}

/// The last version of an aggregate (0 when none): its newest event, read alone.
pub(super) fn last_version(
    log: &dyn LogSource,
    store: &str,
    aggregate: &str,
) -> Result<u64, StorageError> {
    let mut last = 0;
    log.visit(store, aggregate, 1, u64::MAX, Some(1), true, &mut |e| {
        last = e.version;
        ControlFlow::Break(())
    })?;
    Ok(last)
}

/// The first version at or after `from` whose timestamp is at or after `cutoff`: the events
/// from `from` on, read until it.
fn first_since(
    log: &dyn LogSource,
    store: &str,
    aggregate: &str,
    from: u64,
    cutoff: Timestamp,
) -> Result<Option<u64>, StorageError> {
    let mut found = None;
    log.visit(
        store,
        aggregate,
        from.max(1),
        u64::MAX,
        None,
        false,
        &mut |e| {
            if e.timestamp >= cutoff {
                found = Some(e.version);
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )?;
    Ok(found)
}

/// One aggregate's facts, read from the log.
pub(super) struct LogFacts<'a> {
    pub(super) log: &'a dyn LogSource,
    pub(super) store: &'a str,
    pub(super) aggregate: &'a str,
}

impl AggregateFacts for LogFacts<'_> {
    fn last_version(&mut self) -> Result<u64, StorageError> {
        last_version(self.log, self.store, self.aggregate)
    }

    fn first_since(&mut self, from: u64, cutoff: Timestamp) -> Result<Option<u64>, StorageError> {
        first_since(self.log, self.store, self.aggregate, from, cutoff)
    }
}

/// Any aggregate's facts, read from the log: what the compaction predicate asks.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) struct LogIndexFacts<'a>(pub(super) &'a dyn LogSource);

impl IndexFacts for LogIndexFacts<'_> {
    fn last_version(&self, store: &str, aggregate: &str) -> Result<u64, StorageError> {
        last_version(self.0, store, aggregate)
    }

    fn first_since(
        &self,
        store: &str,
        aggregate: &str,
        from: u64,
        cutoff: Timestamp,
    ) -> Result<Option<u64>, StorageError> {
        first_since(self.0, store, aggregate, from, cutoff)
    }
}

/// Folds every `$lifecycle` event of the log whose version (per target store) is above the
/// one in `folded`, in version order, into `rules`.
pub(super) fn fold(
    log: &dyn LogSource,
    rules: &mut Lifecycle,
    folded: &mut HashMap<String, u64>,
) -> Result<(), StorageError> {
    for (_, store) in log.list(LIFECYCLE_STORE, None, None, false, None, usize::MAX)? {
        let from = folded.get(&store).copied().unwrap_or(0) + 1;
        let mut failure = None;
        let mut last = from - 1;
        log.visit(
            LIFECYCLE_STORE,
            &store,
            from,
            u64::MAX,
            None,
            false,
            &mut |e| match rules.apply_event(&store, e.version, e.event_type, e.payload) {
                Ok(()) => {
                    last = e.version;
                    ControlFlow::Continue(())
                }
                Err(reason) => {
                    failure = Some(StorageError::UnreadableLifecycleEvent {
                        position: e.position,
                        reason: reason.0,
                    });
                    ControlFlow::Break(())
                }
            },
        )?;
        folded.insert(store, last);
        if let Some(failure) = failure {
            return Err(failure);
        }
    }
    Ok(())
}

/// `options` narrowed to what the rules leave of the aggregate now, or `None` when nothing
/// of it is visible.
pub(super) fn visible_options(
    rules: &Lifecycle,
    log: &dyn LogSource,
    store: &str,
    aggregate: &str,
    options: &GetEventsOptions,
) -> Result<Option<GetEventsOptions>, StorageError> {
    if !rules.has_rules(store) {
        return Ok(Some(*options));
    }
    let mut facts = LogFacts {
        log,
        store,
        aggregate,
    };
    match rules.visible(store, aggregate, Timestamp::now(), &mut facts)? {
        Visible::Deleted(_) => Ok(None),
        Visible::From(first) => Ok(Some(GetEventsOptions {
            min_version: Some(options.min_version.unwrap_or(1).max(first)),
            ..*options
        })),
    }
}

/// How many `read_log` continuation points a log adapter or reader remembers.
const LOG_CURSORS: usize = 16;

/// Where recent `read_log` calls stopped, so a reader continuing from there does not have to
/// locate its position in the log again.
#[derive(Debug, Default)]
pub(super) struct LogCursors(Mutex<Vec<LogCursor>>);

impl LogCursors {
    /// The cursor a read from `from` starts at: a remembered one, or a new one.
    fn take(&self, from: Position) -> LogCursor {
        let mut cursors = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match cursors.iter().position(|c| c.position() == from) {
            Some(i) => cursors.remove(i),
            None => LogCursor::at(from),
        }
    }

    /// Remembers where a read stopped, forgetting the oldest past [`LOG_CURSORS`].
    fn keep(&self, cursor: LogCursor) {
        let mut cursors = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cursors.len() >= LOG_CURSORS {
            cursors.remove(0);
        }
        cursors.push(cursor);
    }
}

/// `read_log` of the log adapter and the live reader: up to `limit` events of the global
/// log from `from` that the rules leave visible.
pub(super) fn read_log_visible(
    rules: &Lifecycle,
    log: &dyn LogSource,
    cursors: &LogCursors,
    from: Position,
    limit: usize,
) -> Result<Vec<LoggedEvent>, StorageError> {
    let mut next = cursors.take(from.max(1));
    let events = read_visible(rules, log, limit, &mut |want| {
        let (events, after) = log.read_from(next, want)?;
        next = after;
        Ok(events)
    })?;
    cursors.keep(next);
    Ok(events)
}

/// Reads up to `limit` visible events of the log with `read` (a raw read of up to `n` events
/// from where the last one stopped, `None` meaning from the start), skipping what the rules
/// hide, reading on until `limit` visible events or the end of the log.
pub(super) fn read_visible(
    rules: &Lifecycle,
    log: &dyn LogSource,
    limit: usize,
    read: &mut dyn FnMut(usize) -> Result<Vec<LoggedEvent>, StorageError>,
) -> Result<Vec<LoggedEvent>, StorageError> {
    let now = Timestamp::now();
    let mut memo = HashMap::new();
    let mut out = Vec::new();
    while out.len() < limit {
        let want = limit - out.len();
        let batch = read(want)?;
        let full = batch.len() >= want;
        for logged in batch {
            let admitted = rules.admits(
                &mut memo,
                &logged.event_store_id,
                &logged.event.aggregate_id,
                logged.event.version,
                now,
                || LogFacts {
                    log,
                    store: &logged.event_store_id,
                    aggregate: &logged.event.aggregate_id,
                },
            )?;
            if admitted {
                out.push(logged);
            }
        }
        if !full {
            break;
        }
    }
    Ok(out)
}

/// Lists the aggregates `query` admits, leaving out deleted ones, scanning on past them so a
/// page is as full as it would be without them.
pub(super) fn scan_visible(
    rules: &Lifecycle,
    log: &dyn LogSource,
    store: &str,
    query: &AggregateIdsQuery,
) -> Result<Vec<AggregateIdEntry>, StorageError> {
    let wanted = query.scan_limit().unwrap_or(usize::MAX);
    let mut out: Vec<AggregateIdEntry> = Vec::new();
    let mut cursor = query.after_entry.as_ref().map(|c| {
        (
            c.initial_event_timestamp.unix_millis(),
            c.aggregate_id.clone(),
        )
    });
    loop {
        let want = wanted - out.len();
        let found = log.list(
            store,
            query.initial_event_after.map(Timestamp::unix_millis),
            query.initial_event_before.map(Timestamp::unix_millis),
            query.reverse,
            cursor.as_ref().map(|(t, id)| (*t, id.as_str())),
            want,
        )?;
        let full = found.len() >= want;
        cursor = found.last().cloned();
        out.extend(
            found
                .into_iter()
                .filter(|(_, id)| rules.deleted(store, id).is_none())
                .map(|(t, aggregate_id)| AggregateIdEntry {
                    initial_event_timestamp: Timestamp::from_unix_millis(t),
                    aggregate_id,
                }),
        );
        if !full || out.len() >= wanted {
            return Ok(out);
        }
    }
}

/// Corrects the summary of a store with rules: deleted aggregates and hidden events left out.
pub(super) fn visible_summary(
    rules: &Lifecycle,
    log: &dyn LogSource,
    summary: &mut EventStoreSummary,
) -> Result<(), StorageError> {
    let store = summary.event_store_id.clone();
    if !rules.has_rules(&store) {
        return Ok(());
    }
    let now = Timestamp::now();
    let (mut aggregates, mut events) = (0, 0);
    for (_, aggregate) in log.list(&store, None, None, false, None, usize::MAX)? {
        let mut facts = LogFacts {
            log,
            store: &store,
            aggregate: &aggregate,
        };
        if let Visible::From(first) = rules.visible(&store, &aggregate, now, &mut facts)? {
            aggregates += 1;
            events += facts.last_version()?.saturating_sub(first.max(1) - 1);
        }
    }
    summary.aggregates = aggregates;
    summary.events = events;
    Ok(())
}
