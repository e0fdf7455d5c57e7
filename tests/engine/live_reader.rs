//! Live readers ([`LogReader`]) beside a writer in this process, and on stores whose bytes the
//! tests set by hand: what a reader shows while a frame is being written or a segment made,
//! the damage it reports, and that it changes no byte of the store. The reader in another
//! process than a writer under load, killed or not, is in `tests/durability/live_reader.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use annals::engine::raw::{SEGMENT_HEADER_BYTES, decode_frame_header};
use annals::storage::{
    GetEventsOptions, ListAggregateIdsOptions, LogAdapter, LogReader, StorageAdapter, StorageError,
};

use crate::basics::{event, small};

const STORES: [&str; 2] = ["S", "T"];

/// Appends `commits` commits to `log`, the `from`-th first (from 1): `S/a` and `T/b` in each,
/// and `S/g` too in every third one, so single-store and cross-store groups alternate.
async fn fill(log: &LogAdapter, commits: u64, from: u64) {
    for n in from - 1..from - 1 + commits {
        let mut group = vec![
            event("S", "a", n + 1, n as i64),
            event("T", "b", n + 1, n as i64),
        ];
        if n % 3 == 0 {
            group.push(event("S", "g", n / 3 + 1, n as i64));
        }
        log.push_event_group(group).await.unwrap();
    }
}

/// Every event a store shows, by position, with listings and summaries.
async fn contents(adapter: &dyn StorageAdapter) -> (Vec<String>, BTreeMap<u64, String>) {
    let mut listed = Vec::new();
    let mut by_position = BTreeMap::new();
    for summary in adapter.event_store_summaries().await.unwrap() {
        listed.push(format!(
            "{} {} {}",
            summary.event_store_id, summary.aggregates, summary.events
        ));
    }
    for store in STORES {
        let mut options = ListAggregateIdsOptions {
            limit: Some(2),
            ..Default::default()
        };
        loop {
            let page = adapter.list_aggregate_ids(store, &options).await.unwrap();
            for entry in &page.aggregate_ids {
                listed.push(format!("{store}/{}", entry.aggregate_id));
                let events = adapter
                    .get_events(store, &entry.aggregate_id, &GetEventsOptions::default())
                    .await
                    .unwrap();
                for (i, e) in events.iter().enumerate() {
                    assert_eq!(e.event.version, i as u64 + 1);
                    by_position.insert(e.position, format!("{store} {:?}", e.event));
                }
            }
            match page.next_page_token {
                Some(token) => options.page_token = Some(token),
                None => break,
            }
        }
    }
    let in_order = adapter.read_log(1, usize::MAX).await.unwrap();
    assert_eq!(in_order.len(), by_position.len());
    for e in in_order {
        assert_eq!(
            by_position.get(&e.position),
            Some(&format!("{} {:?}", e.event_store_id, e.event))
        );
    }
    (listed, by_position)
}

fn segment(dir: &Path, id: u64) -> PathBuf {
    dir.join("log").join(format!("{id:010}.seg"))
}

/// The (offset, length) of every frame of a segment file's data.
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut at = SEGMENT_HEADER_BYTES as usize;
    let mut out = Vec::new();
    while at + 40 <= bytes.len() {
        let Ok(header) = decode_frame_header(&bytes[at..at + 40]) else {
            break;
        };
        let len = header.frame_len() as usize;
        out.push((at, len));
        at += len;
    }
    out
}

/// A reader refreshed by hand only.
fn manual(dir: &Path) -> Result<LogReader, StorageError> {
    LogReader::builder(dir).manual_refresh().open()
}

