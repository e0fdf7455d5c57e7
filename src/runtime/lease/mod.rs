//! Consumer groups: one consumer run by several processes, each partition of the log handled
//! by exactly one of them at a time.
//!
//! A consumer group splits the global log into a fixed number of partitions by aggregate id
//! ([`partition_of`]): every event of an aggregate is in one partition, so per-aggregate order
//! is kept. Each process that runs the group is a [`GroupMember`]: it heartbeats in the
//! database, and the live members share the partitions evenly (partition `k` goes to the
//! `k mod m`-th of the `m` live members in name order). A member holds a **lease** on each of
//! its partitions, renewed every [`renew_interval`](GroupOptions::renew_interval) and expiring
//! after [`lease_ttl`](GroupOptions::lease_ttl) without renewal, so a process that dies
//! (SIGKILL, a lost network) loses its partitions after at most the time to live and another
//! member takes them over from their last checkpoint.
//!
//! # Fencing
//!
//! Every lease carries an **epoch**, raised whenever its partition changes holder. A commit on
//! a partition's behalf checks, in its own transaction, that the lease is still held with the
//! epoch it was taken with and extends it; the check locks the lease until the commit ends. A
//! process that lost its lease while paused (a long GC pause, SIGSTOP, a stalled network) and
//! then resumes therefore cannot commit a checkpoint or any effect on the state: its
//! transaction is rolled back. Expiry is judged by the **database's clock** only, so the
//! processes' clocks need not agree.
//!
//! Consumer groups need shared state: they exist on the PostgreSQL state store.

#[cfg(feature = "postgres")]
mod fence;
#[cfg(feature = "postgres")]
mod grant;
#[cfg(feature = "postgres")]
mod member;
mod partition;
#[cfg(feature = "postgres")]
mod table;

use std::time::Duration;

use crate::storage::StorageError;

#[cfg(feature = "postgres")]
pub(crate) use fence::Fence;

/// A lease's fence: consumer groups exist on PostgreSQL only, so without the feature there is
/// none to carry.
#[cfg(not(feature = "postgres"))]
#[derive(Debug, Clone)]
pub(crate) enum Fence {}

#[cfg(not(feature = "postgres"))]
impl Fence {
    pub(crate) fn check_local(&self) -> Result<(), StorageError> {
        match *self {}
    }
}
#[cfg(feature = "postgres")]
pub use grant::{Held, Lease};
#[cfg(feature = "postgres")]
pub use member::GroupMember;
#[cfg(feature = "postgres")]
pub(crate) use member::leases;
pub use partition::{PARTITIONS_MAX, partition_of};
#[cfg(feature = "postgres")]
pub use table::LeaseStatus;
/// The lease tables, created by the state store's migrations.
#[cfg(feature = "postgres")]
pub(crate) use table::MIGRATION;

/// How a consumer group shares its work: see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupOptions {
    /// How many partitions the log is split into (1 to [`PARTITIONS_MAX`]); fixed when the
    /// group is first used. At most this many processes share the work. Default 8.
    pub partitions: u32,
    /// How long a lease lasts without renewal: how soon the partitions of a process that died
    /// are taken over (at least 100 ms). Default 10 s.
    pub lease_ttl: Duration,
    /// How often a member heartbeats and renews its leases (at most half the time to live).
    /// Default 2 s.
    pub renew_interval: Duration,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            partitions: 8,
            lease_ttl: Duration::from_secs(10),
            renew_interval: Duration::from_secs(2),
        }
    }
}

impl GroupOptions {
    /// The default options with `partitions` partitions.
    pub fn partitions(partitions: u32) -> Self {
        GroupOptions {
            partitions,
            ..GroupOptions::default()
        }
    }

    /// These options with leases living `ttl` and renewed every `renew_interval`.
    pub fn leases(mut self, ttl: Duration, renew_interval: Duration) -> Self {
        self.lease_ttl = ttl;
        self.renew_interval = renew_interval;
        self
    }

    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn ttl_millis(&self) -> i64 {
        i64::try_from(self.lease_ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Refuses options no group can run with.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn check(&self) -> Result<(), StorageError> {
        let reason = if self.partitions == 0 || self.partitions > PARTITIONS_MAX {
            Some(format!(
                "a consumer group needs 1 to {} partitions, not {}",
                PARTITIONS_MAX, self.partitions
            ))
        } else if self.lease_ttl < Duration::from_millis(100) {
            Some("a lease must live at least 100 ms".to_owned())
        } else if self.renew_interval.is_zero() || self.renew_interval * 2 > self.lease_ttl {
            Some(format!(
                "leases are renewed every {:?}, which must be more than zero and at most half \
                 their time to live ({:?})",
                self.renew_interval, self.lease_ttl
            ))
        } else {
            None
        };
        match reason {
            Some(reason) => Err(StorageError::InvalidConfiguration { reason }),
            None => Ok(()),
        }
    }
}
