//! One live instance: the task that holds an entity's state, decides its commands in order,
//! commits them in batches and answers once they are durable.
//!
//! At most one batch is in flight (being committed). Commands arriving meanwhile are decided
//! at once on the state the in-flight batch leads to and gathered into the next batch, which
//! is committed as soon as the first one is durable. Every command keeps its place in one of
//! the two batches until its answer is sent, so after a version conflict all of them can be
//! decided again, in order, on the reloaded state.
//!
//! The instance also holds the entity's timers (the fold of its aggregate in the timer store,
//! see [`timer`](super::timer)): the timer events a decision makes join the batch's event
//! group, so they commit with the command's events, and a version conflict on either reloads
//! both.

use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::context::{CommandContext, FiredTimer, TimerOp};
use super::error::EntityError;
use super::kind::Entity;
use super::options::EntityOptions;
use super::registry::InstanceRegistry;
use super::reply::Reply;
use super::request::{Envelope, Outcome, Request};
use super::timer::{Cancelled, Scheduled, TimerBook, TimerEvent};
use crate::model::Error;
use crate::model::aggregate::Aggregate;
use crate::model::event::NewEvent;
use crate::model::event_store::{EventStore, PushEventResponse};
use crate::model::group::{GroupedEvent, push_event_group};
use crate::storage::Timestamp;

type CommitResult<T> = Result<
    (
        Vec<PushEventResponse<<T as Entity>::Events, <T as Entity>::State>>,
        Vec<PushEventResponse<TimerEvent, TimerBook>>,
    ),
    Error,
>;
type Commit<T> = BoxFuture<'static, CommitResult<T>>;

/// What one decision records, before it is numbered and encoded.
enum Decided<T: Entity> {
    Record {
        events: Vec<T::Events>,
        timers: Vec<TimerEvent>,
    },
    /// Refused; a delivered timer is still marked delivered (its command was answered).
    Rejected {
        rejection: T::Rejection,
        timers: Vec<TimerEvent>,
    },
    TimerNotScheduled(String),
    InvalidTimer {
        name: String,
        reason: String,
    },
}

/// Commands decided together and committed as one group.
struct Batch<T: Entity> {
    events: Vec<GroupedEvent<T::Events, T::State>>,
    timer_events: Vec<GroupedEvent<TimerEvent, TimerBook>>,
    commands: Vec<Envelope<T>>,
}

impl<T: Entity> Batch<T> {
    fn new() -> Self {
        Batch {
            events: Vec::new(),
            timer_events: Vec::new(),
            commands: Vec::new(),
        }
    }

    fn records_nothing(&self) -> bool {
        self.events.is_empty() && self.timer_events.is_empty()
    }
}

pub(crate) struct Instance<T: Entity> {
    aggregate_id: String,
    generation: u64,
    store: EventStore<T::Events, T::State>,
    /// The timer store, on the adapter `store` had at the last load.
    timer_store: EventStore<TimerEvent, TimerBook>,
    options: EntityOptions,
    shared: Weak<InstanceRegistry<T>>,
    inbox: mpsc::Receiver<Envelope<T>>,
    /// The aggregate after every decided command (durable or not); `None` before its first
    /// event.
    state: Option<Aggregate<T::State>>,
    /// The entity's timers after every decided command; `None` before its first timer event.
    timers: Option<Aggregate<TimerBook>>,
    /// Whether `state` and `timers` reflect the store; false before the first load and after a
    /// failure.
    loaded: bool,
    /// The commands of the batch being committed.
    in_flight: Vec<Envelope<T>>,
    /// The commands decided behind it.
    next: Batch<T>,
}

impl<T: Entity> Instance<T> {
    pub(crate) fn new(
        aggregate_id: String,
        generation: u64,
        shared: &Arc<InstanceRegistry<T>>,
        inbox: mpsc::Receiver<Envelope<T>>,
    ) -> Self {
        Instance {
            aggregate_id,
            generation,
            store: shared.store.clone(),
            timer_store: shared.timers.clone(),
            options: shared.options.clone(),
            shared: Arc::downgrade(shared),
            inbox,
            state: None,
            timers: None,
            loaded: false,
            in_flight: Vec::new(),
            next: Batch::new(),
        }
    }

