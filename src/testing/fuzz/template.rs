//! A small valid store built once, whose segment and index the targets and seeds start from.

use std::sync::OnceLock;

use crate::engine::sim::SimFs;
use crate::storage::{AppendEvent, StorageAdapter};

use super::store::{
    AGGREGATES, STORES, fuzz_event, index_path, next_version, open_store, runtime, segment_path,
};

/// A small valid store: its segment, its (checkpointed) index and its events.
pub(super) struct Template {
    pub(super) segment: Vec<u8>,
    pub(super) index: Vec<u8>,
    pub(super) events: Vec<AppendEvent>,
}

/// Commits of the template store; every aggregate gets a few events.
pub(super) const TEMPLATE_COMMITS: u64 = 12;

pub(super) fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let fs = SimFs::new();
        let log = open_store(&fs, 4).expect("a store opens on an empty disk");
        let mut events = Vec::new();
        runtime().block_on(async {
            for c in 0..TEMPLATE_COMMITS {
                let (store, aggregate) = (STORES[(c % 2) as usize], AGGREGATES[(c % 4) as usize]);
                let version = next_version(&log, store, aggregate).await;
                let event = fuzz_event(store, aggregate, version, c, 40);
                log.push_event(event.clone())
                    .await
                    .expect("a healthy store appends");
                events.push(event);
            }
        });
        log.close();
        drop(log);
        Template {
            segment: fs
                .read_file(&segment_path(1))
                .expect("segment 1 exists")
                .to_vec(),
            index: fs
                .read_file(&index_path())
                .expect("the index exists")
                .to_vec(),
            events,
        }
    })
}
