//! Entities as actors: one instance per id deciding commands in order, replies only after the
//! events are durable, bounded mailboxes, batching on a hot entity, fencing against other
//! writers, passivation and eviction, and failed commits. Every scenario runs on the in-memory
//! adapter and on the log adapter in a temporary directory; no test asserts a timing (timeouts
//! only guard against hangs).

mod batching;
mod crash;
mod failures;
mod fencing;
mod http;
mod ordering;
mod passivation;
mod timers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use annals::entity::{CommandContext, Entities, Entity, EntityOptions};
use annals::storage::{
    AggregateIdEntry, AggregateIdsQuery, AppendEvent, InMemoryAdapter, Limits, LoggedEvent,
    StoredEvent,
};
use annals::{
    Aggregate, EventDetail, EventStore, GetEventsOptions, Position, StorageAdapter, StorageError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Counted {
    /// The total after the event, computed from the state it was decided on: an event decided
    /// on stale state repeats a total, which the fencing tests detect.
    pub total: u64,
    /// Who asked, and their sequence number.
    pub tag: (u64, u64),
}

annals::events! {
    pub enum CounterEvent {
        Counted(Counted) = "COUNTED",
    }
}

/// The state: the running total and every tag, in version order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub total: u64,
    pub tags: Vec<(u64, u64)>,
}

fn reduce(state: Option<Tally>, event: &EventDetail<CounterEvent>) -> Tally {
    let mut tally = state.unwrap_or_default();
    let CounterEvent::Counted(counted) = &event.event;
    tally.total = counted.total;
    tally.tags.push(counted.tag);
    tally
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CounterCommand {
    /// Adds one, tagged.
    Count { tag: (u64, u64) },
    /// Adds two in two events.
    CountTwice { tag: (u64, u64) },
    /// Adds one unless the total has reached `limit`.
    CountBelow { limit: u64, tag: (u64, u64) },
    /// Records nothing.
    Peek,
    /// Adds one, tagged, and sets the timer `name` to deliver `Count { tag: later }` at
    /// `at_ms`: both commit together or not at all.
    Arm {
        tag: (u64, u64),
        name: String,
        at_ms: i64,
        later: (u64, u64),
    },
    /// Cancels the timer `name`; records nothing.
    Disarm { name: String },
    /// Adds one, tagged with (the delivering timer's attempt or 0, the decision's attempt).
    Stamp,
    /// Sets a timer with an invalid (empty) name.
    ArmInvalid,
}

#[derive(Debug, PartialEq)]
pub struct LimitReached {
    pub total: u64,
}

pub struct Counter;

impl Entity for Counter {
    type Command = CounterCommand;
    type Events = CounterEvent;
    type State = Tally;
    type Rejection = LimitReached;

    fn decide(
        state: Option<&Aggregate<Tally>>,
        command: &CounterCommand,
        ctx: &mut CommandContext<'_, CounterCommand>,
    ) -> Result<Vec<CounterEvent>, LimitReached> {
        let total = state.map_or(0, |tally| tally.total);
        let counted = |total, tag| CounterEvent::Counted(Counted { total, tag });
        match *command {
            CounterCommand::Arm {
                tag,
                ref name,
                at_ms,
                later,
            } => {
                let at = annals::Timestamp::from_unix_millis(at_ms);
                ctx.schedule(name.clone(), at, &CounterCommand::Count { tag: later });
                Ok(vec![counted(total + 1, tag)])
            }
            CounterCommand::Disarm { ref name } => {
                ctx.cancel(name.clone());
                Ok(Vec::new())
            }
            CounterCommand::Stamp => {
                let timer = ctx.timer().map_or(0, |timer| u64::from(timer.attempt));
                Ok(vec![counted(total + 1, (timer, u64::from(ctx.attempt())))])
            }
            CounterCommand::ArmInvalid => {
                ctx.schedule(
                    "",
                    annals::Timestamp::from_unix_millis(0),
                    &CounterCommand::Peek,
                );
                Ok(vec![counted(total + 1, (0, 0))])
            }
            CounterCommand::Count { tag } => Ok(vec![counted(total + 1, tag)]),
            CounterCommand::CountTwice { tag } => {
                Ok(vec![counted(total + 1, tag), counted(total + 2, tag)])
            }
            CounterCommand::CountBelow { limit, .. } if total >= limit => {
                Err(LimitReached { total })
            }
            CounterCommand::CountBelow { tag, .. } => Ok(vec![counted(total + 1, tag)]),
            CounterCommand::Peek => Ok(Vec::new()),
        }
    }
}

/// A store named COUNTERS on `adapter`.
pub fn store(adapter: Arc<dyn StorageAdapter>) -> EventStore<CounterEvent, Tally> {
    EventStore::builder("COUNTERS", reduce)
        .storage_adapter(adapter)
        .build()
        .expect("a valid store")
}

/// Entities of kind [`Counter`] on `adapter`.
pub fn counters(adapter: Arc<dyn StorageAdapter>, options: EntityOptions) -> Entities<Counter> {
    Entities::new(store(adapter), options).expect("a store id short enough for entities")
}

/// The adapters every scenario runs on: in memory, and a log in a temporary directory (kept
/// alive by the returned guard).
pub fn adapters() -> Vec<(
    &'static str,
    Arc<dyn StorageAdapter>,
    Option<tempfile::TempDir>,
)> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log: Arc<dyn StorageAdapter> = annals::open(dir.path()).expect("open the log");
    vec![
        ("memory", Arc::new(InMemoryAdapter::new()), None),
        ("log", log, Some(dir)),
    ]
}

