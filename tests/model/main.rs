//! Storage adapters behave like a simple model under random operation sequences.
//!
//! proptest generates sequences of pushes (the next version, or deliberately a taken version
//! or a gap), event groups across stores and aggregates (sometimes with one conflicting
//! member), reads with random `get_events` options, paged `list_aggregate_ids` with random
//! bounds and order, and — for the log adapter on a simulated disk — reopens and power losses
//! with every kind of damage to unsynced writes. Each operation runs on the adapter and on an
//! in-memory model built from `BTreeMap`s; every read, every page, every position and the
//! kind and subject of every refusal must match. Since every push returns before a crash,
//! everything the model holds was acknowledged and must survive. Tiny segments and index
//! checkpoints make a short sequence exercise rollover, checkpoints and recovery.
//! `PROPTEST_CASES` raises the number of cases.

mod model;
mod ops;

use annals::engine::sim::SimFs;
use annals::storage::{InMemoryAdapter, StorageAdapter};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};

use model::Model;
use ops::Op;

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        // Next to this file (tests/model/main.proptest-regressions), not in a directory that
        // every `tests/*/main.rs` would share.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn run_log(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut fs = SimFs::new();
    let mut log = ops::open_log(&fs).unwrap();
    let mut model = Model::default();
    for (n, op) in ops.iter().enumerate() {
        match op {
            Op::Reopen => {
                drop(log);
                log = ops::open_log(&fs)
                    .map_err(|e| TestCaseError::fail(format!("op {n}: reopen failed: {e}")))?;
            }
            Op::Crash(damage) => {
                let image = fs.crash_image(*damage);
                drop(log);
                fs = image;
                log = ops::open_log(&fs).map_err(|e| {
                    TestCaseError::fail(format!("op {n}: reopen after {damage:?} failed: {e}"))
                })?;
            }
            op => ops::apply(&log, &mut model, op, n).await?,
        }
        prop_assert_eq!(log.last_position(), model.last_position(), "after op {}", n);
    }
    ops::check_all(&log, &model).await
}

async fn run_memory(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let adapter = InMemoryAdapter::with_limits(ops::limits());
    let mut model = Model::default();
    for (n, op) in ops.iter().enumerate() {
        ops::apply(&adapter as &dyn StorageAdapter, &mut model, op, n).await?;
    }
    ops::check_all(&adapter, &model).await
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn log_adapter_matches_the_model_across_reopens_and_crashes(
        ops in proptest::collection::vec(ops::op(true), 1..80)
    ) {
        runtime().block_on(run_log(ops))?;
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn in_memory_adapter_matches_the_model(
        ops in proptest::collection::vec(ops::op(false), 1..48)
    ) {
        runtime().block_on(run_memory(ops))?;
    }
}
