//! The domain-level operations every state backend implements: checkpoints, key-value views,
//! action dead letters and durable queues. [`StateRead`] is what a reader may ask;
//! [`StateWrite`] is what a transaction may do besides, and everything done through one
//! `StateWrite` commits together or not at all.
//!
//! Keys are plain values (names, positions, ids); each backend lays them out in its own
//! tables (`redb_schema.rs`, `postgres_schema.rs`). Times that receivers in several processes
//! must agree on (a queue message's visibility) are taken from the backend's clock inside the
//! operation, never from the caller.

use std::time::Duration;

use super::records::{DeadLetter, Delivery, QueueRecord, Received};
use super::txn_error::TxnError;
use crate::runtime::lease::Fence;
use crate::storage::Position;

/// Which dead letters a read asks for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Letters<'a> {
    /// Every one, ordered by action, then position.
    All,
    /// Those of one action, by position.
    Of(&'a str),
    /// The one of an action at a position.
    At(&'a str, Position),
}

/// What may be read from the state.
pub(crate) trait StateRead {
    /// Consumer `name`'s checkpoint, if it ever committed.
    fn checkpoint(&self, name: &str) -> Result<Option<Position>, TxnError>;
    /// Every consumer's checkpoint, ordered by name.
    fn checkpoints(&self) -> Result<Vec<(String, Position)>, TxnError>;

    /// The active version of key-value view `view`.
    fn view_version(&self, view: &str) -> Result<Option<u64>, TxnError>;
    /// The value at `key` in `table` of version `version` of view `view`.
    fn view_get(
        &self,
        view: &str,
        version: u64,
        table: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, TxnError>;
    /// The rows of a view table whose keys start with `prefix`, ordered as Rust orders
    /// strings (byte-wise).
    fn view_scan(
        &self,
        view: &str,
        version: u64,
        table: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, TxnError>;

    /// Action dead letters, with their retry requests.
    fn dead_letters(&self, which: Letters<'_>) -> Result<Vec<DeadLetter>, TxnError>;
    /// The pending retry requests of `action`: position and request instant (Unix ms), by
    /// position.
    fn retry_requests(&self, action: &str) -> Result<Vec<(Position, i64)>, TxnError>;

    /// Messages in queue `queue`, in flight included.
    fn queue_len(&self, queue: &str) -> Result<u64, TxnError>;
    /// The dead letters of queue `queue`, by id.
    fn queue_dead_letters(&self, queue: &str) -> Result<Vec<(u64, QueueRecord)>, TxnError>;
    /// Messages of queue `queue` received and not yet visible again at `now_ms` (Unix
    /// milliseconds; on PostgreSQL the database's clock is used instead).
    fn queue_in_flight(&self, queue: &str, now_ms: i64) -> Result<u64, TxnError>;
}

/// What a transaction may do. Nothing is visible to others before it commits.
pub(crate) trait StateWrite: StateRead {
    /// Checks that the consumer-group lease `fence` names is still held with its epoch, and
    /// extends it; holds the lease until the transaction ends. Fails with
    /// [`StorageError::LeaseLost`](crate::storage::StorageError::LeaseLost) when it is not:
    /// the transaction must then abort.
    fn check_fence(&self, fence: &Fence) -> Result<(), TxnError>;
    /// Moves consumer `name`'s checkpoint to `next`.
    fn set_checkpoint(&self, name: &str, next: Position) -> Result<(), TxnError>;
    /// Forgets consumer `name`'s checkpoint.
    fn remove_checkpoint(&self, name: &str) -> Result<(), TxnError>;

    /// Makes `version` the active version of view `view`.
    fn set_view_version(&self, view: &str, version: u64) -> Result<(), TxnError>;
    /// Sets a view row.
    fn view_put(
        &self,
        view: &str,
        version: u64,
        table: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), TxnError>;
    /// Removes a view row; whether it was there.
    fn view_remove(
        &self,
        view: &str,
        version: u64,
        table: &str,
        key: &str,
    ) -> Result<bool, TxnError>;
    /// Drops every row of the versions of view `view` older than `version`.
    fn drop_view_versions_before(&self, view: &str, version: u64) -> Result<(), TxnError>;

    /// Writes a dead letter, replacing one at the same action and position; its retry request
    /// (if any) is left as it is.
    fn put_dead_letter(&self, letter: &DeadLetter) -> Result<(), TxnError>;
    /// Removes a dead letter and its retry request; whether there was a dead letter.
    fn remove_dead_letter(&self, action: &str, position: Position) -> Result<bool, TxnError>;
    /// Marks the dead letters of `action` (all of them, or the one at `position`) for retry
    /// at instant `now` (Unix ms); the positions marked, in order.
    fn request_retry(
        &self,
        action: &str,
        position: Option<Position>,
        now: i64,
    ) -> Result<Vec<Position>, TxnError>;
    /// Clears the retry request at `position` if it is still the one made at `requested_at`.
    fn clear_retry_request(
        &self,
        action: &str,
        position: Position,
        requested_at: i64,
    ) -> Result<(), TxnError>;

    /// Appends `body` to queue `queue`, visible now, unless it holds `length_max` messages
    /// already (then `None`). The new message's id.
    fn enqueue(&self, queue: &str, body: &[u8], length_max: u64) -> Result<Option<u64>, TxnError>;
    /// Hides and returns the oldest visible message that no other transaction holds, first
    /// moving visible messages received `delivery.max_receives` times to the dead letters.
    fn receive(&self, queue: &str, delivery: Delivery) -> Result<Received, TxnError>;
    /// Removes message `id`; whether it was there.
    fn ack(&self, queue: &str, id: u64) -> Result<bool, TxnError>;
    /// Makes message `id` visible after `delay`, recording `error`; whether it was there.
    fn release(
        &self,
        queue: &str,
        id: u64,
        delay: Duration,
        error: Option<&str>,
    ) -> Result<bool, TxnError>;
    /// Moves message `id` to the dead letters with `error`; whether it was there.
    fn dead_letter_message(&self, queue: &str, id: u64, error: &str) -> Result<bool, TxnError>;
    /// Puts dead letter `id` back in the queue, visible now, its receive count reset (the
    /// length limit does not apply); whether there was one.
    fn retry_queue_dead_letter(&self, queue: &str, id: u64) -> Result<bool, TxnError>;
    /// Drops dead letter `id`; whether there was one.
    fn drop_queue_dead_letter(&self, queue: &str, id: u64) -> Result<bool, TxnError>;
}
