//! Schema evolution: events keep the schema version they were written with; reading runs the
//! registered upcasters so that reducers and readers see only the current payload shape, in
//! `get_events`, `get_aggregate` (with or without snapshots) and `EventStore::decode`; renamed
//! types read through aliases; an event newer than the code is a typed error.

use std::sync::Arc;

use annals::storage::{GetEventsOptions, StorageAdapter};
use annals::{Error, EventDetail, EventStore, NewEvent, SnapshotPolicy, UpcastError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::fixtures::{memory, push_raw};

const PROFILES: &str = "PROFILES";

/// Schema 1 of `PROFILE_CREATED`: one `name` field.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CreatedV1 {
    name: String,
}

/// Schema 2: the name split in two.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CreatedV2 {
    first_name: String,
    last_name: String,
}

/// Schema 3, the current one: a contact e-mail was added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created {
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
}

/// Current payload of `PROFILE_RENAMED` (stored as `NAME_CHANGED` before the rename).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Renamed {
    pub first_name: String,
}

annals::events! {
    #[derive(PartialEq)]
    pub enum ProfileEvent {
        Created(Created) = "PROFILE_CREATED" schema 3,
        Renamed(Renamed) = "PROFILE_RENAMED",
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub full_name: String,
    pub email: Option<String>,
    pub renames: u32,
}

fn reduce(state: Option<Profile>, event: &EventDetail<ProfileEvent>) -> Profile {
    let profile = state.unwrap_or_default();
    match &event.event {
        ProfileEvent::Created(c) => Profile {
            full_name: format!("{} {}", c.first_name, c.last_name),
            email: c.email.clone(),
            renames: 0,
        },
        ProfileEvent::Renamed(r) => {
            let last = profile
                .full_name
                .split(' ')
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            Profile {
                full_name: format!("{} {last}", r.first_name),
                renames: profile.renames + 1,
                ..profile
            }
        }
    }
}

/// v1 → v2 on typed structs, v2 → v3 on the dynamic value, and the old type name aliased.
fn evolved(adapter: Arc<dyn StorageAdapter>) -> annals::EventStoreBuilder<ProfileEvent, Profile> {
    EventStore::builder(PROFILES, reduce)
        .storage_adapter(adapter)
        .typed_upcaster("PROFILE_CREATED", 1, |old: CreatedV1| {
            let (first_name, last_name) = old.name.split_once(' ').unwrap_or((&old.name, ""));
            CreatedV2 {
                first_name: first_name.to_owned(),
                last_name: last_name.to_owned(),
            }
        })
        .upcaster("PROFILE_CREATED", 2, |mut payload| {
            let object = payload
                .as_object_mut()
                .ok_or_else(|| UpcastError::new("a v2 payload is an object"))?;
            object.insert("email".into(), serde_json::Value::Null);
            Ok(payload)
        })
        .event_type_alias("NAME_CHANGED", "PROFILE_RENAMED")
}

fn created(first: &str, last: &str, email: &str) -> ProfileEvent {
    ProfileEvent::Created(Created {
        first_name: first.into(),
        last_name: last.into(),
        email: Some(email.into()),
    })
}

#[tokio::test]
async fn upcasters_chain_across_three_schema_versions() {
    let adapter = memory();
    let profiles = evolved(adapter.clone()).build().unwrap();
    push_raw(
        &*adapter,
        PROFILES,
        "ada",
        1,
        "PROFILE_CREATED",
        1,
        json!({ "name": "Ada Lovelace" }),
    )
    .await;
    push_raw(
        &*adapter,
        PROFILES,
        "alan",
        1,
        "PROFILE_CREATED",
        2,
        json!({ "first_name": "Alan", "last_name": "Turing" }),
    )
    .await;
    profiles
        .push_event(
            NewEvent::new("grace", 1, created("Grace", "Hopper", "grace@navy.mil")),
            Default::default(),
        )
        .await
        .unwrap();

    let read = |id: &'static str| {
        let profiles = profiles.clone();
        async move {
            profiles
                .get_events(id, Default::default())
                .await
                .unwrap()
                .remove(0)
                .event
        }
    };
    assert_eq!(
        read("ada").await,
        ProfileEvent::Created(Created {
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            email: None,
        })
    );
    assert_eq!(
        read("alan").await,
        ProfileEvent::Created(Created {
            first_name: "Alan".into(),
            last_name: "Turing".into(),
            email: None,
        })
    );
    assert_eq!(
        read("grace").await,
        created("Grace", "Hopper", "grace@navy.mil")
    );
}

