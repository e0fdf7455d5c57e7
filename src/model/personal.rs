//! Crypto-shredding (feature `personal`): personal data in events and states, encrypted with a
//! key per *subject* (the person it is about), so that destroying the key
//! ([`EventStore::forget`]) makes every copy of that data unreadable — in the log, in
//! snapshots, in backups — while the events themselves stay, immutable, for everything else
//! they say.
//!
//! A field of type [`Personal<T>`] is written by an event store as a MessagePack extension
//! value (type [`EXT_TYPE`]) holding the subject, the id of the subject's key and `T`'s
//! MessagePack bytes encrypted with XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`: a
//! random 24-byte nonce from the operating system per value, the format byte, subject and key
//! id bound as associated data). It reads back as [`Personal::Known`] while the key exists,
//! [`Personal::Forgotten`] once it is destroyed, and [`Personal::Unreadable`] if the
//! ciphertext does not authenticate (it was altered) or no key store is at hand; never as an
//! error that stops a replay, so reducers decide what a forgotten value means.
//!
//! Keys live in the adapter's key store ([`StorageAdapter::keys`]): `keys.redb` beside a log
//! adapter's log, the `personal_keys` table on PostgreSQL, memory for the in-memory adapter.
//! Serde's hooks are synchronous, so the event store makes its adapter's keys available to
//! them for the duration of each encode and decode (a thread-local scope); the key store's
//! cache answers in memory, and a miss is fetched (or, when writing, a key created and stored
//! durably) on the spot. Outside such a scope, writing a known value fails: personal data
//! never reaches bytes unencrypted.
//!
//! Untyped readers — `annals export`, `events`, `get`, `tail`, the console — show the
//! extension as JSON without decrypting it (see [`codec::to_json`](super::codec::to_json)):
//! `{"$personal": {"subject": "ash", "sealed": "<hex>"}}`, or, where the tool reads the
//! adapter's keys and the key is gone, `{"$personal": {"subject": "ash", "forgotten": true}}`.
//! A typed value serialized to JSON (the console's typed view, an HTTP response) never shows
//! its value either: `{"$personal": {"subject": "ash"}}`.
//!
//! [`EventStore::forget`]: crate::model::event_store::EventStore::forget
//! [`StorageAdapter::keys`]: crate::storage::StorageAdapter::keys

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use serde::de::{self, DeserializeOwned, Deserializer, SeqAccess, Visitor};
use serde::ser::{self, Serializer};
use serde::{Deserialize, Serialize};

use crate::storage::{Keys, StorageAdapter, StorageError, SubjectKey};

/// The MessagePack extension type of an encrypted personal value (80, ASCII `P`).
pub const EXT_TYPE: i8 = 80;

/// Envelope formats (the body's first byte).
const SEALED: u8 = 1;
const FORGOTTEN: u8 = 2;
const UNREADABLE: u8 = 3;
const KEY_ID_BYTES: usize = 8;
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;

/// A value of personal data about a subject: an event's or a state's field that can be
/// forgotten. See the [module docs](self).
///
/// ```
/// use annals::personal::Personal;
/// let email = Personal::new("trainer-ash", "ash@pallet.town".to_owned());
/// assert_eq!(email.subject(), "trainer-ash");
/// assert_eq!(email.known().map(String::as_str), Some("ash@pallet.town"));
///
/// // What a reducer does with it:
/// let shown = match &email {
///     Personal::Known { value, .. } => value.clone(),
///     Personal::Forgotten { .. } => "(forgotten)".to_owned(),
///     Personal::Unreadable { .. } => "(unreadable)".to_owned(),
/// };
/// assert_eq!(shown, "ash@pallet.town");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Personal<T> {
    /// The value, decrypted (or not yet written).
    Known {
        /// Whom the value is about.
        subject: String,
        /// The value.
        value: T,
    },
    /// The subject's key was destroyed: the value is gone for good.
    Forgotten {
        /// Whom the value was about.
        subject: String,
    },
    /// The value cannot be decrypted here: its bytes were altered (the authentication tag
    /// does not match), or it was read without the adapter's key store (a
    /// [`LogReader`](crate::storage::LogReader), a plain [`codec::decode`](super::codec::decode)).
    Unreadable {
        /// Whom the value is about.
        subject: String,
    },
}

impl<T> Personal<T> {
    /// A known value about `subject`.
    pub fn new(subject: impl Into<String>, value: T) -> Self {
        Personal::Known {
            subject: subject.into(),
            value,
        }
    }

