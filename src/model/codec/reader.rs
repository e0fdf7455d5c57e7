//! A MessagePack reader over borrowed bytes for the part of the format payloads use, calling
//! a serde visitor exactly as `rmp-serde` 1.3 does there; [`super::decode_borrowed`] tries it
//! first and leaves everything else to `rmp-serde`.
//!
//! Why: a typed replay spent two thirds of its time decoding, and a third of that validating
//! strings — field names included — through `str::from_utf8`, one call of about 70
//! instructions per string. This reader checks a string with `is_ascii` (a word at a time)
//! and calls `from_utf8` only for the rest, and reads markers straight from the slice with
//! one bounds check per step: a typical event decodes in about 60% of the instructions
//! (`benches/compare`, `docs/benchmarks.md`).
//!
//! **It declines** what it does not mirror exactly: ext values (so personal values), 128-bit
//! integers, strings that are not UTF-8 (`rmp-serde` offers those to the visitor as bytes),
//! binary where a sequence is asked for, an enum's value form in anything but a one-entry
//! map, nesting deeper than [`MAX_DEPTH`], and every error it would raise itself — a
//! truncated value, a length mismatch, trailing bytes. A decline
//! sets a flag that no visitor can swallow, and the bytes are decoded again by `rmp-serde`,
//! so a refused value gets `rmp-serde`'s error message.
//!
//! **Why the results are `rmp-serde`'s**: a `Deserialize` implementation sees nothing of a
//! deserializer but the calls it receives. For every input it accepts, this reader makes
//! the calls `rmp-serde` makes, in the same order with the same arguments, so a visitor
//! builds the same value — or raises (and perhaps swallows) the same error. The unit tests
//! below check it on generated values and on damaged bytes; the `metadata_decoders` fuzz
//! target checks it on arbitrary bytes.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Visitor};

/// Containers nested deeper than this are left to `rmp-serde` (whose own limit is 1,024).
const MAX_DEPTH: u16 = 128;

/// The name `rmp-serde` gives a newtype struct that holds an ext value.
const EXT_STRUCT_NAME: &str = "_ExtStruct";

/// Decodes `bytes` (one whole value) if the fast reader can; `None` when it declined.
pub(crate) fn decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Option<T> {
    let mut reader = Reader {
        bytes,
        at: 0,
        depth: MAX_DEPTH,
        declined: false,
    };
    match T::deserialize(&mut reader) {
        Ok(value) if !reader.declined && reader.at == bytes.len() => Some(value),
        _ => None,
    }
}

/// The reader's only error: "left to `rmp-serde`". Errors raised by visitors are mapped to
/// it as well; they are raised again, with their message, by the second decode.
#[derive(Debug)]
struct Declined;

impl fmt::Display for Declined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("left to rmp-serde")
    }
}

impl std::error::Error for Declined {}

impl de::Error for Declined {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Declined
    }
}

/// A cursor over one borrowed MessagePack value.
struct Reader<'de> {
    bytes: &'de [u8],
    at: usize,
    /// Containers that may still be entered.
    depth: u16,
    /// Set by every error this reader raises, so a visitor that swallows one cannot hide it.
    declined: bool,
}

impl<'de> Reader<'de> {
    #[cold]
    fn decline<T>(&mut self) -> Result<T, Declined> {
        self.declined = true;
        Err(Declined)
    }

