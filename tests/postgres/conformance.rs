//! The conformance suite of every adapter, one test per check, each on a fresh schema. The
//! suite's own macro (`annals::conformance_tests!`) writes `#[test]` functions, which a
//! `harness = false` binary does not have, so the trials are made from the suite's list of
//! checks ([`conformance::checks`]), the same list the macro expands: a check added to the suite
//! runs here too.

use annals::testing::conformance;
use libtest_mimic::Trial;

use crate::fixture;
use crate::harness::{Needs, name, trial};

/// The lifecycle checks (deletes, truncation, retention, compaction): the PostgreSQL adapter
/// does not keep lifecycle rules yet (it refuses them with `StorageError::Unsupported`), so
/// they are listed as ignored rather than left out; `--include-ignored` runs them.
const LIFECYCLE_CHECKS: &[&str] = &[
    "soft_delete_hides_refuses_pushes_and_restores",
    "hard_delete_is_final",
    "truncate_before_hides_a_prefix",
    "retention_hides_by_count_and_by_age",
    "read_log_skips_hidden_events_and_delivers_lifecycle_events",
    "listings_exclude_deleted_aggregates",
    "a_push_racing_a_delete_lands_before_it_or_is_refused",
    "compaction_removes_hidden_events_and_keeps_the_rest",
];

/// One trial per check of the suite, in the suite's order.
pub fn trials() -> Vec<Trial> {
    conformance::checks()
        .into_iter()
        .map(|check| {
            trial(name(module_path!(), check.name), Needs::Server, move || {
                conformance::run(fixture::conformance, check.run)
            })
            .with_ignored_flag(LIFECYCLE_CHECKS.contains(&check.name))
        })
        .collect()
}
