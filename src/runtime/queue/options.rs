//! What a queue handle accepts and how it delivers.

use std::time::Duration;

/// How a queue handle delivers and what it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueOptions {
    /// How long a received, un-acked message stays hidden (default 30 s).
    pub visibility_timeout: Duration,
    /// How many times a message may be received; on the next receive it goes to the dead
    /// letters instead (default 5, at least 1).
    pub max_receives: u32,
    /// The most messages the queue holds, in flight included; more are refused with
    /// [`QueueError::Full`](super::QueueError::Full) (default 100 000).
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
