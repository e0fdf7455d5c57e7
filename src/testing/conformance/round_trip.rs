//! Pushes read back byte for byte, at gap-free positions in commit order.

use std::sync::Arc;

use crate::storage::{AppendEvent, EncodedEvent, Position, StorageAdapter, StoredEvent, Timestamp};

use super::events::{EVENT_TYPE, OTHER_STORE, STORE, at, event, ids, list_all, push, read_all};

/// Pushed events read back byte for byte: payload, metadata, timestamp, type and schema
/// version, at the boundaries of every id and size limit, with the positions the push returned.
pub async fn push_round_trips_events_byte_for_byte(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "push_round_trips_events_byte_for_byte";
    let adapter = &*adapter;
    let limits = *adapter.limits();
    let all_bytes: Vec<u8> = (0..=255).collect();
    let long_type = "T".repeat(limits.event_type_bytes_max);
    // A large payload, but within the adapter's event limit next to the other fields.
    let room = limits
        .event_bytes_max
        .saturating_sub("round trip é".len() + long_type.len() + all_bytes.len());
    let pseudo_random: Vec<u8> = (0u32..65_536)
        .take(room)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let events = [
        EncodedEvent {
            aggregate_id: "round trip é".to_owned(),
            version: 1,
            timestamp: Timestamp::from_unix_millis(0),
            event_type: "A".to_owned(),
            schema_version: 1,
            payload: Vec::new(),
            metadata: Vec::new(),
        },
        EncodedEvent {
            aggregate_id: "round trip é".to_owned(),
            version: 2,
            timestamp: Timestamp::from_unix_millis(-1),
            event_type: "ÉVÉNEMENT_ÜNICODE".to_owned(),
            schema_version: 7,
            payload: all_bytes.clone(),
            metadata: vec![0xc0],
        },
        EncodedEvent {
            aggregate_id: "round trip é".to_owned(),
            version: 3,
            // 9999-12-31T23:59:59.999Z, the last instant of ISO 8601's four-digit years.
            timestamp: Timestamp::from_unix_millis(253_402_300_799_999),
            event_type: long_type,
            schema_version: u32::MAX,
            payload: pseudo_random,
            metadata: all_bytes.iter().rev().copied().collect(),
        },
        EncodedEvent {
            aggregate_id: "round trip é".to_owned(),
            version: 4,
            // 0001-01-01T00:00:00.000Z
            timestamp: Timestamp::from_unix_millis(-62_135_596_800_000),
            event_type: EVENT_TYPE.to_owned(),
            schema_version: 0,
            payload: b"\0\0\0".to_vec(),
            metadata: b"{\"trigger\":\"random\"}".to_vec(),
        },
    ];
    let mut pushed = Vec::new();
    for e in &events {
        let positions = push(CHECK, adapter, vec![at(STORE, e.clone())]).await;
        pushed.push(positions[0]);
    }
    let stored = read_all(CHECK, adapter, STORE, "round trip é").await;
    let read_back: Vec<&EncodedEvent> = stored.iter().map(|s| &s.event).collect();
    assert_eq!(
        read_back,
        events.iter().collect::<Vec<_>>(),
        "{CHECK}: events read back"
    );
    let positions: Vec<Position> = stored.iter().map(|s| s.position).collect();
    assert_eq!(
        positions, pushed,
        "{CHECK}: stored positions are the pushed ones"
    );

    // Ids at their maximum length, with multi-byte characters in the aggregate id.
    let long_store = "S".repeat(limits.event_store_id_bytes_max);
    let mut long_aggregate = "é".repeat(limits.aggregate_id_bytes_max / 2);
    long_aggregate.push_str(&"a".repeat(limits.aggregate_id_bytes_max % 2));
    assert_eq!(long_aggregate.len(), limits.aggregate_id_bytes_max);
    let long = event(&long_aggregate, 1);
    let position = push(CHECK, adapter, vec![at(&long_store, long.clone())]).await[0];
    let stored = read_all(CHECK, adapter, &long_store, &long_aggregate).await;
    assert_eq!(
        stored,
        vec![StoredEvent {
            position,
            event: long
        }],
        "{CHECK}: an event with ids at their maximum length reads back"
    );
    let listed = list_all(CHECK, adapter, &long_store).await;
    assert_eq!(
        ids(&listed),
        [long_aggregate.as_str()],
        "{CHECK}: long ids are listed"
    );
}

