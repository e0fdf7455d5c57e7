//! A durable embedded queue, and the actions it triggers.
//!
//! A [`Queue`] is a named queue of byte messages kept in a [`StateStore`]. Every change is one
//! durable redb transaction, so an enqueued message survives a crash, and so does its
//! delivery state. Delivery is **at-least-once**:
//!
//! - [`receive`](Queue::receive) hands out the oldest visible message and hides it for the
//!   queue's visibility timeout;
//! - [`ack`](Queue::ack) removes it; a message not acked in time (its receiver crashed, or is
//!   too slow) becomes visible again and is received again;
//! - a message received [`max_receives`](QueueOptions::max_receives) times without an ack goes
//!   to the queue's **dead letters** on its next receive, instead of circulating forever; dead
//!   letters can be listed, put back ([`retry_dead_letter`](Queue::retry_dead_letter)) or
//!   dropped.
//!
//! A [`QueueAction`] runs an action for each message: it receives, runs the action, acks on
//! success, and on failure makes the message visible again after a backoff. Receivers wait
//! without polling: an enqueue through any [`Queue`] handle of the same state store wakes them,
//! and a hidden message wakes them when its timeout ends.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use annals::queue::Queue;
//! use annals::state::StateStore;
//!
//! let state = Arc::new(StateStore::in_memory());
//! let emails = Queue::open(state, "emails");
//! emails.enqueue_json(&"welcome ash@example.com")?;
//! let message = emails.receive()?.expect("a message is visible");
//! assert_eq!(message.json::<String>()?, "welcome ash@example.com");
//! assert!(emails.receive()?.is_none()); // hidden until acked or timed out
//! assert!(emails.ack(message.id)?);
//! assert_eq!(emails.len()?, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```
//!
//! # Storage
//! Three redb tables: `queue_meta` (queue name → next message id and number of messages),
//! `queue_messages` and `queue_dead_letters` (`(queue name, message id)` → a record: format
//! byte `1`, receive count (u32), visible-at and enqueued-at instants (i64 Unix milliseconds),
//! the last error's length (u32) and UTF-8 bytes, then the body; integers little-endian).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use redb::{ReadableTable, TableDefinition};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::runtime::action::{ActionContext, ActionError, ActionRunError, RetryPolicy, Trigger};
use crate::runtime::state::{StateStore, TxnError};
use crate::storage::{StorageError, Timestamp};

/// A message's id in its queue: assigned in enqueue order, from 1, never reused.
pub type MessageId = u64;

const META: TableDefinition<&str, (u64, u64)> = TableDefinition::new("queue_meta");
const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue_messages");
const DEAD_LETTERS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("queue_dead_letters");

/// The format byte that starts every stored message.
const FORMAT: u8 = 1;
/// Bytes before the error text: format, receive count, visible-at, enqueued-at, error length.
const HEADER: usize = 1 + 4 + 8 + 8 + 4;

/// How a queue handle delivers and what it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueOptions {
    /// How long a received, un-acked message stays hidden (default 30 s).
    pub visibility_timeout: Duration,
    /// How many times a message may be received; on the next receive it goes to the dead
    /// letters instead (default 5, at least 1).
    pub max_receives: u32,
    /// The most messages the queue holds, in flight included; more are refused with
    /// [`QueueError::Full`] (default 100 000).
    pub length_max: u64,
    /// The largest body accepted (default 1 MiB).
    pub body_bytes_max: usize,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            visibility_timeout: Duration::from_secs(30),
            max_receives: 5,
            length_max: 100_000,
            body_bytes_max: 1 << 20,
        }
    }
}

/// What a queue refused, or failed at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The queue holds `length_max` messages already: consume some, or raise the limit.
    #[error("queue {queue:?} is full ({length_max} messages)")]
    Full {
        /// The queue.
        queue: String,
        /// Its limit.
        length_max: u64,
    },
    /// The body is larger than `body_bytes_max`.
    #[error("queue {queue:?}: a {bytes}-byte body is over the {body_bytes_max}-byte limit")]
    TooLarge {
        /// The queue.
        queue: String,
        /// The body's size.
        bytes: usize,
        /// The limit.
        body_bytes_max: usize,
    },
    /// The message could not be encoded as JSON.
    #[error("queue {queue:?}: cannot encode the message as JSON: {reason}")]
    Encode {
        /// The queue.
        queue: String,
        /// What failed.
        reason: String,
    },
    /// The state store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A message as received (or as a dead letter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Its id in its queue.
    pub id: MessageId,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
    /// When it was enqueued.
    pub enqueued_at: Timestamp,
    /// Why its last delivery failed, when a queue action reported it.
    pub last_error: Option<String>,
    /// The body, as enqueued.
    pub body: Vec<u8>,
}