#[tokio::test]
async fn pushes_store_the_declared_schema_version() {
    let adapter = memory();
    let profiles = evolved(adapter.clone()).build().unwrap();
    profiles
        .push_event(
            NewEvent::new("grace", 1, created("Grace", "Hopper", "g@h")),
            Default::default(),
        )
        .await
        .unwrap();
    let renamed = ProfileEvent::Renamed(Renamed {
        first_name: "Amazing".into(),
    });
    profiles
        .push_event(NewEvent::new("grace", 2, renamed), Default::default())
        .await
        .unwrap();
    let stored = adapter
        .get_events(PROFILES, "grace", &GetEventsOptions::default())
        .await
        .unwrap();
    let versions: Vec<(&str, u32)> = stored
        .iter()
        .map(|s| (s.event.event_type.as_str(), s.event.schema_version))
        .collect();
    assert_eq!(versions, [("PROFILE_CREATED", 3), ("PROFILE_RENAMED", 1)]);
}

#[tokio::test]
async fn old_and_new_events_fold_into_one_aggregate() {
    let adapter = memory();
    let profiles = evolved(adapter.clone()).build().unwrap();
    push_raw(
        &*adapter,
        PROFILES,
        "ada",
        1,
        "PROFILE_CREATED",
        1,
        json!({ "name": "Ada Byron" }),
    )
    .await;
    push_raw(
        &*adapter,
        PROFILES,
        "ada",
        2,
        "NAME_CHANGED",
        1,
        json!({ "first_name": "Augusta" }),
    )
    .await;
    let renamed = ProfileEvent::Renamed(Renamed {
        first_name: "Ada".into(),
    });
    profiles
        .push_event(NewEvent::new("ada", 3, renamed), Default::default())
        .await
        .unwrap();
    push_raw(
        &*adapter,
        PROFILES,
        "ada",
        4,
        "PROFILE_CREATED",
        2,
        json!({ "first_name": "Ada", "last_name": "Lovelace" }),
    )
    .await;
    let renamed = ProfileEvent::Renamed(Renamed {
        first_name: "Countess".into(),
    });
    profiles
        .push_event(NewEvent::new("ada", 5, renamed), Default::default())
        .await
        .unwrap();

    let ada = profiles
        .get_existing_aggregate("ada", Default::default())
        .await
        .unwrap();
    assert_eq!(
        ada.aggregate.state,
        Profile {
            full_name: "Countess Lovelace".into(),
            email: None,
            renames: 1,
        }
    );
    let types: Vec<&str> = ada.events.iter().map(|e| e.event_type()).collect();
    assert_eq!(
        types,
        [
            "PROFILE_CREATED",
            "PROFILE_RENAMED",
            "PROFILE_RENAMED",
            "PROFILE_CREATED",
            "PROFILE_RENAMED"
        ],
        "handlers see only current type names"
    );
}

#[tokio::test]
async fn a_renamed_event_type_reads_through_its_alias() {
    let adapter = memory();
    let profiles = evolved(adapter.clone()).build().unwrap();
    push_raw(
        &*adapter,
        PROFILES,
        "ada",
        1,
        "NAME_CHANGED",
        1,
        json!({ "first_name": "Ada" }),
    )
    .await;
    let events = profiles
        .get_events("ada", Default::default())
        .await
        .unwrap();
    assert_eq!(
        events[0].event,
        ProfileEvent::Renamed(Renamed {
            first_name: "Ada".into()
        })
    );

    let without_alias = EventStore::builder(PROFILES, reduce)
        .storage_adapter(adapter.clone())
        .build()
        .unwrap();
    let error = without_alias
        .get_events("ada", Default::default())
        .await
        .unwrap_err();
    let unknown_type = matches!(
        &error,
        Error::UnknownEventType { event_type, .. } if event_type == "NAME_CHANGED"
    );
    assert!(unknown_type, "{error:?}");
}

