//! The task that keeps a view up to date: catch up from the checkpoint, then follow commits.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::error::ViewError;
use super::id::ViewId;
use super::progress::Progress;
use crate::runtime::subscription::{Filter, Subscription};
use crate::storage::{LoggedEvent, Position, StorageAdapter, StorageError};

/// Events applied per transaction at most: bounds the work a crash can lose and the time a
/// transaction holds the writer.
const BATCH_EVENTS_MAX: usize = 256;

/// Where a view version stands when its runner starts.
pub(crate) struct Start {
    /// The first position not yet applied.
    pub(crate) next: Position,
    /// Whether this version is the active one.
    pub(crate) active: bool,
}

/// Why a batch was not applied.
pub(crate) enum Refused {
    /// The handlers failed on `events[index]`; nothing of the batch was committed.
    Failed { index: usize, error: ViewError },
    /// Anything else (storage, superseded): nothing was committed.
    Other(ViewError),
}

impl From<ViewError> for Refused {
    fn from(e: ViewError) -> Self {
        Refused::Other(e)
    }
}

/// The tables of one view version, as a runner sees them.
pub(crate) trait Backend: Send + Sync + 'static {
    fn id(&self) -> &ViewId;
    fn filter(&self) -> Filter;
    fn progress(&self) -> &Progress;
    /// Reads the checkpoint; fails with [`ViewError::Superseded`] when a newer version is
    /// active.
    fn start(&self) -> Result<Start, ViewError>;
    /// Applies `events` and moves the checkpoint to `next`, in one transaction. With
    /// `activate`, that transaction also makes this version the active one and drops older
    /// versions.
    fn apply(&self, events: &[LoggedEvent], next: Position, activate: bool) -> Result<(), Refused>;
}

/// A running view: the task that applies the log to it. See the [module docs](super).
///
/// The task runs until [`stop`](Self::stop) is called, or until it fails: a handler error, a
/// storage error, or [`ViewError::Superseded`]. It never skips an event it could not apply;
/// [`join`](Self::join) returns why it ended. Dropping a `ViewRunner` cancels the task (as a
/// crash would: what was committed stays, the rest is applied by the next runner).
#[derive(Debug)]
pub struct ViewRunner {
    id: ViewId,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), ViewError>>>,
}

impl ViewRunner {
    pub(crate) fn spawn(backend: Arc<dyn Backend>, adapter: Arc<dyn StorageAdapter>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let id = backend.id().clone();
        let task = tokio::spawn(async move {
            let outcome = run(backend.clone(), adapter, stopped).await;
            backend.progress().end(&outcome);
            outcome
        });
        ViewRunner {
            id,
            stop,
            task: Some(task),
        }
    }

    /// A runner of view `id` whose task is `task`, stopped through `stop`.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn from_parts(
        id: ViewId,
        stop: watch::Sender<bool>,
        task: JoinHandle<Result<(), ViewError>>,
    ) -> Self {
        ViewRunner {
            id,
            stop,
            task: Some(task),
        }
    }

    /// Whether the task has ended (stopped or failed).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Asks the task to stop after the batch it is applying, and waits for it. Returns the
    /// error it failed with if it had already failed.
    pub async fn stop(mut self) -> Result<(), ViewError> {
        self.stop.send_replace(true);
        self.wait().await
    }

    /// Waits for the task to end by itself, which it does only on failure or when superseded,
    /// and returns why.
    pub async fn join(mut self) -> Result<(), ViewError> {
        self.wait().await
    }

    async fn wait(&mut self) -> Result<(), ViewError> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(outcome) => outcome,
            Err(_) => Err(ViewError::RunnerAborted {
                view: self.id.name.clone(),
                version: self.id.version,
            }),
        }
    }
}

impl Drop for ViewRunner {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn run(
    backend: Arc<dyn Backend>,
    adapter: Arc<dyn StorageAdapter>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ViewError> {
    let b = backend.clone();
    let start = blocking(&backend, move || b.start()).await?;
    let mut active = start.active;
    backend.progress().advance(start.next, active);
    let mut log = adapter.watch_log();
    let mut subscription = Subscription::new(adapter, start.next, backend.filter());
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let (batch, caught_up) = gather(&mut subscription).await?;
        let next = subscription.position();
        // A version becomes active once it has caught up with the log: a rebuild serves no
        // query before it holds everything the version it replaces held.
        let activate = caught_up && !active;
        if !batch.is_empty() || activate {
            apply(&backend, batch, next, activate).await?;
            active |= activate;
        }
        backend.progress().advance(next, active);
        if caught_up {
            tokio::select! {
                grown = log.wait_for(|last| *last >= next) => {
                    if grown.is_err() {
                        return Err(StorageError::Closed.into());
                    }
                }
                _ = stop.wait_for(|stop| *stop) => return Ok(()),
            }
        }
    }
}

/// Up to a batch of events; `true` when the subscription has caught up with the log.
async fn gather(subscription: &mut Subscription) -> Result<(Vec<LoggedEvent>, bool), StorageError> {
    let mut batch = Vec::new();
    while batch.len() < BATCH_EVENTS_MAX {
        match subscription.try_next().await? {
            Some(event) => batch.push(event),
            None => return Ok((batch, true)),
        }
    }
    Ok((batch, false))
}

/// Applies a batch; when a handler fails, commits the events before the failing one and
/// returns the failure.
#[tracing::instrument(
    name = "annals.view.batch",
    level = "debug",
    skip_all,
    fields(
        view = %backend.id().name,
        version = backend.id().version,
        events = batch.len(),
        next,
    ),
)]
async fn apply(
    backend: &Arc<dyn Backend>,
    batch: Vec<LoggedEvent>,
    next: Position,
    activate: bool,
) -> Result<(), ViewError> {
    let b = backend.clone();
    blocking(backend, move || match b.apply(&batch, next, activate) {
        Ok(()) => Ok(()),
        Err(Refused::Other(error)) => Err(error),
        Err(Refused::Failed { index, error }) => {
            if let Some(failed) = batch.get(index)
                && index > 0
            {
                match b.apply(&batch[..index], failed.position, false) {
                    Ok(()) => {}
                    Err(Refused::Other(e) | Refused::Failed { error: e, .. }) => return Err(e),
                }
            }
            Err(error)
        }
    })
    .await
}

/// Runs blocking database work off the async workers.
async fn blocking<T: Send + 'static>(
    backend: &Arc<dyn Backend>,
    work: impl FnOnce() -> Result<T, ViewError> + Send + 'static,
) -> Result<T, ViewError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ViewError::RunnerAborted {
            view: backend.id().name.clone(),
            version: backend.id().version,
        }),
    }
}
