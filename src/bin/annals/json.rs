//! JSON values that keep what a file said, for `import` and `export`: members in their order,
//! `null`s, and integers exact over the whole 64-bit range.
//!
//! Payloads and metadata are stored as MessagePack, whose maps keep their order. Going through
//! `serde_json::Value` would sort object members (its map is ordered by key unless the
//! `preserve_order` feature is on, and features are shared by everything an application
//! builds) and would turn integers it cannot hold into floats. So a line is read by a small
//! parser of its own into [`Json`], which serializes in order to MessagePack (through the
//! [codec](annals::codec)) and to JSON (through `serde_json`'s writer), and which deserializes
//! from MessagePack in order.
//!
//! What a round trip (import, then export) keeps byte for byte: member order, `null`, strings,
//! integers from -2^63 to 2^64-1, and floats written the way `serde_json` writes them (the shortest
//! form that reads back to the same number, e.g. `1.5`, `1e-7`, `1e+300`). What it normalizes:
//! whitespace outside strings, escapes in strings that need none (`\u00e9` comes back as `é`), `-0`
//! (comes back as `0`), and floats written another way (`1.50`, `1E3` come back as `1.5`,
//! `1000.0`). What it refuses: duplicate keys in an object (which value would count is ambiguous),
//! integers outside the 64-bit range (MessagePack has no wider integer, and a float would lose
//! digits) and numbers too large for a 64-bit float.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// How deeply arrays and objects may nest (as in `serde_json`), so a hostile line cannot
/// exhaust the stack.
const DEPTH_MAX: usize = 128;

/// A JSON value with its object members in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// An integer from 0 to 2^64-1.
    Unsigned(u64),
    /// A negative integer down to -2^63.
    Negative(i64),
    Float(f64),
    /// A 32-bit float, as MessagePack may hold one (written by a typed `f32` field).
    Float32(f32),
    String(String),
    Array(Vec<Json>),
    /// Members in their order; no two with one key when parsed from JSON.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The value as JSON text, in order, on one line.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("a Json value always serializes to JSON")
    }

    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Unsigned(_) | Json::Negative(_) => "an integer",
            Json::Float(_) | Json::Float32(_) => "a float",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

/// Why a text is not JSON [`parse`] takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The column (1-based, in characters) where it was found.
    pub column: usize,
    /// What is wrong there.
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at column {}", self.reason, self.column)
    }
}