impl Message {
    /// The body decoded from JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// A stored message: the body and its delivery state.
struct Record {
    receive_count: u32,
    visible_at: i64,
    enqueued_at: i64,
    last_error: Option<String>,
    body: Vec<u8>,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let error = self.last_error.as_deref().unwrap_or("").as_bytes();
        let mut out = Vec::with_capacity(HEADER + error.len() + self.body.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.receive_count.to_le_bytes());
        out.extend_from_slice(&self.visible_at.to_le_bytes());
        out.extend_from_slice(&self.enqueued_at.to_le_bytes());
        let error_len = u32::try_from(error.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&error_len.to_le_bytes());
        out.extend_from_slice(&error[..error_len as usize]);
        out.extend_from_slice(&self.body);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Record, String> {
        if bytes.len() < HEADER {
            return Err(format!(
                "a {}-byte record is shorter than its header",
                bytes.len()
            ));
        }
        if bytes[0] != FORMAT {
            return Err(format!("unknown record format {}", bytes[0]));
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let i64_at = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let error_len = u32_at(21) as usize;
        let Some(error) = bytes.get(HEADER..HEADER + error_len) else {
            return Err(format!(
                "an error of {error_len} bytes runs past the record"
            ));
        };
        let error = std::str::from_utf8(error).map_err(|e| format!("error text: {e}"))?;
        Ok(Record {
            receive_count: u32_at(1),
            visible_at: i64_at(5),
            enqueued_at: i64_at(13),
            last_error: (!error.is_empty()).then(|| error.to_owned()),
            body: bytes[HEADER + error_len..].to_vec(),
        })
    }

    fn message(self, id: MessageId) -> Message {
        Message {
            id,
            receive_count: self.receive_count,
            enqueued_at: Timestamp::from_unix_millis(self.enqueued_at),
            last_error: self.last_error,
            body: self.body,
        }
    }
}

/// What one receive found.
enum Received {
    Message(Message),
    /// Nothing visible; the earliest hidden message shows again at this instant (Unix ms).
    Empty {
        next_visible_at: Option<i64>,
    },
}

/// A handle on a named queue: see the [module docs](self). Cheap to clone.
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
            let mut meta = txn.open_table(META)?;
            let (next_id, len) = meta.get(name)?.map_or((1, 0), |v| v.value());
            if len >= length_max {
                return Ok(None);
            }
            meta.insert(name, (next_id + 1, len + 1))?;
            let bytes = record.encode();
            txn.open_table(MESSAGES)?
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
    pub fn receive(&self) -> Result<Option<Message>, StorageError> {
        match self.try_receive()? {
            Received::Message(message) => Ok(Some(message)),
            Received::Empty { .. } => Ok(None),
        }
    }

