//! Event-triggered actions: an async function run once (at least) for every event it
//! subscribes to.
//!
//! An [`EventAction`] declares a name, a [`Filter`] (which stores and event types), a
//! [`RetryPolicy`] and a handler. [`EventAction::spawn`] starts an [`ActionRunner`]: a tokio
//! task reading the log through a durable [`Consumer`] named after the action. For each event
//! it runs the handler; on failure it waits (exponential backoff) and runs it again; after the
//! policy's last attempt, or at once on a [permanent](ActionError::permanent) failure, the event
//! becomes a [dead letter](super::dead_letter) and the runner moves on. A handler that panics
//! has failed that attempt; the runner survives.
//!
//! The checkpoint moves past an event only after the handler succeeded, or together with its
//! dead letter in one transaction. So delivery is **at-least-once**: after a crash (or an
//! [`abort`](ActionRunner::abort)) the event that was being handled is handled again. Events
//! come in global order, one at a time; a slow retry holds back later events, but only as long
//! as the retry policy allows.
//!
//! The runner also carries out [retry requests](super::dead_letter#retry-requests): when it
//! starts, and then every [`retry_requests_interval`](EventAction::retry_requests_interval)
//! (between two events, or while waiting for one), it runs the action again on each dead letter
//! marked with [`dead_letter::request_retry`], with the retry policy. Success removes the dead
//! letter; failure keeps it, with the attempts counted and the mark cleared.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use annals::action::{ActionContext, ActionError, EventAction};
//! use annals::state::StateStore;
//! use annals::storage::{InMemoryAdapter, LoggedEvent, StorageAdapter};
//! use annals::subscription::Filter;
//!
//! let adapter: Arc<dyn StorageAdapter> = Arc::new(InMemoryAdapter::new());
//! let state = Arc::new(StateStore::in_memory());
//! let notify = EventAction::new("notify-trainer", |event: LoggedEvent, mut ctx: ActionContext| {
//!     async move {
//!         let note = format!("{} was caught", event.event.aggregate_id);
//!         ctx.enqueue("notifications", note)?;
//!         Ok::<(), ActionError>(())
//!     }
//! })
//! .filter(Filter::all().stores(["POKEMONS"]).event_types(["POKEMON_CAUGHT"]));
//! let runner = notify.spawn(adapter, state)?;
//! runner.stop().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::context::{ActionContext, Trigger};
use super::dead_letter::{self, DeadLetter, RetryDeadLetterError};
use super::error::{ActionError, ActionRunError};
use super::panic::panic_message;
use super::retry::RetryPolicy;
use crate::model::event::{EventDetail, Events};
use crate::model::event_store::EventStore;
use crate::runtime::consumer::Consumer;
use crate::runtime::state::StateStore;
use crate::runtime::subscription::Filter;
use crate::storage::{LoggedEvent, Position, StorageAdapter, StorageError, StoredEvent};

type Handler = Arc<
    dyn Fn(LoggedEvent, ActionContext) -> BoxFuture<'static, Result<(), ActionError>> + Send + Sync,
>;

/// An action run for the events of the log it subscribes to: see the [module docs](self).
///
/// Cheap to clone; the declaration is immutable once spawned.
#[derive(Clone)]
pub struct EventAction {
    name: Arc<str>,
    filter: Filter,
    retry: RetryPolicy,
    retry_requests_interval: Duration,
    handler: Handler,
}

/// How often a running action looks for retry requests, by default.
const RETRY_REQUESTS_INTERVAL: Duration = Duration::from_secs(1);

/// The shortest interval between two looks for retry requests: a shorter one would keep an
/// idle runner busy.
const RETRY_REQUESTS_INTERVAL_MIN: Duration = Duration::from_millis(1);

impl std::fmt::Debug for EventAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventAction")
            .field("name", &self.name)
            .field("filter", &self.filter)
            .field("retry", &self.retry)
            .field("retry_requests_interval", &self.retry_requests_interval)
            .finish_non_exhaustive()
    }
}

/// How one event's delivery ended.
enum Delivery {
    Done,
    Failed { error: String, attempts: u32 },
    Stopped,
}

/// How a pass over the retry requests ended.
enum Sweep {
    Done,
    /// The runner was asked to stop during a retry's backoff.
    Stopped,
}

impl EventAction {
    /// An action named `name` (also its consumer's name: keep it stable across releases) that
    /// runs `handler` on every event of the log, raw. Narrow it with [`filter`](Self::filter).
    pub fn new<F, Fut>(name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(LoggedEvent, ActionContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ActionError>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |event, ctx| handler(event, ctx).boxed());
        EventAction {
            name: Arc::from(name.into()),
            filter: Filter::all(),
            retry: RetryPolicy::default(),
            retry_requests_interval: RETRY_REQUESTS_INTERVAL,
            handler,
        }
    }

