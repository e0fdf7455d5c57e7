//! How the entities of one kind run: mailboxes, passivation, eviction, batching.

use std::time::Duration;

/// How [`Entities`](super::Entities) runs instances.
#[derive(Clone, Debug)]
pub struct EntityOptions {
    /// Most commands waiting in one instance's mailbox; beyond it `send` answers
    /// [`EntityError::Overloaded`](super::EntityError::Overloaded). Default 4,096.
    pub mailbox_capacity: usize,
    /// How long an instance stays live without a command before it stops. Default 60 s.
    pub idle_timeout: Duration,
    /// Most live instances; starting one more stops the least recently used. Default 10,000.
    pub live_instances_max: usize,
    /// Most commands decided into one batch (one commit). Default 1,024.
    pub batch_commands_max: usize,
    /// A batch stops taking commands once it holds this many events; keep it below the
    /// adapter's [`group_events_max`](crate::storage::Limits::group_events_max). Default 4,096.
    pub batch_events_max: usize,
    /// How many times a command is decided again after version conflicts before it fails
    /// with [`EntityError::Contended`](super::EntityError::Contended). Default 16.
    pub conflict_retries: u32,
}

impl Default for EntityOptions {
    fn default() -> Self {
        EntityOptions {
            mailbox_capacity: 4_096,
            idle_timeout: Duration::from_secs(60),
            live_instances_max: 10_000,
            batch_commands_max: 1_024,
            batch_events_max: 4_096,
            conflict_retries: 16,
        }
    }
}
