//! The storage-adapter conformance suite: one set of checks that every
//! [`StorageAdapter`](crate::storage::StorageAdapter) must pass, so that the typed layer behaves
//! identically on each of them.
//!
//! The suite guards the contract written on [`StorageAdapter`](crate::storage::StorageAdapter):
//! versions of an aggregate are exactly `1..=n`, and a conflicting or skipped version is refused
//! with a typed error that names the event; a commit (one push or one event group, across
//! aggregates and stores) is all or nothing, also under concurrency; positions are gap-free,
//! increasing and consecutive within a commit; `get_events` and `list_aggregate_ids` honour every
//! option and the paging rules of [`page`](crate::storage::page); every
//! [`Limits`](crate::storage::Limits) bound is enforced before anything is written; an adapter
//! that keeps snapshots stores them byte for byte under their key and answers
//! newest-at-or-below and prune queries by version. Each check is a public async function that
//! takes a *fresh* (empty) adapter, writes its own fixture through the adapter's public methods
//! and panics, with a message that names the check, on the first broken rule. Where a rule is
//! about a space of inputs (read ranges, paging options), the check walks every combination and
//! compares against a model. The checks are grouped in files by what they prove (versions,
//! `get_events`, paging, event groups, concurrency, limits, snapshots, the global log).
//!
//! Adapter crates run the whole suite with [`conformance_tests!`](crate::conformance_tests),
//! which expands into one `#[test]` per check, so every check is a separately named test:
//!
//! ```
//! mod in_memory {
//!     use std::sync::Arc;
//!     use annals::storage::InMemoryAdapter;
//!
//!     annals::conformance_tests!(|| async { Arc::new(InMemoryAdapter::new()) });
//! }
//! ```
//!
//! The factory is called once per check, inside the check's runtime, and returns anything
//! that converts into a [`Fixture`]: an `Arc` of the adapter, or a [`Fixture`] built with
//! [`Fixture::with_guard`] when the adapter needs something kept alive for the length of the
//! check (a temporary directory, a database schema). Checks run on a multi-threaded runtime,
//! so the concurrency checks really race.
//!
//! A harness of its own (one that cannot use the macro's `#[test]` functions) runs the same
//! list through [`checks`], calling [`run`] with each [`Check`].

mod checks;
mod concurrency;
mod event_groups;
mod events;
mod expect;
mod fixture;
mod get_events;
mod global_log;
mod keys;
mod lifecycle;
mod limits;
mod list_aggregate_ids;
mod round_trip;
mod snapshots;
mod versions;

pub use checks::{Check, CheckFuture, checks};
pub use concurrency::{
    concurrent_event_groups_are_all_or_nothing, concurrent_pushes_have_one_winner_per_version,
};
pub use event_groups::{
    borrowed_event_group_commits_like_an_owned_one,
    event_group_commits_across_stores_and_aggregates,
    event_group_conflict_names_the_event_and_writes_nothing,
    event_group_orders_events_of_one_aggregate,
};
pub use fixture::{Fixture, run};
pub use get_events::{
    get_events_bounds_are_inclusive, get_events_matches_the_model_for_every_option_combination,
    get_events_of_unknown_aggregate_is_empty, get_events_reverse_with_limit_returns_the_newest,
    same_aggregate_id_in_two_stores_is_independent,
};
pub use global_log::{
    read_log_returns_every_committed_event_in_position_order, watch_log_follows_commits,
};
pub use keys::keys_are_created_once_and_forgotten_for_good;
pub use lifecycle::{
    a_push_racing_a_delete_lands_before_it_or_is_refused,
    compaction_removes_hidden_events_and_keeps_the_rest, hard_delete_is_final,
    listings_exclude_deleted_aggregates,
    read_log_skips_hidden_events_and_delivers_lifecycle_events,
    retention_hides_by_count_and_by_age, soft_delete_hides_refuses_pushes_and_restores,
    truncate_before_hides_a_prefix,
};
pub use limits::{
    empty_group_is_refused, invalid_ids_and_types_are_refused, invalid_ids_are_refused_on_reads,
    oversized_event_is_refused, oversized_group_is_refused,
};
pub use list_aggregate_ids::{
    extreme_timestamps_round_trip_and_page,
    list_aggregate_ids_explicit_options_override_the_page_token,
    list_aggregate_ids_limit_zero_is_empty, list_aggregate_ids_orders_by_initial_timestamp_then_id,
    list_aggregate_ids_paginates_every_option_combination,
    list_aggregate_ids_rejects_foreign_and_garbage_tokens,
    list_aggregate_ids_reverse_is_the_exact_mirror, list_aggregate_ids_time_bounds_are_inclusive,
};
pub use round_trip::{
    positions_are_gap_free_and_follow_commit_order, push_round_trips_events_byte_for_byte,
};
pub use snapshots::{
    snapshots_prune_keeps_the_newest_and_delete_removes_one,
    snapshots_round_trip_and_latest_is_at_or_below,
};
pub use versions::{
    existing_version_is_event_already_exists, version_gap_is_unexpected_version,
    version_zero_is_unexpected_version,
};
