//! Power loss at every I/O step of a compaction, with every kind of damage to unsynced data:
//! the store opens, every event the predicate keeps reads back intact at its position, by
//! aggregate and in global order; a removed event is either still there, intact, or gone,
//! each aggregate keeping a suffix of its versions; and the integrity check is clean.

use std::collections::BTreeMap;
use std::sync::Arc;

use annals::engine::CompactEntry;
use annals::engine::sim::{Damage, Fault, SimFs};
use annals::storage::{GetEventsOptions, LogAdapter, LoggedEvent, StorageAdapter};

use crate::workload::{self, AGGREGATES, STORES, append_more, open, run};

const COMMITS: usize = 60;

/// Removes all of POKEMONS/a and the first four versions of TRAINERS/b and POKEMONS/c.
fn keep(e: &CompactEntry<'_>) -> bool {
    !matches!(
        (e.store, e.aggregate, e.version),
        ("POKEMONS", "a", _) | ("TRAINERS", "b", 1..=4) | ("POKEMONS", "c", 1..=4)
    )
}

fn kept(e: &LoggedEvent) -> bool {
    keep(&CompactEntry {
        store: &e.event_store_id,
        aggregate: &e.event.aggregate_id,
        version: e.event.version,
        position: e.position,
        timestamp_ms: e.event.timestamp.unix_millis(),
        event_type: &e.event.event_type,
    })
}

async fn all_events(log: &LogAdapter) -> BTreeMap<u64, LoggedEvent> {
    let events = log.read_log(1, usize::MAX).await.expect("read the log");
    events.into_iter().map(|e| (e.position, e)).collect()
}

/// A store with sealed segments and its whole log, closed cleanly (the checkpoint at its end).
async fn prepared() -> (SimFs, BTreeMap<u64, LoggedEvent>) {
    let fs = SimFs::new();
    let log = open(&fs).expect("a clean open");
    let attempts = run(&log, COMMITS).await;
    assert!(attempts.iter().all(|a| a.acked.is_some()));
    drop(log);
    let log = open(&fs).expect("reopen");
    let before = all_events(&log).await;
    drop(log);
    (fs, before)
}

/// Checks a store reopened after a crash during compaction against the log before it.
async fn check(log: &LogAdapter, before: &BTreeMap<u64, LoggedEvent>, context: &str) {
    let after = all_events(log).await;
    for (position, e) in &after {
        assert_eq!(
            before.get(position),
            Some(e),
            "{context}: position {position} reads back other than it was written"
        );
    }
    for (position, e) in before {
        if kept(e) {
            assert!(
                after.contains_key(position),
                "{context}: kept event at {position} lost"
            );
        }
    }
    for store in STORES {
        for aggregate in AGGREGATES {
            let by_aggregate = log
                .get_events(store, aggregate, &GetEventsOptions::default())
                .await
                .unwrap_or_else(|e| panic!("{context}: reading {store}/{aggregate}: {e}"));
            let in_order: Vec<&LoggedEvent> = after
                .values()
                .filter(|e| e.event_store_id == store && e.event.aggregate_id == aggregate)
                .collect();
            assert_eq!(
                by_aggregate.len(),
                in_order.len(),
                "{context}: {store}/{aggregate} by aggregate and in order differ"
            );
            for (stored, logged) in by_aggregate.iter().zip(&in_order) {
                assert_eq!(
                    stored.position, logged.position,
                    "{context}: position moved"
                );
                assert_eq!(stored.event, logged.event, "{context}: event differs");
            }
            let last = before
                .values()
                .filter(|e| e.event_store_id == store && e.event.aggregate_id == aggregate)
                .map(|e| e.event.version)
                .max()
                .unwrap_or(0);
            // What is left of the aggregate is a suffix of its versions.
            let versions: Vec<u64> = by_aggregate.iter().map(|e| e.event.version).collect();
            if let Some(&first) = versions.first() {
                assert_eq!(
                    versions,
                    (first..=last).collect::<Vec<_>>(),
                    "{context}: {store}/{aggregate} is not a suffix of its versions"
                );
            }
        }
    }
    let report = log.verify().expect("verify");
    assert!(report.is_clean(), "{context}: {:?}", report.problems);
}