#[tokio::test]
async fn an_event_newer_than_the_code_is_a_typed_error() {
    let adapter = memory();
    let profiles = evolved(adapter.clone()).build().unwrap();
    push_raw(
        &*adapter,
        PROFILES,
        "ada",
        1,
        "PROFILE_CREATED",
        4,
        json!({ "given": "Ada" }),
    )
    .await;
    let error = profiles
        .get_aggregate("ada", Default::default())
        .await
        .unwrap_err();
    match error {
        Error::SchemaVersionTooNew {
            event_store_id,
            aggregate_id,
            version,
            event_type,
            schema_version,
            known_schema_version,
        } => {
            assert_eq!(
                (
                    event_store_id.as_str(),
                    aggregate_id.as_str(),
                    version,
                    event_type.as_str()
                ),
                (PROFILES, "ada", 1, "PROFILE_CREATED")
            );
            assert_eq!((schema_version, known_schema_version), (4, 3));
        }
        other => panic!("expected SchemaVersionTooNew, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_upcaster_is_a_decode_error_naming_the_step() {
    let adapter = memory();
    let profiles = EventStore::builder(PROFILES, reduce)
        .storage_adapter(adapter.clone())
        .upcaster("PROFILE_CREATED", 2, Ok)
        .build()
        .unwrap();
    push_raw(
        &*adapter,
        PROFILES,
        "ada",
        1,
        "PROFILE_CREATED",
        1,
        json!({ "name": "Ada" }),
    )
    .await;
    let error = profiles
        .get_events("ada", Default::default())
        .await
        .unwrap_err();
    let failed_upcast = matches!(
        &error,
        Error::Decode { version: 1, reason, .. } if reason.contains("from version 1 to 2")
    );
    assert!(failed_upcast, "{error:?}");
}

#[tokio::test]
async fn a_failing_upcaster_is_a_decode_error() {
    let adapter = memory();
    let profiles = evolved(adapter.clone()).build().unwrap();
    // Not a v1 shape: the typed upcaster cannot decode it.
    push_raw(
        &*adapter,
        PROFILES,
        "ada",
        1,
        "PROFILE_CREATED",
        1,
        json!({ "nom": "Ada" }),
    )
    .await;
    let error = profiles
        .get_events("ada", Default::default())
        .await
        .unwrap_err();
    let failed_upcast = matches!(
        &error,
        Error::Decode { version: 1, reason, .. }
            if reason.contains("upcasting from schema version 1 to 2")
    );
    assert!(failed_upcast, "{error:?}");
}

#[tokio::test]
async fn schema_evolution_that_does_not_fit_the_events_is_refused_at_build() {
    let refuse =
        |builder: annals::EventStoreBuilder<ProfileEvent, Profile>, needle: &str| match builder
            .build()
        {
            Err(Error::InvalidSchemaEvolution { reason, .. }) => {
                assert!(reason.contains(needle), "{reason:?} mentions {needle:?}")
            }
            other => panic!("expected InvalidSchemaEvolution mentioning {needle:?}, got {other:?}"),
        };
    let base = || EventStore::builder(PROFILES, reduce);
    refuse(
        base().upcaster("PROFILE_DELETED", 1, Ok),
        "does not declare",
    );
    refuse(
        base().upcaster("PROFILE_CREATED", 3, Ok),
        "from schema version 3",
    );
    refuse(
        base().upcaster("PROFILE_CREATED", 0, Ok),
        "from schema version 0",
    );
    refuse(base().upcaster("PROFILE_RENAMED", 1, Ok), "current 1");
    refuse(
        base()
            .upcaster("PROFILE_CREATED", 1, Ok)
            .upcaster("PROFILE_CREATED", 1, Ok),
        "two upcasters",
    );
    refuse(
        base().event_type_alias("PROFILE_RENAMED", "PROFILE_CREATED"),
        "itself a declared",
    );
    refuse(
        base().event_type_alias("OLD", "PROFILE_DELETED"),
        "does not declare",
    );
    refuse(
        base()
            .event_type_alias("OLD", "PROFILE_CREATED")
            .event_type_alias("OLD", "PROFILE_RENAMED"),
        "two aliases",
    );
}

#[tokio::test]
async fn upcasting_applies_to_snapshot_reads_and_to_decode() {
    let adapter = memory();
    let profiles = evolved(adapter.clone())
        .snapshots(SnapshotPolicy::every(2))
        .build()
        .unwrap();
    push_raw(
        &*adapter,
        PROFILES,
        "ada",
        1,
        "PROFILE_CREATED",
        1,
        json!({ "name": "Ada Byron" }),
    )
    .await;
    for (version, name) in [(2, "Augusta"), (3, "Ada")] {
        push_raw(
            &*adapter,
            PROFILES,
            "ada",
            version,
            "NAME_CHANGED",
            1,
            json!({ "first_name": name }),
        )
        .await;
    }
    let first = profiles
        .get_existing_aggregate("ada", Default::default())
        .await
        .unwrap();
    profiles.flush_snapshots().await;
    let second = profiles
        .get_existing_aggregate("ada", Default::default())
        .await
        .unwrap();
    assert_eq!(
        second.events.len(),
        1,
        "the read started from the snapshot at 2"
    );
    assert_eq!(first.aggregate, second.aggregate);
    assert_eq!(second.aggregate.full_name, "Ada Byron");

    let stored = adapter
        .get_events(PROFILES, "ada", &GetEventsOptions::default())
        .await
        .unwrap();
    let decoded = profiles.decode(stored[0].clone()).unwrap();
    assert_eq!(
        decoded.event,
        ProfileEvent::Created(Created {
            first_name: "Ada".into(),
            last_name: "Byron".into(),
            email: None,
        })
    );
}

/// The reads that decode from the adapter's own bytes (`get_events`, `stream_events`,
/// `get_aggregate_state`) upcast and resolve aliases like `decode` of an owned event, on the
/// log adapter whose reads visit its read buffer.
#[tokio::test]
async fn streaming_and_state_only_reads_upcast_and_resolve_aliases_on_the_log_adapter() {
    use futures::TryStreamExt;

    let dir = tempfile::tempdir().unwrap();
    let adapter = crate::fixtures::open_log(dir.path());
    let profiles = evolved(adapter.clone()).build().unwrap();
    push_raw(
        &*adapter,
        PROFILES,
        "ada",
        1,
        "PROFILE_CREATED",
        1,
        json!({ "name": "Ada Lovelace" }),
    )
    .await;
    push_raw(
        &*adapter,
        PROFILES,
        "ada",
        2,
        "NAME_CHANGED",
        1,
        json!({ "first_name": "Augusta" }),
    )
    .await;
    let renamed = ProfileEvent::Renamed(Renamed {
        first_name: "Countess".into(),
    });
    profiles
        .push_events("ada", 2, [renamed], &())
        .await
        .unwrap();

    let owned: Vec<EventDetail<ProfileEvent>> = adapter
        .get_events(PROFILES, "ada", &GetEventsOptions::default())
        .await
        .unwrap()
        .into_iter()
        .map(|stored| profiles.decode(stored).unwrap())
        .collect();
    assert_eq!(owned.len(), 3);
    assert_eq!(
        owned[0].event,
        ProfileEvent::Created(Created {
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            email: None,
        })
    );
    assert_eq!(owned[1].event_type(), "PROFILE_RENAMED");

    let read = profiles
        .get_events("ada", Default::default())
        .await
        .unwrap();
    let streamed: Vec<_> = profiles
        .stream_events("ada", Default::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(read, owned);
    assert_eq!(streamed, owned);

    let full = profiles
        .get_aggregate("ada", Default::default())
        .await
        .unwrap();
    let state = profiles
        .get_aggregate_state("ada", Default::default())
        .await
        .unwrap();
    assert_eq!(state.aggregate, full.aggregate);
    assert_eq!(state.last_event, full.last_event);
    assert_eq!(
        state.aggregate.unwrap().state.full_name,
        "Countess Lovelace"
    );
}
