//! Personal values in the command-line tool (feature `personal`): `export`, `get` and `events`
//! show an encrypted value as its subject and sealed bytes, and as forgotten once its key is
//! gone; an export imports back into the same ciphertext.

use std::path::Path;
use std::sync::Arc;

use annals::storage::StorageAdapter;
use annals::{EventDetail, EventStore, Personal};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::fixture::{annals, export_lines, json};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registered {
    email: Personal<String>,
    region: String,
}

annals::events! {
    enum TrainerEvent { Registered(Registered) = "TRAINER_REGISTERED" }
}

async fn store_with_two_trainers(dir: &Path) -> EventStore<TrainerEvent, ()> {
    let adapter: Arc<dyn StorageAdapter> = annals::open(dir).expect("open");
    let trainers = EventStore::builder("TRAINERS", |_, _: &EventDetail<TrainerEvent>| ())
        .storage_adapter(adapter)
        .build()
        .expect("store");
    for subject in ["ash", "misty"] {
        let email = Personal::new(subject, format!("{subject}@pallet.town"));
        let event = TrainerEvent::Registered(Registered {
            email,
            region: "Kanto".into(),
        });
        trainers
            .push_events(subject, 0, [event], &())
            .await
            .expect("push");
    }
    trainers
}

#[tokio::test]
async fn export_shows_sealed_values_then_forgotten_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    {
        let trainers = store_with_two_trainers(&dir).await;
        assert!(trainers.forget("ash").await.expect("forget"));
    }
    let lines = export_lines(&dir);
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0]["payload"],
        json!({ "email": { "$personal": { "subject": "ash", "forgotten": true } },
                "region": "Kanto" })
    );
    let misty = &lines[1]["payload"]["email"]["$personal"];
    assert_eq!(misty["subject"], "misty");
    assert!(misty["sealed"].is_string(), "{misty}");
    assert!(!lines[1].to_string().contains("pallet"), "never decrypted");

    let events = json(&dir, &["events", "TRAINERS", "ash"]);
    assert!(
        events.to_string().contains("\"forgotten\":true"),
        "{events}"
    );
    let got = json(&dir, &["get", "2"]);
    assert!(got.to_string().contains("\"sealed\""), "{got}");

    // Import into a fresh store: the same bytes, still readable with the original's keys only.
    let file = tmp.path().join("events.jsonl");
    annals()
        .arg("--dir")
        .arg(&dir)
        .args(["export", "-o"])
        .arg(&file)
        .assert()
        .success();
    let copy = tmp.path().join("copy");
    annals()
        .arg("--dir")
        .arg(&copy)
        .arg("import")
        .arg(&file)
        .assert()
        .success();
    let copied = export_lines(&copy);
    assert_eq!(copied[0]["payload"], lines[0]["payload"]);
    // The copy has no keys: the sealed value is shown as forgotten there.
    assert_eq!(
        copied[1]["payload"]["email"]["$personal"]["forgotten"],
        true
    );
}
