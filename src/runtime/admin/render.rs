//! Events as the console shows them: JSON with the event's ids, position, type and time, its
//! payload and metadata decoded from MessagePack, and how they were decoded.

use serde_json::{Map, Value, json};

use crate::model::codec;
use crate::storage::{EventRef, LoggedEvent, StorageAdapter};

/// Bytes of a payload that does not decode shown in hexadecimal, at most.
const HEX_SHOWN: usize = 256;

/// How an event's payload and metadata were turned into JSON.
pub(crate) enum Decoded {
    /// By the registered store's types (upcasters and aliases applied): Castore's JSON.
    Typed {
        /// The payload.
        payload: Value,
        /// The metadata.
        metadata: Value,
    },
    /// The store is not registered: MessagePack read as plain JSON values.
    Untyped,
    /// The registered store could not decode it (the reason), so shown as plain values.
    Failed(String),
}

/// The JSON of `event` of store `event_store_id`.
pub(crate) fn event_json(event_store_id: &str, event: &EventRef<'_>, decoded: Decoded) -> Value {
    let mut out = Map::new();
    out.insert("position".into(), json!(event.position));
    out.insert("eventStoreId".into(), json!(event_store_id));
    out.insert("aggregateId".into(), json!(event.aggregate_id));
    out.insert("version".into(), json!(event.version));
    out.insert("timestamp".into(), json!(event.timestamp));
    out.insert("type".into(), json!(event.event_type));
    out.insert("schemaVersion".into(), json!(event.schema_version));
    let (payload, metadata, decoded_with, error) = match decoded {
        Decoded::Typed { payload, metadata } => (payload, metadata, "store", None),
        Decoded::Untyped => (
            plain(event.payload),
            plain(event.metadata),
            "messagepack",
            None,
        ),
        Decoded::Failed(reason) => (
            plain(event.payload),
            plain(event.metadata),
            "messagepack",
            Some(reason),
        ),
    };
    out.insert("payload".into(), payload);
    out.insert("metadata".into(), metadata);
    out.insert("decodedWith".into(), json!(decoded_with));
    if let Some(reason) = error {
        out.insert("decodeError".into(), json!(reason));
    }
    Value::Object(out)
}

/// Shows, in the JSON of an event, every encrypted personal value whose key `adapter` no longer
/// holds as forgotten (feature `personal`; a key store that fails leaves the values as they
/// are, sealed). Without the feature, does nothing.
pub(crate) fn mark_forgotten(shown: &mut Value, adapter: &dyn StorageAdapter) {
    #[cfg(feature = "personal")]
    if let Some(keys) = adapter.keys() {
        for part in ["payload", "metadata"] {
            if let Some(value) = shown.get_mut(part)
                && let Err(e) = crate::model::personal::mark_forgotten(value, keys)
            {
                tracing::warn!(error = %e, "the console could not read the store's keys");
            }
        }
    }
    #[cfg(not(feature = "personal"))]
    let _ = (shown, adapter);
}

/// A logged event borrowed as an [`EventRef`].
pub(crate) fn logged_ref(event: &LoggedEvent) -> EventRef<'_> {
    EventRef {
        position: event.position,
        aggregate_id: &event.event.aggregate_id,
        version: event.event.version,
        timestamp: event.event.timestamp,
        event_type: &event.event.event_type,
        schema_version: event.event.schema_version,
        payload: &event.event.payload,
        metadata: &event.event.metadata,
    }
}

/// MessagePack bytes as a JSON value; bytes that are not MessagePack JSON can hold (binary
/// strings, maps keyed by numbers, damage) are shown as their size and leading bytes in hex.
fn plain(bytes: &[u8]) -> Value {
    match codec::to_json(bytes) {
        Ok(value) => value,
        Err(e) => {
            let shown = &bytes[..bytes.len().min(HEX_SHOWN)];
            let hex: String = shown.iter().map(|b| format!("{b:02x}")).collect();
            json!({ "undecodable": e.0, "bytes": bytes.len(), "hex": hex })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Timestamp;

    fn event<'a>(payload: &'a [u8], metadata: &'a [u8]) -> EventRef<'a> {
        EventRef {
            position: 7,
            aggregate_id: "pikachu",
            version: 2,
            timestamp: Timestamp::from_unix_millis(0),
            event_type: "POKEMON_CAUGHT",
            schema_version: 1,
            payload,
            metadata,
        }
    }

    #[test]
    fn messagepack_payloads_read_as_json_values() {
        let payload = codec::encode(&json!({ "trainer": "ash", "level": 5 })).unwrap();
        let shown = event_json("POKEMONS", &event(&payload, &[]), Decoded::Untyped);
        assert_eq!(shown["payload"], json!({ "trainer": "ash", "level": 5 }));
        assert_eq!(shown["metadata"], Value::Null);
        assert_eq!(shown["position"], 7);
        assert_eq!(shown["decodedWith"], "messagepack");
        assert_eq!(shown["timestamp"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn bytes_that_are_not_messagepack_are_shown_in_hex_not_refused() {
        let shown = event_json("POKEMONS", &event(&[0xc1, 0xff], &[]), Decoded::Untyped);
        assert_eq!(shown["payload"]["hex"], "c1ff");
        assert_eq!(shown["payload"]["bytes"], 2);
        let failed = Decoded::Failed("unknown event type".into());
        let shown = event_json("POKEMONS", &event(&[0x80], &[]), failed);
        assert_eq!(shown["decodeError"], "unknown event type");
        assert_eq!(shown["payload"], json!({}));
    }
}