    /// An action on the events of `store`, decoded (upcasters applied) into `EventDetail`s.
    /// Its filter starts as the store; [`filter`](Self::filter) can narrow it to event types
    /// (keep the store in it). An event that does not decode is a permanent failure: it is
    /// dead-lettered at once.
    pub fn typed<E, S, F, Fut>(
        name: impl Into<String>,
        store: &EventStore<E, S>,
        handler: F,
    ) -> Self
    where
        E: Events,
        S: Clone + Send + Sync + 'static,
        F: Fn(EventDetail<E>, ActionContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ActionError>> + Send + 'static,
    {
        let store = store.clone();
        let filter = Filter::all().stores([store.event_store_id()]);
        let handler = Arc::new(handler);
        EventAction::new(name, move |event: LoggedEvent, ctx| {
            let stored = StoredEvent {
                position: event.position,
                event: event.event,
            };
            let decoded = store.decode(stored);
            let handler = handler.clone();
            async move {
                match decoded {
                    Ok(detail) => handler(detail, ctx).await,
                    Err(e) => Err(ActionError::permanent(format!("undecodable event: {e}"))),
                }
            }
        })
        .filter(filter)
    }

    /// Only the events `filter` admits (replaces the filter).
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// How failures are retried (default: [`RetryPolicy::default`]).
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How often the running action looks for dead letters marked with
    /// [`dead_letter::request_retry`] (default: every second; at least every millisecond). It
    /// also looks once when it starts. A look is one read of the state store.
    pub fn retry_requests_interval(mut self, interval: Duration) -> Self {
        self.retry_requests_interval = interval.max(RETRY_REQUESTS_INTERVAL_MIN);
        self
    }

    /// The action's name, which is also its consumer's and its dead letters' key.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The events the action subscribes to.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn subscription_filter(&self) -> Filter {
        self.filter.clone()
    }

    /// Starts the action's runner on a tokio task: it continues from the action's checkpoint
    /// in `state` (from the start of the log the first time). Run one runner per action name.
    pub fn spawn(
        &self,
        adapter: Arc<dyn StorageAdapter>,
        state: Arc<StateStore>,
    ) -> Result<ActionRunner, StorageError> {
        let adapter_for_retries = adapter.clone();
        let consumer = Consumer::open(
            self.name.to_string(),
            adapter,
            state.clone(),
            self.filter.clone(),
        )?;
        let (stop, stop_rx) = watch::channel(false);
        let (progress_tx, progress) = watch::channel(consumer.position());
        let action = self.clone();
        let task = tokio::spawn(async move {
            let name = action.name.to_string();
            action
                .run(
                    consumer,
                    adapter_for_retries,
                    state,
                    stop_rx,
                    progress_tx,
                    true,
                )
                .await
                .map_err(|source| ActionRunError::Storage {
                    action: name,
                    source,
                })
        });
        Ok(ActionRunner {
            name: self.name.clone(),
            stop,
            progress,
            task: Some(task),
        })
    }

    /// The events this action gave up on, in log order.
    pub fn dead_letters(&self, state: &StateStore) -> Result<Vec<DeadLetter>, StorageError> {
        dead_letter::list(state, &self.name)
    }

    /// Drops the dead letter at `position`: the action will not handle that event. Whether
    /// there was one.
    pub fn drop_dead_letter(
        &self,
        state: &StateStore,
        position: Position,
    ) -> Result<bool, StorageError> {
        dead_letter::remove(state, &self.name, position)
    }

    /// Runs the action once more on the dead-lettered event at `position` (read back from the
    /// log). On success the dead letter is removed; on failure it stays, with the new error and
    /// one more attempt counted, and the failure is returned. May run beside the runner.
    pub async fn retry_dead_letter(
        &self,
        adapter: &Arc<dyn StorageAdapter>,
        state: &Arc<StateStore>,
        position: Position,
    ) -> Result<(), RetryDeadLetterError> {
        let Some(mut letter) = dead_letter::get(state, &self.name, position)? else {
            return Err(RetryDeadLetterError::NotFound { position });
        };
        let event = adapter.read_log(position, 1).await?.into_iter().next();
        let Some(event) = event.filter(|e| e.position == position) else {
            return Err(RetryDeadLetterError::EventNotInLog { position });
        };
        let attempt = letter.attempts.saturating_add(1);
        match self.run_once(event, state.clone(), attempt).await {
            Ok(()) => {
                dead_letter::remove(state, &self.name, position)?;
                Ok(())
            }
            Err(error) => {
                letter.attempts = attempt;
                letter.error = error.reason().to_owned();
                letter.failed_at = crate::storage::Timestamp::now();
                state.write(|txn| dead_letter::put_in(txn, &letter))?;
                Err(RetryDeadLetterError::Failed(error))
            }
        }
    }

