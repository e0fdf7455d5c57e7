//! The suite must be able to fail: adapters that each break one rule of the contract are run
//! through the check guarding that rule, and the check must panic.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use annals::storage::{
    AggregateIdEntry, AggregateIdsQuery, AppendEvent, DeleteMode, GetEventsOptions,
    InMemoryAdapter, Limits, LoggedEvent, Position, StorageAdapter, StorageError, StoredEvent,
    Timestamp,
};
use annals::testing::conformance;
use async_trait::async_trait;

/// Which rule the wrapped in-memory adapter breaks.
#[derive(Clone, Copy, Debug)]
enum Flaw {
    /// Commits a group one event at a time, so a late conflict leaves the early events.
    SplitCommits,
    /// Like `SplitCommits`, and lets other tasks run between the events of a group.
    SplitCommitsYielding,
    /// With `reverse` and `limit`, returns the oldest events instead of the newest.
    ReverseLimitFromTheFront,
    /// Treats `initial_event_after` as exclusive.
    ExclusiveLowerBound,
    /// Skips the limit checks on writes.
    NoWriteLimits,
    /// Reads the log from the position after the one asked for.
    ExclusiveLogStart,
    /// Hands out a log watch that never moves.
    FrozenLogWatch,
    /// Acknowledges deletes without recording them.
    ForgetsDeletes,
    /// Acknowledges truncations without recording them.
    ForgetsTruncations,
}

struct Flawed {
    inner: InMemoryAdapter,
    flaw: Flaw,
}

fn flawed(flaw: Flaw) -> impl FnOnce() -> std::future::Ready<Arc<Flawed>> {
    move || {
        std::future::ready(Arc::new(Flawed {
            inner: InMemoryAdapter::new(),
            flaw,
        }))
    }
}

#[async_trait]
impl StorageAdapter for Flawed {
    fn limits(&self) -> &Limits {
        self.inner.limits()
    }

    async fn read_events(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        options: &GetEventsOptions,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        match (self.flaw, options.limit) {
            (Flaw::ReverseLimitFromTheFront, Some(limit)) if options.reverse => {
                let forward = GetEventsOptions {
                    reverse: false,
                    ..*options
                };
                let mut events = self
                    .inner
                    .read_events(event_store_id, aggregate_id, &forward)
                    .await?;
                events.truncate(limit);
                events.reverse();
                Ok(events)
            }
            _ => {
                self.inner
                    .read_events(event_store_id, aggregate_id, options)
                    .await
            }
        }
    }

    async fn append(&self, events: Vec<AppendEvent>) -> Result<Vec<Position>, StorageError> {
        match self.flaw {
            Flaw::SplitCommits | Flaw::SplitCommitsYielding => {
                let mut positions = Vec::new();
                for event in events {
                    positions.extend(self.inner.append(vec![event]).await?);
                    if matches!(self.flaw, Flaw::SplitCommitsYielding) {
                        tokio::task::yield_now().await;
                    }
                }
                Ok(positions)
            }
            _ => self.inner.append(events).await,
        }
    }

    async fn scan_aggregate_ids(
        &self,
        event_store_id: &str,
        query: &AggregateIdsQuery,
    ) -> Result<Vec<AggregateIdEntry>, StorageError> {
        let mut query = query.clone();
        if let (Flaw::ExclusiveLowerBound, Some(after)) = (self.flaw, query.initial_event_after) {
            query.initial_event_after = Some(Timestamp::from_unix_millis(after.unix_millis() + 1));
        }
        self.inner.scan_aggregate_ids(event_store_id, &query).await
    }

