//! What a member holds: its partitions' leases, as its coordinator last renewed them.

use std::collections::BTreeMap;
use std::time::Instant;

/// A partition lease this process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The partition.
    pub partition: u32,
    /// The lease's epoch: raised every time the partition changes holder. A commit fenced by
    /// an older epoch is refused.
    pub epoch: i64,
    /// Until when this process may act on the lease, by its own monotonic clock: the instant
    /// its last renewal was *sent* plus the time to live, so never later than the expiry the
    /// database recorded (a process paused past it, e.g. by SIGSTOP, sees it passed as soon as
    /// it runs again).
    pub valid_until: Instant,
}

impl Lease {
    /// Whether this process may still act on the lease (see [`valid_until`](Self::valid_until)).
    pub fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until
    }
}

/// The partitions this process holds, by partition.
pub type Held = BTreeMap<u32, Lease>;
