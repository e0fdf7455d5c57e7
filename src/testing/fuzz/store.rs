//! The fuzzed store: its directory and limits on a [`SimFs`], opening it, and the events and
//! reads the targets share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::Durability;
use crate::engine::sim::SimFs;
use crate::storage::{
    AggregateIdEntry, AppendEvent, EncodedEvent, GetEventsOptions, Limits, ListAggregateIdsOptions,
    LogAdapter, StorageAdapter, StorageError, Timestamp,
};

/// The directory every fuzzed store lives in, on its [`SimFs`].
const DIR: &str = "/store";

/// Segments as small as the engine allows, so a few commits roll over to a new one.
pub(super) const SEGMENT_BYTES: u64 = 64 << 10;

pub(super) const STORES: [&str; 2] = ["POKEMONS", "TRAINERS"];

pub(super) const AGGREGATES: [&str; 4] = ["a", "b", "c", "d"];

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime can always be built")
}

pub(super) fn limits() -> Limits {
    Limits {
        event_bytes_max: 8 << 10,
        group_events_max: 16,
        group_bytes_max: 32 << 10,
        ..Limits::default()
    }
}

pub(super) fn open_store(fs: &SimFs, checkpoint_events: usize) -> Result<LogAdapter, StorageError> {
    builder(fs, checkpoint_events).open()
}

/// Opens the store with its index rebuilt from the log, as `annals rebuild-index` does.
pub(super) fn open_store_rebuilding_index(
    fs: &SimFs,
    checkpoint_events: usize,
) -> Result<LogAdapter, StorageError> {
    builder(fs, checkpoint_events).rebuild_index().open()
}

fn builder(fs: &SimFs, checkpoint_events: usize) -> crate::storage::LogAdapterBuilder {
    LogAdapter::builder(DIR)
        .file_system(Arc::new(fs.clone()))
        .durability(Durability::Immediate)
        .segment_bytes(SEGMENT_BYTES)
        .checkpoint_events(checkpoint_events)
        .index_cache_bytes(1 << 20)
        .limits(limits())
}

pub(super) fn segment_path(id: u64) -> PathBuf {
    crate::engine::layout::log_dir(Path::new(DIR)).join(crate::engine::segment::file_name(id))
}

pub(super) fn index_path() -> PathBuf {
    crate::engine::layout::index_file(Path::new(DIR))
}

pub(super) async fn next_version(log: &LogAdapter, store: &str, aggregate: &str) -> u64 {
    let options = GetEventsOptions {
        reverse: true,
        limit: Some(1),
        ..Default::default()
    };
    let last = log
        .get_events(store, aggregate, &options)
        .await
        .unwrap_or_else(|e| panic!("reading {store}/{aggregate}: {e:?}"));
    last.first().map_or(0, |e| e.event.version) + 1
}

/// An event whose payload names its commit (`commit <n> event <i>;`), padded to `len` bytes.
pub(super) fn fuzz_event(
    store: &str,
    aggregate: &str,
    version: u64,
    commit: u64,
    len: usize,
) -> AppendEvent {
    let mut payload = format!("commit {commit} event {version};").into_bytes();
    payload.resize(payload.len().max(len), b'.');
    AppendEvent {
        event_store_id: store.to_owned(),
        event: EncodedEvent {
            aggregate_id: aggregate.to_owned(),
            version,
            timestamp: Timestamp::from_unix_millis(1_700_000_000_000 + (commit % 7) as i64),
            event_type: "HAPPENED".to_owned(),
            schema_version: 1,
            payload,
            metadata: vec![0x80],
        },
    }
}

/// Every aggregate of `store`, two per page.
pub(super) async fn list_all(
    log: &LogAdapter,
    store: &str,
) -> Result<Vec<AggregateIdEntry>, StorageError> {
    let mut all = Vec::new();
    let mut options = ListAggregateIdsOptions {
        limit: Some(2),
        ..Default::default()
    };
    loop {
        let page = log.list_aggregate_ids(store, &options).await?;
        all.extend(page.aggregate_ids);
        match page.next_page_token {
            Some(token) if all.len() < 64 => options.page_token = Some(token),
            _ => return Ok(all),
        }
    }
}