    /// The runner's loop; with `sweeps_retries`, it also carries out retry requests (in a
    /// consumer group, one partition's runner does).
    pub(crate) async fn run(
        &self,
        mut consumer: Consumer,
        adapter: Arc<dyn StorageAdapter>,
        state: Arc<StateStore>,
        mut stop: watch::Receiver<bool>,
        progress: watch::Sender<Position>,
        sweeps_retries: bool,
    ) -> Result<(), StorageError> {
        let mut committed = consumer.position();
        // The first look for retry requests is at once: they may have been made (by the
        // command-line tool) while the application was stopped.
        let mut next_look = Instant::now();
        loop {
            if Instant::now() >= next_look {
                if sweeps_retries
                    && let Sweep::Stopped =
                        self.retry_requested(&adapter, &state, &mut stop).await?
                {
                    return Ok(());
                }
                next_look = Instant::now() + self.retry_requests_interval;
            }
            let event = match consumer.try_next().await? {
                Some(event) => event,
                None => {
                    // Caught up: record how far the filter skipped, then wait.
                    if consumer.position() > committed {
                        consumer.commit()?;
                        committed = consumer.position();
                        progress.send_replace(committed);
                    }
                    // `Consumer::next` is cancel-safe: an event is taken from its buffer only
                    // when it is returned, so giving up the wait for a look loses nothing.
                    tokio::select! {
                        biased;
                        _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
                        () = tokio::time::sleep_until(next_look) => continue,
                        event = consumer.next() => event?,
                    }
                }
            };
            match self.deliver(&event, &state, &mut stop, 1).await {
                Delivery::Done => consumer.commit()?,
                Delivery::Failed { error, attempts } => {
                    tracing::error!(action = %self.name, position = event.position, %error,
                        "action failed; the event goes to the dead letters");
                    let letter = DeadLetter::new(&self.name, &event, error, attempts);
                    consumer.commit_with(|txn| dead_letter::put_in(txn, &letter))?
                }
                // The event is not committed: it is delivered again on the next start.
                Delivery::Stopped => return Ok(()),
            }
            committed = consumer.position();
            progress.send_replace(committed);
        }
    }

    /// Carries out the pending retry requests of this action, in log order (see the
    /// [module docs](self)).
    async fn retry_requested(
        &self,
        adapter: &Arc<dyn StorageAdapter>,
        state: &Arc<StateStore>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Sweep, StorageError> {
        for (position, requested_at) in dead_letter::retry_requests(state, &self.name)? {
            let clear = |txn: &crate::runtime::state::StateTxn<'_>| {
                dead_letter::clear_retry_request_in(txn, &self.name, position, requested_at)
            };
            let Some(mut letter) = dead_letter::get(state, &self.name, position)? else {
                // Not written by annals (a drop removes both), but harmless: forget it.
                state.write(clear)?;
                continue;
            };
            let event = adapter.read_log(position, 1).await?.into_iter().next();
            let Some(event) = event.filter(|e| e.position == position) else {
                tracing::error!(action = %self.name, position,
                    "retry requested for a dead letter whose event is not in the log; \
                     the request is dropped");
                state.write(clear)?;
                continue;
            };
            let first = letter.attempts.saturating_add(1);
            match self.deliver(&event, state, stop, first).await {
                Delivery::Done => {
                    tracing::info!(action = %self.name, position,
                        "dead letter retried on request: the action succeeded");
                    state.write(|txn| dead_letter::remove_in(txn, &self.name, position))?;
                }
                Delivery::Failed { error, attempts } => {
                    tracing::error!(action = %self.name, position, %error,
                        "dead letter retried on request: the action failed again");
                    letter.error = error;
                    letter.attempts = attempts;
                    letter.failed_at = crate::storage::Timestamp::now();
                    state.write(|txn| {
                        dead_letter::put_in(txn, &letter)?;
                        clear(txn)
                    })?;
                }
                // The request stays: it is carried out on the next start.
                Delivery::Stopped => return Ok(Sweep::Stopped),
            }
        }
        Ok(Sweep::Done)
    }

