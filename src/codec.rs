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

/// Decodes a MessagePack value; the whole input must be consumed.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
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
