//! The payload codec: MessagePack via `rmp-serde`, with field names kept (so payloads stay
//! self-describing and fields can be added or reordered without breaking old events).
//!
//! Encoding can append to a buffer the caller reuses ([`encode_into`]); decoding reads
//! straight from the stored bytes, borrowing them where the target type allows
//! ([`decode_borrowed`]) and copying only what an owned value needs ([`decode`]). Decoding
//! goes through a fast reader for the common part of the format first (`reader`), which
//! hands anything else to `rmp-serde` with the same result.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub(crate) mod reader;

/// A value could not be encoded to, or decoded from, MessagePack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// Encodes `value` as MessagePack with named fields.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Appends `value`, encoded as MessagePack with named fields, to `out`: the same bytes as
/// [`encode`], into a buffer the caller can reuse. On an error `out` is left as it was.
///
/// ```
/// let mut buf = Vec::with_capacity(256);
/// annals::codec::encode_into(&("a", 1), &mut buf)?;
/// assert_eq!(buf, annals::codec::encode(&("a", 1))?);
/// buf.clear(); // reused for the next value, without a new allocation
/// # Ok::<(), annals::codec::CodecError>(())
/// ```
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    rmp_serde::encode::write_named(out, value).map_err(|e| {
        out.truncate(start);
        CodecError(e.to_string())
    })
}

/// MessagePack nil, what no bytes decode as.
const NIL: &[u8] = &[0xc0];

/// Decodes a MessagePack value; the whole input must be consumed. No bytes at all decode as
/// nil: that is how an event stored without a payload or metadata (imported from a Castore
/// event detail without the key) reads, like one whose payload is `null`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_borrowed(bytes)
}

/// Decodes a MessagePack value that may borrow from `bytes` (`&str`, `&[u8]`, `Cow`): no copy
/// of what it borrows. Otherwise like [`decode`].
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Appeared<'a> { name: &'a str }
/// let bytes = annals::codec::encode(&serde_json::json!({ "name": "Pikachu" }))?;
/// let appeared: Appeared<'_> = annals::codec::decode_borrowed(&bytes)?;
/// assert_eq!(appeared.name, "Pikachu");
/// # Ok::<(), annals::codec::CodecError>(())
/// ```
pub fn decode_borrowed<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, CodecError> {
    let bytes = if bytes.is_empty() { NIL } else { bytes };
    // The fast reader takes nearly every payload; what it declines, rmp-serde reads.
    match reader::decode(bytes) {
        Some(value) => Ok(value),
        None => decode_with_rmp_serde(bytes),
    }
}

/// [`decode_borrowed`] by `rmp-serde` alone: the reference the fast reader is checked
/// against, and the decoder of whatever it declines.
pub(crate) fn decode_with_rmp_serde<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
) -> Result<T, CodecError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    let value = T::deserialize(&mut de).map_err(|e| CodecError(e.to_string()))?;
    // Nothing may follow the value. The borrowing reader does not tell how much it consumed,
    // but reading on tells: the end of the input there is the common case, answered without
    // walking the value again.
    if let Err(rmp_serde::decode::Error::InvalidMarkerRead(e)) =
        serde::de::IgnoredAny::deserialize(&mut de)
        && e.kind() == std::io::ErrorKind::UnexpectedEof
    {
        return Ok(value);
    }
    // Something follows (or cannot be read): the value decoded, so its first MessagePack
    // value is well formed; measure it to report the trailing bytes.
    match value_len(bytes) {
        Some(len) if len == bytes.len() => Ok(value),
        Some(len) => Err(CodecError(format!(
            "{} trailing bytes after the value",
            bytes.len() - len
        ))),
        None => Err(CodecError("truncated MessagePack value".to_owned())),
    }
}

/// The length in bytes of the first MessagePack value of `bytes`, `None` if it is truncated
/// or uses the reserved marker. Walks markers only; nothing is decoded or allocated.
fn value_len(bytes: &[u8]) -> Option<usize> {
    let mut at = 0usize;
    // Values still to be walked; a container adds its elements.
    let mut pending: u64 = 1;
    let len_at = |at: usize, n: usize| -> Option<usize> {
        let b = bytes.get(at..at + n)?;
        Some(b.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x)))
    };
    while pending > 0 {
        pending -= 1;
        let marker = *bytes.get(at)?;
        at += 1;
        let (skip, elements) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (usize::from(marker & 0x1f), 0),
            0xc1 => return None,
            0xc4 | 0xd9 => (1 + len_at(at, 1)?, 0),
            0xc5 | 0xda => (2 + len_at(at, 2)?, 0),
            0xc6 | 0xdb => (4 + len_at(at, 4)?, 0),
            0xc7 => (2 + len_at(at, 1)?, 0),
            0xc8 => (3 + len_at(at, 2)?, 0),
            0xc9 => (5 + len_at(at, 4)?, 0),
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (2, len_at(at, 2)? as u64),
            0xdd => (4, len_at(at, 4)? as u64),
            0xde => (2, 2 * len_at(at, 2)? as u64),
            0xdf => (4, 2 * len_at(at, 4)? as u64),
        };
        at = at.checked_add(skip)?;
        if at > bytes.len() {
            return None;
        }
        pending = pending.checked_add(elements)?;
    }
    Some(at)
}

/// Renders MessagePack bytes as JSON (for export, HTTP and inspection) without knowing their
/// Rust type.
///
/// With the feature `personal`, an encrypted personal value (a MessagePack extension of type
/// [`personal::EXT_TYPE`](super::personal::EXT_TYPE)) is shown as
/// `{"$personal": {"subject": …, "sealed": "<hex>"}}`, without being decrypted.
#[cfg(not(feature = "personal"))]
pub fn to_json(bytes: &[u8]) -> Result<serde_json::Value, CodecError> {
    decode(bytes)
}

