//! A disk that fills up while the index is checkpointed: the log's preallocated segments still
//! have room, the index cannot grow. Appends that would grow the unindexed tail past its bound
//! fail at once with `StorageFull`, before anything of them is written; every acknowledged
//! event stays readable, memory stays bounded, closing does not hang, and once space is freed
//! appends are accepted again without a reopen. Proven on the simulated disk
//! (`Fault::NoSpaceIn("index.redb")`) and, when one is provided, on a real small file system
//! (`.ci/full-disk` mounts a 256 MiB tmpfs and runs the ignored test below on it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::engine::sim::{Fault, SimFs};
use annals::storage::{
    AppendEvent, EncodedEvent, GetEventsOptions, Limits, LogAdapter, StorageAdapter, StorageError,
};
use annals::{Durability, Timestamp};

const STORE: &str = "TINY";
const AGGREGATES: usize = 97;

/// Small events over a few aggregates, and what became of them.
struct Appender {
    /// Size of each payload.
    payload_bytes: usize,
    /// The acknowledged events, in order, with their positions.
    acked: Vec<(u64, AppendEvent)>,
    /// Latest acknowledged version of each aggregate.
    versions: Vec<u64>,
}

impl Appender {
    fn new(payload_bytes: usize) -> Self {
        Appender {
            payload_bytes,
            acked: Vec::new(),
            versions: vec![0; AGGREGATES],
        }
    }

    /// The next event.
    fn next(&self) -> AppendEvent {
        self.event(0)
    }

    /// The event `ahead` events after the next one: the `n`-th of the run goes to aggregate
    /// `n % AGGREGATES`.
    fn event(&self, ahead: usize) -> AppendEvent {
        let n = self.acked.len() + ahead;
        let aggregate = n % AGGREGATES;
        AppendEvent {
            event_store_id: STORE.to_owned(),
            event: EncodedEvent {
                aggregate_id: format!("a{aggregate}"),
                version: self.versions[aggregate] + 1 + (ahead / AGGREGATES) as u64,
                timestamp: Timestamp::from_unix_millis(1_700_000_000_000 + n as i64),
                event_type: "TICKED".to_owned(),
                schema_version: 1,
                payload: {
                    let mut payload = format!("event {n};").into_bytes();
                    payload.resize(self.payload_bytes.max(payload.len()), b'.');
                    payload
                },
                metadata: vec![0x80],
            },
        }
    }

    /// Appends the next event; records it if acknowledged.
    async fn push(&mut self, log: &LogAdapter) -> Result<u64, StorageError> {
        let event = self.next();
        let position = log.push_event(event.clone()).await?;
        self.acknowledged(position, event);
        Ok(position)
    }

    /// Appends the next `n` events (at most `AGGREGATES`) as one group.
    async fn push_group(&mut self, log: &LogAdapter, n: usize) -> Result<u64, StorageError> {
        let group: Vec<AppendEvent> = (0..n).map(|i| self.event(i)).collect();
        let positions = log.push_event_group(group.clone()).await?;
        for (position, event) in positions.into_iter().zip(group) {
            self.acknowledged(position, event);
        }
        Ok(self.acked[self.acked.len() - n].0)
    }

    fn acknowledged(&mut self, position: u64, event: AppendEvent) {
        self.versions[self.acked.len() % AGGREGATES] = event.event.version;
        self.acked.push((position, event));
    }

    /// Every acknowledged event is stored at its position, nothing else is, and positions
    /// are gap-free.
    async fn check(&self, log: &LogAdapter, context: &str) {
        assert_eq!(
            log.last_position(),
            self.acked.len() as u64,
            "{context}: last position"
        );
        let mut stored = 0;
        for aggregate in 0..AGGREGATES {
            let id = format!("a{aggregate}");
            let events = log
                .get_events(STORE, &id, &GetEventsOptions::default())
                .await
                .unwrap_or_else(|e| panic!("{context}: reading {id}: {e}"));
            let expected: Vec<_> = self
                .acked
                .iter()
                .filter(|(_, e)| e.event.aggregate_id == id)
                .collect();
            assert_eq!(events.len(), expected.len(), "{context}: events of {id}");
            for (found, (position, appended)) in events.iter().zip(expected) {
                assert_eq!(found.position, *position, "{context}: position in {id}");
                assert_eq!(found.event, appended.event, "{context}: event of {id}");
            }
            stored += events.len();
        }
        assert_eq!(stored, self.acked.len(), "{context}: stored events");
    }
}

