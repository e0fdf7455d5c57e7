//! The PostgreSQL adapter against a real server: the storage conformance suite unchanged, the
//! gap-free global order under concurrent commits, subscriptions and consumers, schema
//! migrations, and faults (lost connections, a restarted server, statement timeouts).
//!
//! Set `ANNALS_POSTGRES_URL` to run them (`eval "$(bash .ci/postgres start)"` starts a local
//! server and sets it); without it every test is skipped with a message saying so, unless
//! `ANNALS_REQUIRE_POSTGRES=1`, which CI sets so that a missing server fails the run.

mod fixture;

/// The conformance suite of every adapter, one test per check, each on a fresh schema.
mod conformance {
    annals::conformance_tests!(super::fixture::conformance);
}
mod actions;
mod faults;
mod global_order;
mod processes;
mod schema;
mod snapshots;
mod subscriptions;