#[tokio::test]
async fn a_reader_shows_what_the_writer_holds_and_follows_its_appends_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = small(dir.path());
    fill(&log, 100, 1).await;
    let reader = LogReader::builder(dir.path())
        .poll_interval(Duration::from_millis(1))
        .open()
        .unwrap();
    assert_eq!(reader.last_position(), log.last_position());
    let mut watch = reader.watch_log();
    fill(&log, 1500, 101).await;
    let last = log.last_position();
    let started = Instant::now();
    while *watch.borrow_and_update() < last {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the reader lags"
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), watch.changed()).await;
    }
    assert!(log.stats().segments > 2, "rolled over: {:?}", log.stats());
    assert_eq!(reader.stats().segments, log.stats().segments);
    assert_eq!(contents(&reader).await, contents(&log).await);
    let refused = reader.push_event(event("S", "a", 1601, 0)).await;
    assert!(
        matches!(refused, Err(StorageError::ReadOnly { ref path }) if path == dir.path()),
        "{refused:?}"
    );
    assert_eq!(log.last_position(), last, "nothing was appended");
}

#[tokio::test]
async fn a_frame_being_written_stays_invisible_until_it_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = small(dir.path());
        fill(&log, 20, 1).await;
    }
    let path = segment(dir.path(), 1);
    let whole = std::fs::read(&path).unwrap();
    let (at, len) = *frames(&whole).last().unwrap();
    let last_frame = whole[at..at + len].to_vec();
    let entries = u64::from(decode_frame_header(&last_frame[..40]).unwrap().entry_count);
    let mut bytes = whole.clone();
    bytes[at..at + len].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let reader = manual(dir.path()).unwrap();
    let before = reader.last_position();
    // The write in progress, as a reader can catch it: its start, its end, both but not the
    // middle.
    let half = len / 2;
    let partial: [(usize, usize); 4] = [(0, 40), (0, half), (half, len), (0, len - 8)];
    for (from, to) in partial {
        let mut torn = bytes.clone();
        torn[at + from..at + to].copy_from_slice(&last_frame[from..to]);
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(
            reader.refresh().unwrap(),
            before,
            "bytes {from}..{to} of the frame"
        );
        assert_eq!(reader.read_log(before + 1, 10).await.unwrap(), Vec::new());
    }
    std::fs::write(&path, &whole).unwrap();
    assert_eq!(reader.refresh().unwrap(), before + entries);
    let log = small(dir.path());
    assert_eq!(contents(&reader).await, contents(&log).await);
}

#[tokio::test]
async fn a_segment_not_yet_usable_is_waited_for_and_a_prepared_one_ignored() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = small(dir.path());
        fill(&log, 20, 1).await;
    }
    // A segment created in place by older versions, still all zeros; and one prepared ahead.
    std::fs::write(segment(dir.path(), 2), vec![0; 64 << 10]).unwrap();
    let prepared = dir.path().join("log").join("0000000003.seg.creating");
    std::fs::write(prepared, vec![0; 64 << 10]).unwrap();
    let reader = manual(dir.path()).unwrap();
    let last = reader.last_position();
    assert!(last > 20);
    assert_eq!(reader.refresh().unwrap(), last);
    assert_eq!(
        reader.read_log(1, usize::MAX).await.unwrap().len() as u64,
        last
    );
}