/// Appends groups of `group` events until the first refusal, which must be `StorageFull`;
/// checks on the way that the unindexed tail never passes `unindexed_max`. Panics if nothing
/// is refused within `max` appends. Prints how long appends took, to compare with a stalling
/// store.
async fn fill_until_refused(
    log: &LogAdapter,
    appender: &mut Appender,
    group: usize,
    unindexed_max: usize,
    max: usize,
) -> StorageError {
    let mut slowest = Duration::ZERO;
    let mut slow = 0u64;
    let start = Instant::now();
    for i in 0..max {
        let began = Instant::now();
        let result = if group == 1 {
            appender.push(log).await
        } else {
            appender.push_group(log, group).await
        };
        let took = began.elapsed();
        slowest = slowest.max(took);
        let unindexed = log.stats().unindexed_events;
        if took >= Duration::from_millis(500) {
            // A stalling store shows here (figures only: no test asserts on time).
            slow += 1;
            if slow <= 5 || slow.is_multiple_of(10) {
                eprintln!(
                    "append {i} took {took:?} (slow appends so far: {slow}); {unindexed} events \
                     unindexed; memory {:?} KiB",
                    resident_kib()
                );
            }
        }
        assert!(
            unindexed <= unindexed_max,
            "{unindexed} events unindexed after append {i}: more than the bound {unindexed_max}"
        );
        if let Err(e) = result {
            eprintln!(
                "groups of {group}: refused after {} acknowledged events ({i} appends in this \
                 fill, {:?}); slowest append {slowest:?}; the refusal took {:?}",
                appender.acked.len(),
                start.elapsed(),
                began.elapsed()
            );
            assert!(
                matches!(e, StorageError::StorageFull { .. }),
                "a full disk is StorageFull, not {e:?}"
            );
            return e;
        }
    }
    panic!("{max} appends were accepted while the index could not grow");
}

/// While the disk stays full every further append is refused with `StorageFull` at once,
/// writes nothing, and the store stays readable.
async fn refused_while_full(log: &LogAdapter, appender: &Appender, unindexed_max: usize) {
    let position = log.last_position();
    for _ in 0..20 {
        let err = log.push_event(appender.next()).await.unwrap_err();
        assert!(matches!(err, StorageError::StorageFull { .. }), "{err:?}");
        let group = vec![appender.next()];
        let err = log.push_event_group(group).await.unwrap_err();
        assert!(matches!(err, StorageError::StorageFull { .. }), "{err:?}");
    }
    assert_eq!(
        log.last_position(),
        position,
        "a refused append took a position"
    );
    assert!(log.stats().unindexed_events <= unindexed_max);
    appender.check(log, "while the disk is full").await;
}

/// Appends the next event until it is accepted: the checkpointer retries on its own and the
/// store accepts appends again once a checkpoint succeeds. Gives up after a minute.
async fn push_until_accepted(log: &LogAdapter, appender: &mut Appender) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match appender.push(log).await {
            Ok(_) => return,
            Err(StorageError::StorageFull { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("appends did not resume once space was freed: {e:?}"),
        }
    }
}

fn open_sim(fs: &SimFs, checkpoint_events: usize) -> Result<LogAdapter, StorageError> {
    LogAdapter::builder("/store")
        .file_system(Arc::new(fs.clone()))
        .durability(Durability::Immediate)
        .segment_bytes(64 << 10)
        .checkpoint_events(checkpoint_events)
        .limits(Limits {
            event_bytes_max: 1 << 10,
            group_events_max: 16,
            group_bytes_max: 16 << 10,
            ..Limits::default()
        })
        .open()
}

/// While a checkpoint is pending, the active memtable holds at most twice `checkpoint_events`
/// events, and so does the pending one.
fn unindexed_max(checkpoint_events: usize) -> usize {
    4 * checkpoint_events
}

#[tokio::test]
async fn appends_past_the_unindexed_bound_fail_with_storage_full_and_resume_once_space_is_freed() {
    const CHECKPOINT_EVENTS: usize = 64;
    let bound = unindexed_max(CHECKPOINT_EVENTS);
    let fs = SimFs::new();
    let log = open_sim(&fs, CHECKPOINT_EVENTS).expect("open");
    // Events of about 500 bytes: the log rolls into new segments while the index is full.
    let mut appender = Appender::new(400);
    for _ in 0..3 * CHECKPOINT_EVENTS {
        appender.push(&log).await.expect("append with room");
    }
    // The index cannot grow any more; the log's preallocated segments (and new ones) can.
    fs.inject(Fault::NoSpaceIn("index.redb"));
    // Groups first, for speed (redb reuses free pages inside its file for a while), then
    // single events up to the bound's last event.
    fill_until_refused(&log, &mut appender, 16, bound, 100_000).await;
    fill_until_refused(&log, &mut appender, 1, bound, 100_000).await;
    assert!(
        log.stats().segments > 1,
        "the log kept growing into new segments while the index could not"
    );
    refused_while_full(&log, &appender, bound).await;

    // Space is freed: no reopen needed.
    fs.clear_faults();
    push_until_accepted(&log, &mut appender).await;
    // Far more than the bound: checkpoints succeed again.
    for _ in 0..3 * bound {
        appender
            .push(&log)
            .await
            .expect("append after space was freed");
        assert!(log.stats().unindexed_events <= bound);
    }
    appender.check(&log, "after space was freed").await;
    drop(log);
    let log = open_sim(&fs, CHECKPOINT_EVENTS).expect("reopen");
    appender.check(&log, "reopened").await;
    appender.push(&log).await.expect("append after reopening");
}