    pub(crate) async fn run(mut self, predecessor: Option<JoinHandle<()>>) {
        if let Some(predecessor) = predecessor {
            // Its outcome does not matter, only that it no longer decides.
            let _ = predecessor.await;
        }
        let mut commit: Option<Commit<T>> = None;
        let mut open = true;
        loop {
            if commit.is_none() && !self.next.commands.is_empty() {
                let batch = std::mem::replace(&mut self.next, Batch::new());
                commit = self.submit(batch);
                continue;
            }
            let idle = commit.is_none() && self.next.commands.is_empty();
            if idle && !open {
                break;
            }
            let room = !self.next_is_full();
            tokio::select! {
                biased;
                result = async { commit.as_mut().expect("polled only when in flight").await },
                    if commit.is_some() =>
                {
                    commit = self.committed(result).await;
                }
                envelope = self.inbox.recv(), if open && room => match envelope {
                    Some(envelope) => self.take(envelope).await,
                    None => open = false,
                },
                () = tokio::time::sleep(self.options.idle_timeout), if idle && open => {
                    match self.shared.upgrade() {
                        None => break,
                        Some(shared) => {
                            let id = &self.aggregate_id;
                            match shared.passivate(id, self.generation, &mut self.inbox) {
                                Some(envelope) => self.take(envelope).await,
                                None => break,
                            }
                        }
                    }
                }
            }
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.stopped(&self.aggregate_id, self.generation);
        }
    }

    fn next_is_full(&self) -> bool {
        batch_is_full(&self.next, &self.options)
    }

    /// Decides `envelope` and every command already waiting behind it that fits the batch.
    async fn take(&mut self, envelope: Envelope<T>) {
        if !self.loaded
            && let Err(error) = self.load().await
        {
            let error = store_error(&self.aggregate_id, Arc::new(error));
            let _ = envelope.reply.send(Err(error));
            return;
        }
        let mut batch = std::mem::replace(&mut self.next, Batch::new());
        self.decide(&mut batch, envelope);
        while !batch_is_full(&batch, &self.options) {
            match self.inbox.try_recv() {
                Ok(envelope) => self.decide(&mut batch, envelope),
                Err(_) => break,
            }
        }
        self.next = batch;
    }

    /// Reads the aggregate (snapshot and later events) and the entity's timers.
    async fn load(&mut self) -> Result<(), Error> {
        let adapter = self.store.storage_adapter()?;
        // A store id too long to take the `.timers` suffix leaves the entity without timers
        // (setting one fails with the limit error) rather than without state.
        let has_timers = adapter
            .limits()
            .check_event_store_id(self.timer_store.event_store_id())
            .is_ok();
        self.timer_store = self.timer_store.with_storage_adapter(adapter);
        let read_timers = async {
            if has_timers {
                let response = self
                    .timer_store
                    .get_aggregate(&self.aggregate_id, Default::default())
                    .await?;
                Ok(response.aggregate)
            } else {
                Ok(None)
            }
        };
        let (state, timers) = tokio::try_join!(
            self.store
                .get_aggregate(&self.aggregate_id, Default::default()),
            read_timers,
        )?;
        self.state = state.aggregate;
        self.timers = timers;
        self.loaded = true;
        Ok(())
    }