/// Renders MessagePack bytes as JSON (for export, HTTP and inspection) without knowing their
/// Rust type.
///
/// An encrypted personal value (a MessagePack extension of type
/// [`personal::EXT_TYPE`](super::personal::EXT_TYPE)) is shown as
/// `{"$personal": {"subject": …, "sealed": "<hex>"}}`, without being decrypted.
#[cfg(feature = "personal")]
pub fn to_json(bytes: &[u8]) -> Result<serde_json::Value, CodecError> {
    // `serde_json::Value` reads everything but extensions: bytes without one get exactly what
    // they got before (errors included), and only bytes it refuses are read again.
    decode::<serde_json::Value>(bytes).or_else(|plain| {
        decode::<json_with_ext::Json>(bytes)
            .map(|j| j.0)
            .map_err(|_| plain)
    })
}

/// MessagePack to JSON like `serde_json::Value`'s own deserialization, plus the personal
/// extension.
#[cfg(feature = "personal")]
mod json_with_ext {
    use std::fmt;

    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::Value;

    use crate::model::personal;

    pub(super) struct Json(pub(super) Value);

    impl<'de> Deserialize<'de> for Json {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(JsonVisitor).map(Json)
        }
    }

    struct JsonVisitor;

    impl<'de> Visitor<'de> for JsonVisitor {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any valid JSON value")
        }

        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }

        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }

        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }

        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
        }

        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }

        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }

        fn visit_none<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }

        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            Json::deserialize(d).map(|j| j.0)
        }

        fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            // What rmp-serde hands out for an extension: its type and body.
            let (tag, body) = personal::Ext.visit_newtype_struct(d)?;
            if tag != personal::EXT_TYPE {
                return Err(de::Error::custom(format!(
                    "a MessagePack extension of type {tag} has no JSON form"
                )));
            }
            personal::body_to_json(&body).map_err(de::Error::custom)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(Json(item)) = seq.next_element()? {
                items.push(item);
            }
            Ok(Value::Array(items))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut fields = serde_json::Map::new();
            while let Some((key, Json(value))) = map.next_entry::<String, Json>()? {
                fields.insert(key, value);
            }
            Ok(Value::Object(fields))
        }
    }
}

/// Encodes a JSON value as MessagePack (for import).
pub fn from_json(value: &serde_json::Value) -> Result<Vec<u8>, CodecError> {
    encode(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_len_measures_every_kind_of_value() {
        let values = [
            serde_json::json!(null),
            serde_json::json!(true),
            serde_json::json!(-3),
            serde_json::json!(300),
            serde_json::json!(-70000),
            serde_json::json!(u64::MAX),
            serde_json::json!(1.5),
            serde_json::json!("x".repeat(40)),
            serde_json::json!("x".repeat(300)),
            serde_json::json!("x".repeat(70_000)),
            serde_json::json!([1, [2, [3, {"a": [null, "b"]}]]]),
            serde_json::json!((0..20).collect::<Vec<_>>()),
            serde_json::json!(
                (0..20)
                    .map(|i| (i.to_string(), serde_json::json!(i)))
                    .collect::<serde_json::Map<_, _>>()
            ),
        ];
        for value in values {
            let bytes = encode(&value).unwrap();
            assert_eq!(value_len(&bytes), Some(bytes.len()), "{value}");
            assert_eq!(value_len(&bytes[..bytes.len() - 1]), None, "{value}");
        }
        let bin = encode(&serde_bytes_like(&[7u8; 300])).unwrap();
        assert_eq!(value_len(&bin), Some(bin.len()));
    }

    fn serde_bytes_like(b: &[u8]) -> impl Serialize + '_ {
        struct Bytes<'a>(&'a [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        Bytes(b)
    }

    #[test]
    fn what_the_fast_reader_declines_rmp_serde_reads() {
        use super::reader::{BIN, EXT, LATIN1, TRAILING, nested};
        let big = rmp_serde::to_vec(&(u128::MAX / 3)).unwrap();
        assert_eq!(decode::<u128>(&big), Ok(u128::MAX / 3));
        assert_eq!(decode::<Vec<u8>>(BIN), Ok(vec![1, 2]));
        assert_eq!(
            decode::<u8>(TRAILING).unwrap_err().0,
            "1 trailing bytes after the value"
        );
        // Refused as rmp-serde refuses them, with its messages.
        let ext = decode::<serde_json::Value>(EXT).unwrap_err();
        assert_eq!(Err(ext), decode_with_rmp_serde::<serde_json::Value>(EXT));
        let latin1 = decode::<String>(LATIN1).unwrap_err();
        assert_eq!(Err(latin1), decode_with_rmp_serde::<String>(LATIN1));
        // rmp-serde reads deeper than the fast reader; unoptimised, it needs a larger stack.
        let deep = nested(300);
        let read = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(move || decode::<serde_json::Value>(&deep).is_ok())
            .unwrap()
            .join()
            .unwrap();
        assert!(read);
    }

    #[test]
    fn trailing_bytes_are_refused_and_empty_input_is_nil() {
        let mut bytes = encode(&5u32).unwrap();
        bytes.push(0xc0);
        let err = decode::<u32>(&bytes).unwrap_err();
        assert_eq!(err.0, "1 trailing bytes after the value");
        assert_eq!(decode::<Option<u32>>(&[]).unwrap(), None);
    }

    #[test]
    fn encode_into_appends_the_bytes_encode_gives() {
        let mut buf = vec![9];
        encode_into(&("a", 1, [2.5]), &mut buf).unwrap();
        assert_eq!(buf[1..], encode(&("a", 1, [2.5])).unwrap()[..]);
    }
}
