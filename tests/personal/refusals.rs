//! What is refused or reads as unreadable: personal data written outside an event store or
//! through an adapter without keys, altered ciphertext, values read without keys; and personal
//! values through an upcaster (which sees them as JSON).

use std::ops::ControlFlow;
use std::sync::Arc;

use annals::storage::{
    AggregateIdEntry, AggregateIdsQuery, AppendEvent, GetEventsOptions, InMemoryAdapter, Limits,
    LoggedEvent, Position, StorageAdapter, StorageError, StoredEvent,
};
use annals::{EventStore, Personal};
use async_trait::async_trait;

use crate::{Kind, TrainerEvent, adapter, on_both, registered, trainers};

#[test]
fn serializing_personal_data_outside_an_event_store_is_an_error() {
    let value = Personal::new("ash", "Ash".to_owned());
    let err = annals::codec::encode(&value).expect_err("refused");
    assert!(err.0.contains("event store"), "{err}");
    // A forgotten value holds no data: it is written as a marker.
    let forgotten: Personal<String> = Personal::Forgotten {
        subject: "ash".into(),
    };
    let bytes = annals::codec::encode(&forgotten).expect("marker");
    let back: Personal<String> = annals::codec::decode(&bytes).expect("decode");
    assert_eq!(back, forgotten);
    // JSON never shows the value.
    let json = serde_json::to_value(&value).expect("json");
    assert_eq!(
        json,
        serde_json::json!({ "$personal": { "subject": "ash" } })
    );
}

/// An adapter that keeps no keys (only the required methods, delegated).
struct NoKeys(InMemoryAdapter);

