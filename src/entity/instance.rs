//! One live instance: the task that holds an entity's state, decides its commands in order,
//! commits them in batches and answers once they are durable.
//!
//! At most one batch is in flight (being committed). Commands arriving meanwhile are decided
//! at once on the state the in-flight batch leads to and gathered into the next batch, which
//! is committed as soon as the first one is durable. Every command keeps its place in one of
//! the two batches until its answer is sent, so after a version conflict all of them can be
//! decided again, in order, on the reloaded state.

use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::runtime::Shared;
use super::{Entity, EntityError, EntityOptions, Reply};
use crate::aggregate::Aggregate;
use crate::error::Error;
use crate::event::NewEvent;
use crate::event_store::{EventStore, PushEventResponse};
use crate::group::{GroupedEvent, push_event_group};
use crate::storage::Timestamp;

type Answer<T> = Result<Reply<<T as Entity>::Events>, EntityError<<T as Entity>::Rejection>>;
type CommitResult<T> =
    Result<Vec<PushEventResponse<<T as Entity>::Events, <T as Entity>::State>>, Error>;
type Commit<T> = BoxFuture<'static, CommitResult<T>>;

/// A command in a mailbox or a batch, with where to send its answer.
pub(crate) struct Envelope<T: Entity> {
    pub(crate) command: T::Command,
    pub(crate) reply: oneshot::Sender<Answer<T>>,
    /// How many times the command has been decided.
    pub(crate) attempts: u32,
    pub(crate) outcome: Outcome<T::Rejection>,
}

/// What deciding a command gave, kept until its batch is durable.
pub(crate) enum Outcome<R> {
    /// Not decided yet.
    Undecided,
    /// The next `count` events of its batch; the aggregate ends at `version`.
    Events { count: usize, version: u64 },
    /// No event; decided on the aggregate at `version`.
    Unchanged { version: u64 },
    /// Refused.
    Rejected(R),
}

/// Commands decided together and committed as one group.
struct Batch<T: Entity> {
    events: Vec<GroupedEvent<T::Events, T::State>>,
    commands: Vec<Envelope<T>>,
}

impl<T: Entity> Batch<T> {
    fn new() -> Self {
        Batch {
            events: Vec::new(),
            commands: Vec::new(),
        }
    }
}

pub(crate) struct Instance<T: Entity> {
    aggregate_id: String,
    generation: u64,
    store: EventStore<T::Events, T::State>,
    options: EntityOptions,
    shared: Weak<Shared<T>>,
    inbox: mpsc::Receiver<Envelope<T>>,
    /// The aggregate after every decided command (durable or not); `None` before its first
    /// event.
    state: Option<Aggregate<T::State>>,
    /// Whether `state` reflects the store; false before the first load and after a failure.
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
        shared: &Arc<Shared<T>>,
        inbox: mpsc::Receiver<Envelope<T>>,
    ) -> Self {
        Instance {
            aggregate_id,
            generation,
            store: shared.store.clone(),
            options: shared.options.clone(),
            shared: Arc::downgrade(shared),
            inbox,
            state: None,
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
                            match shared.passivate(&self.aggregate_id, self.generation, &mut self.inbox) {
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

    /// Reads the aggregate from the store (snapshot and later events).
    async fn load(&mut self) -> Result<(), Error> {
        let response = self
            .store
            .get_aggregate(&self.aggregate_id, Default::default())
            .await?;
        self.state = response.aggregate;
        self.loaded = true;
        Ok(())
    }

    /// Decides one command on the current state and, if it records events, folds them in and
    /// adds them to `batch`.
    fn decide(&mut self, batch: &mut Batch<T>, mut envelope: Envelope<T>) {
        envelope.attempts += 1;
        let version = self.state.as_ref().map_or(0, |aggregate| aggregate.version);
        let events = match T::decide(self.state.as_ref(), &envelope.command) {
            Ok(events) => events,
            Err(rejection) => {
                envelope.outcome = Outcome::Rejected(rejection);
                batch.commands.push(envelope);
                return;
            }
        };
        if events.is_empty() {
            envelope.outcome = Outcome::Unchanged { version };
            batch.commands.push(envelope);
            return;
        }
        // One timestamp for the command's events, set now so the state folded here is the
        // one a reader of the stored events builds.
        let timestamp = Timestamp::now();
        let new_events: Vec<NewEvent<T::Events>> = (1..)
            .zip(events)
            .map(|(offset, event)| {
                NewEvent::new(&self.aggregate_id, version + offset, event).with_timestamp(timestamp)
            })
            .collect();
        let grouped: Result<Vec<_>, Error> = new_events
            .iter()
            .map(|event| self.store.group_event(event.clone(), Default::default()))
            .collect();
        let grouped = match grouped {
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
        envelope.outcome = Outcome::Events {
            count,
            version: version + count as u64,
        };
        batch.events.extend(grouped);
        batch.commands.push(envelope);
    }

    /// Starts committing `batch`, or answers it at once when it records nothing (the state
    /// its commands read is durable: nothing is in flight before it).
    fn submit(&mut self, batch: Batch<T>) -> Option<Commit<T>> {
        self.in_flight = batch.commands;
        if batch.events.is_empty() {
            answer(std::mem::take(&mut self.in_flight), Vec::new());
            return None;
        }
        Some(Box::pin(push_event_group(batch.events)))
    }

    /// Handles the end of the in-flight commit; returns the next one to wait for, if any.
    async fn committed(&mut self, result: CommitResult<T>) -> Option<Commit<T>> {
        match result {
            Ok(responses) => {
                answer(std::mem::take(&mut self.in_flight), responses);
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
        self.loaded = false;
    }
}

fn batch_is_full<T: Entity>(batch: &Batch<T>, options: &EntityOptions) -> bool {
    batch.commands.len() >= options.batch_commands_max.max(1)
        || batch.events.len() >= options.batch_events_max.max(1)
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
            Outcome::Undecided => unreachable!("every command of a batch is decided"),
        };
        // The sender may have stopped waiting; the events are recorded all the same.
        let _ = envelope.reply.send(answer);
    }
}