    /// Whom the value is about.
    pub fn subject(&self) -> &str {
        match self {
            Personal::Known { subject, .. }
            | Personal::Forgotten { subject }
            | Personal::Unreadable { subject } => subject,
        }
    }

    /// The value, if it is known.
    pub fn known(&self) -> Option<&T> {
        match self {
            Personal::Known { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The value, if it is known, by value.
    pub fn into_known(self) -> Option<T> {
        match self {
            Personal::Known { value, .. } => Some(value),
            _ => None,
        }
    }

    /// Whether the subject's key was destroyed.
    pub fn is_forgotten(&self) -> bool {
        matches!(self, Personal::Forgotten { .. })
    }
}

/// The value itself is never shown: a `Debug` form can end up in logs.
impl<T> fmt::Debug for Personal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self {
            Personal::Known { .. } => "Known",
            Personal::Forgotten { .. } => "Forgotten",
            Personal::Unreadable { .. } => "Unreadable",
        };
        write!(f, "Personal::{state}({:?}, ..)", self.subject())
    }
}

// ---------------------------------------------------------------------------------------------
// The key scope: which adapter's keys serde's hooks use, and what happened meanwhile.

struct Active {
    adapter: Option<Arc<dyn StorageAdapter>>,
    outcome: Outcome,
}

/// What personal values met during one encode or decode.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The key store failed: the pass's result is not to be trusted.
    pub(crate) failure: Option<StorageError>,
    /// A known value was to be written with no key store at hand.
    pub(crate) no_key_store: bool,
    /// An encrypted value read as forgotten or unreadable.
    pub(crate) lost: bool,
}