    async fn read_log(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StorageError> {
        match self.flaw {
            Flaw::ExclusiveLogStart => self.inner.read_log(from + 1, limit).await,
            _ => self.inner.read_log(from, limit).await,
        }
    }

    fn watch_log(&self) -> tokio::sync::watch::Receiver<Position> {
        match self.flaw {
            Flaw::FrozenLogWatch => tokio::sync::watch::channel(0).1,
            _ => self.inner.watch_log(),
        }
    }

    async fn push_event_group(
        &self,
        events: Vec<AppendEvent>,
    ) -> Result<Vec<Position>, StorageError> {
        if !matches!(self.flaw, Flaw::NoWriteLimits) {
            self.limits().check_commit(&events)?;
        }
        self.append(events).await
    }

    async fn delete_aggregate(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        mode: DeleteMode,
    ) -> Result<Position, StorageError> {
        match self.flaw {
            Flaw::ForgetsDeletes => Ok(*self.inner.watch_log().borrow()),
            _ => {
                self.inner
                    .delete_aggregate(event_store_id, aggregate_id, mode)
                    .await
            }
        }
    }

    async fn truncate_before(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        version: u64,
    ) -> Result<Position, StorageError> {
        match self.flaw {
            Flaw::ForgetsTruncations => Ok(*self.inner.watch_log().borrow()),
            _ => {
                self.inner
                    .truncate_before(event_store_id, aggregate_id, version)
                    .await
            }
        }
    }
}

/// Runs `check` on an adapter with `flaw` and asserts that the check fails.
fn assert_caught<C, Fut>(flaw: Flaw, check_name: &str, check: C)
where
    C: FnOnce(Arc<dyn StorageAdapter>) -> Fut,
    Fut: Future<Output = ()>,
{
    let outcome = catch_unwind(AssertUnwindSafe(|| conformance::run(flawed(flaw), check)));
    assert!(
        outcome.is_err(),
        "{check_name} passed an adapter with flaw {flaw:?}"
    );
}

#[test]
fn suite_catches_groups_committed_event_by_event() {
    assert_caught(
        Flaw::SplitCommits,
        "event_group_conflict_names_the_event_and_writes_nothing",
        conformance::event_group_conflict_names_the_event_and_writes_nothing,
    );
}

#[test]
fn suite_catches_reverse_limit_returning_the_oldest_events() {
    assert_caught(
        Flaw::ReverseLimitFromTheFront,
        "get_events_reverse_with_limit_returns_the_newest",
        conformance::get_events_reverse_with_limit_returns_the_newest,
    );
    assert_caught(
        Flaw::ReverseLimitFromTheFront,
        "get_events_matches_the_model_for_every_option_combination",
        conformance::get_events_matches_the_model_for_every_option_combination,
    );
}

#[test]
fn suite_catches_an_exclusive_lower_time_bound() {
    assert_caught(
        Flaw::ExclusiveLowerBound,
        "list_aggregate_ids_time_bounds_are_inclusive",
        conformance::list_aggregate_ids_time_bounds_are_inclusive,
    );
    assert_caught(
        Flaw::ExclusiveLowerBound,
        "list_aggregate_ids_paginates_every_option_combination",
        conformance::list_aggregate_ids_paginates_every_option_combination,
    );
}

#[test]
fn suite_catches_writes_that_skip_the_limits() {
    assert_caught(
        Flaw::NoWriteLimits,
        "invalid_ids_and_types_are_refused",
        conformance::invalid_ids_and_types_are_refused,
    );
    assert_caught(
        Flaw::NoWriteLimits,
        "oversized_event_is_refused",
        conformance::oversized_event_is_refused,
    );
}

#[test]
fn suite_catches_a_log_read_that_skips_its_first_position() {
    assert_caught(
        Flaw::ExclusiveLogStart,
        "read_log_returns_every_committed_event_in_position_order",
        conformance::read_log_returns_every_committed_event_in_position_order,
    );
}

#[test]
fn suite_catches_a_log_watch_that_never_moves() {
    assert_caught(
        Flaw::FrozenLogWatch,
        "watch_log_follows_commits",
        conformance::watch_log_follows_commits,
    );
}

/// Racing is not deterministic, but a group that yields between its events is seen in part
/// within a few runs (every run, in practice).
#[test]
fn suite_catches_groups_visible_in_part_under_concurrency() {
    let caught = (0..5).any(|_| {
        catch_unwind(|| {
            conformance::run(
                flawed(Flaw::SplitCommitsYielding),
                conformance::concurrent_event_groups_are_all_or_nothing,
            )
        })
        .is_err()
    });
    assert!(
        caught,
        "concurrent_event_groups_are_all_or_nothing passed an adapter whose groups are \
         visible in part, five runs out of five"
    );
}

#[test]
fn suite_catches_deletes_and_truncations_that_are_not_honoured() {
    assert_caught(
        Flaw::ForgetsDeletes,
        "soft_delete_hides_refuses_pushes_and_restores",
        conformance::soft_delete_hides_refuses_pushes_and_restores,
    );
    assert_caught(
        Flaw::ForgetsDeletes,
        "a_push_racing_a_delete_lands_before_it_or_is_refused",
        conformance::a_push_racing_a_delete_lands_before_it_or_is_refused,
    );
    assert_caught(
        Flaw::ForgetsTruncations,
        "truncate_before_hides_a_prefix",
        conformance::truncate_before_hides_a_prefix,
    );
}
