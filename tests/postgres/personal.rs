//! Crypto-shredding on PostgreSQL (feature `personal`): keys in the `personal_keys` table,
//! shared by every adapter on the schema; a forget through one adapter is seen by another
//! (standing for another process, with its own cache and connections) within its key cache
//! time, and the forgotten key's row is gone.

use std::sync::Arc;
use std::time::Duration;

use annals::storage::StorageAdapter;
use annals::{EventDetail, EventStore, Personal};
use serde::{Deserialize, Serialize};

use crate::fixture;
use crate::harness::{Needs, trials};

/// The tests of this module.
pub fn trials() -> Vec<libtest_mimic::Trial> {
    trials!(Needs::Server, threads = 2;
        personal_values_round_trip_and_forget_reaches_other_adapters,
    )
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    pub email: Personal<String>,
}

annals::events! {
    pub enum TrainerEvent {
        Registered(Registered) = "TRAINER_REGISTERED",
    }
}

fn store(adapter: Arc<dyn StorageAdapter>) -> EventStore<TrainerEvent, ()> {
    EventStore::builder("TRAINERS", |_, _: &EventDetail<TrainerEvent>| ())
        .storage_adapter(adapter)
        .build()
        .expect("the store builds")
}

async fn email_of(store: &EventStore<TrainerEvent, ()>, id: &str) -> Personal<String> {
    let events = store
        .get_events(id, Default::default())
        .await
        .expect("read");
    let TrainerEvent::Registered(r) = &events[0].event;
    r.email.clone()
}

async fn personal_values_round_trip_and_forget_reaches_other_adapters() {
    let url = fixture::url();
    let (here, guard) = fixture::adapter(&url).await;
    let ttl = Duration::from_millis(300);
    let there = fixture::builder(&url, &guard.schema)
        .key_cache_ttl(ttl)
        .connect()
        .await
        .expect("a second adapter on the schema");
    let here = store(Arc::new(here));
    let there = store(Arc::new(there));
    for subject in ["ash", "misty"] {
        let email = Personal::new(subject, format!("{subject}@pallet.town"));
        here.push_events(
            subject,
            0,
            [TrainerEvent::Registered(Registered { email })],
            &(),
        )
        .await
        .expect("push");
    }
    assert_eq!(
        email_of(&there, "ash").await.known().map(String::as_str),
        Some("ash@pallet.town"),
        "the other adapter reads the shared key"
    );

    assert!(here.forget("ash").await.expect("forget"));
    assert!(
        email_of(&here, "ash").await.is_forgotten(),
        "at once where it was forgotten"
    );
    // The other adapter may serve its cached key until its cache time is up, no longer.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert!(
        email_of(&there, "ash").await.is_forgotten(),
        "within the cache time elsewhere"
    );
    assert_eq!(
        email_of(&there, "misty").await.known().map(String::as_str),
        Some("misty@pallet.town")
    );

    let client = fixture::connect(&url).await;
    let rows = client
        .query(
            &format!(
                "SELECT subject FROM {}.personal_keys ORDER BY subject",
                guard.schema
            ),
            &[],
        )
        .await
        .expect("the key table");
    let subjects: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(subjects, ["misty"], "the forgotten key's row is deleted");
}