/// Parses one JSON value (surrounded by optional whitespace).
pub fn parse(text: &str) -> Result<Json, ParseError> {
    let mut parser = Parser { text, pos: 0 };
    parser.skip_whitespace();
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.pos < text.len() {
        return Err(parser.error("trailing characters after the value"));
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a str,
    /// Byte offset of the next character.
    pos: usize,
}

impl Parser<'_> {
    fn error_at(&self, pos: usize, reason: impl Into<String>) -> ParseError {
        ParseError {
            column: self.text[..pos].chars().count() + 1,
            reason: reason.into(),
        }
    }

    fn error(&self, reason: impl Into<String>) -> ParseError {
        self.error_at(self.pos, reason)
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), ParseError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(format!("expected {what}")))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, ParseError> {
        match self.peek() {
            None => Err(self.error("expected a value, found the end of the line")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Json::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, ParseError> {
        if self.text[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn nest(&self, depth: usize) -> Result<(), ParseError> {
        if depth > DEPTH_MAX {
            return Err(self.error(format!("nested more than {DEPTH_MAX} levels deep")));
        }
        Ok(())
    }

    fn object(&mut self, depth: usize) -> Result<Json, ParseError> {
        self.nest(depth)?;
        self.pos += 1;
        let mut members = Vec::new();
        let mut keys = HashSet::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Object(members));
        }
        loop {
            self.skip_whitespace();
            let at = self.pos;
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a key (a string)"));
            }
            let key = self.string()?;
            if !keys.insert(key.clone()) {
                return Err(self.error_at(at, format!("duplicate key {key:?}")));
            }
            self.skip_whitespace();
            self.expect(b':', "':' after a key")?;
            self.skip_whitespace();
            let value = self.value(depth)?;
            members.push((key, value));
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Object(members));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, ParseError> {
        self.nest(depth)?;
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Json::Array(items));
        }
        loop {
            self.skip_whitespace();
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    /// A string, from its opening quote.
    fn string(&mut self) -> Result<String, ParseError> {
        self.pos += 1;
        let mut out = String::new();
        let mut run = self.pos;
        loop {
            let Some(byte) = self.peek() else {
                return Err(self.error("unterminated string"));
            };
            match byte {
                b'"' => {
                    out.push_str(&self.text[run..self.pos]);
                    self.pos += 1;
                    return Ok(out);
                }
                b'\\' => {
                    out.push_str(&self.text[run..self.pos]);
                    self.pos += 1;
                    out.push(self.escape()?);
                    run = self.pos;
                }
                0x00..=0x1f => {
                    return Err(self.error("a control character in a string must be escaped"));
                }
                // Multi-byte characters are copied with the run: the text is UTF-8 already.
                _ => self.pos += 1,
            }
        }
    }

    /// The character of an escape, after its backslash.
    fn escape(&mut self) -> Result<char, ParseError> {
        let at = self.pos - 1;
        let Some(byte) = self.peek() else {
            return Err(self.error("unterminated string"));
        };
        self.pos += 1;
        Ok(match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                let code = if (0xD800..0xDC00).contains(&first) {
                    if !self.text[self.pos..].starts_with("\\u") {
                        return Err(self.error_at(at, "a lone leading surrogate"));
                    }
                    self.pos += 2;
                    let second = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&second) {
                        return Err(self.error_at(at, "a lone leading surrogate"));
                    }
                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                } else {
                    first
                };
                char::from_u32(code)
                    .ok_or_else(|| self.error_at(at, "a lone trailing surrogate"))?
            }
            _ => return Err(self.error_at(at, "an invalid escape")),
        })
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("expected four hex digits after \\u"))?;
        self.pos += 4;
        Ok(u32::from_str_radix(digits, 16).expect("four hex digits"))
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Json, ParseError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        if self.digits() == 0 {
            return Err(self.error("expected a digit"));
        }
        if self.text.as_bytes()[int_start] == b'0' && self.pos - int_start > 1 {
            return Err(self.error_at(int_start, "a number may not start with 0"));
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error("expected a digit after '.'"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            integer = false;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("expected a digit in the exponent"));
            }
        }
        let text = &self.text[start..self.pos];
        if integer {
            let value = if text.starts_with('-') {
                text.parse::<i64>().ok().map(|n| {
                    if n == 0 {
                        Json::Unsigned(0)
                    } else {
                        Json::Negative(n)
                    }
                })
            } else {
                text.parse::<u64>().ok().map(Json::Unsigned)
            };
            return value.ok_or_else(|| {
                self.error_at(
                    start,
                    format!(
                        "the integer {text} is outside the range -2^63 to 2^64-1 that events \
                         store exactly (write it as a string)"
                    ),
                )
            });
        }
        // `str::parse` rounds correctly, so a float written the way it is printed reads back to
        // the same bits.
        match text.parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(Json::Float(value)),
            _ => Err(self.error_at(
                start,
                format!("the number {text} is too large for a 64-bit float"),
            )),
        }
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Unsigned(n) => serializer.serialize_u64(*n),
            Json::Negative(n) => serializer.serialize_i64(*n),
            Json::Float(f) => serializer.serialize_f64(*f),
            Json::Float32(f) => serializer.serialize_f32(*f),
            Json::String(s) => serializer.serialize_str(s),
            Json::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            #[cfg(feature = "personal")]
            Json::Object(members) if is_personal(members) && !serializer.is_human_readable() => {
                // Written back as the extension it was read from (`annals import`).
                let body = annals::personal::body_from_json(&self.to_value())
                    .map_err(serde::ser::Error::custom)?;
                annals::personal::ExtBody(&body).serialize(serializer)
            }
            Json::Object(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (key, value) in members {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

/// Whether an object's members are the JSON form of a personal value.
#[cfg(feature = "personal")]
fn is_personal(members: &[(String, Json)]) -> bool {
    matches!(members, [(key, Json::Object(_))] if key == annals::personal::TAG_KEY)
}

#[cfg(feature = "personal")]
impl Json {
    /// The value as a `serde_json` value (object members sorted; integers and floats as
    /// `serde_json` holds them).
    pub fn to_value(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Unsigned(n) => Value::from(*n),
            Json::Negative(n) => Value::from(*n),
            Json::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Json::Float32(f) => {
                serde_json::Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number)
            }
            Json::String(s) => Value::String(s.clone()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect(),
            ),
        }
    }

    /// A `serde_json` value as a [`Json`].
    pub fn from_value(value: serde_json::Value) -> Json {
        use serde_json::Value;
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Json::Unsigned(u),
                (None, Some(i)) => Json::Negative(i),
                _ => Json::Float(n.as_f64().unwrap_or_default()),
            },
            Value::String(s) => Json::String(s),
            Value::Array(items) => Json::Array(items.into_iter().map(Json::from_value).collect()),
            Value::Object(members) => Json::Object(
                members
                    .into_iter()
                    .map(|(k, v)| (k, Json::from_value(v)))
                    .collect(),
            ),
        }
    }

    /// Marks every encrypted personal value whose key `keys` no longer holds as forgotten
    /// (see [`annals::personal::mark_forgotten`]).
    #[cfg(feature = "personal")]
    pub fn mark_forgotten(
        &mut self,
        keys: &annals::storage::Keys,
    ) -> Result<(), annals::StorageError> {
        match self {
            Json::Array(items) => items.iter_mut().try_for_each(|i| i.mark_forgotten(keys)),
            Json::Object(members) if is_personal(members) => {
                let mut value = self.to_value();
                annals::personal::mark_forgotten(&mut value, keys)?;
                *self = Json::from_value(value);
                Ok(())
            }
            Json::Object(members) => members
                .iter_mut()
                .try_for_each(|(_, v)| v.mark_forgotten(keys)),
            _ => Ok(()),
        }
    }
}

