//! The conformance suite of every adapter, one test per check, each on a fresh schema. The
//! suite's own macro (`annals::conformance_tests!`) writes `#[test]` functions, which a
//! `harness = false` binary does not have, so the checks are listed here; a test proves the
//! list is the suite's, so a check added to the suite cannot be missed here.

use annals::testing::conformance;
use libtest_mimic::Trial;

use crate::fixture;
use crate::harness::{Needs, name, trial};

macro_rules! checks {
    ($($check:ident),+ $(,)?) => {
        /// The checks, in the suite's order.
        const CHECKS: &[&str] = &[$(stringify!($check)),+];

        /// One trial per check, and the test that the list is complete.
        pub fn trials() -> Vec<Trial> {
            let mut trials = vec![$(
                trial(name(module_path!(), stringify!($check)), Needs::Server, || {
                    conformance::run(fixture::conformance, conformance::$check)
                })
            ),+];
            trials.push(trial(
                name(module_path!(), "every_check_of_the_suite_runs_here"),
                Needs::Nothing,
                every_check_of_the_suite_runs_here,
            ));
            trials
        }
    };
}

checks!(
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
    concurrent_event_groups_are_all_or_nothing,
    concurrent_pushes_have_one_winner_per_version,
    oversized_event_is_refused,
    oversized_group_is_refused,
    invalid_ids_and_types_are_refused,
    invalid_ids_are_refused_on_reads,
    empty_group_is_refused,
    snapshots_round_trip_and_latest_is_at_or_below,
    snapshots_prune_keeps_the_newest_and_delete_removes_one,
    read_log_returns_every_committed_event_in_position_order,
    watch_log_follows_commits,
);

/// The checks `annals::conformance_tests!` expands into, read from its source.
fn every_check_of_the_suite_runs_here() {
    const SUITE: &str = include_str!("../../src/testing/conformance/mod.rs");
    const LIST: &str = "conformance_tests!(@checks ($factory)";
    let start = SUITE
        .find(LIST)
        .expect("conformance_tests! lists its checks after `@checks ($factory)`")
        + LIST.len();
    let end = start
        + SUITE[start..]
            .find(')')
            .expect("the list of checks ends with `)`");
    let suite: Vec<&str> = SUITE[start..end]
        .split(',')
        .map(str::trim)
        .filter(|check| !check.is_empty())
        .collect();
    assert!(suite.len() > 20, "the list was not found: {suite:?}");
    assert_eq!(
        CHECKS, suite,
        "tests/postgres/conformance.rs must list exactly the checks of conformance_tests!"
    );
}