thread_local! {
    static ACTIVE: RefCell<Option<Active>> = const { RefCell::new(None) };
    /// Set when a personal value is met outside any scope (see [`scoped`]).
    static NEEDED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` — an encode or decode of one store — with the keys of `adapter()` available to
/// the personal values it meets, paying for the scope only once the store has met one: until
/// `seen` (the store's flag) is set, `f` runs without a scope, and only if it meets a personal
/// value (which then fails to encode, or reads as unreadable) is the flag set and `f` run again
/// in a scope. So a store that never holds personal data pays one thread-local flag per pass.
pub(crate) fn scoped<R>(
    seen: &AtomicBool,
    adapter: impl FnOnce() -> Option<Arc<dyn StorageAdapter>>,
    mut f: impl FnMut() -> R,
) -> (R, Outcome) {
    if !seen.load(Ordering::Relaxed) {
        NEEDED.set(false);
        let result = f();
        if !NEEDED.get() {
            return (result, Outcome::default());
        }
        seen.store(true, Ordering::Relaxed);
    }
    let adapter = adapter();
    within(adapter.as_ref(), f)
}

/// Runs `f` with `adapter`'s keys available to the personal values it encodes or decodes;
/// returns its result and what those values met. Scopes nest (the inner one wins).
pub(crate) fn within<R>(
    adapter: Option<&Arc<dyn StorageAdapter>>,
    f: impl FnOnce() -> R,
) -> (R, Outcome) {
    struct Restore(Option<Option<Active>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(previous) = self.0.take() {
                let _ = ACTIVE.try_with(|a| *a.borrow_mut() = previous);
            }
        }
    }
    let entered = Active {
        adapter: adapter.cloned(),
        outcome: Outcome::default(),
    };
    let previous = ACTIVE.with(|a| a.borrow_mut().replace(entered));
    let mut restore = Restore(Some(previous));
    let result = f();
    let previous = restore.0.take().unwrap_or_default();
    let active = ACTIVE.with(|a| std::mem::replace(&mut *a.borrow_mut(), previous));
    (result, active.map(|a| a.outcome).unwrap_or_default())
}

/// What the current scope offers: `None` outside any scope, `Some(None)` in a scope whose
/// adapter keeps no keys.
fn with_keys<R>(f: impl FnOnce(Option<&Keys>) -> R) -> Option<R> {
    ACTIVE.with(|a| {
        let active = a.borrow();
        let active = active.as_ref()?;
        Some(f(active
            .adapter
            .as_deref()
            .and_then(|adapter| adapter.keys())))
    })
}

fn note(f: impl FnOnce(&mut Outcome)) {
    ACTIVE.with(|a| {
        if let Some(active) = a.borrow_mut().as_mut() {
            f(&mut active.outcome);
        }
    });
}

/// A fresh key: a random id and a random 256-bit secret from the operating system.
fn new_key() -> SubjectKey {
    let mut id = [0u8; KEY_ID_BYTES];
    OsRng.fill_bytes(&mut id);
    let mut secret = XChaCha20Poly1305::generate_key(&mut OsRng);
    let key = SubjectKey::new(id, secret.into());
    secret.iter_mut().for_each(|b| *b = 0);
    key
}

// ---------------------------------------------------------------------------------------------
// The envelope: the extension's body.

/// The parts of an envelope's body.
struct Envelope<'a> {
    format: u8,
    subject: &'a str,
    /// For a sealed value: the bytes bound as associated data (format, subject length, subject,
    /// key id), the key id, the nonce and the ciphertext with its tag.
    sealed: Option<Sealed<'a>>,
}

struct Sealed<'a> {
    associated: &'a [u8],
    key_id: [u8; KEY_ID_BYTES],
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

/// Why an envelope's bytes are not one.
fn malformed(reason: &str) -> String {
    format!("malformed personal value: {reason}")
}

impl<'a> Envelope<'a> {
    fn parse(body: &'a [u8]) -> Result<Self, String> {
        let (&format, rest) = body.split_first().ok_or_else(|| malformed("empty"))?;
        let len = rest
            .get(..2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
            .ok_or_else(|| malformed("truncated"))?;
        let subject_end = 3 + len;
        let subject = body
            .get(3..subject_end)
            .ok_or_else(|| malformed("truncated subject"))?;
        let subject = std::str::from_utf8(subject).map_err(|_| malformed("subject not UTF-8"))?;
        let sealed = match format {
            SEALED => {
                let id_end = subject_end + KEY_ID_BYTES;
                let nonce_end = id_end + NONCE_BYTES;
                if body.len() < nonce_end + TAG_BYTES {
                    return Err(malformed("truncated ciphertext"));
                }
                let mut key_id = [0u8; KEY_ID_BYTES];
                key_id.copy_from_slice(&body[subject_end..id_end]);
                Some(Sealed {
                    associated: &body[..id_end],
                    key_id,
                    nonce: &body[id_end..nonce_end],
                    ciphertext: &body[nonce_end..],
                })
            }
            FORGOTTEN | UNREADABLE if body.len() == subject_end => None,
            FORGOTTEN | UNREADABLE => return Err(malformed("trailing bytes")),
            _ => return Err(malformed("unknown format")),
        };
        Ok(Envelope {
            format,
            subject,
            sealed,
        })
    }
}

/// Appends the header of an envelope (format, subject length, subject) to `out`.
fn header(format: u8, subject: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let len = u16::try_from(subject.len())
        .map_err(|_| format!("a subject of {} bytes is too long", subject.len()))?;
    out.push(format);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(subject.as_bytes());
    Ok(())
}

/// The sealed body of `value` about `subject` under `key`.
fn seal<T: Serialize>(subject: &str, value: &T, key: &SubjectKey) -> Result<Vec<u8>, String> {
    let mut body = Vec::with_capacity(64 + subject.len());
    header(SEALED, subject, &mut body)?;
    body.extend_from_slice(&key.id());
    let associated_end = body.len();
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    body.extend_from_slice(&nonce);
    let start = body.len();
    rmp_serde::encode::write_named(&mut body, value).map_err(|e| e.to_string())?;
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key.secret()));
    let (head, plaintext) = body.split_at_mut(start);
    let tag = cipher
        .encrypt_in_place_detached(&nonce, &head[..associated_end], plaintext)
        .map_err(|_| "encryption failed".to_owned())?;
    body.extend_from_slice(&tag);
    Ok(body)
}

/// A sealed value's plaintext, `None` if it does not authenticate under `key`.
fn open(sealed: &Sealed<'_>, key: &SubjectKey) -> Option<Vec<u8>> {
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key.secret()));
    let split = sealed.ciphertext.len() - TAG_BYTES;
    let mut plaintext = sealed.ciphertext[..split].to_vec();
    let tag = Tag::from_slice(&sealed.ciphertext[split..]);
    cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(sealed.nonce),
            sealed.associated,
            &mut plaintext,
            tag,
        )
        .ok()?;
    Some(plaintext)
}

/// A marker body: a forgotten or unreadable value, which holds no data.
fn marker(format: u8, subject: &str) -> Result<Vec<u8>, String> {
    let mut body = Vec::with_capacity(3 + subject.len());
    header(format, subject, &mut body)?;
    Ok(body)
}

/// The body a value is written as in the current scope.
fn body_of<T: Serialize>(value: &Personal<T>) -> Result<Vec<u8>, String> {
    let (subject, value) = match value {
        Personal::Known { subject, value } => (subject, value),
        Personal::Forgotten { subject } => return marker(FORGOTTEN, subject),
        Personal::Unreadable { subject } => return marker(UNREADABLE, subject),
    };
    let key = with_keys(|keys| keys.map(|keys| keys.get_or_create(subject, new_key)));
    match key {
        None => {
            NEEDED.set(true);
            Err(
                "personal data can only be written by an event store (it is encrypted with \
                 its adapter's keys)"
                    .to_owned(),
            )
        }
        Some(None) => {
            note(|o| o.no_key_store = true);
            Err("personal data cannot be written: the storage adapter keeps no keys".to_owned())
        }
        Some(Some(Err(e))) => {
            let reason = format!("the key store failed: {e}");
            note(|o| o.failure = Some(e));
            Err(reason)
        }
        Some(Some(Ok(key))) => seal(subject, value, &key),
    }
}

/// The value a body reads as in the current scope.
fn read_body<T: DeserializeOwned>(body: &[u8]) -> Result<Personal<T>, String> {
    let envelope = Envelope::parse(body)?;
    let subject = envelope.subject.to_owned();
    let lost = |subject, forgotten| {
        note(|o| o.lost = true);
        Ok(if forgotten {
            Personal::Forgotten { subject }
        } else {
            Personal::Unreadable { subject }
        })
    };
    let sealed = match (envelope.format, envelope.sealed) {
        (FORGOTTEN, _) => return Ok(Personal::Forgotten { subject }),
        (SEALED, Some(sealed)) => sealed,
        _ => return Ok(Personal::Unreadable { subject }),
    };
    let key = with_keys(|keys| keys.map(|keys| keys.get(&subject)));
    let key = match key {
        None => {
            NEEDED.set(true);
            return lost(subject, false);
        }
        Some(None) => return lost(subject, false),
        Some(Some(Err(e))) => {
            let reason = format!("the key store failed: {e}");
            note(|o| o.failure = Some(e));
            return Err(reason);
        }
        Some(Some(Ok(key))) => key,
    };
    // No key, or another one than the value was sealed with: that one was destroyed.
    let Some(key) = key.filter(|k| k.id() == sealed.key_id) else {
        return lost(subject, true);
    };
    let Some(plaintext) = open(&sealed, &key) else {
        return lost(subject, false);
    };
    let mut de = rmp_serde::Deserializer::from_read_ref(&plaintext);
    match T::deserialize(&mut de) {
        Ok(value) => Ok(Personal::Known { subject, value }),
        Err(e) => Err(format!("personal value of {subject:?}: {e}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Serde.

/// Borrowed bytes serialized as a MessagePack bin.
struct Bin<'a>(&'a [u8]);

impl Serialize for Bin<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<T: Serialize> Serialize for Personal<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let mut fields = serde_json::Map::new();
            fields.insert("subject".into(), self.subject().into());
            let flag = match self {
                Personal::Known { .. } => None,
                Personal::Forgotten { .. } => Some("forgotten"),
                Personal::Unreadable { .. } => Some("unreadable"),
            };
            if let Some(flag) = flag {
                fields.insert(flag.into(), true.into());
            }
            let mut outer = serde_json::Map::new();
            outer.insert(TAG_KEY.into(), fields.into());
            return outer.serialize(s);
        }
        let body = body_of(self).map_err(ser::Error::custom)?;
        s.serialize_newtype_struct(rmp_serde::MSGPACK_EXT_STRUCT_NAME, &(EXT_TYPE, Bin(&body)))
    }
}

/// The key of the JSON object that stands for a personal value.
pub const TAG_KEY: &str = "$personal";

impl<'de, T: DeserializeOwned> Deserialize<'de> for Personal<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let value = serde_json::Value::deserialize(d)?;
            let body = body_from_json(&value).map_err(de::Error::custom)?;
            return read_body(&body).map_err(de::Error::custom);
        }
        let (tag, body) = d.deserialize_newtype_struct(rmp_serde::MSGPACK_EXT_STRUCT_NAME, Ext)?;
        if tag != EXT_TYPE {
            return Err(de::Error::custom(format!(
                "expected a personal value (extension type {EXT_TYPE}), found extension type {tag}"
            )));
        }
        read_body(&body).map_err(de::Error::custom)
    }
}

/// Reads a MessagePack extension: its type and body.
pub(crate) struct Ext;

impl<'de> Visitor<'de> for Ext {
    type Value = (i8, Vec<u8>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a personal value (a MessagePack extension)")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_tuple(2, self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let tag: i8 = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let body: BodyBytes = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        Ok((tag, body.0))
    }
}

struct BodyBytes(Vec<u8>);

impl<'de> Deserialize<'de> for BodyBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = BodyBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<BodyBytes, E> {
                Ok(BodyBytes(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<BodyBytes, E> {
                Ok(BodyBytes(v))
            }
        }
        d.deserialize_bytes(V)
    }
}

// ---------------------------------------------------------------------------------------------
// JSON forms, for untyped readers.

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// The JSON form of the extension body of a personal value, as untyped readers show it:
/// `{"$personal": {"subject": …, "sealed": "<hex of the body>"}}` for an encrypted value
/// (nothing is decrypted), `{"$personal": {"subject": …, "forgotten": true}}` or
/// `… "unreadable": true` for the markers a forgotten or unreadable value is written as.
/// [`body_from_json`] turns it back into the same bytes.
pub fn body_to_json(body: &[u8]) -> Result<serde_json::Value, String> {
    let envelope = Envelope::parse(body)?;
    let mut fields = serde_json::Map::new();
    fields.insert("subject".into(), envelope.subject.into());
    let (name, value) = match envelope.format {
        SEALED => ("sealed", hex(body).into()),
        FORGOTTEN => ("forgotten", true.into()),
        _ => ("unreadable", true.into()),
    };
    fields.insert(name.into(), value);
    let mut outer = serde_json::Map::new();
    outer.insert(TAG_KEY.into(), fields.into());
    Ok(outer.into())
}

/// The extension body a JSON form of [`body_to_json`] stands for.
pub fn body_from_json(value: &serde_json::Value) -> Result<Vec<u8>, String> {
    let fields = value
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get(TAG_KEY))
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| format!("expected a personal value ({{\"{TAG_KEY}\": {{…}}}})"))?;
    let subject = fields
        .get("subject")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| malformed("no subject"))?;
    let flag = |name| fields.get(name) == Some(&serde_json::Value::Bool(true));
    if let Some(sealed) = fields.get("sealed") {
        let body = sealed
            .as_str()
            .and_then(unhex)
            .ok_or_else(|| malformed("sealed is not hex"))?;
        let envelope = Envelope::parse(&body)?;
        if envelope.subject != subject || envelope.format != SEALED {
            return Err(malformed("sealed does not match the subject"));
        }
        return Ok(body);
    }
    if flag("forgotten") {
        return marker(FORGOTTEN, subject);
    }
    if flag("unreadable") {
        return marker(UNREADABLE, subject);
    }
    Err(format!(
        "personal value of {subject:?}: its value was left out of this JSON (a typed value \
         shown as JSON never includes it)"
    ))
}

/// Marks, in a JSON value rendered by [`codec::to_json`](super::codec::to_json), every
/// encrypted personal value whose key `keys` no longer holds as forgotten (its sealed bytes
/// are dropped: nothing can decrypt them). What `annals export` and the console show.
pub fn mark_forgotten(value: &mut serde_json::Value, keys: &Keys) -> Result<(), StorageError> {
    match value {
        serde_json::Value::Array(items) => {
            for item in items {
                mark_forgotten(item, keys)?;
            }
        }
        serde_json::Value::Object(fields) => {
            let body = fields
                .get(TAG_KEY)
                .and_then(|inner| inner.get("sealed"))
                .and_then(serde_json::Value::as_str)
                .and_then(unhex)
                .filter(|_| fields.len() == 1);
            if let Some(body) = body {
                if let Ok(Envelope {
                    subject,
                    sealed: Some(sealed),
                    ..
                }) = Envelope::parse(&body)
                {
                    let alive = keys.get(subject)?.is_some_and(|k| k.id() == sealed.key_id);
                    if !alive {
                        let marker = marker(FORGOTTEN, subject)
                            .map_err(|reason| StorageError::InvalidConfiguration { reason })?;
                        if let Ok(json) = body_to_json(&marker) {
                            *value = json;
                        }
                    }
                }
                return Ok(());
            }
            for item in fields.values_mut() {
                mark_forgotten(item, keys)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Encodes a JSON form of [`body_to_json`] back into its MessagePack extension (for
/// `annals import`).
pub fn ext_from_json(value: &serde_json::Value) -> Result<Vec<u8>, String> {
    let body = body_from_json(value)?;
    rmp_serde::to_vec(&ExtBody(&body)).map_err(|e| e.to_string())
}

/// Reads a MessagePack extension as rmp-serde hands it to a visitor's `visit_newtype_struct`:
/// its type and body (for readers of untyped MessagePack that render personal values).
pub fn read_ext<'de, D: Deserializer<'de>>(d: D) -> Result<(i8, Vec<u8>), D::Error> {
    Ext.visit_newtype_struct(d)
}

/// The body of a personal value ([`body_from_json`]), serialized to MessagePack as its
/// extension: how a tool writes back a value it read untyped.
#[derive(Debug, Clone, Copy)]
pub struct ExtBody<'a>(pub &'a [u8]);

impl Serialize for ExtBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(rmp_serde::MSGPACK_EXT_STRUCT_NAME, &(EXT_TYPE, Bin(self.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::InMemoryAdapter;

    fn adapter() -> Arc<dyn StorageAdapter> {
        Arc::new(InMemoryAdapter::new())
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Trainer {
        name: Personal<String>,
        level: u32,
    }

    fn trainer() -> Trainer {
        Trainer {
            name: Personal::new("ash", "Ash Ketchum".to_owned()),
            level: 5,
        }
    }

    #[test]
    fn a_value_round_trips_within_a_scope_and_is_not_in_the_bytes() {
        let adapter = adapter();
        let (bytes, outcome) = within(Some(&adapter), || rmp_serde::to_vec_named(&trainer()));
        let bytes = bytes.unwrap();
        assert!(outcome.failure.is_none() && !outcome.lost);
        assert!(!bytes.windows(5).any(|w| w == b"Ketch"));
        let (back, outcome) = within(Some(&adapter), || rmp_serde::from_slice::<Trainer>(&bytes));
        assert_eq!(back.unwrap(), trainer());
        assert!(!outcome.lost);
    }

    #[test]
    fn writing_outside_a_store_is_an_error_and_reading_is_unreadable() {
        let err = rmp_serde::to_vec_named(&trainer()).unwrap_err();
        assert!(
            err.to_string()
                .contains("only be written by an event store"),
            "{err}"
        );
        let adapter = adapter();
        let (bytes, _) = within(Some(&adapter), || rmp_serde::to_vec_named(&trainer()));
        let read: Trainer = rmp_serde::from_slice(&bytes.unwrap()).unwrap();
        assert_eq!(
            read.name,
            Personal::Unreadable {
                subject: "ash".into()
            }
        );
    }

    #[test]
    fn a_forgotten_key_reads_as_forgotten_even_after_a_new_key() {
        let adapter = adapter();
        let (bytes, _) = within(Some(&adapter), || rmp_serde::to_vec_named(&trainer()));
        let bytes = bytes.unwrap();
        let keys = adapter.keys().unwrap();
        assert!(keys.forget("ash").unwrap());
        // The subject gets a new key for new data.
        let (_, _) = within(Some(&adapter), || rmp_serde::to_vec_named(&trainer()));
        let (read, outcome) = within(Some(&adapter), || rmp_serde::from_slice::<Trainer>(&bytes));
        assert!(read.unwrap().name.is_forgotten());
        assert!(outcome.lost);
    }

    #[test]
    fn altered_ciphertext_reads_as_unreadable() {
        let adapter = adapter();
        let (bytes, _) = within(Some(&adapter), || rmp_serde::to_vec_named(&trainer()));
        let mut bytes = bytes.unwrap();
        // The name's ciphertext lies before the `level` field, at the end.
        let at = bytes.len() - 12;
        bytes[at] ^= 0x01;
        let (read, outcome) = within(Some(&adapter), || rmp_serde::from_slice::<Trainer>(&bytes));
        assert_eq!(
            read.unwrap().name,
            Personal::Unreadable {
                subject: "ash".into()
            }
        );
        assert!(outcome.lost);
    }
}