#[tokio::test]
async fn a_compaction_survives_power_loss_at_every_io_step() {
    let (base, before) = prepared().await;
    let removed = before.values().filter(|e| !kept(e)).count() as u64;
    assert!(
        removed > 10,
        "the workload gives the predicate something to remove"
    );
    let mut images = 0;
    let (mut rolled_forward, mut discarded) = (0, 0);
    let mut finished = false;
    let mut k = 1;
    while !finished {
        let fs = base.crash_image(Damage::KeepUnsynced);
        let log = open(&fs).expect("open the prepared store");
        let start = fs.ops();
        fs.inject(Fault::FailFrom(start + k));
        let result = log.compact_where(keep).await;
        if fs.ops() < start + k {
            // The compaction ran to its end before the k-th operation: every step was tried.
            let report = result.expect("an undisturbed compaction succeeds");
            assert_eq!(report.events_removed, removed);
            assert!(report.segments_rewritten > 0 && report.bytes_after < report.bytes_before);
            finished = true;
        }
        let damages = [
            Damage::DropUnsynced,
            Damage::KeepUnsynced,
            Damage::RandomSubset { seed: k },
            Damage::TornLast {
                sector: 512,
                seed: k,
            },
        ];
        let crashed: Vec<SimFs> = damages.iter().map(|d| fs.crash_image(*d)).collect();
        drop(log);
        for (image, damage) in crashed.into_iter().zip(damages) {
            let context = format!("crash at compaction step {k}, {damage:?}");
            let rewrites = rewrites_in(&image);
            let log = open(&image).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
            for (rewrite, bytes) in rewrites {
                assert!(
                    image.read_file(&rewrite).is_none(),
                    "{context}: rewrite left"
                );
                let segment = rewrite.with_extension("");
                if image.read_file(&segment).as_deref() == Some(&bytes) {
                    rolled_forward += 1;
                } else {
                    discarded += 1;
                }
            }
            check(&log, &before, &context).await;
            // Compacting again finishes the job, from wherever the crash left it.
            let report = log
                .compact_where(keep)
                .await
                .unwrap_or_else(|e| panic!("{context}: compacting again: {e}"));
            let after = all_events(&log).await;
            assert!(
                after.values().all(kept),
                "{context}: a removed event remains"
            );
            assert!(report.events_removed <= removed);
            check(&log, &before, &context).await;
            append_more(&log, &context).await;
            drop(log);
            let verified =
                annals::engine::verify_dir_with(Arc::new(image.clone()), workload::dir())
                    .unwrap_or_else(|e| panic!("{context}: verify_dir: {e}"));
            assert!(verified.is_clean(), "{context}: {:?}", verified.problems);
            images += 1;
        }
        k += 1;
    }
    println!(
        "compaction power loss: {} I/O steps, {images} crash images checked; rewrites rolled \
         forward: {rolled_forward}, discarded: {discarded}",
        k - 1
    );
    assert!(k > 10, "a compaction takes several I/O steps");
    // Both sides of the commit point were crashed on with a rewrite in the directory.
    assert!(rolled_forward > 0 && discarded > 0);
}

/// The compactions' rewrites (`*.seg.compact`) on a disk, with their bytes.
fn rewrites_in(fs: &SimFs) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    fs.paths()
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".seg.compact"))
        .filter_map(|p| fs.read_file(&p).map(|b| (p, b.to_vec())))
        .collect()
}

#[tokio::test]
async fn an_io_error_at_any_step_of_a_compaction_loses_nothing() {
    let (base, before) = prepared().await;
    let mut k = 1;
    let mut failed = 0;
    loop {
        let fs = base.crash_image(Damage::KeepUnsynced);
        let log = open(&fs).expect("open the prepared store");
        let start = fs.ops();
        fs.inject(Fault::FailOnce(start + k));
        let result = log.compact_where(keep).await;
        let reached = fs.ops() >= start + k;
        let context = format!("I/O error at compaction step {k}: {result:?}");
        failed += u64::from(result.is_err());
        // The store goes on serving reads: the failed step changed nothing visible, or it
        // was poisoned (and only appends are refused until it is reopened).
        check_reads(&log, &before, &context).await;
        drop(log);
        let log = open(&fs).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
        check(&log, &before, &context).await;
        log.compact_where(keep)
            .await
            .unwrap_or_else(|e| panic!("{context}: compacting again: {e}"));
        check(&log, &before, &context).await;
        append_more(&log, &context).await;
        if !reached {
            break;
        }
        k += 1;
    }
    println!("compaction I/O errors: {k} steps, {failed} compactions failed");
    assert!(failed > 0);
}

/// The reads of [`check`], without the integrity check (an open store that a failed step
/// poisoned still reads, but its check may disagree with the swapped files until reopened).
async fn check_reads(log: &LogAdapter, before: &BTreeMap<u64, LoggedEvent>, context: &str) {
    let after = all_events(log).await;
    for (position, e) in &after {
        assert_eq!(
            before.get(position),
            Some(e),
            "{context}: position {position}"
        );
    }
    for (position, e) in before {
        if kept(e) {
            assert!(
                after.contains_key(position),
                "{context}: kept event at {position} lost"
            );
        }
    }
}