/// The stored events of `id`, checked to be numbered 1, 2, 3… with no gap.
pub async fn stored(
    store: &EventStore<CounterEvent, Tally>,
    id: &str,
) -> Vec<EventDetail<CounterEvent>> {
    let events = store
        .get_events(id, GetEventsOptions::default())
        .await
        .expect("read the events");
    for (expected, event) in (1..).zip(&events) {
        assert_eq!(event.version, expected, "versions of {id} are gap-free");
    }
    events
}

/// An adapter around another that can hold appends at a gate and fail the next append.
pub struct Gated {
    inner: Arc<dyn StorageAdapter>,
    /// Appends wait for a permit when `closed`.
    gate: Semaphore,
    closed: AtomicBool,
    /// Signalled each time an append reaches the gate.
    pub entered: tokio::sync::Notify,
    /// 0, or which later append fails (1: the next one).
    fail_in: AtomicUsize,
}

impl Gated {
    pub fn new(inner: Arc<dyn StorageAdapter>) -> Arc<Self> {
        Arc::new(Gated {
            inner,
            gate: Semaphore::new(0),
            closed: AtomicBool::new(false),
            entered: tokio::sync::Notify::new(),
            fail_in: AtomicUsize::new(0),
        })
    }

    /// Makes later appends wait for [`Gated::open`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Lets every waiting and later append through.
    pub fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    /// Makes the next append fail without writing anything.
    pub fn fail_next_append(&self) {
        self.fail_append_after(0);
    }

    /// Lets `skip` appends through, then fails the next one without writing anything.
    pub fn fail_append_after(&self, skip: usize) {
        self.fail_in.store(skip + 1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl StorageAdapter for Gated {
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
        if self.closed.load(Ordering::SeqCst) {
            self.entered.notify_one();
            let permit = self.gate.acquire().await.expect("the gate is never closed");
            permit.forget();
        }
        let countdown = self
            .fail_in
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if countdown == Ok(1) {
            return Err(StorageError::Closed);
        }
        self.inner.append(events).await
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
}

/// Guards a test step against hanging.
pub async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(60), future)
        .await
        .expect("the step finishes")
}