/// Positions start at 1 on a fresh adapter, grow by exactly 1 per committed event across
/// stores, aggregates and groups (consecutive and in input order within a group), and refused
/// commits consume none.
pub async fn positions_are_gap_free_and_follow_commit_order(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "positions_are_gap_free_and_follow_commit_order";
    let adapter = &*adapter;
    let mut next: Position = 1;
    let mut expect_next = |positions: Vec<Position>, what: &str| {
        let expected: Vec<Position> = (next..next + positions.len() as u64).collect();
        assert_eq!(positions, expected, "{CHECK}: positions of {what}");
        next += positions.len() as u64;
    };
    let p = push(CHECK, adapter, vec![at(STORE, event("a", 1))]).await;
    expect_next(p, "the first push on a fresh adapter");
    let p = push(CHECK, adapter, vec![at(OTHER_STORE, event("a", 1))]).await;
    expect_next(p, "a push to another store");
    let group = vec![
        at(STORE, event("b", 1)),
        at(OTHER_STORE, event("b", 1)),
        at(STORE, event("a", 2)),
        at(STORE, event("b", 2)),
    ];
    let p = push(CHECK, adapter, group).await;
    expect_next(p.clone(), "a group");
    for (store, aggregate_id, version, position) in [
        (STORE, "b", 1, p[0]),
        (OTHER_STORE, "b", 1, p[1]),
        (STORE, "a", 2, p[2]),
        (STORE, "b", 2, p[3]),
    ] {
        let stored = read_all(CHECK, adapter, store, aggregate_id).await;
        let found = stored.iter().find(|s| s.event.version == version);
        assert_eq!(
            found.map(|s| s.position),
            Some(position),
            "{CHECK}: {store}/{aggregate_id} v{version} is stored at the position returned"
        );
    }

    // Refusals of every kind, each followed by a push that must take the very next position.
    let refused: Vec<(&str, Vec<AppendEvent>)> = vec![
        ("a conflict", vec![at(STORE, event("a", 1))]),
        ("a gap", vec![at(STORE, event("a", 9))]),
        ("version 0", vec![at(STORE, event("c", 0))]),
        (
            "an invalid type",
            vec![at(
                STORE,
                EncodedEvent {
                    event_type: String::new(),
                    ..event("c", 1)
                },
            )],
        ),
        (
            "a group with a late conflict",
            vec![
                at(STORE, event("c", 1)),
                at(OTHER_STORE, event("c", 1)),
                at(STORE, event("b", 1)),
            ],
        ),
    ];
    for (i, (what, commit)) in refused.into_iter().enumerate() {
        let result = adapter.push_event_group(commit).await;
        assert!(result.is_err(), "{CHECK}: {what} was accepted: {result:?}");
        let probe = format!("probe-{i}");
        let p = push(CHECK, adapter, vec![at(STORE, event(&probe, 1))]).await;
        expect_next(p, &format!("the push after {what}"));
    }

    // Positions read back increase with versions.
    for (store, aggregate_id) in [(STORE, "a"), (STORE, "b"), (OTHER_STORE, "b")] {
        let stored = read_all(CHECK, adapter, store, aggregate_id).await;
        assert!(
            stored.windows(2).all(|w| w[0].position < w[1].position),
            "{CHECK}: positions of {store}/{aggregate_id} increase with versions: {stored:?}"
        );
    }
}
