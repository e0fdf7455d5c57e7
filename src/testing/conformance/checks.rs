//! The one list of the checks. [`conformance_tests!`](crate::conformance_tests) expands it into
//! one `#[test]` per check, and [`checks`] hands it to a harness of its own (tests/postgres runs
//! on libtest-mimic), so a check added to the list once runs on every adapter.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::storage::StorageAdapter;

/// The future of a check called through [`Check::run`], boxed.
pub type CheckFuture = Pin<Box<dyn Future<Output = ()>>>;

/// One check of the suite: its name and the check itself.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// The check's name, which is its function's (`watch_log_follows_commits`).
    pub name: &'static str,
    /// The check, on a fresh adapter; [`run`](super::run) it like the check's function.
    pub run: fn(Arc<dyn StorageAdapter>) -> CheckFuture,
}

/// Every check of the suite, in the suite's order: the list
/// [`conformance_tests!`](crate::conformance_tests) expands into tests.
pub fn checks() -> Vec<Check> {
    crate::conformance_tests!(@list @checks)
}

/// Expands into one `#[test]` per conformance check, each running on a fresh adapter made by
/// the given factory: an expression callable as `factory()` that returns a future of something
/// convertible into a [`Fixture`](crate::testing::conformance::Fixture) (for instance
/// `Arc<MyAdapter>`). Invoke it inside a module named after the adapter.
///
/// ```
/// mod in_memory {
///     use std::sync::Arc;
///     use annals::storage::InMemoryAdapter;
///
///     annals::conformance_tests!(|| async { Arc::new(InMemoryAdapter::new()) });
/// }
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::conformance_tests!(@list @tests ($factory));
    };
    // The list of the checks, in the suite's order, handed to the arm `@$then` after that
    // arm's own arguments: the one place a check is listed.
    (@list @$then:ident $(($($args:tt)*))?) => {
        $crate::conformance_tests! { @$then $(($($args)*))?
            push_round_trips_events_byte_for_byte,
            positions_are_gap_free_and_follow_commit_order,
            existing_version_is_event_already_exists,
            version_gap_is_unexpected_version,
            version_zero_is_unexpected_version,
            get_events_bounds_are_inclusive,
            get_events_reverse_with_limit_returns_the_newest,
            get_events_matches_the_model_for_every_option_combination,
            get_events_of_unknown_aggregate_is_empty,
            same_aggregate_id_in_two_stores_is_independent,
            list_aggregate_ids_orders_by_initial_timestamp_then_id,
            list_aggregate_ids_reverse_is_the_exact_mirror,
            list_aggregate_ids_time_bounds_are_inclusive,
            list_aggregate_ids_paginates_every_option_combination,
            list_aggregate_ids_explicit_options_override_the_page_token,
            list_aggregate_ids_rejects_foreign_and_garbage_tokens,
            list_aggregate_ids_limit_zero_is_empty,
            extreme_timestamps_round_trip_and_page,
            event_group_commits_across_stores_and_aggregates,
            event_group_conflict_names_the_event_and_writes_nothing,
            event_group_orders_events_of_one_aggregate,
            borrowed_event_group_commits_like_an_owned_one,
            concurrent_event_groups_are_all_or_nothing,
            concurrent_pushes_have_one_winner_per_version,
            oversized_event_is_refused,
            oversized_group_is_refused,
            invalid_ids_and_types_are_refused,
            invalid_ids_are_refused_on_reads,
            empty_group_is_refused,
            snapshots_round_trip_and_latest_is_at_or_below,
            snapshots_prune_keeps_the_newest_and_delete_removes_one,
            keys_are_created_once_and_forgotten_for_good,
            read_log_returns_every_committed_event_in_position_order,
            watch_log_follows_commits,
            soft_delete_hides_refuses_pushes_and_restores,
            hard_delete_is_final,
            truncate_before_hides_a_prefix,
            retention_hides_by_count_and_by_age,
            read_log_skips_hidden_events_and_delivers_lifecycle_events,
            listings_exclude_deleted_aggregates,
            a_push_racing_a_delete_lands_before_it_or_is_refused,
            compaction_removes_hidden_events_and_keeps_the_rest,
        }
    };
    (@tests ($factory:expr) $($check:ident),+ $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::testing::conformance::run(
                    $factory,
                    $crate::testing::conformance::$check,
                );
            }
        )+
    };
    (@checks $($check:ident),+ $(,)?) => {
        ::std::vec![$(
            $crate::testing::conformance::Check {
                name: ::std::stringify!($check),
                run: |adapter| {
                    ::std::boxed::Box::pin($crate::testing::conformance::$check(adapter))
                },
            }
        ),+]
    };
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::checks;

    /// Every public check written in the suite's files is in the list, and only once.
    #[test]
    fn every_check_of_the_suite_is_listed_once() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/testing/conformance");
        let mut written = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for line in source.lines() {
                if let Some(rest) = line.strip_prefix("pub async fn ") {
                    written.insert(rest.split(['(', '<']).next().unwrap().to_owned());
                }
            }
        }
        let listed: Vec<String> = checks().iter().map(|check| check.name.to_owned()).collect();
        let unique: BTreeSet<String> = listed.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            listed.len(),
            "a check is listed twice: {listed:?}"
        );
        assert_eq!(
            unique, written,
            "the list must name every `pub async fn` check"
        );
    }
}
