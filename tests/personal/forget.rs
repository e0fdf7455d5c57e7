//! After `forget`, every read path sees `Forgotten`: events, aggregates (snapshots discarded
//! and replayed), streams, views; and the subject's new data gets a new key.

use std::sync::Arc;
use std::time::Duration;

use annals::state::StateStore;
use annals::view::{KvError, KvTables, KvView};
use annals::{EventDetail, Personal};
use futures::TryStreamExt;

use crate::{Kind, TrainerEvent, adapter, caught, on_both, registered, trainers};

fn name_of(event: &EventDetail<TrainerEvent>) -> &Personal<String> {
    match &event.event {
        TrainerEvent::Registered(r) => &r.name,
        other => panic!("not registered: {other:?}"),
    }
}

async fn forgetting_a_subject_makes_every_read_path_see_forgotten(kind: Kind) {
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
        .push_events("misty", 0, [registered("misty", "Misty")], &())
        .await
        .expect("push");
    // Read once: the aggregate passes the policy's point, a snapshot is taken with the name
    // known and its length derived from it.
    let before = trainers
        .get_aggregate("ash", Default::default())
        .await
        .expect("read")
        .aggregate
        .expect("exists");
    assert_eq!(before.state.name_letters, 11);
    trainers.flush_snapshots().await;
    let snapshots = adapter.snapshots().expect("snapshots");
    assert!(
        snapshots
            .latest("TRAINERS", "ash", u64::MAX)
            .expect("latest")
            .is_some()
    );

    assert!(trainers.forget("ash").await.expect("forget"));
    assert!(
        !trainers.forget("ash").await.expect("forget again"),
        "no key left"
    );

    let events = trainers
        .get_events("ash", Default::default())
        .await
        .expect("events");
    assert_eq!(
        name_of(&events[0]),
        &Personal::Forgotten {
            subject: "ash".into()
        }
    );
    match &events[0].event {
        TrainerEvent::Registered(r) => {
            assert!(r.email.is_forgotten());
            assert_eq!(r.region, "Kanto", "what is not personal stays");
        }
        other => panic!("{other:?}"),
    }
    let streamed: Vec<_> = trainers
        .stream_events("ash", Default::default())
        .try_collect()
        .await
        .expect("stream");
    assert!(name_of(&streamed[0]).is_forgotten());

    // The snapshot's name is forgotten too, but its derived figure would say otherwise: the
    // snapshot is discarded and the reducer replays the forgotten value.
    let after = trainers
        .get_aggregate("ash", Default::default())
        .await
        .expect("read")
        .aggregate
        .expect("exists");
    assert!(after.state.name.is_forgotten());
    assert_eq!(after.state.name_letters, 0);
    assert_eq!(after.state.caught, 1);
    let state = trainers
        .get_aggregate_state("ash", Default::default())
        .await
        .expect("state");
    assert_eq!(state.aggregate.expect("exists").state.name_letters, 0);

    // Another subject is untouched.
    let misty = trainers
        .get_events("misty", Default::default())
        .await
        .expect("events");
    assert_eq!(
        name_of(&misty[0]).known().map(String::as_str),
        Some("Misty")
    );

    // New data about the forgotten subject gets a new key; the old stays forgotten.
    trainers
        .push_events("ash", 2, [registered("ash", "Ash again")], &())
        .await
        .expect("push after forget");
    let events = trainers
        .get_events("ash", Default::default())
        .await
        .expect("events");
    assert!(name_of(&events[0]).is_forgotten());
    assert_eq!(
        name_of(&events[2]).known().map(String::as_str),
        Some("Ash again")
    );
}
on_both!(forgetting_a_subject_makes_every_read_path_see_forgotten);

async fn a_view_sees_forgotten_values(kind: Kind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(kind, dir.path());
    let trainers = trainers(&adapter);
    trainers
        .push_events("ash", 0, [registered("ash", "Ash")], &())
        .await
        .expect("push");
    let last = trainers
        .push_events("brock", 0, [registered("brock", "Brock")], &())
        .await
        .expect("push")
        .positions()
        .end
        - 1;
    trainers.forget("ash").await.expect("forget");

    let state = Arc::new(StateStore::open(dir.path().join("state.redb")).expect("state"));
    let view = KvView::builder("names", 1)
        .on(
            &trainers,
            |tables: &mut KvTables<'_>, event: &EventDetail<TrainerEvent>| {
                if let TrainerEvent::Registered(r) = &event.event {
                    let shown = match &r.name {
                        Personal::Known { value, .. } => value.clone(),
                        Personal::Forgotten { .. } => "(forgotten)".to_owned(),
                        Personal::Unreadable { .. } => "(unreadable)".to_owned(),
                    };
                    tables.put("names", &event.aggregate_id, &shown)?;
                }
                Ok::<(), KvError>(())
            },
        )
        .build(state)
        .expect("view");
    let runner = view.run(adapter.clone());
    view.wait_for(last, Duration::from_secs(30))
        .await
        .expect("caught up");
    assert_eq!(
        view.get::<String>("names", "ash").expect("get").as_deref(),
        Some("(forgotten)")
    );
    assert_eq!(
        view.get::<String>("names", "brock")
            .expect("get")
            .as_deref(),
        Some("Brock")
    );
    runner.stop().await.expect("stop");
}
on_both!(a_view_sees_forgotten_values);
