//! A durable embedded queue.
//!
//! A [`Queue`] is a named queue of byte messages kept in a
//! [`StateStore`](crate::runtime::state::StateStore). Every change is one
//! durable transaction, so an enqueued message survives a crash, and so does its
//! delivery state; [`enqueue_in`](Queue::enqueue_in) adds a message inside a transaction of
//! one's own, so that it commits with, say, a consumer's checkpoint. Delivery is
//! **at-least-once**:
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
//! A [`QueueAction`](crate::runtime::action::QueueAction) runs an action for each message: it
//! receives, runs the action, acks on success, and on failure makes the message visible again
//! after a backoff. Receivers wait
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
//! # Competing receivers
//! On a PostgreSQL state store ([`StateStore::postgres`](crate::runtime::state::StateStore)),
//! a queue is shared by every process connected to the schema: any number of them enqueue and
//! receive, each message is handed to one receiver at a time (a receive skips the rows another
//! transaction holds: `FOR UPDATE SKIP LOCKED`), and visibility is measured on the database's
//! clock, so the processes' clocks need not agree.
//!
//! # Storage
//! On redb, three tables of the state store: `queue_meta` (queue name → next message id and
//! number of messages), `queue_messages` and `queue_dead_letters` (`(queue name, message id)` →
//! a record: format byte `1`, receive count (u32), visible-at and enqueued-at instants (i64 Unix
//! milliseconds), the last error's length (u32) and UTF-8 bytes, then the body; integers
//! little-endian). `docs/format.md` describes them with the rest of the state store. On
//! PostgreSQL, the tables `queue_meta`, `queue_messages` and `queue_dead_letters`, one column
//! per field (`docs/postgres.md`).

mod error;
mod handle;
mod message;
mod options;

pub use error::QueueError;
pub use handle::Queue;
pub use message::{MessageId, QueueMessage};
pub use options::QueueOptions;
