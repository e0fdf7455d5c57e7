//! The schema of the state store (`state.redb`): every redb table the runtime keeps there, in
//! one place (`docs/format.md` describes each table's key, value and writer). The record
//! formats stored in byte values are defined with their encoders, in `redb_records.rs`.
//!
//! Every table but [`CONSUMERS`] is created by its first write; readers treat a table that
//! does not exist yet as empty.

use redb::TableDefinition;

/// Checkpoints of durable consumers: consumer name → the next position to deliver. Written
/// for every consumer (views, actions, publishers) in the transaction of the work the
/// checkpoint covers. Created with the file.
pub(crate) const CONSUMERS: TableDefinition<&str, u64> = TableDefinition::new("consumers");

/// Key-value views: view name → its active version. Written by a key-value view when a
/// version catches up and takes over.
pub(crate) const VIEW_VERSIONS: TableDefinition<&str, u64> = TableDefinition::new("view_versions");

/// One table of one key-value view version, named by [`view_table_name`]: key → the value as
/// the typed layer's codec encodes it. Written by the view's handlers, in the transaction that
/// moves the view's checkpoint.
pub(crate) type ViewTable<'a> = TableDefinition<'a, &'static str, &'static [u8]>;

/// The consumer name of version `version` of key-value view `name`, `view:<name>:v<version>`:
/// its checkpoint in [`CONSUMERS`], and the prefix of its tables' names.
pub(crate) fn view_checkpoint_name(name: &str, version: u64) -> String {
    format!("view:{name}:v{version}")
}

/// The redb name of table `table` of version `version` of key-value view `name`:
/// `view:<name>:v<version>:<table>`.
pub(crate) fn view_table_name(name: &str, version: u64, table: &str) -> String {
    format!("{}:{table}", view_checkpoint_name(name, version))
}

/// The version of view `name` that redb table `table` belongs to (see [`view_table_name`]).
pub(crate) fn view_table_version(table: &str, name: &str) -> Option<u64> {
    let rest = table
        .strip_prefix("view:")?
        .strip_prefix(name)?
        .strip_prefix(":v")?;
    rest.split(':').next()?.parse().ok()
}

/// Events an event action gave up on: `(action name, position)` → a dead-letter record.
/// Written by the action's runner with its checkpoint; removed by a successful retry.
pub(crate) const ACTION_DEAD_LETTERS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("action_dead_letters");

/// Retry requests of action dead letters: `(action name, position)` → when the retry was
/// requested (Unix milliseconds). Written by a retry request; removed by the runner once it
/// has retried the letter.
pub(crate) const ACTION_RETRY_REQUESTS: TableDefinition<(&str, u64), i64> =
    TableDefinition::new("action_dead_letter_retries");

/// Durable queues: queue name → (the next message id, the number of messages, in flight
/// included). Written by every queue operation that adds or removes a message.
pub(crate) const QUEUE_META: TableDefinition<&str, (u64, u64)> = TableDefinition::new("queue_meta");

/// Messages of durable queues: `(queue name, message id)` → a queue record. Written by
/// enqueue, receive, release, ack and dead-lettering.
pub(crate) const QUEUE_MESSAGES: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("queue_messages");

/// Dead letters of durable queues: `(queue name, message id)` → a queue record. Written when
/// a message is received too often or its action fails for good; emptied by retry or drop.
pub(crate) const QUEUE_DEAD_LETTERS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("queue_dead_letters");