    #[inline]
    fn peek(&mut self) -> Result<u8, Declined> {
        match self.bytes.get(self.at) {
            Some(&b) => Ok(b),
            None => self.decline(),
        }
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'de [u8], Declined> {
        let bytes = self.bytes;
        match self
            .at
            .checked_add(n)
            .and_then(|end| bytes.get(self.at..end))
        {
            Some(taken) => {
                self.at += n;
                Ok(taken)
            }
            None => self.decline(),
        }
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Declined> {
        let taken = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(taken);
        Ok(out)
    }

    #[inline]
    fn len8(&mut self) -> Result<usize, Declined> {
        Ok(usize::from(self.array::<1>()?[0]))
    }

    #[inline]
    fn len16(&mut self) -> Result<usize, Declined> {
        Ok(usize::from(u16::from_be_bytes(self.array()?)))
    }

    #[inline]
    fn len32(&mut self) -> Result<usize, Declined> {
        Ok(u32::from_be_bytes(self.array()?) as usize)
    }

    /// `rmp-serde`'s `any_inner`: the value as its marker says.
    fn any<V: Visitor<'de>>(
        &mut self,
        visitor: V,
        allow_bytes: bool,
    ) -> Result<V::Value, Declined> {
        let marker = self.peek()?;
        self.at += 1;
        match marker {
            0x00..=0x7f => visitor.visit_u8(marker),
            0xe0..=0xff => visitor.visit_i8(marker as i8),
            0xc0 => visitor.visit_unit(),
            0xc2 => visitor.visit_bool(false),
            0xc3 => visitor.visit_bool(true),
            0xcc => visitor.visit_u8(u8::from_be_bytes(self.array()?)),
            0xcd => visitor.visit_u16(u16::from_be_bytes(self.array()?)),
            0xce => visitor.visit_u32(u32::from_be_bytes(self.array()?)),
            0xcf => visitor.visit_u64(u64::from_be_bytes(self.array()?)),
            0xd0 => visitor.visit_i8(i8::from_be_bytes(self.array()?)),
            0xd1 => visitor.visit_i16(i16::from_be_bytes(self.array()?)),
            0xd2 => visitor.visit_i32(i32::from_be_bytes(self.array()?)),
            0xd3 => visitor.visit_i64(i64::from_be_bytes(self.array()?)),
            0xca => visitor.visit_f32(f32::from_be_bytes(self.array()?)),
            0xcb => visitor.visit_f64(f64::from_be_bytes(self.array()?)),
            0xa0..=0xbf => self.str(usize::from(marker & 0x1f), visitor),
            0xd9 => {
                let len = self.len8()?;
                self.str(len, visitor)
            }
            0xda => {
                let len = self.len16()?;
                self.str(len, visitor)
            }
            0xdb => {
                let len = self.len32()?;
                self.str(len, visitor)
            }
            0x90..=0x9f => self.seq(usize::from(marker & 0x0f), visitor),
            0xdc => {
                let len = self.len16()?;
                self.seq(len, visitor)
            }
            0xdd => {
                let len = self.len32()?;
                self.seq(len, visitor)
            }
            0x80..=0x8f => self.map(usize::from(marker & 0x0f), visitor),
            0xde => {
                let len = self.len16()?;
                self.map(len, visitor)
            }
            0xdf => {
                let len = self.len32()?;
                self.map(len, visitor)
            }
            0xc4..=0xc6 if allow_bytes => {
                let len = match marker {
                    0xc4 => self.len8()?,
                    0xc5 => self.len16()?,
                    _ => self.len32()?,
                };
                let bytes = self.take(len)?;
                visitor.visit_borrowed_bytes(bytes)
            }
            // Binary asked for as a sequence, ext values, the reserved marker.
            _ => self.decline(),
        }
    }

    #[inline]
    fn str<V: Visitor<'de>>(&mut self, len: usize, visitor: V) -> Result<V::Value, Declined> {
        let bytes = self.take(len)?;
        match utf8(bytes) {
            Some(s) => visitor.visit_borrowed_str(s),
            // rmp-serde offers the bytes to the visitor instead: left to it.
            None => self.decline(),
        }
    }

    fn seq<V: Visitor<'de>>(&mut self, len: usize, visitor: V) -> Result<V::Value, Declined> {
        self.enter()?;
        let mut access = Elements {
            de: self,
            left: len,
        };
        let value = visitor.visit_seq(&mut access)?;
        let left = access.left;
        self.depth += 1;
        if left != 0 {
            return self.decline();
        }
        Ok(value)
    }

    fn map<V: Visitor<'de>>(&mut self, len: usize, visitor: V) -> Result<V::Value, Declined> {
        self.enter()?;
        let mut access = Elements {
            de: self,
            left: len,
        };
        let value = visitor.visit_map(&mut access)?;
        let left = access.left;
        self.depth += 1;
        if left != 0 {
            return self.decline();
        }
        Ok(value)
    }

    #[inline]
    fn enter(&mut self) -> Result<(), Declined> {
        if self.depth == 0 {
            return self.decline();
        }
        self.depth -= 1;
        Ok(())
    }

    /// `rmp-serde`'s `any_num`: nil, booleans and numbers only.
    #[inline]
    fn number<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, Declined> {
        match self.peek()? {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 | 0xca..=0xcb | 0xcc..=0xd3 => {
                self.any(visitor, true)
            }
            _ => self.decline(),
        }
    }
}

