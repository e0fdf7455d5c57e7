//! Personal values round trip through the in-memory and log adapters, and never reach the
//! stored bytes in clear.

use annals::storage::GetEventsOptions;
use annals::{NewEvent, Personal};

use crate::{Kind, TrainerEvent, adapter, caught, on_both, registered, trainers};

async fn personal_values_round_trip_and_are_stored_encrypted(kind: Kind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(kind, dir.path());
    let trainers = trainers(&adapter);
    trainers
        .push_events(
            "ash",
            0,
            [registered("ash", "Ash Ketchum"), caught("pikachu")],
            &(),
        )
        .await
        .expect("push");
    trainers
        .push_event(
            NewEvent::new("misty", 1, registered("misty", "Misty Waterflower")),
            Default::default(),
        )
        .await
        .expect("push one");

    let events = trainers
        .get_events("ash", Default::default())
        .await
        .expect("read");
    let TrainerEvent::Registered(r) = &events[0].event else {
        panic!("not registered: {:?}", events[0].event);
    };
    assert_eq!(r.name, Personal::new("ash", "Ash Ketchum".to_owned()));
    assert_eq!(
        r.email.known().map(String::as_str),
        Some("ash ketchum@pallet.town")
    );
    assert_eq!(r.region, "Kanto");

    let stored = adapter
        .get_events("TRAINERS", "ash", &GetEventsOptions::default())
        .await
        .expect("raw read");
    let payload = &stored[0].event.payload;
    assert!(
        !payload.windows(5).any(|w| w == b"Ketch"),
        "the name is in clear"
    );
    assert!(
        !payload.windows(6).any(|w| w == b"pallet"),
        "the email is in clear"
    );
    assert!(
        payload.windows(5).any(|w| w == b"Kanto"),
        "the region is plain"
    );
    // Untyped, the value shows its subject and sealed bytes, never the value.
    let json = annals::codec::to_json(payload).expect("json");
    assert_eq!(json["name"]["$personal"]["subject"], "ash");
    assert!(json["name"]["$personal"]["sealed"].is_string());

    let aggregate = trainers
        .get_aggregate("misty", Default::default())
        .await
        .expect("aggregate")
        .aggregate
        .expect("exists");
    assert_eq!(aggregate.state.name_letters, 17);
}
on_both!(personal_values_round_trip_and_are_stored_encrypted);

async fn two_values_of_one_subject_use_one_key_and_distinct_nonces(kind: Kind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(kind, dir.path());
    let trainers = trainers(&adapter);
    let twice = [registered("ash", "Ash"), registered("ash", "Ash")];
    trainers
        .push_events("ash", 0, twice, &())
        .await
        .expect("push");
    let stored = adapter
        .get_events("TRAINERS", "ash", &GetEventsOptions::default())
        .await
        .expect("raw read");
    assert_ne!(
        stored[0].event.payload, stored[1].event.payload,
        "the same value encrypts differently each time"
    );
    let keys = adapter.keys().expect("keys");
    assert!(keys.get("ash").expect("key").is_some());
}
on_both!(two_values_of_one_subject_use_one_key_and_distinct_nonces);
