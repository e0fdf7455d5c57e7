//! The serde form of events and aggregates is Castore's JSON, key for key.

use annals::{Aggregate, EventDetail};
use serde_json::json;

use crate::fixtures::*;

fn pikachu_appeared() -> EventDetail<PokemonEvent> {
    EventDetail {
        aggregate_id: "pikachu1".to_owned(),
        version: 1,
        timestamp: ts("2024-05-01T12:34:56.789Z"),
        event: appeared("Pikachu", 5),
        metadata: PokemonMetadata {
            trigger: Some("random".to_owned()),
        },
    }
}

#[test]
fn event_detail_json_is_exactly_castores_shape() {
    let json = serde_json::to_string(&pikachu_appeared()).unwrap();
    assert_eq!(
        json,
        r#"{"aggregateId":"pikachu1","version":1,"timestamp":"2024-05-01T12:34:56.789Z","#
            .to_owned()
            + r#""type":"POKEMON_APPEARED","payload":{"name":"Pikachu","level":5},"#
            + r#""metadata":{"trigger":"random"}}"#
    );
}

#[test]
fn castore_json_event_deserializes_into_a_typed_detail() {
    // As Castore writes it: another key order, pretty-printed, a timestamp with an offset.
    let castore = r#"
        {
          "type": "POKEMON_APPEARED",
          "version": 1,
          "aggregateId": "pikachu1",
          "payload": { "level": 5, "name": "Pikachu" },
          "metadata": { "trigger": "random" },
          "timestamp": "2024-05-01T14:34:56.789+02:00"
        }"#;
    let detail: EventDetail<PokemonEvent> = serde_json::from_str(castore).unwrap();
    assert_eq!(detail, pikachu_appeared());
}

#[test]
fn castore_json_event_without_payload_or_metadata_deserializes() {
    // JSON.stringify drops `undefined`: events without payload or metadata have no such keys.
    let castore = r#"{"aggregateId":"pikachu1","version":2,
        "timestamp":"2024-05-01T12:34:56.789Z","type":"POKEMON_LEVELED_UP"}"#;
    let detail: EventDetail<PokemonEvent> = serde_json::from_str(castore).unwrap();
    assert_eq!(detail.event, leveled_up());
    assert_eq!(detail.metadata, PokemonMetadata::default());

    let with_nulls = json!({
        "aggregateId": "pikachu1", "version": 2, "timestamp": "2024-05-01T12:34:56.789Z",
        "type": "POKEMON_LEVELED_UP", "payload": null, "metadata": null,
    });
    let detail: EventDetail<PokemonEvent> = serde_json::from_value(with_nulls).unwrap();
    assert_eq!(detail.metadata, PokemonMetadata::default());
}

#[test]
fn event_detail_json_round_trips() {
    for detail in [
        pikachu_appeared(),
        EventDetail {
            aggregate_id: "pikachu1".to_owned(),
            version: 2,
            timestamp: ts("1969-12-31T23:59:59.999Z"),
            event: caught_by("ash"),
            metadata: PokemonMetadata::default(),
        },
    ] {
        let json = serde_json::to_value(&detail).unwrap();
        let back: EventDetail<PokemonEvent> = serde_json::from_value(json).unwrap();
        assert_eq!(back, detail);
    }
}

#[test]
fn json_event_of_an_undeclared_type_is_refused_naming_the_type() {
    let json = json!({
        "aggregateId": "pikachu1", "version": 1, "timestamp": "2024-05-01T12:34:56.789Z",
        "type": "POKEMON_EVOLVED", "payload": {},
    });
    let error = serde_json::from_value::<EventDetail<PokemonEvent>>(json).unwrap_err();
    assert!(error.to_string().contains("POKEMON_EVOLVED"), "{error}");
}

#[test]
fn json_event_with_a_payload_of_the_wrong_shape_is_refused() {
    let json = json!({
        "aggregateId": "pikachu1", "version": 1, "timestamp": "2024-05-01T12:34:56.789Z",
        "type": "POKEMON_APPEARED", "payload": { "name": 42 },
    });
    let error = serde_json::from_value::<EventDetail<PokemonEvent>>(json).unwrap_err();
    assert!(error.to_string().contains("POKEMON_APPEARED"), "{error}");
}

#[test]
fn json_event_at_version_0_or_with_a_bad_timestamp_is_refused() {
    let at_version_0 = json!({
        "aggregateId": "pikachu1", "version": 0, "timestamp": "2024-05-01T12:34:56.789Z",
        "type": "POKEMON_LEVELED_UP", "payload": {},
    });
    assert!(serde_json::from_value::<EventDetail<PokemonEvent>>(at_version_0).is_err());
    let bad_timestamp = json!({
        "aggregateId": "pikachu1", "version": 1, "timestamp": "yesterday",
        "type": "POKEMON_LEVELED_UP", "payload": {},
    });
    assert!(serde_json::from_value::<EventDetail<PokemonEvent>>(bad_timestamp).is_err());
}

#[test]
fn aggregate_json_is_castores_flat_shape() {
    let aggregate = Aggregate {
        aggregate_id: "pikachu1".to_owned(),
        version: 4,
        state: Pokemon {
            name: "Pikachu".to_owned(),
            level: 7,
            trainer_id: Some("ash".to_owned()),
        },
    };
    let json = serde_json::to_value(&aggregate).unwrap();
    assert_eq!(
        json,
        json!({
            "aggregateId": "pikachu1", "version": 4,
            "name": "Pikachu", "level": 7, "trainerId": "ash",
        })
    );
    assert_eq!(
        serde_json::from_value::<Aggregate<Pokemon>>(json).unwrap(),
        aggregate
    );
}
