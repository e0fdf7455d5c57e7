//! Runs the storage-adapter conformance suite ([`annals::testing::conformance`]) against every
//! adapter annals ships, one test per check and adapter, so a broken rule shows up as a named
//! failing test such as `in_memory::concurrent_event_groups_are_all_or_nothing`.

mod in_memory {
    use std::sync::Arc;

    use annals::storage::InMemoryAdapter;

    annals::conformance_tests!(|| async { Arc::new(InMemoryAdapter::new()) });
}

mod mutants;
