//! Target `index_decoder`: a store opens on any index file, rebuilding a bad one from the log.

use crate::engine::FileSystem;
use crate::engine::sim::SimFs;
use crate::storage::{
    AggregateIdEntry, EncodedEvent, GetEventsOptions, LogAdapter, StorageAdapter, StorageError,
};

use super::input::Input;
use super::store::{
    AGGREGATES, STORES, fuzz_event, index_path, list_all, next_version, open_store,
    open_store_rebuilding_index, runtime, segment_path,
};
use super::template::{TEMPLATE_COMMITS, Template, template};

/// Index mode of [`index_decoder()`]: the rest of the input is the whole index file.
pub const INDEX_RAW: u8 = 0;

/// Index mode of [`index_decoder()`]: the template's valid index, with the rest of the input read
/// as patches of 3 bytes (little-endian u16 offset, byte to XOR there).
pub const INDEX_PATCH: u8 = 1;

/// Index mode of [`index_decoder()`]: the template's valid index cut to a length read from the
/// next 3 bytes, then patched like [`INDEX_PATCH`].
pub const INDEX_TRUNCATE: u8 = 2;

/// The first byte picks how the index file is made ([`INDEX_RAW`], [`INDEX_PATCH`],
/// [`INDEX_TRUNCATE`]); it is written as `index.redb` next to a small valid log.
///
/// Opening must succeed (rebuilding an index it cannot use from the log), or fail with
/// `Corruption` where the index reads as usable but vouches for more log than there is. Every
/// read and listing must then answer exactly the log's events and aggregates, or, where the
/// damage passes redb's own checks and is found only by a read, a typed `Corruption` (of the
/// index, or of the segment where a damaged location points the read): never a shorter or
/// different history. After such an error, rebuilding the index (as `annals rebuild-index`
/// does) must give back exactly the log's contents, and the store must take appends.
pub fn index_decoder(data: &[u8]) {
    let template = template();
    let mut input = Input::new(data);
    let mode = input.byte() % 3;
    let mut index = match mode {
        INDEX_RAW => input.take(usize::MAX).to_vec(),
        _ => template.index.clone(),
    };
    if mode == INDEX_TRUNCATE {
        let len = input.u64(3) as usize;
        index.truncate(len);
    }
    if mode != INDEX_RAW {
        while !input.is_empty() {
            let at = input.u64(2) as usize;
            let xor = input.byte();
            if let Some(b) = index.get_mut(at) {
                *b ^= xor;
            }
        }
    }
    let fs = SimFs::new();
    fs.write_file(&segment_path(1), template.segment.clone());
    fs.write_file(&index_path(), index);
    let rt = runtime();
    // An index that still reads as usable may vouch for segments the log does not hold: the
    // open must then refuse with `Corruption`, not trust either side.
    let checked = match open_store(&fs, 4) {
        Ok(log) => rt.block_on(matches_the_log(&log, template)).map(|()| log),
        // Damaged header bytes can also read as redb's older file format: refused the same way.
        Err(e @ (StorageError::Corruption(_) | StorageError::FormatUpgradeRequired { .. })) => {
            Err(e)
        }
        Err(e) => panic!("a valid log with a damaged index must open or be Corruption: {e:?}"),
    };
    let log = match checked {
        Ok(log) => log,
        Err(found) => recover(&fs, &rt, template, found),
    };
    rt.block_on(async {
        let version = next_version(&log, STORES[0], "new").await;
        log.push_event(fuzz_event(STORES[0], "new", version, 99, 10))
            .await
            .unwrap_or_else(|e| panic!("an append after a rebuilt index failed: {e:?}"));
    });
}

/// What an operator does about damage that was `found`: rebuild the index from the log (as
/// `annals rebuild-index` does). Where the damaged index vouches for more log than there is, the
/// rebuild refuses too, changing nothing, and the operator who knows the log is whole deletes
/// the index; the store then opens on a fresh one. Either way it must hold exactly the log.
fn recover(
    fs: &SimFs,
    rt: &tokio::runtime::Runtime,
    template: &Template,
    found: StorageError,
) -> LogAdapter {
    let files = fs.paths();
    let before: Vec<_> = files.iter().map(|p| fs.read_file(p)).collect();
    let log = match open_store_rebuilding_index(fs, 4) {
        Ok(log) => log,
        Err(StorageError::Corruption(_) | StorageError::FormatUpgradeRequired { .. }) => {
            let after: Vec<_> = files.iter().map(|p| fs.read_file(p)).collect();
            assert_eq!(
                fs.paths(),
                files,
                "a refused rebuild changed the store's files"
            );
            assert!(
                before == after,
                "a refused rebuild changed bytes of the store"
            );
            FileSystem::remove(fs, &index_path())
                .unwrap_or_else(|e| panic!("removing the index failed: {e}"));
            open_store(fs, 4).unwrap_or_else(|e| {
                panic!("after {found:?}, the log did not open without its index: {e:?}")
            })
        }
        Err(e) => panic!("rebuilding the index after {found:?} failed: {e:?}"),
    };
    if let Err(e) = rt.block_on(matches_the_log(&log, template)) {
        panic!("a rebuilt index still differs from the log: {e:?}");
    }
    log
}

/// Checks that every aggregate reads back exactly the log's events and every store lists
/// exactly the log's aggregates. A `Corruption` is returned (the damage was found); any other
/// error or any answer that differs from the log panics.
async fn matches_the_log(log: &LogAdapter, template: &Template) -> Result<(), StorageError> {
    for store in STORES {
        for aggregate in AGGREGATES {
            let expected: Vec<&EncodedEvent> = template
                .events
                .iter()
                .filter(|e| e.event_store_id == store && e.event.aggregate_id == aggregate)
                .map(|e| &e.event)
                .collect();
            let got = log
                .get_events(store, aggregate, &GetEventsOptions::default())
                .await
                .map_err(damage_found(&format!("reading {store}/{aggregate}")))?;
            let got: Vec<&EncodedEvent> = got.iter().map(|e| &e.event).collect();
            assert_eq!(got, expected, "{store}/{aggregate} differs from the log");
        }
        let listed = list_all(log, store)
            .await
            .map_err(damage_found(&format!("listing {store}")))?;
        let mut expected: Vec<AggregateIdEntry> = template
            .events
            .iter()
            .filter(|e| e.event_store_id == store && e.event.version == 1)
            .map(|e| AggregateIdEntry {
                initial_event_timestamp: e.event.timestamp,
                aggregate_id: e.event.aggregate_id.clone(),
            })
            .collect();
        expected.sort();
        assert_eq!(
            listed, expected,
            "aggregates of {store} differ from the log"
        );
    }
    assert_eq!(log.last_position(), TEMPLATE_COMMITS, "last position");
    Ok(())
}

/// Passes on a `Corruption` of the index file or of the segment (a damaged index can point a
/// read at bytes of the log that are not the entry it names, which the read can only report
/// as a mismatch at that place of the segment); panics on any other error of `what`.
fn damage_found(what: &str) -> impl FnOnce(StorageError) -> StorageError + '_ {
    move |e| match &e {
        StorageError::Corruption(c) if c.file == index_path() || c.file == segment_path(1) => e,
        _ => panic!("{what}: {e:?}"),
    }
}
