//! Crypto-shredding across power loss (feature `personal`): a subject's key is durable before
//! the first event encrypted with it, so after a crash at any step, every event that survived
//! reads its personal values back — never as forgotten or unreadable for want of a key that
//! was lost — and `keys.redb` is either absent or a complete file.

use std::sync::Arc;

use annals::engine::FileSystem;
use annals::engine::sim::{Damage, Fault, SimFs};
use annals::storage::{StorageAdapter, StorageError};
use annals::{EventDetail, EventStore, Personal};
use serde::{Deserialize, Serialize};

use crate::workload::{dir, open};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registered {
    email: Personal<String>,
}

annals::events! {
    enum TrainerEvent { Registered(Registered) = "TRAINER_REGISTERED" }
}

fn trainers(adapter: Arc<dyn StorageAdapter>) -> EventStore<TrainerEvent, ()> {
    EventStore::builder("TRAINERS", |_, _: &EventDetail<TrainerEvent>| ())
        .storage_adapter(adapter)
        .build()
        .expect("store")
}

const SUBJECTS: [&str; 3] = ["ash", "misty", "brock"];

/// Opens the store and pushes one registration per subject (each creating the subject's key;
/// the first also creates `keys.redb`); how many pushes were acknowledged.
async fn workload(fs: &SimFs) -> Result<usize, StorageError> {
    let adapter: Arc<dyn StorageAdapter> = Arc::new(open(fs)?);
    let trainers = trainers(adapter);
    let mut acknowledged = 0;
    for subject in SUBJECTS {
        let email = Personal::new(subject, format!("{subject}@pallet.town"));
        let pushed = trainers
            .push_events(
                subject,
                0,
                [TrainerEvent::Registered(Registered { email })],
                &(),
            )
            .await;
        if pushed.is_err() {
            break;
        }
        acknowledged += 1;
    }
    Ok(acknowledged)
}

#[tokio::test]
async fn every_event_that_survives_a_crash_reads_its_personal_values() {
    let total = {
        let fs = SimFs::new();
        assert_eq!(workload(&fs).await.expect("no faults"), SUBJECTS.len());
        fs.ops()
    };
    let mut images = 0;
    for k in 1..=total + 1 {
        let fs = SimFs::new();
        fs.inject(Fault::FailFrom(k));
        let acknowledged = workload(&fs).await.unwrap_or(0);
        for damage in [Damage::DropUnsynced, Damage::RandomSubset { seed: k }] {
            let context = format!("crash after op {k}/{total}, {damage:?}");
            let image = fs.crash_image(damage);
            assert!(
                !image
                    .exists(&dir().join("keys.redb.creating"))
                    .expect("exists")
                    || !image.exists(&dir().join("keys.redb")).expect("exists"),
                "{context}: a finished key file beside an unfinished one"
            );
            let adapter: Arc<dyn StorageAdapter> =
                Arc::new(open(&image).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}")));
            let trainers = trainers(adapter);
            for (i, subject) in SUBJECTS.iter().enumerate() {
                let events = trainers
                    .get_events(subject, Default::default())
                    .await
                    .unwrap_or_else(|e| panic!("{context}: reading {subject} failed: {e}"));
                assert!(
                    events.len() == 1 || (events.is_empty() && i >= acknowledged),
                    "{context}: {subject}'s acknowledged event is missing"
                );
                if let Some(event) = events.first() {
                    let TrainerEvent::Registered(r) = &event.event;
                    assert_eq!(
                        r.email.known().map(String::as_str),
                        Some(format!("{subject}@pallet.town").as_str()),
                        "{context}: {subject}'s event survived without its key"
                    );
                }
            }
            images += 1;
        }
    }
    println!("personal workload: {total} I/O steps, {images} crash images checked");
    assert!(images as u64 > total, "every crash point produced images");
}