#[tokio::test]
async fn a_store_closed_while_its_index_cannot_grow_reopens_with_every_acknowledged_event() {
    const CHECKPOINT_EVENTS: usize = 64;
    let bound = unindexed_max(CHECKPOINT_EVENTS);
    let fs = SimFs::new();
    let log = open_sim(&fs, CHECKPOINT_EVENTS).expect("open");
    let mut appender = Appender::new(400);
    fs.inject(Fault::NoSpaceIn("index.redb"));
    fill_until_refused(&log, &mut appender, 1, bound, 100_000).await;
    // Closing gives up on the checkpoint (the log is durable) instead of waiting for space.
    log.close();
    drop(log);
    // Reopened while the disk is still full: the unindexed tail is replayed from the log.
    let log = open_sim(&fs, CHECKPOINT_EVENTS).expect("reopen on a full disk");
    appender.check(&log, "reopened on a full disk").await;
    // The replayed tail is at most the bound: a new commit fits, or is refused as full.
    let result = appender.push(&log).await;
    assert!(
        matches!(result, Ok(_) | Err(StorageError::StorageFull { .. })),
        "{result:?}"
    );
    drop(log);
    fs.clear_faults();
    let log = open_sim(&fs, CHECKPOINT_EVENTS).expect("reopen with space");
    appender.check(&log, "reopened with space").await;
    for _ in 0..2 * bound {
        appender.push(&log).await.expect("append with space");
    }
    appender.check(&log, "after appending again").await;
}

/// Where `.ci/full-disk` mounted a small file system for
/// `a_full_real_file_system_fails_appends_with_storage_full_and_resumes_once_space_is_freed`.
const SMALL_FS_VAR: &str = "ANNALS_SMALL_FS_DIR";

/// Writes zeros to `path` until the file system is full, then gives back `free` bytes.
fn fill_file_system(path: &Path, free: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => return Err(e),
        }
    }
    file.set_len(written.saturating_sub(free))?;
    file.sync_all()
}

/// The memory this process holds, from `/proc/self/status` (for the printed figures).
fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
#[ignore = "needs a small real file system: run .ci/full-disk (as root, it mounts a tmpfs)"]
async fn a_full_real_file_system_fails_appends_with_storage_full_and_resumes_once_space_is_freed() {
    const CHECKPOINT_EVENTS: usize = 10_000;
    let root = std::env::var_os(SMALL_FS_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{SMALL_FS_VAR} must name an empty directory on a small file system (.ci/full-disk)"
            )
        });
    let dir = root.join("store");
    let filler = root.join("filler");
    let open = || {
        LogAdapter::builder(&dir)
            .durability(Durability::Immediate)
            .checkpoint_events(CHECKPOINT_EVENTS)
            .open()
    };
    let bound = unindexed_max(CHECKPOINT_EVENTS);
    let log = open().expect("open");
    // Tiny events: the index grows about as fast as the log.
    let mut appender = Appender::new(0);
    // Leave 2 MiB free besides the store's first segments.
    fill_file_system(&filler, 2 << 20).expect("fill the file system");
    eprintln!("memory before: {:?} KiB", resident_kib());
    fill_until_refused(&log, &mut appender, 1, bound, 2_000_000).await;
    eprintln!("memory at the refusal: {:?} KiB", resident_kib());
    refused_while_full(&log, &appender, bound).await;
    std::fs::remove_file(&filler).expect("free space");
    let freed = Instant::now();
    push_until_accepted(&log, &mut appender).await;
    eprintln!("accepted again {:?} after space was freed", freed.elapsed());
    for _ in 0..2 * bound {
        appender
            .push(&log)
            .await
            .expect("append after space was freed");
    }
    appender.check(&log, "after space was freed").await;
    log.close();
    drop(log);
    let log = open().expect("reopen");
    appender.check(&log, "reopened").await;
}
