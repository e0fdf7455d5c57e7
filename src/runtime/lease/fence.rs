//! The fence of one partition's work: what a consumer carries to refuse acting on a lease it
//! no longer holds.

use std::sync::Arc;

use tokio::sync::watch;

use super::grant::Held;
use super::table::LeaseTable;
use crate::storage::StorageError;

/// The lease a consumer works under: a partition of a group, taken by a member with an epoch.
///
/// Checked twice: before handing out an event, by the member's own monotonic clock
/// ([`check_local`](Self::check_local)); and inside every commit's transaction, by the
/// database ([`check_in`](Self::check_in)), which is what makes it a fence: a commit made
/// under a lost lease is rolled back, whatever the process believed.
#[derive(Debug, Clone)]
pub(crate) struct Fence {
    pub(crate) table: LeaseTable,
    pub(crate) group: Arc<str>,
    pub(crate) holder: Arc<str>,
    pub(crate) partition: u32,
    pub(crate) epoch: i64,
    pub(crate) ttl_ms: i64,
    pub(crate) held: watch::Receiver<Held>,
}

impl Fence {
    fn lost(&self) -> StorageError {
        StorageError::LeaseLost {
            group: self.group.to_string(),
            partition: self.partition,
        }
    }

    /// Fails with [`StorageError::LeaseLost`] when the member no longer holds the lease, or
    /// its validity ran out by the process's monotonic clock (say, after a pause).
    pub(crate) fn check_local(&self) -> Result<(), StorageError> {
        let held = self.held.borrow();
        match held.get(&self.partition) {
            Some(lease) if lease.epoch == self.epoch && lease.is_valid() => Ok(()),
            _ => Err(self.lost()),
        }
    }

    /// The statement that checks, inside a commit's transaction, that the lease is still held
    /// with this epoch, and extends it (it returns a row when it is held), with its
    /// parameters' values: group, partition, holder, epoch, time to live in milliseconds. It
    /// locks the lease's row until the transaction ends, so no takeover slips in before the
    /// commit.
    pub(crate) fn statement(&self) -> (&str, &str, i32, &str, i64, i64) {
        (
            self.table.renew_sql(),
            &self.group,
            i32::try_from(self.partition).unwrap_or(i32::MAX),
            &self.holder,
            self.epoch,
            self.ttl_ms,
        )
    }

    /// The error of a commit whose fencing statement found the lease lost.
    pub(crate) fn lost_error(&self) -> StorageError {
        self.lost()
    }
}