    /// Decides one request on the current state and, if it records events, folds them in and
    /// adds them to `batch`.
    fn decide(&mut self, batch: &mut Batch<T>, mut envelope: Envelope<T>) {
        let _span = tracing::debug_span!(
            "annals.entity.command",
            aggregate = %self.aggregate_id,
            attempt = envelope.attempts + 1
        )
        .entered();
        envelope.attempts += 1;
        let version = self.state.as_ref().map_or(0, |aggregate| aggregate.version);
        // One timestamp for the decision's events, set now so the state folded here is the
        // one a reader of the stored events builds.
        let timestamp = Timestamp::now();
        let (events, timers) = match self.decision(&envelope, timestamp) {
            Decided::Record { events, timers } => (events, timers),
            Decided::Rejected { rejection, timers } => {
                envelope.outcome = Outcome::Rejected(rejection);
                (Vec::new(), timers)
            }
            Decided::TimerNotScheduled(name) => {
                envelope.outcome = Outcome::TimerNotScheduled(name);
                batch.commands.push(envelope);
                return;
            }
            Decided::InvalidTimer { name, reason } => {
                envelope.outcome = Outcome::InvalidTimer { name, reason };
                batch.commands.push(envelope);
                return;
            }
        };
        let timer_version = self.timers.as_ref().map_or(0, |book| book.version);
        let new_events = numbered(&self.aggregate_id, version, timestamp, events);
        let new_timers = numbered(&self.aggregate_id, timer_version, timestamp, timers);
        let grouped = new_events
            .iter()
            .map(|event| self.store.group_event(event.clone(), Default::default()))
            .collect::<Result<Vec<_>, Error>>()
            .and_then(|events| {
                let timers = new_timers
                    .iter()
                    .map(|event| {
                        self.timer_store
                            .group_event(event.clone(), Default::default())
                    })
                    .collect::<Result<Vec<_>, Error>>()?;
                Ok((events, timers))
            });
        let (grouped, grouped_timers) = match grouped {
            Ok(grouped) => grouped,
            // The events do not encode: nothing to commit and nothing learned about the
            // state, so the answer can go now.
            Err(error) => {
                let _ = envelope
                    .reply
                    .send(Err(store_error(&self.aggregate_id, Arc::new(error))));
                return;
            }
        };
        let count = new_events.len();
        for event in new_events {
            let detail = event.into_detail(timestamp);
            self.state = Some(self.store.reduce(self.state.take(), &detail));
        }
        for event in new_timers {
            let detail = event.into_detail(timestamp);
            self.timers = Some(self.timer_store.reduce(self.timers.take(), &detail));
        }
        if matches!(envelope.outcome, Outcome::Undecided) {
            envelope.outcome = if count == 0 {
                Outcome::Unchanged { version }
            } else {
                Outcome::Events {
                    count,
                    version: version + count as u64,
                }
            };
        }
        batch.events.extend(grouped);
        batch.timer_events.extend(grouped_timers);
        batch.commands.push(envelope);
    }