#[tokio::test]
async fn damage_in_a_sealed_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = small(dir.path());
        fill(&log, 1500, 1).await;
        assert!(log.stats().segments > 1);
    }
    // The last frame of the first segment: no later frame of it vouches for the frame, but
    // the next segment's existence says it was written whole.
    let path = segment(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let (at, len) = *frames(&bytes).last().unwrap();
    bytes[at + len / 2] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    match manual(dir.path()) {
        Err(StorageError::Corruption(c)) => assert_eq!(c.file, path),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[tokio::test]
async fn damage_a_later_frame_vouches_for_is_corruption_even_in_the_last_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = small(dir.path());
        fill(&log, 20, 1).await;
    }
    let path = segment(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let (at, len) = frames(&bytes)[5];
    bytes[at + len / 2] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    match manual(dir.path()) {
        Err(StorageError::Corruption(c)) => {
            assert_eq!((c.file, c.offset), (path, at as u64));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[tokio::test]
async fn a_damaged_frame_header_stops_a_reader_until_it_finds_a_later_frame_vouching_for_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = small(dir.path());
        fill(&log, 20, 1).await;
    }
    let path = segment(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let (at, _) = frames(&bytes)[5];
    // The header no longer gives the frame's length, so the next frame cannot be found from
    // it: until the reader looks through the rest of the segment, this is a write in progress.
    bytes[at + 20] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let reader = manual(dir.path()).unwrap();
    let before = reader.last_position();
    assert_eq!(reader.refresh().unwrap(), before);
    std::thread::sleep(Duration::from_millis(1100));
    match reader.refresh() {
        Err(StorageError::Corruption(c)) => assert_eq!((c.file, c.offset), (path, at as u64)),
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(
        reader.last_position(),
        before,
        "what was visible stays as it was"
    );
}

#[tokio::test]
async fn a_following_reader_that_meets_damage_stops_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = small(dir.path());
        fill(&log, 1500, 1).await;
        assert!(log.stats().segments > 1);
    }
    // The reader first finds the first segment's last frame not yet written and no later
    // segment, as while the writer is about to write them.
    let first = segment(dir.path(), 1);
    let later: Vec<u64> = (2..)
        .take_while(|&id| segment(dir.path(), id).exists())
        .collect();
    let hide = |id: u64| {
        (
            segment(dir.path(), id),
            dir.path().join(format!("hidden-{id}")),
        )
    };
    let whole = std::fs::read(&first).unwrap();
    let (at, len) = *frames(&whole).last().unwrap();
    let mut bytes = whole.clone();
    bytes[at..at + len].fill(0);
    std::fs::write(&first, &bytes).unwrap();
    for &id in &later {
        let (shown, hidden) = hide(id);
        std::fs::rename(shown, hidden).unwrap();
    }
    let reader = LogReader::builder(dir.path())
        .poll_interval(Duration::from_millis(1))
        .open()
        .unwrap();
    let last = reader.last_position();
    let mut watch = reader.watch_log();
    // Then the frame turns out damaged once the next segment exists.
    bytes[at..at + len].copy_from_slice(&whole[at..at + len]);
    bytes[at + len / 2] ^= 0x10;
    std::fs::write(&first, &bytes).unwrap();
    for &id in &later {
        let (shown, hidden) = hide(id);
        std::fs::rename(hidden, shown).unwrap();
    }
    let closed = tokio::time::timeout(Duration::from_secs(30), watch.wait_for(|p| *p > last));
    assert!(
        matches!(closed.await, Ok(Err(_))),
        "followers find the log closed"
    );
    assert_eq!(
        reader.last_position(),
        last,
        "what was visible stays as it was"
    );
    assert_eq!(reader.read_log(1, 10).await.unwrap().len(), 10);
    let is_damage = |r: &Result<_, StorageError>| {
        matches!(r, Err(StorageError::Corruption(c))
            if c.file == first && c.offset == at as u64)
    };
    assert!(is_damage(&reader.read_log(last + 1, 10).await.map(drop)));
    assert!(is_damage(&reader.refresh().map(drop)));
}

#[tokio::test]
async fn a_reader_changes_no_byte_of_the_store_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = small(dir.path());
        fill(&log, 1500, 1).await;
    }
    // A torn write at the end of the last segment, which the writer's next open would clear.
    let last_id = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_suffix(".seg")?
                .parse()
                .ok()
        })
        .max()
        .unwrap();
    let path = segment(dir.path(), last_id);
    let mut bytes = std::fs::read(&path).unwrap();
    let (at, len) = *frames(&bytes).last().unwrap();
    let copy = bytes[at..at + len / 2].to_vec();
    bytes[at + len..at + len + copy.len()].copy_from_slice(&copy);
    std::fs::write(&path, &bytes).unwrap();
    let before = files(dir.path());
    let reader = manual(dir.path()).unwrap();
    contents(&reader).await;
    reader.refresh().unwrap();
    drop(reader);
    assert_eq!(files(dir.path()), before, "the reader changed the store");
    // Nor does it create one.
    let missing = dir.path().join("elsewhere");
    assert!(LogReader::builder(&missing).open().is_err());
    assert!(!missing.exists());
}

/// Every file under `dir`, with its bytes and modification time.
fn files(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                let bytes = std::fs::read(entry.path()).unwrap();
                out.insert(entry.path(), (bytes, meta.modified().unwrap()));
            }
        }
    }
    out
}
