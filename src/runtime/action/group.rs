//! Event actions run by several processes: one consumer group per action, each partition of
//! the log handled by one process at a time (see [`lease`](crate::lease)).
//!
//! [`EventAction::spawn_in_group`] joins the action's group and runs, for every partition this
//! process holds, the action's normal runner on a [`Consumer`] of that partition alone: its own
//! checkpoint (`<action>#<partition>`), the partition's events only, and the lease's fence on
//! every commit. A partition whose lease is lost has its runner stopped at once (as a crash
//! would stop it: the event being handled is handled again by the new holder); a partition
//! taken over starts from its checkpoint. The first time a partition runs, it starts from the
//! action's own checkpoint if the action ran outside a group before, so that moving an action
//! into a group does not handle its past events again.
//!
//! Dead letters and retry requests stay keyed by the action's name: any process lists them,
//! and the holder of partition 0 carries out retry requests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::error::ActionRunError;
use super::event::{ActionRunner, EventAction};
use crate::runtime::consumer::Consumer;
use crate::runtime::lease::{GroupMember, GroupOptions, Held};
use crate::runtime::state::StateStore;
use crate::storage::{Position, StorageAdapter, StorageError};

/// How often the supervisor looks at its partitions' runners between changes of the leases.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(50);

/// The checkpoint name of partition `partition` of action `action`.
pub(crate) fn partition_checkpoint(action: &str, partition: u32) -> String {
    format!("{action}#{partition}")
}

/// One partition being handled by this process.
struct Partition {
    epoch: i64,
    stop: watch::Sender<bool>,
    progress: watch::Receiver<Position>,
    task: JoinHandle<Result<(), StorageError>>,
}

impl EventAction {
    /// Starts the action as a member of its consumer group (named after the action) on
    /// `state`, which must be the PostgreSQL state store: this process handles the partitions
    /// it holds a lease on, other processes running the same action handle the others, and
    /// the partitions of a process that dies are taken over after the lease's time to live
    /// (see [`lease`](crate::runtime::lease)).
    ///
    /// Each partition `k` keeps its own checkpoint, `<action>#k`; the first time it runs it
    /// starts from the action's own checkpoint if the action ran outside a group before. Every
    /// commit is fenced by the partition's lease. Dead letters stay keyed by the action's
    /// name; the holder of partition 0 carries out retry requests.
    ///
    /// The returned runner's [`position`](ActionRunner::position) is the lowest checkpoint of
    /// the partitions this process holds. Fails with [`StorageError::InvalidConfiguration`]
    /// when `state` is not on PostgreSQL or the group exists with another partition count.
    pub async fn spawn_in_group(
        &self,
        adapter: Arc<dyn StorageAdapter>,
        state: Arc<StateStore>,
        options: GroupOptions,
    ) -> Result<ActionRunner, StorageError> {
        let member = state.join_group(self.name(), options).await?;
        let (stop, stop_rx) = watch::channel(false);
        let (progress_tx, progress) = watch::channel(1);
        let action = self.clone();
        let name = self.name().to_owned();
        let task = tokio::spawn(async move {
            supervise(action, member, adapter, state, stop_rx, progress_tx)
                .await
                .map_err(|source| ActionRunError::Storage {
                    action: name,
                    source,
                })
        });
        Ok(ActionRunner::from_parts(
            Arc::from(self.name()),
            stop,
            progress,
            task,
        ))
    }
}