    /// What `envelope`'s request records on the current state and timers.
    fn decision(&self, envelope: &Envelope<T>, now: Timestamp) -> Decided<T> {
        let empty = TimerBook::default();
        let book = self.timers.as_ref().map_or(&empty, |timers| &timers.state);
        let state = self.state.as_ref();
        match &envelope.request {
            Request::Command(command) => {
                let mut ctx = CommandContext::new(now, envelope.attempts, None, book);
                match T::decide(state, command, &mut ctx) {
                    Ok(events) => match timer_events(book, None, ctx) {
                        Ok(timers) => Decided::Record { events, timers },
                        Err((name, reason)) => Decided::InvalidTimer { name, reason },
                    },
                    Err(rejection) => Decided::Rejected {
                        rejection,
                        timers: Vec::new(),
                    },
                }
            }
            Request::TimerFire { timer, command } => {
                let Some(pending) = book.current(timer) else {
                    return Decided::TimerNotScheduled(timer.name.clone());
                };
                let fired = FiredTimer {
                    name: timer.name.clone(),
                    at: Timestamp::from_unix_millis(pending.at_ms),
                    attempt: pending.attempts.max(1),
                };
                let delivered = TimerEvent::Delivered(timer.clone());
                let mut ctx = CommandContext::new(now, envelope.attempts, Some(&fired), book);
                match T::decide(state, command, &mut ctx) {
                    Ok(events) => match timer_events(book, Some(delivered), ctx) {
                        Ok(timers) => Decided::Record { events, timers },
                        Err((name, reason)) => Decided::InvalidTimer { name, reason },
                    },
                    Err(rejection) => Decided::Rejected {
                        rejection,
                        timers: vec![delivered],
                    },
                }
            }
            Request::TimerAttempt(timer) => match book.current(timer) {
                Some(_) => Decided::Record {
                    events: Vec::new(),
                    timers: vec![TimerEvent::Attempted(timer.clone())],
                },
                None => Decided::TimerNotScheduled(timer.name.clone()),
            },
            Request::Schedule { name, at, command } => {
                let mut ctx = CommandContext::<T::Command>::new(now, envelope.attempts, None, book);
                ctx.ops.push(TimerOp::Schedule {
                    name: name.clone(),
                    at: *at,
                    command: command.clone(),
                });
                match timer_events(book, None, ctx) {
                    Ok(timers) => Decided::Record {
                        events: Vec::new(),
                        timers,
                    },
                    Err((name, reason)) => Decided::InvalidTimer { name, reason },
                }
            }
            Request::Cancel { name } if book.timers.contains_key(name) => Decided::Record {
                events: Vec::new(),
                timers: vec![TimerEvent::Cancelled(Cancelled { name: name.clone() })],
            },
            Request::Cancel { name } => Decided::TimerNotScheduled(name.clone()),
        }
    }

    /// Starts committing `batch`, or answers it at once when it records nothing (the state
    /// its commands read is durable: nothing is in flight before it).
    fn submit(&mut self, batch: Batch<T>) -> Option<Commit<T>> {
        let records_nothing = batch.records_nothing();
        self.in_flight = batch.commands;
        if records_nothing {
            answer(
                &self.aggregate_id,
                std::mem::take(&mut self.in_flight),
                Vec::new(),
            );
            return None;
        }
        Some(Box::pin(push_event_group((
            batch.events,
            batch.timer_events,
        ))))
    }

    /// Handles the end of the in-flight commit; returns the next one to wait for, if any.
    async fn committed(&mut self, result: CommitResult<T>) -> Option<Commit<T>> {
        match result {
            Ok((responses, _)) => {
                answer(
                    &self.aggregate_id,
                    std::mem::take(&mut self.in_flight),
                    responses,
                );
                None
            }
            Err(error) if error.event_already_exists().is_some() => self.fence().await,
            Err(error) => {
                let error = Arc::new(error);
                self.fail_all(&error);
                None
            }
        }
    }

    /// Someone else appended to the aggregate: reload it and decide again, in order, every
    /// command not yet answered.
    async fn fence(&mut self) -> Option<Commit<T>> {
        if let Err(error) = self.load().await {
            self.fail_all(&Arc::new(error));
            return None;
        }
        let behind = std::mem::replace(&mut self.next, Batch::new());
        let mut first = Batch::new();
        for envelope in std::mem::take(&mut self.in_flight) {
            self.redecide(&mut first, envelope);
        }
        let mut second = Batch::new();
        for envelope in behind.commands {
            self.redecide(&mut second, envelope);
        }
        self.next = second;
        self.submit(first)
    }

    fn redecide(&mut self, batch: &mut Batch<T>, mut envelope: Envelope<T>) {
        if envelope.attempts > self.options.conflict_retries {
            let _ = envelope.reply.send(Err(EntityError::Contended {
                aggregate_id: self.aggregate_id.clone(),
                attempts: envelope.attempts,
            }));
            return;
        }
        envelope.outcome = Outcome::Undecided;
        self.decide(batch, envelope);
    }

    /// Fails the in-flight batch and the one decided behind it (it read state that is not
    /// durable), and forgets the state so the next command reloads it.
    fn fail_all(&mut self, error: &Arc<Error>) {
        let behind = std::mem::replace(&mut self.next, Batch::new());
        for envelope in std::mem::take(&mut self.in_flight)
            .into_iter()
            .chain(behind.commands)
        {
            let _ = envelope
                .reply
                .send(Err(store_error(&self.aggregate_id, Arc::clone(error))));
        }
        self.state = None;
        self.timers = None;
        self.loaded = false;
    }
}

