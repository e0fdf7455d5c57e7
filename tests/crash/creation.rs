//! A crash at any step of a store's very first open, and of the creation of its snapshot file,
//! leaves a store that opens: files are either absent or complete, never half-made.

use annals::engine::FileSystem;
use annals::engine::raw::RedbBackend;
use annals::engine::sim::{Damage, Fault, SimFs};
use annals::storage::{SnapshotRecord, StorageAdapter, StorageError};

use crate::workload::{dir, open};

const STORE: &str = "POKEMONS";

/// The first open of a store, then its first snapshot (which creates `snapshots.redb`).
fn first_open(fs: &SimFs) -> Result<(), StorageError> {
    let log = open(fs)?;
    let record = SnapshotRecord::new(1, 1, 1, 0, b"state".to_vec());
    let snapshots = log.snapshots().expect("the log adapter keeps snapshots");
    snapshots.put(STORE, "pikachu", &record)?;
    Ok(())
}

/// The snapshot file, if the image has one, is a complete database: it opens and has the
/// tables its creation made.
///
/// Only images that keep no unsynced write (`DropUnsynced`) are judged so. The file reaches
/// its name only after it was synced whole, so in any image an unfinished creation is under
/// the temporary name; but once in place, the file takes the first snapshot's commit, and an
/// image keeping a random subset of that unacknowledged commit's writes (its header, say,
/// without the size change) can leave a file redb refuses, or even panics on. That is damage
/// after the creation, not by it: the adapter replaces such a file, as a snapshot file is
/// derived data, which the caller checks by reopening the store and using it.
fn check_snapshot_file(image: &SimFs, damage: Damage, context: &str) {
    let path = dir().join("snapshots.redb");
    if !image.exists(&path).expect("exists") {
        return;
    }
    let file = image.open(&path, false).expect("open the snapshot file");
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        redb::Database::builder().create_with_backend(RedbBackend(file))
    }));
    let db = match (opened, damage) {
        (Ok(Ok(db)), _) => db,
        (_, Damage::RandomSubset { .. }) => return,
        (Ok(Err(e)), _) => panic!("{context}: the snapshot file is damaged: {e}"),
        (Err(_), _) => panic!("{context}: the snapshot file is damaged: redb panicked"),
    };
    let txn = redb::ReadableDatabase::begin_read(&db).expect("read");
    let tables: Vec<String> = txn
        .list_tables()
        .expect("list tables")
        .map(|t| redb::TableHandle::name(&t).to_owned())
        .collect();
    assert!(
        tables.iter().any(|t| t == "snapshots") && tables.iter().any(|t| t == "meta"),
        "{context}: the snapshot file is incomplete: tables {tables:?}"
    );
}

#[tokio::test]
async fn a_crash_at_every_step_of_a_first_open_leaves_a_store_that_opens() {
    let total = {
        let fs = SimFs::new();
        first_open(&fs).expect("the first open succeeds without faults");
        fs.ops()
    };
    let mut images = 0;
    for k in 1..=total + 1 {
        let fs = SimFs::new();
        fs.inject(Fault::FailFrom(k));
        // Failing from op k on is the crash: whatever the open did up to it is on the disk.
        let _ = first_open(&fs);
        // A creation syncs its file before the rename that makes it visible, so damage to
        // unsynced writes can only reach files not yet in place: two kinds suffice.
        for damage in [Damage::DropUnsynced, Damage::RandomSubset { seed: k }] {
            let context = format!("crash after op {k}/{total} of a first open, {damage:?}");
            let image = fs.crash_image(damage);
            check_snapshot_file(&image, damage, &context);
            let log = open(&image).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
            let snapshots = log.snapshots().expect("snapshots");
            // Nothing was acknowledged: whatever is found, reading and writing work.
            snapshots
                .latest(STORE, "pikachu", u64::MAX)
                .unwrap_or_else(|e| panic!("{context}: reading a snapshot failed: {e}"));
            let record = SnapshotRecord::new(2, 1, 2, 0, b"later".to_vec());
            snapshots
                .put(STORE, "pikachu", &record)
                .unwrap_or_else(|e| panic!("{context}: writing a snapshot failed: {e}"));
            let found = snapshots.latest(STORE, "pikachu", u64::MAX).expect("read");
            assert_eq!(
                found,
                Some(record),
                "{context}: the snapshot written reads back"
            );
            log.close();
            drop(log);
            // The leftover of the creation, if any, is gone once the file exists.
            let leftover = dir().join("snapshots.redb.creating");
            assert!(
                !image.exists(&leftover).expect("exists"),
                "{context}: the temporary file is left behind"
            );
            images += 1;
        }
    }
    println!("first open: {total} I/O steps, {images} crash images checked");
    assert!(images as u64 > total, "every crash point produced images");
}

/// A snapshot file created before a crash keeps what was written to it: creation is atomic,
/// but a file that exists is never replaced by a new empty one on reopen.
#[tokio::test]
async fn an_existing_snapshot_file_is_kept_across_reopens() {
    let fs = SimFs::new();
    first_open(&fs).expect("first open");
    let image = fs.crash_image(Damage::DropUnsynced);
    let log = open(&image).expect("reopen");
    let found = log
        .snapshots()
        .expect("snapshots")
        .latest(STORE, "pikachu", u64::MAX)
        .expect("read");
    assert_eq!(found.map(|r| r.state), Some(b"state".to_vec()));
}
