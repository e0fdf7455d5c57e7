//! Queue-triggered actions: an async function run (at least once) for every message of a
//! durable [queue](crate::runtime::queue).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::context::{ActionContext, Trigger};
use super::error::{ActionError, ActionRunError};
use super::panic::panic_message;
use super::retry::RetryPolicy;
use crate::runtime::queue::{Queue, QueueError, QueueMessage};

type QueueHandler = Arc<
    dyn Fn(QueueMessage, ActionContext) -> BoxFuture<'static, Result<(), ActionError>>
        + Send
        + Sync,
>;

/// An action run for every message of a queue: see the module docs of the
/// [queue](crate::runtime::queue).
///
/// Its runner receives a message, runs the action, and acks it on success. On failure the
/// message becomes visible again after the retry policy's backoff (`delay(receive count)`);
/// after the policy's `attempts` runs, or the queue's `max_receives`, whichever is fewer, or at
/// once on a permanent failure, it goes to the queue's dead letters.
#[derive(Clone)]
pub struct QueueAction {
    name: Arc<str>,
    queue: Queue,
    retry: RetryPolicy,
    handler: QueueHandler,
}

impl std::fmt::Debug for QueueAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueAction")
            .field("name", &self.name)
            .field("queue", &self.queue)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl QueueAction {
    /// An action named `name` running `handler` on the messages of `queue`.
    pub fn new<F, Fut>(name: impl Into<String>, queue: Queue, handler: F) -> Self
    where
        F: Fn(QueueMessage, ActionContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ActionError>> + Send + 'static,
    {
        let handler: QueueHandler = Arc::new(move |message, ctx| handler(message, ctx).boxed());
        QueueAction {
            name: Arc::from(name.into()),
            queue,
            retry: RetryPolicy::default(),
            handler,
        }
    }

    /// How failures are retried (default: [`RetryPolicy::default`]).
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The action's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts the action's runner on a tokio task. Several runners may serve one queue.
    pub fn spawn(&self) -> QueueRunner {
        let (stop, stop_rx) = watch::channel(false);
        let (handled_tx, handled) = watch::channel(0);
        let action = self.clone();
        let task = tokio::spawn(async move {
            let name = action.name.to_string();
            action
                .run(stop_rx, handled_tx)
                .await
                .map_err(|error| ActionRunError::from_queue(name, error))
        });
        QueueRunner {
            name: self.name.clone(),
            stop,
            handled,
            task: Some(task),
        }
    }

    async fn run(
        &self,
        mut stop: watch::Receiver<bool>,
        handled: watch::Sender<u64>,
    ) -> Result<(), QueueError> {
        loop {
            let message = tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
                message = self.queue.next() => message?,
            };
            let id = message.id;
            let attempt = message.receive_count;
            match self.run_once(message).await {
                Ok(()) => {
                    self.queue.ack(id)?;
                }
                Err(error)
                    if error.is_permanent()
                        || attempt
                            >= self.retry.attempts().min(self.queue.options().max_receives) =>
                {
                    tracing::error!(action = %self.name, queue = %self.queue.name(), id, %error,
                        "action failed; the message goes to the dead letters");
                    self.queue.dead_letter(id, error.reason())?;
                }
                Err(error) => {
                    tracing::warn!(action = %self.name, queue = %self.queue.name(), id, attempt,
                        %error, "action failed; the message will be received again");
                    self.queue
                        .release(id, self.retry.delay(attempt), Some(error.reason()))?;
                    continue;
                }
            }
            handled.send_modify(|n| *n += 1);
        }
    }

    async fn run_once(&self, message: QueueMessage) -> Result<(), ActionError> {
        let trigger = Trigger::Queue {
            queue: self.queue.name().to_string(),
            message_id: message.id,
            receive_count: message.receive_count,
        };
        let ctx = ActionContext::new(
            self.name.clone(),
            trigger,
            message.receive_count,
            self.queue.state().clone(),
        );
        let handler = self.handler.clone();
        let run = async move { handler(message, ctx).await };
        match AssertUnwindSafe(run).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => Err(ActionError::retryable(format!(
                "the action panicked: {}",
                panic_message(panic.as_ref())
            ))),
        }
    }
}

/// A running queue action. Dropping it aborts the task; [`stop`](Self::stop) ends it cleanly.
#[derive(Debug)]
pub struct QueueRunner {
    name: Arc<str>,
    stop: watch::Sender<bool>,
    handled: watch::Receiver<u64>,
    task: Option<JoinHandle<Result<(), ActionRunError>>>,
}

impl QueueRunner {
    /// How many messages this runner has finished with (acked or dead-lettered).
    pub fn handled(&self) -> u64 {
        *self.handled.borrow()
    }

    /// Waits until this runner has finished with `count` messages (acked or dead-lettered).
    /// Fails with [`ActionRunError::Aborted`] if the runner ends first.
    pub async fn wait_handled(&self, count: u64) -> Result<(), ActionRunError> {
        let mut handled = self.handled.clone();
        match handled.wait_for(|n| *n >= count).await {
            Ok(_) => Ok(()),
            Err(_) => Err(ActionRunError::Aborted {
                action: self.name.to_string(),
                reason: format!("the runner ended before handling {count} messages"),
            }),
        }
    }

    /// Whether the runner's task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the runner once the action run in progress, if any, is over. Returns the error
    /// the runner stopped on, if it stopped on its own.
    pub async fn stop(mut self) -> Result<(), ActionRunError> {
        self.stop.send_replace(true);
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(result) => result,
            Err(e) => Err(ActionRunError::Aborted {
                action: self.name.to_string(),
                reason: e.to_string(),
            }),
        }
    }
}

impl Drop for QueueRunner {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