    /// Runs the handler on `event` until it succeeds, fails permanently, exhausts the retry
    /// policy, or the runner is asked to stop during a backoff. Attempts are numbered from
    /// `first` (1 for a new event; a dead letter's retries continue its count).
    #[tracing::instrument(
        name = "annals.action.event",
        level = "debug",
        skip_all,
        fields(action = %self.name, position = event.position),
    )]
    async fn deliver(
        &self,
        event: &LoggedEvent,
        state: &Arc<StateStore>,
        stop: &mut watch::Receiver<bool>,
        first: u32,
    ) -> Delivery {
        let attempts = self.retry.attempts();
        let mut run = 1;
        loop {
            let attempt = first.saturating_add(run - 1);
            let error = match self.run_once(event.clone(), state.clone(), attempt).await {
                Ok(()) => return Delivery::Done,
                Err(error) => error,
            };
            if error.is_permanent() || run >= attempts {
                return Delivery::Failed {
                    error: error.reason().to_owned(),
                    attempts: attempt,
                };
            }
            tracing::warn!(action = %self.name, position = event.position, attempt, %error,
                "action failed; retrying");
            tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => return Delivery::Stopped,
                () = tokio::time::sleep(self.retry.delay(run)) => {}
            }
            run += 1;
        }
    }

    /// One run of the handler; a panic is a retryable failure.
    async fn run_once(
        &self,
        event: LoggedEvent,
        state: Arc<StateStore>,
        attempt: u32,
    ) -> Result<(), ActionError> {
        let trigger = Trigger::Event {
            position: event.position,
            event_store_id: event.event_store_id.clone(),
            aggregate_id: event.event.aggregate_id.clone(),
            version: event.event.version,
            event_type: event.event.event_type.clone(),
        };
        let ctx = ActionContext::new(self.name.clone(), trigger, attempt, state);
        let handler = self.handler.clone();
        let run = async move { handler(event, ctx).await };
        match AssertUnwindSafe(run).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => Err(ActionError::retryable(format!(
                "the action panicked: {}",
                panic_message(panic.as_ref())
            ))),
        }
    }
}

impl ActionRunner {
    /// A runner of `name` whose task is `task`.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn from_parts(
        name: Arc<str>,
        stop: watch::Sender<bool>,
        progress: watch::Receiver<Position>,
        task: JoinHandle<Result<(), ActionRunError>>,
    ) -> Self {
        ActionRunner {
            name,
            stop,
            progress,
            task: Some(task),
        }
    }
}

/// A running event-triggered action: see the [module docs](self).
///
/// Dropping it aborts the task at once (like [`abort`](Self::abort), without waiting);
/// [`stop`](Self::stop) ends it cleanly and reports why it ended.
#[derive(Debug)]
pub struct ActionRunner {
    name: Arc<str>,
    stop: watch::Sender<bool>,
    progress: watch::Receiver<Position>,
    task: Option<JoinHandle<Result<(), ActionRunError>>>,
}

impl ActionRunner {
    /// The action's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The action's checkpoint as last committed by this runner: every event before it has
    /// been handled or dead-lettered.
    pub fn position(&self) -> Position {
        *self.progress.borrow()
    }

    /// Waits until every event up to `position` (included) has been handled or
    /// dead-lettered. Fails with [`ActionRunError::Aborted`] if the runner ends first (then
    /// [`stop`](Self::stop) tells why).
    pub async fn wait_past(&self, position: Position) -> Result<(), ActionRunError> {
        let mut progress = self.progress.clone();
        match progress.wait_for(|committed| *committed > position).await {
            Ok(_) => Ok(()),
            Err(_) => Err(ActionRunError::Aborted {
                action: self.name.to_string(),
                reason: format!("the runner ended before passing position {position}"),
            }),
        }
    }

    /// Whether the runner's task has ended (only on a storage failure, or when stopped).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the runner: an action run in progress finishes (a backoff wait does not), then
    /// the task ends. Returns the error the runner stopped on, if it stopped on its own.
    pub async fn stop(mut self) -> Result<(), ActionRunError> {
        self.stop.send_replace(true);
        self.join().await
    }

    /// Stops the runner at once, even in the middle of an action, as a crash would: the event
    /// being handled is not committed and is delivered again when the action is next spawned.
    /// Returns when the task is gone (its state store handle released).
    pub async fn abort(mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        // Cancelled, or finished on its own just before: either way it is gone.
        let _ = self.join().await;
    }

    async fn join(&mut self) -> Result<(), ActionRunError> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(result) => result,
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(ActionRunError::Aborted {
                action: self.name.to_string(),
                reason: e.to_string(),
            }),
        }
    }
}

impl Drop for ActionRunner {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
