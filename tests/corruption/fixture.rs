//! The store every corruption case starts from, and the check run after damaging it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use annals::engine::sim::SimFs;
use annals::storage::{
    AppendEvent, EncodedEvent, GetEventsOptions, Limits, LogAdapter, StorageAdapter, StorageError,
};
use annals::{Durability, Timestamp};

pub const DIR: &str = "/store";
pub const STORES: [&str; 2] = ["POKEMONS", "TRAINERS"];
pub const AGGREGATES: [&str; 4] = ["a", "b", "c", "d"];
/// Commits of the fixture; commit `BIG` carries a large event that fills most of segment 1.
pub const COMMITS: usize = 40;
pub const BIG: usize = 6;

pub fn segment(id: u64) -> PathBuf {
    Path::new(DIR).join("log").join(format!("{id:010}.seg"))
}

pub fn index() -> PathBuf {
    Path::new(DIR).join("index.redb")
}

/// Small segments (the minimum, 64 KiB) and frequent checkpoints.
pub fn open(fs: &SimFs) -> Result<LogAdapter, StorageError> {
    open_with(fs, Durability::Immediate)
}

/// [`open`] with another durability.
pub fn open_with(fs: &SimFs, durability: Durability) -> Result<LogAdapter, StorageError> {
    LogAdapter::builder(DIR)
        .file_system(Arc::new(fs.clone()))
        .durability(durability)
        .segment_bytes(64 << 10)
        .checkpoint_events(16)
        .limits(Limits {
            event_bytes_max: 48 << 10,
            group_events_max: 4,
            group_bytes_max: 48 << 10,
            ..Limits::default()
        })
        .open()
}

fn event(store: &str, aggregate: &str, version: u64, commit: usize, i: usize) -> AppendEvent {
    let mut payload = format!("commit {commit} event {i}").into_bytes();
    payload.resize(if commit == BIG { 46_000 } else { 500 }, b'.');
    AppendEvent {
        event_store_id: store.to_owned(),
        event: EncodedEvent {
            aggregate_id: aggregate.to_owned(),
            version,
            timestamp: Timestamp::from_unix_millis(1_700_000_000_000 + commit as i64),
            event_type: "HAPPENED".to_owned(),
            schema_version: 1,
            payload,
            metadata: vec![0x80],
        },
    }
}

/// Everything a reader can observe of the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contents {
    /// (store, aggregate) → (position, event) in version order.
    pub events: BTreeMap<(String, String), Vec<(u64, EncodedEvent)>>,
    /// store → aggregate ids with initial timestamps.
    pub listed: BTreeMap<String, Vec<(String, i64)>>,
    pub last_position: u64,
}

/// A store image: the files of a store, taken from a simulated disk. The bytes are shared with
/// every disk made from the image until that disk writes to them.
#[derive(Clone, Debug)]
pub struct Image {
    pub files: Vec<(PathBuf, Arc<Vec<u8>>)>,
}

impl Image {
    pub fn take(fs: &SimFs) -> Self {
        let files = fs
            .paths()
            .into_iter()
            .filter(|p| !p.ends_with("LOCK"))
            .map(|p| {
                let bytes = fs.read_file(&p).expect("listed file exists");
                (p, bytes)
            })
            .collect();
        Image { files }
    }

    pub fn file(&self, path: &Path) -> &[u8] {
        &self
            .files
            .iter()
            .find(|(p, _)| p == path)
            .expect("file in image")
            .1
    }

    /// A fresh disk holding this image with `edit` applied to the file at `path`.
    pub fn disk_with(&self, path: &Path, edit: impl FnOnce(&mut Vec<u8>)) -> SimFs {
        let fs = SimFs::new();
        let mut edit = Some(edit);
        for (p, bytes) in &self.files {
            let mut bytes = Arc::clone(bytes);
            if p == path
                && let Some(edit) = edit.take()
            {
                edit(Arc::make_mut(&mut bytes));
            }
            fs.write_file(p, bytes);
        }
        fs
    }

    pub fn disk(&self) -> SimFs {
        self.disk_with(Path::new(""), |_| {})
    }
}

/// Builds the fixture: `COMMITS` acknowledged commits (every fifth a group over both stores,
/// one of ~46 KB) over two segments. `clean` closes the store (the index checkpoint then
/// covers the whole log); otherwise the image is taken as after `kill -9` once every append
/// was acknowledged, so the last events are past the checkpoint and replayed on open.
pub async fn build(clean: bool) -> (Image, Contents) {
    let fs = SimFs::new();
    let log = open(&fs).expect("open the fixture");
    let mut versions: BTreeMap<(String, String), u64> = BTreeMap::new();
    for c in 0..COMMITS {
        let targets: Vec<(&str, &str)> = if c % 5 == 4 {
            vec![
                (STORES[0], AGGREGATES[c % 4]),
                (STORES[1], AGGREGATES[(c + 1) % 4]),
                (STORES[1], AGGREGATES[(c + 2) % 4]),
            ]
        } else {
            vec![(STORES[0], AGGREGATES[c % 4])]
        };
        let events: Vec<AppendEvent> = targets
            .iter()
            .enumerate()
            .map(|(i, (s, a))| {
                let v = versions.entry((s.to_string(), a.to_string())).or_default();
                *v += 1;
                event(s, a, *v, c, i)
            })
            .collect();
        log.push_event_group(events).await.expect("fixture append");
    }
    let image = if clean {
        drop(log);
        Image::take(&fs)
    } else {
        // Let the checkpointer finish what it started, then "lose power".
        std::thread::sleep(std::time::Duration::from_millis(100));
        let image = Image::take(&fs.crash_image(annals::engine::sim::Damage::DropUnsynced));
        drop(log);
        image
    };
    let log = open(&image.disk()).expect("reopen the fixture");
    let contents = contents(&log).await.expect("read the fixture");
    assert_eq!(log.stats().segments, 2, "the fixture spans two segments");
    let report = log.verify().expect("verify the fixture");
    assert!(report.is_clean(), "fixture: {:?}", report.problems);
    (image, contents)
}

/// Reads everything; the first error wins.
pub async fn contents(log: &LogAdapter) -> Result<Contents, StorageError> {
    let mut events = BTreeMap::new();
    let mut listed = BTreeMap::new();
    for store in STORES {
        for aggregate in AGGREGATES {
            let read = log
                .get_events(store, aggregate, &GetEventsOptions::default())
                .await?;
            let read = read.into_iter().map(|e| (e.position, e.event)).collect();
            events.insert((store.to_owned(), aggregate.to_owned()), read);
        }
        let page = log.list_aggregate_ids(store, &Default::default()).await?;
        listed.insert(
            store.to_owned(),
            page.aggregate_ids
                .into_iter()
                .map(|a| (a.aggregate_id, a.initial_event_timestamp.unix_millis()))
                .collect(),
        );
    }
    Ok(Contents {
        events,
        listed,
        last_position: log.last_position(),
    })
}

/// A one-line account of how `got` differs from `expected` (the contents are too large to
/// print).
pub fn difference(expected: &Contents, got: &Contents) -> String {
    let count = |c: &Contents| c.events.values().map(Vec::len).sum::<usize>();
    let changed = expected
        .events
        .iter()
        .filter(|(k, v)| got.events.get(*k) != Some(v))
        .map(|(k, _)| format!("{}/{}", k.0, k.1))
        .collect::<Vec<_>>();
    format!(
        "{} events (last position {}) instead of {} (last position {}); aggregates differing: \
         {changed:?}; listings equal: {}",
        count(got),
        got.last_position,
        count(expected),
        expected.last_position,
        got.listed == expected.listed
    )
}
