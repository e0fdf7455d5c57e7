//! A handle on a named queue: enqueue, receive, acknowledge, release and dead-letter its
//! messages, each change one durable transaction of the state store.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use redb::ReadableTable;
use tokio::sync::Notify;

use super::error::QueueError;
use super::message::{MessageId, QueueMessage};
use super::options::QueueOptions;
use super::record::Record;
use crate::runtime::state::{StateStore, TxnError};
use crate::runtime::state_schema::{QUEUE_DEAD_LETTERS, QUEUE_MESSAGES, QUEUE_META};
use crate::storage::{StorageError, Timestamp};

/// What one receive found.
enum Received {
    Message(QueueMessage),
    /// Nothing visible; the earliest hidden message shows again at this instant (Unix ms).
    Empty {
        next_visible_at: Option<i64>,
    },
}

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
        let wake = waker(&state, &name);
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
        if body.len() > self.options.body_bytes_max {
            return Err(QueueError::TooLarge {
                queue: self.name.to_string(),
                bytes: body.len(),
                body_bytes_max: self.options.body_bytes_max,
            });
        }
        let now = Timestamp::now().unix_millis();
        let record = Record {
            receive_count: 0,
            visible_at: now,
            enqueued_at: now,
            last_error: None,
            body,
        };
        let name = &*self.name;
        let length_max = self.options.length_max;
        let id = self.state.write(|txn| {
            let mut meta = txn.open_table(QUEUE_META)?;
            let (next_id, len) = meta.get(name)?.map_or((1, 0), |v| v.value());
            if len >= length_max {
                return Ok(None);
            }
            meta.insert(name, (next_id + 1, len + 1))?;
            let bytes = record.encode();
            txn.open_table(QUEUE_MESSAGES)?
                .insert((name, next_id), bytes.as_slice())?;
            Ok(Some(next_id))
        })?;
        let Some(id) = id else {
            return Err(QueueError::Full {
                queue: self.name.to_string(),
                length_max,
            });
        };
        self.wake.notify_waiters();
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
            Received::Message(message) => Ok(Some(message)),
            Received::Empty { .. } => Ok(None),
        }
    }

    /// The next visible message, waiting for one to be enqueued or to become visible again.
    pub async fn next(&self) -> Result<QueueMessage, QueueError> {
        loop {
            // Registered before looking, so an enqueue in between is not missed.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_visible_at = match self.try_receive()? {
                Received::Message(message) => return Ok(message),
                Received::Empty { next_visible_at } => next_visible_at,
            };
            match next_visible_at {
                Some(at) => {
                    let wait = at.saturating_sub(Timestamp::now().unix_millis()).max(1);
                    let wait = Duration::from_millis(u64::try_from(wait).unwrap_or(u64::MAX));
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
        let now = Timestamp::now().unix_millis();
        let name = &*self.name;
        let options = self.options;
        let outcome = self.state.write(|txn| {
            let mut messages = txn.open_table(QUEUE_MESSAGES)?;
            let mut next_visible_at: Option<i64> = None;
            let mut dead = Vec::new();
            let mut found = None;
            for row in messages.range((name, 0)..=(name, u64::MAX))? {
                let (key, value) = row?;
                let id = key.value().1;
                let record = match Record::decode(value.value()) {
                    Ok(record) => record,
                    Err(reason) => return Ok(Err(format!("message {id}: {reason}"))),
                };
                if record.visible_at > now {
                    next_visible_at = Some(
                        next_visible_at.map_or(record.visible_at, |t| t.min(record.visible_at)),
                    );
                } else if record.receive_count >= options.max_receives.max(1) {
                    dead.push((id, record));
                } else {
                    found = Some((id, record));
                    break;
                }
            }
            if !dead.is_empty() {
                let mut dead_letters = txn.open_table(QUEUE_DEAD_LETTERS)?;
                let mut meta = txn.open_table(QUEUE_META)?;
                for (id, record) in &dead {
                    messages.remove((name, *id))?;
                    dead_letters.insert((name, *id), record.encode().as_slice())?;
                    tracing::warn!(
                        queue = name,
                        id,
                        receive_count = record.receive_count,
                        "message received too many times; moved to the dead letters"
                    );
                }
                shrink(&mut meta, name, dead.len() as u64)?;
            }
            let Some((id, mut record)) = found else {
                return Ok(Ok(Received::Empty { next_visible_at }));
            };
            record.receive_count = record.receive_count.saturating_add(1);
            let timeout = i64::try_from(options.visibility_timeout.as_millis()).unwrap_or(i64::MAX);
            record.visible_at = now.saturating_add(timeout);
            messages.insert((name, id), record.encode().as_slice())?;
            Ok(Ok(Received::Message(record.message(id))))
        })?;
        Ok(outcome.map_err(|reason| damaged("queue_messages", reason))?)
    }

    /// Removes message `id`: it was handled. Whether it was still in the queue (a message
    /// acked late may have been received again meanwhile, or dead-lettered).
    pub fn ack(&self, id: MessageId) -> Result<bool, QueueError> {
        let name = &*self.name;
        Ok(self.state.write(|txn| {
            let removed = txn
                .open_table(QUEUE_MESSAGES)?
                .remove((name, id))?
                .is_some();
            if removed {
                shrink(&mut txn.open_table(QUEUE_META)?, name, 1)?;
            }
            Ok(removed)
        })?)
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
        let name = &*self.name;
        let visible_at = Timestamp::now()
            .unix_millis()
            .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        let outcome = self.state.write(|txn| {
            let mut messages = txn.open_table(QUEUE_MESSAGES)?;
            let Some(bytes) = messages.get((name, id))?.map(|v| v.value().to_vec()) else {
                return Ok(Ok(false));
            };
            let mut record = match Record::decode(&bytes) {
                Ok(record) => record,
                Err(reason) => return Ok(Err(format!("message {id}: {reason}"))),
            };
            record.visible_at = visible_at;
            record.last_error = error.map(str::to_owned);
            messages.insert((name, id), record.encode().as_slice())?;
            Ok(Ok(true))
        })?;
        let released = outcome.map_err(|reason| damaged("queue_messages", reason))?;
        if released {
            self.wake.notify_waiters();
        }
        Ok(released)
    }

    /// Moves message `id` to the dead letters now, with `error` (a failure no retry can fix).
    /// Whether it was in the queue.
    pub fn dead_letter(&self, id: MessageId, error: &str) -> Result<bool, QueueError> {
        let name = &*self.name;
        let outcome = self.state.write(|txn| {
            let Some(bytes) = txn
                .open_table(QUEUE_MESSAGES)?
                .remove((name, id))?
                .map(|v| v.value().to_vec())
            else {
                return Ok(Ok(false));
            };
            let mut record = match Record::decode(&bytes) {
                Ok(record) => record,
                Err(reason) => return Ok(Err(format!("message {id}: {reason}"))),
            };
            record.last_error = Some(error.to_owned());
            txn.open_table(QUEUE_DEAD_LETTERS)?
                .insert((name, id), record.encode().as_slice())?;
            shrink(&mut txn.open_table(QUEUE_META)?, name, 1)?;
            Ok(Ok(true))
        })?;
        Ok(outcome.map_err(|reason| damaged("queue_messages", reason))?)
    }

    /// Messages in the queue, visible or in flight (dead letters not counted).
    pub fn len(&self) -> Result<u64, QueueError> {
        let name = &*self.name;
        Ok(self.state.read(|txn| {
            let meta = match txn.open_table(QUEUE_META) {
                Ok(meta) => meta,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(e) => return Err(e.into()),
            };
            Ok(meta.get(name)?.map_or(0, |v| v.value().1))
        })?)
    }

    /// Whether the queue holds no message (dead letters aside).
    pub fn is_empty(&self) -> Result<bool, QueueError> {
        Ok(self.len()? == 0)
    }

    /// The queue's dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<QueueMessage>, QueueError> {
        let name = &*self.name;
        let rows = self.state.read(|txn| {
            let table = match txn.open_table(QUEUE_DEAD_LETTERS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            table
                .range((name, 0)..=(name, u64::MAX))?
                .map(|row| {
                    let (key, value) = row?;
                    Ok((key.value().1, value.value().to_vec()))
                })
                .collect::<Result<Vec<_>, TxnError>>()
        })?;
        rows.into_iter()
            .map(|(id, bytes)| {
                Record::decode(&bytes)
                    .map(|record| record.message(id))
                    .map_err(|reason| {
                        damaged("queue_dead_letters", format!("message {id}: {reason}")).into()
                    })
            })
            .collect()
    }

    /// Puts dead letter `id` back in the queue, visible now, with its receive count reset
    /// (the queue's length limit does not apply). Whether there was one.
    pub fn retry_dead_letter(&self, id: MessageId) -> Result<bool, QueueError> {
        let name = &*self.name;
        let now = Timestamp::now().unix_millis();
        let outcome = self.state.write(|txn| {
            let Some(bytes) = txn
                .open_table(QUEUE_DEAD_LETTERS)?
                .remove((name, id))?
                .map(|v| v.value().to_vec())
            else {
                return Ok(Ok(false));
            };
            let mut record = match Record::decode(&bytes) {
                Ok(record) => record,
                Err(reason) => return Ok(Err(format!("message {id}: {reason}"))),
            };
            record.receive_count = 0;
            record.visible_at = now;
            txn.open_table(QUEUE_MESSAGES)?
                .insert((name, id), record.encode().as_slice())?;
            let mut meta = txn.open_table(QUEUE_META)?;
            let (next_id, len) = meta.get(name)?.map_or((id + 1, 0), |v| v.value());
            meta.insert(name, (next_id.max(id + 1), len + 1))?;
            Ok(Ok(true))
        })?;
        let retried = outcome.map_err(|reason| damaged("queue_dead_letters", reason))?;
        if retried {
            self.wake.notify_waiters();
        }
        Ok(retried)
    }

    /// Drops dead letter `id` for good. Whether there was one.
    pub fn drop_dead_letter(&self, id: MessageId) -> Result<bool, QueueError> {
        let name = &*self.name;
        Ok(self.state.write(|txn| {
            Ok(txn
                .open_table(QUEUE_DEAD_LETTERS)?
                .remove((name, id))?
                .is_some())
        })?)
    }
}

/// Lowers queue `name`'s message count by `removed`.
fn shrink(
    meta: &mut redb::Table<&str, (u64, u64)>,
    name: &str,
    removed: u64,
) -> Result<(), TxnError> {
    let (next_id, len) = meta.get(name)?.map_or((1, 0), |v| v.value());
    meta.insert(name, (next_id, len.saturating_sub(removed)))?;
    Ok(())
}

fn damaged(table: &str, reason: String) -> StorageError {
    StorageError::corruption(
        PathBuf::from("<state store>"),
        0,
        format!("table {table}: {reason}"),
    )
}

/// The wake-up of queue `name` of `state`, shared by every handle on it in this process (a
/// state store is opened by one process at a time, so that is every handle).
fn waker(state: &Arc<StateStore>, name: &str) -> Arc<Notify> {
    type Wakers = Vec<(Weak<StateStore>, Arc<str>, Weak<Notify>)>;
    static WAKERS: Mutex<Wakers> = Mutex::new(Vec::new());
    let mut wakers = WAKERS.lock().unwrap_or_else(PoisonError::into_inner);
    // A live weak reference keeps its allocation, so a matching address is the same store.
    wakers.retain(|(s, _, n)| s.strong_count() > 0 && n.strong_count() > 0);
    let found = wakers.iter().find_map(|(s, n, wake)| {
        (std::ptr::eq(s.as_ptr(), Arc::as_ptr(state)) && &**n == name)
            .then(|| wake.upgrade())
            .flatten()
    });
    found.unwrap_or_else(|| {
        let wake = Arc::new(Notify::new());
        wakers.push((
            Arc::downgrade(state),
            Arc::from(name),
            Arc::downgrade(&wake),
        ));
        wake
    })
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
