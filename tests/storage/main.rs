//! Runs the storage-adapter conformance suite ([`annals::testing::conformance`]) against every
//! adapter annals ships, one test per check and adapter, so a broken rule shows up as a named
//! failing test such as `in_memory::concurrent_event_groups_are_all_or_nothing`.

mod in_memory {
    use std::sync::Arc;

    use annals::storage::InMemoryAdapter;

    annals::conformance_tests!(|| async { Arc::new(InMemoryAdapter::new()) });
}

/// The admin console's timed adapter (feature `console`) over memory: it only measures its
/// commits, so it must pass every check unchanged.
#[cfg(feature = "console")]
mod timed {
    use std::sync::Arc;

    use annals::admin::TimedAdapter;
    use annals::storage::InMemoryAdapter;

    annals::conformance_tests!(|| async {
        Arc::new(TimedAdapter::new(Arc::new(InMemoryAdapter::new())))
    });
}

/// The log adapter with segments and limits scaled down so every check stays fast.
mod log {
    use std::sync::Arc;

    use annals::storage::{Limits, LogAdapter};
    use annals::testing::conformance::Fixture;

    annals::conformance_tests!(|| async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let adapter = LogAdapter::builder(dir.path())
            .segment_bytes(4 << 20)
            .limits(Limits {
                event_bytes_max: 256 << 10,
                group_bytes_max: 1 << 20,
                ..Limits::default()
            })
            .open()
            .expect("the log adapter opens");
        Fixture::with_guard(Arc::new(adapter), dir)
    });
}

/// The log adapter with tiny segments and a checkpoint every few events, so reads and version
/// checks span segments and all three index tiers (active and frozen memtables, redb).
mod log_small_segments {
    use std::sync::Arc;

    use annals::storage::{Limits, LogAdapter};
    use annals::testing::conformance::Fixture;

    annals::conformance_tests!(|| async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let adapter = LogAdapter::builder(dir.path())
            .segment_bytes(256 << 10)
            .checkpoint_events(7)
            .limits(Limits {
                event_bytes_max: 16 << 10,
                group_events_max: 100,
                group_bytes_max: 64 << 10,
                ..Limits::default()
            })
            .open()
            .expect("the log adapter opens");
        Fixture::with_guard(Arc::new(adapter), dir)
    });
}

mod lifecycle;
mod mutants;
