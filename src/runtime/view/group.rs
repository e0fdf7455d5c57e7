//! Key-value views run by several processes: one live runner at a time, with failover.
//!
//! [`KvView::run_in_group`] joins the consumer group named after the view version's checkpoint
//! (`view:<name>:v<version>`), with a single partition: a view's handlers see the whole log in
//! order, so one process applies it at a time. The process holding the lease runs the view's
//! normal runner, every commit fenced by the lease; the others wait, and one of them takes
//! over from the last checkpoint when the holder dies or loses its lease. Queries
//! ([`KvView::get`] and the rest) work in every process: they read the shared state.

use std::sync::Arc;

use tokio::sync::watch;

use super::error::ViewError;
use super::id::ViewId;
use super::kv::{KvInner, KvView};
use super::progress::Progress;
use super::runner::{Backend, Refused, Start, ViewRunner};
use crate::runtime::lease::{Fence, GroupMember, GroupOptions, Held};
use crate::runtime::subscription::Filter;
use crate::storage::{LoggedEvent, Position, StorageAdapter, StorageError};

/// A view version's tables, with every commit fenced by a lease.
struct Fenced {
    inner: Arc<KvInner>,
    fence: Fence,
}

impl Backend for Fenced {
    fn id(&self) -> &ViewId {
        self.inner.id()
    }

    fn filter(&self) -> Filter {
        self.inner.filter()
    }

    fn progress(&self) -> &Progress {
        self.inner.progress()
    }

    fn start(&self) -> Result<Start, ViewError> {
        self.fence.check_local()?;
        self.inner.start()
    }

    fn apply(&self, events: &[LoggedEvent], next: Position, activate: bool) -> Result<(), Refused> {
        self.inner
            .apply_fenced(events, next, activate, Some(&self.fence))
    }
}

impl KvView {
    /// Runs this view version in its consumer group (feature `postgres`; the view's state
    /// store must be the PostgreSQL one): in whichever process holds the group's lease, with
    /// failover to another process after the lease's time to live (see
    /// [`lease`](crate::runtime::lease)); every commit is fenced by the lease. Queries work in
    /// every process: they read the shared state. `options.partitions` must be 1: a view is
    /// one consumer.
    ///
    /// [`wait_for`](KvView::wait_for) waits for the runner of this process: in a process that
    /// does not hold the lease it times out; read the shared rows there instead.
    pub async fn run_in_group(
        &self,
        adapter: Arc<dyn StorageAdapter>,
        options: GroupOptions,
    ) -> Result<ViewRunner, ViewError> {
        if options.partitions != 1 {
            return Err(StorageError::InvalidConfiguration {
                reason: format!(
                    "view {:?} runs in one partition, not {}: its handlers see the whole log \
                     in order",
                    self.name(),
                    options.partitions
                ),
            }
            .into());
        }
        let inner = self.inner();
        let member = inner
            .state()
            .join_group(inner.checkpoint_name(), options)
            .await?;
        let (stop, stopped) = watch::channel(false);
        let id = inner.id().clone();
        let task = tokio::spawn(supervise(inner, member, adapter, stopped));
        Ok(ViewRunner::from_parts(id, stop, task))
    }
}

async fn supervise(
    inner: Arc<KvInner>,
    member: GroupMember,
    adapter: Arc<dyn StorageAdapter>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ViewError> {
    let mut held = member.watch();
    let mut running: Option<(i64, ViewRunner)> = None;
    let outcome = loop {
        let now: Held = held.borrow_and_update().clone();
        let lease = now.get(&0).filter(|l| l.is_valid()).map(|l| l.epoch);
        // Lost, or taken again under another epoch: stop at once, as a crash would.
        if running
            .as_ref()
            .is_some_and(|(epoch, _)| Some(*epoch) != lease)
        {
            running = None;
        }
        if let Some((_, runner)) = running.take_if(|(_, runner)| runner.is_finished()) {
            match runner.join().await {
                Ok(()) => {}
                // Lost lease or database out of reach: started again when it can be.
                Err(ViewError::Storage(error)) if passing(&error) => {
                    tracing::warn!(%error, "a view's runner stopped; it starts again when it can");
                }
                Err(error) => break Err(error),
            }
        }
        if running.is_none()
            && lease.is_some()
            && let Some(fence) = member.fence(0)
        {
            let epoch = fence.epoch;
            let backend = Arc::new(Fenced {
                inner: inner.clone(),
                fence,
            });
            running = Some((epoch, ViewRunner::spawn(backend, adapter.clone())));
        }
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break Ok(()),
            changed = held.changed() => {
                if changed.is_err() {
                    break Err(StorageError::Closed.into());
                }
            }
            () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
    };
    if let Some((_, runner)) = running {
        match runner.stop().await {
            Ok(()) => {}
            Err(ViewError::Storage(error)) if passing(&error) => {}
            Err(error) => {
                member.leave().await;
                return Err(error);
            }
        }
    }
    member.leave().await;
    outcome
}

/// Whether `error` ends the view's runner in this process but not its run in the group.
fn passing(error: &StorageError) -> bool {
    matches!(
        error,
        StorageError::LeaseLost { .. }
            | StorageError::Unavailable { .. }
            | StorageError::Timeout { .. }
    )
}
