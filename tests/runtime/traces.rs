//! Traces: pushes, commits, reads and view batches open `tracing` spans, which any subscriber
//! (an OpenTelemetry layer, say) receives. Checked with a layer that records span names.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::view::{KvTables, KvView};
use annals::{EventDetail, EventStore, NewEvent, state::StateStore};
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::{Context, SubscriberExt};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Counted {
    n: u32,
}

annals::events! {
    pub enum CounterEvent {
        Counted(Counted) = "COUNTED",
    }
}

/// Records the name of every span opened.
struct Names(Arc<Mutex<BTreeSet<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Names {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: Context<'_, S>,
    ) {
        let name = attrs.metadata().name().to_owned();
        self.0.lock().unwrap().insert(name);
    }
}

#[test]
fn pushes_commits_reads_and_view_batches_open_spans() {
    let names = Arc::new(Mutex::new(BTreeSet::new()));
    let subscriber = tracing_subscriber::registry().with(Names(names.clone()));
    tracing::subscriber::with_default(subscriber, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let adapter: Arc<dyn annals::StorageAdapter> = annals::open(dir.path()).unwrap();
            let store = EventStore::builder(
                "COUNTERS",
                |n: Option<u32>, e: &EventDetail<CounterEvent>| {
                    let CounterEvent::Counted(c) = &e.event;
                    n.unwrap_or(0) + c.n
                },
            )
            .storage_adapter(adapter.clone())
            .build()
            .unwrap();
            let view = KvView::builder("totals", 1)
                .on(
                    &store,
                    |tables: &mut KvTables<'_>, e: &EventDetail<CounterEvent>| {
                        let CounterEvent::Counted(c) = &e.event;
                        tables.put("totals", &e.aggregate_id, &c.n)
                    },
                )
                .build(Arc::new(StateStore::in_memory()))
                .unwrap();
            let runner = view.run(adapter.clone());
            let pushed = store
                .push_event(
                    NewEvent::new("c1", 1, CounterEvent::Counted(Counted { n: 3 })),
                    Default::default(),
                )
                .await
                .unwrap();
            store.get_events("c1", Default::default()).await.unwrap();
            store.get_aggregate("c1", Default::default()).await.unwrap();
            view.wait_for(pushed.position, Duration::from_secs(10))
                .await
                .unwrap();
            runner.stop().await.unwrap();
        });
    });
    let names = names.lock().unwrap();
    for span in [
        "annals.push",
        "annals.commit",
        "annals.read",
        "annals.view.batch",
    ] {
        assert!(names.contains(span), "no {span} span in {names:?}");
    }
}