macro_rules! numbers {
    ($($method:ident)*) => {
        $(
            #[inline]
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
                self.number(visitor)
            }
        )*
    };
}

macro_rules! anything {
    ($($method:ident)*) => {
        $(
            #[inline]
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
                self.any(visitor, true)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = Declined;

    fn is_human_readable(&self) -> bool {
        false
    }

    numbers!(deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_f32
        deserialize_f64);

    anything!(deserialize_any deserialize_char deserialize_str deserialize_string
        deserialize_bytes deserialize_byte_buf deserialize_unit deserialize_map
        deserialize_identifier deserialize_ignored_any);

    fn deserialize_i128<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Declined> {
        self.decline()
    }

    fn deserialize_u128<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Declined> {
        self.decline()
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        if self.peek()? == 0xc0 {
            self.at += 1;
            visitor.visit_none()
        } else {
            visitor.visit_some(&mut *self)
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Declined> {
        match self.peek()? {
            0xc0 | 0x90 => {
                self.at += 1;
                visitor.visit_unit()
            }
            _ => self.any(visitor, true),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Declined> {
        if name == EXT_STRUCT_NAME {
            return self.decline();
        }
        visitor.visit_newtype_struct(&mut *self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.any(visitor, false)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Declined> {
        self.any(visitor, false)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Declined> {
        self.any(visitor, false)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Declined> {
        self.any(visitor, false)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Declined> {
        // A map, as rmp-serde writes a variant with a value: `{name: value}`. (rmp-serde takes
        // only a map there, through `rmp::decode::marker_to_len`; not an array.)
        let marker = self.peek()?;
        let len = match marker {
            0x80..=0x8f => {
                self.at += 1;
                usize::from(marker & 0x0f)
            }
            0xde => {
                self.at += 1;
                self.len16()?
            }
            0xdf => {
                self.at += 1;
                self.len32()?
            }
            // Anything else is a unit variant's name (or an error the visitor will raise).
            _ => return visitor.visit_enum(UnitVariant { de: self }),
        };
        if len != 1 {
            return self.decline();
        }
        visitor.visit_enum(Variant { de: self })
    }
}

/// The elements of an array, or the entries of a map, still to be read.
struct Elements<'a, 'de> {
    de: &'a mut Reader<'de>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Elements<'_, 'de> {
    type Error = Declined;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Declined> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::MapAccess<'de> for Elements<'_, 'de> {
    type Error = Declined;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Declined> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    #[inline]
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Declined> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// An enum written as a one-entry map: the variant, then its value.
struct Variant<'a, 'de> {
    de: &'a mut Reader<'de>,
}

impl<'de> de::EnumAccess<'de> for Variant<'_, 'de> {
    type Error = Declined;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Declined> {
        let variant = seed.deserialize(&mut *self.de)?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, 'de> {
    type Error = Declined;

    fn unit_variant(self) -> Result<(), Declined> {
        if self.de.peek()? != 0xc0 {
            return self.de.decline();
        }
        self.de.at += 1;
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Declined> {
        seed.deserialize(self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Declined> {
        de::Deserializer::deserialize_tuple(self.de, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Declined> {
        de::Deserializer::deserialize_tuple(self.de, fields.len(), visitor)
    }
}

/// An enum written as its variant's name alone: a unit variant.
struct UnitVariant<'a, 'de> {
    de: &'a mut Reader<'de>,
}

impl<'de> de::EnumAccess<'de> for UnitVariant<'_, 'de> {
    type Error = Declined;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Declined> {
        let variant = seed.deserialize(&mut *self.de)?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for UnitVariant<'_, 'de> {
    type Error = Declined;

    fn unit_variant(self) -> Result<(), Declined> {
        Ok(())
    }

    // rmp-serde refuses the other kinds here: left to it, with its message.
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, Declined> {
        self.de.decline()
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, Declined> {
        self.de.decline()
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Declined> {
        self.de.decline()
    }
}

/// `bytes` as text, if they are UTF-8.
///
/// The crate's one `unsafe` block. Nearly every string of a payload — field names, ids,
/// most values — is ASCII, which `is_ascii` confirms a machine word at a time; `from_utf8`
/// spends about 70 instructions on even a short string, a third of a typical event's
/// decode. Anything else goes through `from_utf8`.
#[inline]
#[allow(unsafe_code)]
fn utf8(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: every byte is below 0x80, and any sequence of ASCII bytes is valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

/// Samples of what the reader declines, for the tests of the fallback here and in `codec`:
/// an ext value (type 5), a string that is not UTF-8, binary (which a `Vec<u8>` asks for as a
/// sequence), a value followed by a byte.
#[cfg(test)]
pub(super) const EXT: &[u8] = &[0xd4, 0x05, 0x01];
#[cfg(test)]
pub(super) const LATIN1: &[u8] = &[0xa2, b'o', 0xe9];
#[cfg(test)]
pub(super) const BIN: &[u8] = &[0xc4, 0x02, 1, 2];
#[cfg(test)]
pub(super) const TRAILING: &[u8] = &[0x01, 0xc0];
#[cfg(test)]
const DECLINED: [&[u8]; 4] = [EXT, LATIN1, BIN, TRAILING];

/// An array nested `depth` deep around a nil.
#[cfg(test)]
pub(super) fn nested(depth: u16) -> Vec<u8> {
    std::iter::repeat_n(0x91, usize::from(depth))
        .chain([0xc0])
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::{BIN, DECLINED, EXT, LATIN1, MAX_DEPTH, TRAILING, decode, nested};

    /// The reference: rmp-serde alone, as `codec` falls back to it.
    fn decode_with_rmp_serde<'de, T: Deserialize<'de>>(
        bytes: &'de [u8],
    ) -> Result<T, rmp_serde::decode::Error> {
        T::deserialize(&mut rmp_serde::Deserializer::from_read_ref(bytes))
    }

    /// Named fields, as `codec::encode` writes them.
    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(value).expect("a test value encodes")
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Unit;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Wrapper(String);

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Pair(u8, i64);

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Kind {
        Plain,
        Named(String),
        Both(u8, bool),
        Fields { a: i32, b: String },
    }

    /// Every part of serde's data model a payload is likely to use.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Rich {
        id: String,
        count: u32,
        delta: i64,
        ratio: f64,
        small: f32,
        flag: bool,
        letter: char,
        note: Option<String>,
        nested: Option<Option<u8>>,
        kind: Kind,
        kinds: Vec<Kind>,
        tuple: (u8, String, i16),
        map: BTreeMap<u32, String>,
        unit: Unit,
        wrapper: Wrapper,
        pair: Pair,
        #[serde(default)]
        added_later: u16,
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Plain),
            ".{0,12}".prop_map(Kind::Named),
            (any::<u8>(), any::<bool>()).prop_map(|(a, b)| Kind::Both(a, b)),
            (any::<i32>(), ".{0,40}").prop_map(|(a, b)| Kind::Fields { a, b }),
        ]
    }

    fn rich() -> impl Strategy<Value = Rich> {
        (
            (
                ".{0,40}",
                any::<u32>(),
                any::<i64>(),
                -1e9f64..1e9,
                any::<i16>(),
            ),
            (
                any::<bool>(),
                any::<char>(),
                proptest::option::of(".{0,300}"),
            ),
            (
                proptest::option::of(proptest::option::of(any::<u8>())),
                kind(),
            ),
            (
                proptest::collection::vec(kind(), 0..20),
                (any::<u8>(), "[a-z]{0,3}", any::<i16>()),
            ),
            proptest::collection::btree_map(any::<u32>(), ".{0,8}", 0..20),
            (".{0,5}", any::<u8>(), any::<i64>()),
        )
            .prop_map(|(a, b, c, d, map, e)| Rich {
                id: a.0,
                count: a.1,
                delta: a.2,
                ratio: a.3,
                small: f32::from(a.4),
                flag: b.0,
                letter: b.1,
                note: b.2,
                nested: c.0,
                kind: c.1,
                kinds: d.0,
                tuple: d.1,
                map,
                unit: Unit,
                wrapper: Wrapper(e.0),
                pair: Pair(e.1, e.2),
                added_later: 0,
            })
    }

    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            (-1e12f64..1e12).prop_map(serde_json::Value::from),
            ".{0,40}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(".{0,8}", inner, 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Whatever the fast reader accepts, `rmp-serde` reads as the same value.
    fn agrees<'de, T: Deserialize<'de> + std::fmt::Debug>(bytes: &'de [u8]) -> bool {
        match decode::<T>(bytes) {
            Some(fast) => {
                let reference = decode_with_rmp_serde::<T>(bytes)
                    .unwrap_or_else(|e| panic!("the fast reader read {fast:?}; rmp-serde: {e}"));
                // Debug compares NaNs (damaged floats) as equal, as they read the same.
                assert_eq!(format!("{fast:?}"), format!("{reference:?}"));
                true
            }
            None => false,
        }
    }

    proptest! {
        #[test]
        fn values_with_named_or_positional_fields_read_as_rmp_serde_reads_them(value in rich()) {
            let named = encode(&value);
            let positional = rmp_serde::to_vec(&value).unwrap();
            for bytes in [&named, &positional] {
                // Not always `value`: `Some(None)` is written as nil, which reads as `None`.
                prop_assert!(agrees::<Rich>(bytes), "declined");
                // Integer map keys have no JSON form: both refuse those, alike.
                agrees::<serde_json::Value>(bytes);
            }
        }

        #[test]
        fn json_values_read_as_rmp_serde_reads_them(value in json()) {
            let bytes = encode(&value);
            prop_assert_eq!(decode::<serde_json::Value>(&bytes), Some(value));
        }

        #[test]
        fn damaged_bytes_read_as_rmp_serde_reads_them_or_are_declined(
            value in rich(),
            damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let whole = encode(&value);
            let cut = cut.index(whole.len());
            prop_assert!(decode::<Rich>(&whole[..cut]).is_none(), "a truncated value is declined");
            let mut bytes = whole;
            for (at, byte) in damage {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            for bytes in [&bytes[..], &bytes[..cut]] {
                agrees::<Rich>(bytes);
                agrees::<serde_json::Value>(bytes);
                agrees::<serde::de::IgnoredAny>(bytes);
            }
        }
    }

    #[test]
    fn what_the_reader_does_not_mirror_is_declined() {
        // `codec`'s tests check that rmp-serde then reads these.
        for bytes in DECLINED {
            assert!(decode::<serde_json::Value>(bytes).is_none(), "{bytes:?}");
        }
        assert!(decode::<String>(LATIN1).is_none());
        assert!(decode::<Vec<u8>>(BIN).is_none());
        assert!(decode::<u8>(TRAILING).is_none());
        assert!(decode::<serde_json::Value>(EXT).is_none());
        let big = rmp_serde::to_vec(&(u128::MAX / 3)).unwrap();
        assert!(decode::<u128>(&big).is_none());
        assert!(decode::<serde_json::Value>(&nested(MAX_DEPTH)).is_some());
        assert!(decode::<serde_json::Value>(&nested(MAX_DEPTH + 1)).is_none());
    }

    #[test]
    fn an_enum_is_read_from_a_one_entry_map_only_as_rmp_serde_does() {
        // `{"Named": "x"}`, then the same with the map marker turned into an array's:
        // rmp-serde reads the array as a unit variant's name, which fails; so does this reader.
        let map = encode(&Kind::Named("x".into()));
        assert_eq!(map[0], 0x81);
        assert_eq!(decode::<Kind>(&map), Some(Kind::Named("x".into())));
        let mut array = map.clone();
        array[0] = 0x91;
        assert!(decode_with_rmp_serde::<Kind>(&array).is_err());
        assert!(!agrees::<Kind>(&array));
        let in_a_list = [&[0x92][..], &array, &encode(&Kind::Plain)].concat();
        assert!(decode_with_rmp_serde::<Vec<Kind>>(&in_a_list).is_err());
        assert!(!agrees::<Vec<Kind>>(&in_a_list));
    }

    #[test]
    fn an_error_a_visitor_swallows_still_sends_the_bytes_to_rmp_serde() {
        // A field that falls back to its default when it does not read: the reader's own
        // error (a truncated string) must not be hidden by it.
        #[derive(Debug, PartialEq, Deserialize)]
        struct Lenient {
            #[serde(deserialize_with = "or_default")]
            name: String,
        }
        fn or_default<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
            Ok(String::deserialize(d).unwrap_or_default())
        }
        // {"name": "ab"} with the string's length claiming 5 bytes.
        let bytes = [0x81, 0xa4, b'n', b'a', b'm', b'e', 0xa5, b'a', b'b'];
        assert!(decode::<Lenient>(&bytes).is_none());
    }
}