/// `events` as new events of `aggregate_id` after `version`, all at `timestamp`.
fn numbered<E: crate::model::event::Events<Metadata: Default>>(
    aggregate_id: &str,
    version: u64,
    timestamp: Timestamp,
    events: Vec<E>,
) -> Vec<NewEvent<E>> {
    (1..)
        .zip(events)
        .map(|(offset, event)| {
            NewEvent::new(aggregate_id, version + offset, event).with_timestamp(timestamp)
        })
        .collect()
}

/// The timer events of a decision: `delivered` first (the timer that brought the command),
/// then what the context asked for, in order. Cancelling a timer that is not scheduled records
/// nothing. Fails with the first invalid request.
fn timer_events<C>(
    book: &TimerBook,
    delivered: Option<TimerEvent>,
    ctx: CommandContext<'_, C>,
) -> Result<Vec<TimerEvent>, (String, String)> {
    if let Some(invalid) = ctx.invalid {
        return Err(invalid);
    }
    if ctx.ops.is_empty() {
        return Ok(delivered.into_iter().collect());
    }
    let mut scheduled: std::collections::BTreeSet<&str> =
        book.timers.keys().map(String::as_str).collect();
    if let Some(TimerEvent::Delivered(timer)) = &delivered {
        scheduled.remove(timer.name.as_str());
    }
    let mut out: Vec<TimerEvent> = delivered.into_iter().collect();
    for op in &ctx.ops {
        match op {
            TimerOp::Schedule { name, at, command } => {
                scheduled.insert(name);
                out.push(TimerEvent::Scheduled(Scheduled {
                    name: name.clone(),
                    at_ms: at.unix_millis(),
                    command: command.clone(),
                }));
            }
            TimerOp::Cancel { name } => {
                if scheduled.remove(name.as_str()) {
                    out.push(TimerEvent::Cancelled(Cancelled { name: name.clone() }));
                }
            }
        }
    }
    Ok(out)
}

fn batch_is_full<T: Entity>(batch: &Batch<T>, options: &EntityOptions) -> bool {
    batch.commands.len() >= options.batch_commands_max.max(1)
        || batch.events.len() + batch.timer_events.len() >= options.batch_events_max.max(1)
}

fn store_error<R: std::fmt::Debug>(aggregate_id: &str, source: Arc<Error>) -> EntityError<R> {
    EntityError::Store {
        aggregate_id: aggregate_id.to_owned(),
        source,
    }
}

/// Sends every command of a durable batch its answer; `responses` are the batch's events in
/// order.
fn answer<T: Entity>(
    aggregate_id: &str,
    commands: Vec<Envelope<T>>,
    responses: Vec<PushEventResponse<T::Events, T::State>>,
) {
    let mut events = responses.into_iter().map(|response| response.event);
    for envelope in commands {
        let answer = match envelope.outcome {
            Outcome::Events { count, version } => Ok(Reply {
                version,
                events: events.by_ref().take(count).collect(),
            }),
            Outcome::Unchanged { version } => Ok(Reply {
                version,
                events: Vec::new(),
            }),
            Outcome::Rejected(rejection) => Err(EntityError::Rejected(rejection)),
            Outcome::TimerNotScheduled(name) => Err(EntityError::TimerNotScheduled {
                aggregate_id: aggregate_id.to_owned(),
                name,
            }),
            Outcome::InvalidTimer { name, reason } => Err(EntityError::InvalidTimer {
                aggregate_id: aggregate_id.to_owned(),
                name,
                reason,
            }),
            Outcome::Undecided => unreachable!("every command of a batch is decided"),
        };
        // The sender may have stopped waiting; the events are recorded all the same.
        let _ = envelope.reply.send(answer);
    }
}