/// Reads a self-describing format (MessagePack) in order. Maps keep every entry, duplicates
/// included; a map key that is not a string, binary data and extension types have no JSON
/// form and are errors.
impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value with a JSON form")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(match u64::try_from(v) {
            Ok(n) => Json::Unsigned(n),
            Err(_) => Json::Negative(v),
        })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Unsigned(v))
    }

    fn visit_f32<E: de::Error>(self, v: f32) -> Result<Json, E> {
        Ok(Json::Float32(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        Json::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    /// A MessagePack extension: a personal value's JSON form (feature `personal`).
    #[cfg(feature = "personal")]
    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        let (tag, body) = annals::personal::read_ext(deserializer)?;
        if tag != annals::personal::EXT_TYPE {
            return Err(de::Error::custom(format!(
                "a MessagePack extension of type {tag} has no JSON form"
            )));
        }
        annals::personal::body_to_json(&body)
            .map(Json::from_value)
            .map_err(de::Error::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some(key) = map.next_key::<Json>()? {
            let Json::String(key) = key else {
                return Err(de::Error::custom(format!(
                    "a map key is {}, and JSON keys are strings",
                    key.kind()
                )));
            };
            members.push((key, map.next_value()?));
        }
        Ok(Json::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> String {
        let value = parse(text).expect("parses");
        let packed = annals::codec::encode(&value).expect("encodes");
        let back: Json = annals::codec::decode(&packed).expect("decodes");
        assert_eq!(back, value);
        back.to_text()
    }

    #[test]
    fn order_nulls_and_the_whole_integer_range_survive_message_pack() {
        for text in [
            r#"{"z":1,"a":{"y":null,"b":[3,2,{"k":null}]},"m":null}"#,
            r#"[18446744073709551615,-9223372036854775808,0,-1,1.5,-0.25,1e-7,1e+300]"#,
            r#""é\n\"\\ \u0001 😀""#,
            "null",
            "{}",
            "[]",
        ] {
            assert_eq!(round_trip(text), text);
        }
    }

    #[test]
    fn what_cannot_be_kept_exactly_is_refused() {
        for (text, reason) in [
            ("18446744073709551616", "outside the range"),
            ("-9223372036854775809", "outside the range"),
            ("1e400", "too large"),
            (r#"{"a":1,"a":2}"#, "duplicate key \"a\""),
            (r#""\ud800""#, "lone leading surrogate"),
            ("[1,]", "expected a value"),
            ("01", "may not start with 0"),
            ("{} x", "trailing"),
            ("\"a\tb\"", "control character"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.reason.contains(reason), "{text}: {error}");
        }
        let deep = "[".repeat(DEPTH_MAX + 1) + &"]".repeat(DEPTH_MAX + 1);
        assert!(parse(&deep).unwrap_err().reason.contains("nested"));
        assert!(parse(&("[".repeat(DEPTH_MAX) + &"]".repeat(DEPTH_MAX))).is_ok());
    }

    #[test]
    fn escapes_and_spacing_are_normalized() {
        assert_eq!(
            round_trip(r#" { "a" : "\u00e9\/" , "b" : -0 , "c" : 1E3 } "#),
            r#"{"a":"é/","b":0,"c":1000.0}"#
        );
    }
}
