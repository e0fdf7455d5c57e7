//! A handle on a named queue: enqueue, receive, acknowledge, release and dead-letter its
//! messages, each change one durable transaction of the state store.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::error::QueueError;
use super::message::{MessageId, QueueMessage};
use super::options::QueueOptions;
use crate::runtime::state::{Delivery, QueueRecord, Received, StateStore, StateTxn};
use crate::storage::Timestamp;

/// A handle on a named queue: see the [module docs](super). Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    name: Arc<str>,
    state: Arc<StateStore>,
    options: QueueOptions,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// A handle on queue `name` of `state`, with the default [`QueueOptions`]. Queues need no
    /// creation: an empty queue is one that has no messages.
    pub fn open(state: Arc<StateStore>, name: impl Into<String>) -> Queue {
        let name: Arc<str> = Arc::from(name.into());
        let wake = state.queue_waker(&name);
        Queue {
            name,
            state,
            options: QueueOptions::default(),
            wake,
        }
    }

    /// This handle with other options (they apply to what this handle does).
    pub fn with_options(mut self, options: QueueOptions) -> Queue {
        self.options = options;
        self
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The handle's options.
    pub fn options(&self) -> &QueueOptions {
        &self.options
    }

    /// The state store the queue lives in.
    pub(crate) fn state(&self) -> &Arc<StateStore> {
        &self.state
    }

    /// Appends `body` to the queue, durably, and wakes waiting receivers.
    pub fn enqueue(&self, body: impl Into<Vec<u8>>) -> Result<MessageId, QueueError> {
        let body = body.into();
        self.state
            .try_write(|txn| Ok(self.enqueue_in(txn, &body)))?
    }

    /// Appends `body` to the queue inside `txn`: the message is committed with the rest of
    /// the transaction, or not at all (an outbox: a handler committing with its consumer's
    /// checkpoint enqueues exactly once). Waiting receivers are woken once it commits.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use annals::{queue::Queue, state::StateStore};
    ///
    /// let state = Arc::new(StateStore::in_memory());
    /// let emails = Queue::open(state.clone(), "emails");
    /// state.commit_with_checkpoint("signups", 8, |txn| {
    ///     emails.enqueue_in(txn, b"welcome".to_vec())?;
    ///     Ok(())
    /// })?;
    /// assert_eq!((emails.len()?, state.checkpoint("signups")?), (1, Some(8)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn enqueue_in(
        &self,
        txn: &StateTxn<'_>,
        body: impl AsRef<[u8]>,
    ) -> Result<MessageId, QueueError> {
        let body = body.as_ref();
        if body.len() > self.options.body_bytes_max {
            return Err(QueueError::TooLarge {
                queue: self.name.to_string(),
                bytes: body.len(),
                body_bytes_max: self.options.body_bytes_max,
            });
        }
        let length_max = self.options.length_max;
        let id = txn
            .ops()
            .enqueue(&self.name, body, length_max)
            .map_err(|e| QueueError::Storage(e.into_storage()))?;
        let Some(id) = id else {
            return Err(QueueError::Full {
                queue: self.name.to_string(),
                length_max,
            });
        };
        txn.wake_after_commit(Arc::clone(&self.wake));
        Ok(id)
    }

    /// Appends `message` encoded as JSON; see [`enqueue`](Self::enqueue).
    pub fn enqueue_json<T: serde::Serialize>(&self, message: &T) -> Result<MessageId, QueueError> {
        let body = serde_json::to_vec(message).map_err(|e| QueueError::Encode {
            queue: self.name.to_string(),
            reason: e.to_string(),
        })?;
        self.enqueue(body)
    }

    /// The oldest visible message, now hidden for the visibility timeout, or `None` if no
    /// message is visible. A message already received `max_receives` times goes to the dead
    /// letters instead.
    pub fn receive(&self) -> Result<Option<QueueMessage>, QueueError> {
        match self.try_receive()? {
            Received::Message(id, record) => Ok(Some(message(id, record))),
            Received::Empty { .. } => Ok(None),
        }
    }

    /// The next visible message, waiting for one to be enqueued or to become visible again.
    ///
    /// On PostgreSQL, messages added by other processes wake the wait too (see
    /// `docs/postgres.md`); it looks again at least every few seconds regardless. A connection
    /// lost while it looks is
    /// [`StorageError::Unavailable`](crate::storage::StorageError::Unavailable) (a receive
    /// whose outcome is unknown hides its message at most until its visibility timeout): call
    /// it again.
    pub async fn next(&self) -> Result<QueueMessage, QueueError> {
        let bound = self.state.queue_poll_bound();
        loop {
            // Registered before looking, so an enqueue in between is not missed.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_visible_in = match self.try_receive()? {
                Received::Message(id, record) => return Ok(message(id, record)),
                Received::Empty { next_visible_in } => next_visible_in,
            };
            let wait = match (next_visible_in, bound) {
                (Some(at), Some(bound)) => Some(at.min(bound)),
                (at, bound) => at.or(bound),
            };
            match wait {
                Some(wait) => {
                    let wait = wait.max(Duration::from_millis(1));
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    fn try_receive(&self) -> Result<Received, QueueError> {
        let delivery = Delivery {
            visibility_timeout: self.options.visibility_timeout,
            max_receives: self.options.max_receives.max(1),
        };
        Ok(self
            .state
            .write(|txn| txn.ops().receive(&self.name, delivery))?)
    }

    /// Removes message `id`: it was handled. Whether it was still in the queue (a message
    /// acked late may have been received again meanwhile, or dead-lettered).
    pub fn ack(&self, id: MessageId) -> Result<bool, QueueError> {
        Ok(self.state.write(|txn| txn.ops().ack(&self.name, id))?)
    }

    /// Makes received message `id` visible again after `delay` (instead of after the
    /// visibility timeout), recording `error` as why its delivery failed. Whether it was still
    /// in the queue.
    pub fn release(
        &self,
        id: MessageId,
        delay: Duration,
        error: Option<&str>,
    ) -> Result<bool, QueueError> {
        let released = self.state.write(|txn| {
            let released = txn.ops().release(&self.name, id, delay, error)?;
            if released {
                txn.wake_after_commit(Arc::clone(&self.wake));
            }
            Ok(released)
        })?;
        Ok(released)
    }

    /// Moves message `id` to the dead letters now, with `error` (a failure no retry can fix).
    /// Whether it was in the queue.
    pub fn dead_letter(&self, id: MessageId, error: &str) -> Result<bool, QueueError> {
        Ok(self
            .state
            .write(|txn| txn.ops().dead_letter_message(&self.name, id, error))?)
    }

    /// Messages in the queue, visible or in flight (dead letters not counted).
    pub fn len(&self) -> Result<u64, QueueError> {
        Ok(self.state.read(|state| state.queue_len(&self.name))?)
    }

    /// Messages received and not yet acknowledged, released or visible again (counted in
    /// [`len`](Self::len) too): what receivers are working on now. Reads every message of the
    /// queue on the redb store.
    pub fn in_flight(&self) -> Result<u64, QueueError> {
        let now = crate::storage::Timestamp::now().unix_millis();
        Ok(self
            .state
            .read(|state| state.queue_in_flight(&self.name, now))?)
    }

    /// Whether the queue holds no message (dead letters aside).
    pub fn is_empty(&self) -> Result<bool, QueueError> {
        Ok(self.len()? == 0)
    }

    /// The queue's dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<QueueMessage>, QueueError> {
        let rows = self
            .state
            .read(|state| state.queue_dead_letters(&self.name))?;
        Ok(rows
            .into_iter()
            .map(|(id, record)| message(id, record))
            .collect())
    }

    /// Puts dead letter `id` back in the queue, visible now, with its receive count reset
    /// (the queue's length limit does not apply). Whether there was one.
    pub fn retry_dead_letter(&self, id: MessageId) -> Result<bool, QueueError> {
        Ok(self.state.write(|txn| {
            let retried = txn.ops().retry_queue_dead_letter(&self.name, id)?;
            if retried {
                txn.wake_after_commit(Arc::clone(&self.wake));
            }
            Ok(retried)
        })?)
    }

    /// Drops dead letter `id` for good. Whether there was one.
    pub fn drop_dead_letter(&self, id: MessageId) -> Result<bool, QueueError> {
        Ok(self
            .state
            .write(|txn| txn.ops().drop_queue_dead_letter(&self.name, id))?)
    }
}

/// A stored message as its receivers see it.
fn message(id: MessageId, record: QueueRecord) -> QueueMessage {
    QueueMessage {
        id,
        receive_count: record.receive_count,
        enqueued_at: Timestamp::from_unix_millis(record.enqueued_at),
        last_error: record.last_error,
        body: record.body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_oversized_enqueues_are_refused() {
        let state = Arc::new(StateStore::in_memory());
        let queue = Queue::open(state, "q").with_options(QueueOptions {
            length_max: 1,
            body_bytes_max: 4,
            ..QueueOptions::default()
        });
        assert!(matches!(
            queue.enqueue(b"12345".to_vec()),
            Err(QueueError::TooLarge { .. })
        ));
        assert_eq!(queue.enqueue(b"1".to_vec()).unwrap(), 1);
        assert!(matches!(
            queue.enqueue(b"2".to_vec()),
            Err(QueueError::Full { .. })
        ));
        assert!(queue.ack(1).unwrap());
        assert_eq!(queue.enqueue(b"3".to_vec()).unwrap(), 2);
    }

    #[test]
    fn handles_of_one_queue_share_their_wake_up() {
        let state = Arc::new(StateStore::in_memory());
        let a = Queue::open(state.clone(), "q");
        let b = Queue::open(state.clone(), "q");
        let other = Queue::open(state, "r");
        assert!(Arc::ptr_eq(&a.wake, &b.wake));
        assert!(!Arc::ptr_eq(&a.wake, &other.wake));
    }
}