#[async_trait]
impl StorageAdapter for NoKeys {
    fn limits(&self) -> &Limits {
        self.0.limits()
    }
    async fn read_events(
        &self,
        store: &str,
        aggregate: &str,
        options: &GetEventsOptions,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        self.0.read_events(store, aggregate, options).await
    }
    async fn append(&self, events: Vec<AppendEvent>) -> Result<Vec<Position>, StorageError> {
        self.0.append(events).await
    }
    async fn scan_aggregate_ids(
        &self,
        store: &str,
        query: &AggregateIdsQuery,
    ) -> Result<Vec<AggregateIdEntry>, StorageError> {
        self.0.scan_aggregate_ids(store, query).await
    }
    async fn read_log(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StorageError> {
        self.0.read_log(from, limit).await
    }
    fn watch_log(&self) -> tokio::sync::watch::Receiver<Position> {
        self.0.watch_log()
    }
}

#[tokio::test]
async fn an_adapter_without_keys_refuses_personal_data_and_writes_nothing() {
    let adapter: Arc<dyn StorageAdapter> = Arc::new(NoKeys(InMemoryAdapter::new()));
    let trainers = trainers(&adapter);
    let err = trainers
        .push_events("ash", 0, [registered("ash", "Ash")], &())
        .await
        .expect_err("refused");
    assert!(matches!(err, annals::Error::NoKeyStore { .. }), "{err:?}");
    assert_eq!(*adapter.watch_log().borrow(), 0, "nothing written");
    let err = trainers.forget("ash").await.expect_err("no keys to forget");
    assert!(matches!(err, annals::Error::NoKeyStore { .. }), "{err:?}");
}

async fn altered_ciphertext_reads_as_unreadable_and_never_panics(kind: Kind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(kind, dir.path());
    let trainers = trainers(&adapter);
    trainers
        .push_events("ash", 0, [registered("ash", "Ash Ketchum")], &())
        .await
        .expect("push");
    let stored = adapter
        .get_events("TRAINERS", "ash", &GetEventsOptions::default())
        .await
        .expect("raw read")
        .remove(0);
    let payload = stored.event.payload.clone();
    // Every single-bit change in the payload's bytes: each read is a value or a typed error.
    let mut unreadable = 0;
    for at in 0..payload.len() {
        let mut altered = payload.clone();
        altered[at] ^= 0x04;
        let aggregate = format!("altered-{at}");
        let mut event = stored.event.clone();
        event.aggregate_id = aggregate.clone();
        event.version = 1;
        event.payload = altered;
        adapter
            .push_event(AppendEvent {
                event_store_id: "TRAINERS".to_owned(),
                event,
            })
            .await
            .expect("raw push");
        if let Ok(events) = trainers.get_events(&aggregate, Default::default()).await
            && let TrainerEvent::Registered(r) = &events[0].event
            && matches!(r.name, Personal::Unreadable { .. })
        {
            unreadable += 1;
        }
    }
    assert!(
        unreadable > 20,
        "only {unreadable} altered names read as unreadable"
    );
}
on_both!(altered_ciphertext_reads_as_unreadable_and_never_panics);

#[tokio::test]
async fn a_value_read_without_keys_is_unreadable() {
    let adapter: Arc<dyn StorageAdapter> = Arc::new(InMemoryAdapter::new());
    let trainers = trainers(&adapter);
    trainers
        .push_events("ash", 0, [registered("ash", "Ash")], &())
        .await
        .expect("push");
    let mut payload = Vec::new();
    adapter
        .visit_events("TRAINERS", "ash", &GetEventsOptions::default(), &mut |e| {
            payload = e.payload.to_vec();
            ControlFlow::Break(())
        })
        .await
        .expect("visit");
    let read: crate::Registered = annals::codec::decode(&payload).expect("decode");
    assert_eq!(
        read.name,
        Personal::Unreadable {
            subject: "ash".into()
        }
    );
}

/// Schema 1 of the registration had a `trainer` field; schema 2 calls it `name`. The upcaster
/// moves the personal value as JSON, sealed bytes and all.
#[tokio::test]
async fn personal_values_pass_through_upcasters() {
    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct RegisteredV1 {
        trainer: Personal<String>,
        email: Personal<String>,
        region: String,
    }
    annals::events! {
        enum OldEvent { Registered(RegisteredV1) = "TRAINER_REGISTERED" }
    }
    annals::events! {
        enum NewEvent { Registered(crate::Registered) = "TRAINER_REGISTERED" schema 2 }
    }
    let adapter: Arc<dyn StorageAdapter> = Arc::new(InMemoryAdapter::new());
    let old = EventStore::builder("TRAINERS", |_, _: &annals::EventDetail<OldEvent>| ())
        .storage_adapter(adapter.clone())
        .build()
        .expect("old store");
    let v1 = RegisteredV1 {
        trainer: Personal::new("ash", "Ash".to_owned()),
        email: Personal::new("ash", "ash@pallet.town".to_owned()),
        region: "Kanto".to_owned(),
    };
    old.push_events("ash", 0, [OldEvent::Registered(v1)], &())
        .await
        .expect("push v1");
    let new = EventStore::builder("TRAINERS", |_, _: &annals::EventDetail<NewEvent>| ())
        .storage_adapter(adapter.clone())
        .upcaster("TRAINER_REGISTERED", 1, |mut payload: serde_json::Value| {
            let trainer = payload["trainer"].take();
            payload["name"] = trainer;
            Ok(payload)
        })
        .build()
        .expect("new store");
    let events = new
        .get_events("ash", Default::default())
        .await
        .expect("read");
    let NewEvent::Registered(r) = &events[0].event;
    assert_eq!(r.name.known().map(String::as_str), Some("Ash"));
    new.forget("ash").await.expect("forget");
    let events = new
        .get_events("ash", Default::default())
        .await
        .expect("read");
    let NewEvent::Registered(r) = &events[0].event;
    assert!(r.name.is_forgotten() && r.email.is_forgotten());
}

/// The JSON forms untyped readers see: a sealed value as its subject and hex bytes (which
/// read back, through an upcaster for instance), a forgotten one once its key is gone, and
/// both turn back into the extension they came from.
#[tokio::test]
async fn json_forms_round_trip_and_never_show_the_value() {
    let adapter: Arc<dyn StorageAdapter> = Arc::new(InMemoryAdapter::new());
    let trainers = trainers(&adapter);
    trainers
        .push_events("ash", 0, [registered("ash", "Ash Ketchum")], &())
        .await
        .expect("push");
    let stored = adapter
        .get_events("TRAINERS", "ash", &GetEventsOptions::default())
        .await
        .expect("raw read")
        .remove(0);
    let mut json = annals::codec::to_json(&stored.event.payload).expect("json");
    let sealed = json["name"]["$personal"].clone();
    assert_eq!(sealed["subject"], "ash");
    assert!(sealed["sealed"].is_string());
    assert!(!json.to_string().contains("Ketchum"));
    // The sealed form turns back into the same extension bytes.
    let ext = annals::personal::ext_from_json(&json["name"]).expect("ext");
    assert!(
        stored.event.payload.windows(ext.len()).any(|w| w == ext),
        "the extension is the stored one"
    );

    let keys = adapter.keys().expect("keys");
    annals::personal::mark_forgotten(&mut json, keys).expect("mark");
    assert!(
        json["name"]["$personal"]["sealed"].is_string(),
        "the key exists"
    );
    keys.forget("ash").expect("forget");
    annals::personal::mark_forgotten(&mut json, keys).expect("mark");
    assert_eq!(
        json["name"],
        serde_json::json!({ "$personal": { "subject": "ash", "forgotten": true } })
    );
    let ext = annals::personal::ext_from_json(&json["name"]).expect("marker");
    let back: Personal<String> = annals::codec::decode(&ext).expect("decode");
    assert!(back.is_forgotten());
}
