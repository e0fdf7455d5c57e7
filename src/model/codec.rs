//! The payload codec: MessagePack via `rmp-serde`, with field names kept (so payloads stay
//! self-describing and fields can be added or reordered without breaking old events).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value could not be encoded to, or decoded from, MessagePack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// Encodes `value` as MessagePack with named fields.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    rmp_serde::to_vec_named(value).map_err(|e| CodecError(e.to_string()))
}

/// MessagePack nil, what no bytes decode as.
const NIL: &[u8] = &[0xc0];

/// Decodes a MessagePack value; the whole input must be consumed. No bytes at all decode as
/// nil: that is how an event stored without a payload or metadata (imported from a Castore
/// event detail without the key) reads, like one whose payload is `null`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let bytes = if bytes.is_empty() { NIL } else { bytes };
    let mut de = rmp_serde::Deserializer::new(bytes);
    let value = T::deserialize(&mut de).map_err(|e| CodecError(e.to_string()))?;
    let rest = de.into_inner().len();
    if rest != 0 {
        return Err(CodecError(format!("{rest} trailing bytes after the value")));
    }
    Ok(value)
}

/// Renders MessagePack bytes as JSON (for export, HTTP and inspection) without knowing their
/// Rust type.
pub fn to_json(bytes: &[u8]) -> Result<serde_json::Value, CodecError> {
    decode(bytes)
}

/// Encodes a JSON value as MessagePack (for import).
pub fn from_json(value: &serde_json::Value) -> Result<Vec<u8>, CodecError> {
    encode(value)
}