    /// The next visible message, waiting for one to be enqueued or to become visible again.
    pub async fn next(&self) -> Result<Message, StorageError> {
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

    fn try_receive(&self) -> Result<Received, StorageError> {
        let now = Timestamp::now().unix_millis();
        let name = &*self.name;
        let options = self.options;
        let outcome = self.state.write(|txn| {
            let mut messages = txn.open_table(MESSAGES)?;
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
                let mut dead_letters = txn.open_table(DEAD_LETTERS)?;
                let mut meta = txn.open_table(META)?;
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
        outcome.map_err(|reason| damaged("queue_messages", reason))
    }

    /// Removes message `id`: it was handled. Whether it was still in the queue (a message
    /// acked late may have been received again meanwhile, or dead-lettered).
    pub fn ack(&self, id: MessageId) -> Result<bool, StorageError> {
        let name = &*self.name;
        self.state.write(|txn| {
            let removed = txn.open_table(MESSAGES)?.remove((name, id))?.is_some();
            if removed {
                shrink(&mut txn.open_table(META)?, name, 1)?;
            }
            Ok(removed)
        })
    }

    /// Makes received message `id` visible again after `delay` (instead of after the
    /// visibility timeout), recording `error` as why its delivery failed. Whether it was still
    /// in the queue.
    pub fn release(
        &self,
        id: MessageId,
        delay: Duration,
        error: Option<&str>,
    ) -> Result<bool, StorageError> {
        let name = &*self.name;
        let visible_at = Timestamp::now()
            .unix_millis()
            .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        let outcome = self.state.write(|txn| {
            let mut messages = txn.open_table(MESSAGES)?;
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
    pub fn dead_letter(&self, id: MessageId, error: &str) -> Result<bool, StorageError> {
        let name = &*self.name;
        let outcome = self.state.write(|txn| {
            let Some(bytes) = txn
                .open_table(MESSAGES)?
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
            txn.open_table(DEAD_LETTERS)?
                .insert((name, id), record.encode().as_slice())?;
            shrink(&mut txn.open_table(META)?, name, 1)?;
            Ok(Ok(true))
        })?;
        outcome.map_err(|reason| damaged("queue_messages", reason))
    }

    /// Messages in the queue, visible or in flight (dead letters not counted).
    pub fn len(&self) -> Result<u64, StorageError> {
        let name = &*self.name;
        self.state.read(|txn| {
            let meta = match txn.open_table(META) {
                Ok(meta) => meta,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(e) => return Err(e.into()),
            };
            Ok(meta.get(name)?.map_or(0, |v| v.value().1))
        })
    }

    /// Whether the queue holds no message (dead letters aside).
    pub fn is_empty(&self) -> Result<bool, StorageError> {
        Ok(self.len()? == 0)
    }

    /// The queue's dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<Message>, StorageError> {
        let name = &*self.name;
        let rows = self.state.read(|txn| {
            let table = match txn.open_table(DEAD_LETTERS) {
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
                        damaged("queue_dead_letters", format!("message {id}: {reason}"))
                    })
            })
            .collect()
    }

    /// Puts dead letter `id` back in the queue, visible now, with its receive count reset
    /// (the queue's length limit does not apply). Whether there was one.
    pub fn retry_dead_letter(&self, id: MessageId) -> Result<bool, StorageError> {
        let name = &*self.name;
        let now = Timestamp::now().unix_millis();
        let outcome = self.state.write(|txn| {
            let Some(bytes) = txn
                .open_table(DEAD_LETTERS)?
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
            txn.open_table(MESSAGES)?
                .insert((name, id), record.encode().as_slice())?;
            let mut meta = txn.open_table(META)?;
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
    pub fn drop_dead_letter(&self, id: MessageId) -> Result<bool, StorageError> {
        let name = &*self.name;
        self.state
            .write(|txn| Ok(txn.open_table(DEAD_LETTERS)?.remove((name, id))?.is_some()))
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

type QueueHandler = Arc<
    dyn Fn(Message, ActionContext) -> BoxFuture<'static, Result<(), ActionError>> + Send + Sync,
>;

/// An action run for every message of a queue: see the [module docs](self).
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
        F: Fn(Message, ActionContext) -> Fut + Send + Sync + 'static,
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
                .map_err(|source| ActionRunError::Storage {
                    action: name,
                    source,
                })
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
    ) -> Result<(), StorageError> {
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
                            >= self.retry.attempts().min(self.queue.options.max_receives) =>
                {
                    tracing::error!(action = %self.name, queue = %self.queue.name, id, %error,
                        "action failed; the message goes to the dead letters");
                    self.queue.dead_letter(id, error.reason())?;
                }
                Err(error) => {
                    tracing::warn!(action = %self.name, queue = %self.queue.name, id, attempt,
                        %error, "action failed; the message will be received again");
                    self.queue
                        .release(id, self.retry.delay(attempt), Some(error.reason()))?;
                    continue;
                }
            }
            handled.send_modify(|n| *n += 1);
        }
    }

    async fn run_once(&self, message: Message) -> Result<(), ActionError> {
        let trigger = Trigger::Queue {
            queue: self.queue.name.to_string(),
            message_id: message.id,
            receive_count: message.receive_count,
        };
        let ctx = ActionContext::new(
            self.name.clone(),
            trigger,
            message.receive_count,
            self.queue.state.clone(),
        );
        let handler = self.handler.clone();
        let run = async move { handler(message, ctx).await };
        match AssertUnwindSafe(run).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => Err(ActionError::retryable(format!(
                "the action panicked: {}",
                crate::runtime::action::event::panic_message(panic.as_ref())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_refused() {
        let record = Record {
            receive_count: 3,
            visible_at: -5,
            enqueued_at: 1_700_000_000_000,
            last_error: Some("timeout".into()),
            body: b"{\"to\":\"ash\"}".to_vec(),
        };
        let bytes = record.encode();
        let back = Record::decode(&bytes).unwrap();
        assert_eq!(
            (back.receive_count, back.visible_at, back.enqueued_at),
            (3, -5, 1_700_000_000_000)
        );
        assert_eq!(
            (back.last_error.as_deref(), back.body),
            (Some("timeout"), record.body)
        );
        assert!(Record::decode(&bytes[..HEADER - 1]).is_err());
        let mut long_error = bytes.clone();
        long_error[21..25].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Record::decode(&long_error).is_err());
        let mut other_format = bytes;
        other_format[0] = 9;
        assert!(Record::decode(&other_format).is_err());
    }

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