async fn supervise(
    action: EventAction,
    member: GroupMember,
    adapter: Arc<dyn StorageAdapter>,
    state: Arc<StateStore>,
    mut stop: watch::Receiver<bool>,
    progress: watch::Sender<Position>,
) -> Result<(), StorageError> {
    let mut held = member.watch();
    let mut running: BTreeMap<u32, Partition> = BTreeMap::new();
    let outcome = loop {
        let now: Held = held.borrow_and_update().clone();
        // Lost or re-taken under another epoch: stop at once, as a crash would.
        running.retain(|partition, run| {
            let keep = now.get(partition).is_some_and(|l| l.epoch == run.epoch);
            if !keep {
                run.task.abort();
            }
            keep
        });
        // Ended by itself: a lost lease is left to the coordinator, anything else ends all.
        let mut failed = None;
        running.retain(|_, run| {
            if !run.task.is_finished() {
                return true;
            }
            failed = failed.take().or_else(|| ended_with(run).err());
            false
        });
        if let Some(error) = failed {
            break Err(error);
        }
        let mut failed = None;
        for (&partition, lease) in &now {
            if running.contains_key(&partition) || !lease.is_valid() {
                continue;
            }
            match start(&action, &member, &adapter, &state, partition) {
                Ok(Some(run)) => {
                    running.insert(partition, run);
                }
                Ok(None) => {}
                // Tried again at the next look.
                Err(error) if passing(&error) => {}
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        if let Some(error) = failed {
            break Err(error);
        }
        let lowest = running.values().map(|r| *r.progress.borrow()).min();
        if let Some(lowest) = lowest {
            progress.send_if_modified(|p| std::mem::replace(p, lowest) != lowest);
        }
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break Ok(()),
            changed = held.changed() => {
                if changed.is_err() {
                    break Err(StorageError::Closed);
                }
            }
            () = tokio::time::sleep(SUPERVISE_INTERVAL) => {}
        }
    };
    // Stop cleanly: each runner finishes the event it is handling (its commit is fenced).
    for run in running.values() {
        run.stop.send_replace(true);
    }
    for (_, run) in running {
        let _ = run.task.await;
    }
    member.leave().await;
    outcome
}

/// Whether `error` ends a partition's runner but not the action: a lost lease (the partition
/// goes on elsewhere) or a database out of reach (the partition starts again from its
/// checkpoint once the database answers and the lease is still, or again, held).
fn passing(error: &StorageError) -> bool {
    matches!(
        error,
        StorageError::LeaseLost { .. }
            | StorageError::Unavailable { .. }
            | StorageError::Timeout { .. }
    )
}

/// What a finished partition runner ended with: see [`passing`].
fn ended_with(run: &mut Partition) -> Result<(), StorageError> {
    let finished = futures::FutureExt::now_or_never(&mut run.task);
    match finished {
        Some(Ok(Ok(()))) | None => Ok(()),
        Some(Ok(Err(error))) if passing(&error) => {
            tracing::warn!(%error, "an action's partition stopped; it starts again when it can");
            Ok(())
        }
        Some(Ok(Err(error))) => Err(error),
        Some(Err(join)) if join.is_cancelled() => Ok(()),
        Some(Err(join)) => Err(StorageError::Poisoned {
            reason: format!("an action's partition runner failed: {join}"),
        }),
    }
}

/// Starts the runner of `partition`, if this member still holds it.
fn start(
    action: &EventAction,
    member: &GroupMember,
    adapter: &Arc<dyn StorageAdapter>,
    state: &Arc<StateStore>,
    partition: u32,
) -> Result<Option<Partition>, StorageError> {
    let Some(fence) = member.fence(partition) else {
        return Ok(None);
    };
    let epoch = fence.epoch;
    let checkpoint = partition_checkpoint(action.name(), partition);
    let from = match state.checkpoint(&checkpoint)? {
        Some(from) => from,
        None => state.checkpoint(action.name())?.unwrap_or(1),
    };
    let filter = action
        .subscription_filter()
        .partition(partition, member.partitions());
    let consumer =
        Consumer::open_from(checkpoint, adapter.clone(), state.clone(), filter, from).fenced(fence);
    let (stop, stop_rx) = watch::channel(false);
    let (progress_tx, progress) = watch::channel(consumer.position());
    let action = action.clone();
    let adapter = adapter.clone();
    let state = state.clone();
    let sweeps_retries = partition == 0;
    let task = tokio::spawn(async move {
        action
            .run(
                consumer,
                adapter,
                state,
                stop_rx,
                progress_tx,
                sweeps_retries,
            )
            .await
    });
    Ok(Some(Partition {
        epoch,
        stop,
        progress,
        task,
    }))
}
