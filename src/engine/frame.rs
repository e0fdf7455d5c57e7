//! Record framing: how a commit and its events are laid out in a segment.
//!
//! A **commit frame** holds every event of one commit (one push, or one event group across
//! aggregates and stores). Its single checksum covers all of them, so after a crash a commit is
//! wholly readable or wholly rejected. Each **entry** (one event) also carries its own checksum,
//! so a random read of one event is verified without reading its whole commit.
//!
//! A frame is: header (40 bytes), entries (`body_len` bytes), zero padding to a multiple of 8,
//! footer (8 bytes, [`FRAME_FOOTER`]). The header's end mark and the footer are constant bytes
//! that are never zero and have at least two bits set each, so a single flipped bit cannot zero
//! them. Recovery relies on this to tell a torn write (whose missing part reads as zeros) from
//! damage to a frame that was written whole (see `recovery`).
//!
//! Frame header (little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `FRAME_MAGIC` |
//! | 4 | 4 | CRC-32 of bytes 8 .. 40 + body_len |
//! | 8 | 4 | body_len: bytes of entries |
//! | 12 | 1 | kind: 1 = events commit (other values reserved) |
//! | 13 | 3 | reserved, zero |
//! | 16 | 8 | first_position: global position of the first entry |
//! | 24 | 8 | durable_offset: bytes of this segment known durable when the frame was written |
//! | 32 | 4 | entry_count |
//! | 36 | 2 | header check: low 16 bits of the CRC-32 of bytes 8 .. 36 |
//! | 38 | 1 | reserved, zero |
//! | 39 | 1 | end mark [`HEADER_END_MARK`] |
//!
//! Entry (44 bytes of header, then the variable parts in this order):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | entry_len: bytes of the whole entry |
//! | 4 | 4 | CRC-32 of bytes 8 .. entry_len |
//! | 8 | 8 | version |
//! | 16 | 8 | timestamp, milliseconds since the Unix epoch (signed) |
//! | 24 | 4 | schema_version |
//! | 28 | 2 | store id length |
//! | 30 | 2 | aggregate id length |
//! | 32 | 2 | event type length |
//! | 34 | 2 | reserved, zero |
//! | 36 | 4 | payload length |
//! | 40 | 4 | metadata length |
//! | 44 | … | store id, aggregate id, event type (UTF-8), payload, metadata |

use crc32fast::Hasher;

/// Marks the start of a commit frame ("ANLC").
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"ANLC");
/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 40;
/// Bytes of an entry header.
pub const ENTRY_HEADER_BYTES: usize = 44;
/// Frames start at multiples of this.
pub const FRAME_ALIGN: u64 = 8;
/// The last byte of every frame header.
pub const HEADER_END_MARK: u8 = 0xA5;
/// The last 8 bytes of every frame.
pub const FRAME_FOOTER: [u8; 8] = *b"ANLC-END";
/// Bytes of a frame footer.
pub const FRAME_FOOTER_BYTES: usize = FRAME_FOOTER.len();
/// The only frame kind written today; others are reserved for later record types.
pub const KIND_EVENTS: u8 = 1;

/// One event as the engine stores it: ids, version, time and opaque bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEvent {
    /// Event store id.
    pub store: String,
    /// Aggregate id.
    pub aggregate: String,
    /// Version within the aggregate, from 1.
    pub version: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Event type name.
    pub event_type: String,
    /// Schema version of the payload.
    pub schema_version: u32,
    /// Encoded payload.
    pub payload: Vec<u8>,
    /// Encoded metadata.
    pub metadata: Vec<u8>,
}

/// Why bytes are not a valid frame or entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the structure needs.
    #[error("truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The magic number is wrong (not a frame start).
    #[error("bad magic {found:#010x}")]
    BadMagic {
        /// What was found.
        found: u32,
    },
    /// The stored checksum does not match the bytes.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// Checksum in the header.
        stored: u32,
        /// Checksum of the bytes.
        computed: u32,
    },
    /// Lengths or fields are inconsistent.
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

/// The checked header of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes of entries.
    pub body_len: u32,
    /// Frame kind.
    pub kind: u8,
    /// Global position of the first entry.
    pub first_position: u64,
    /// Bytes of the segment durable when this frame was written.
    pub durable_offset: u64,
    /// Number of entries.
    pub entry_count: u32,
}

impl FrameHeader {
    /// Bytes the frame occupies in the segment, padding and footer included.
    pub fn frame_len(&self) -> u64 {
        frame_len(u64::from(self.body_len))
    }

    /// Offset of the footer from the start of the frame.
    pub fn footer_offset(&self) -> u64 {
        self.frame_len() - FRAME_FOOTER_BYTES as u64
    }
}

/// Bytes a frame with `body_len` bytes of entries occupies in a segment.
pub fn frame_len(body_len: u64) -> u64 {
    padded(FRAME_HEADER_BYTES as u64 + body_len) + FRAME_FOOTER_BYTES as u64
}

/// `len` rounded up to [`FRAME_ALIGN`].
pub fn padded(len: u64) -> u64 {
    len.div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// One event to encode into a commit, borrowed from wherever the caller holds it: encoding
/// copies its bytes once, into the commit's frame, and allocates nothing for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewEntry<'a> {
    /// Event store id.
    pub store: &'a str,
    /// Aggregate id.
    pub aggregate: &'a str,
    /// Version within the aggregate, from 1.
    pub version: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Event type name.
    pub event_type: &'a str,
    /// Schema version of the payload.
    pub schema_version: u32,
    /// Encoded payload.
    pub payload: &'a [u8],
    /// Encoded metadata.
    pub metadata: &'a [u8],
}

#[cfg(any(test, feature = "testing"))]
impl LogEvent {
    /// The event as a borrowed [`NewEntry`].
    pub fn as_entry(&self) -> NewEntry<'_> {
        NewEntry {
            store: &self.store,
            aggregate: &self.aggregate,
            version: self.version,
            timestamp_ms: self.timestamp_ms,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            payload: &self.payload,
            metadata: &self.metadata,
        }
    }
}

/// Where an entry sits inside a commit body, and its key fields. The store and aggregate ids
/// are ranges of the commit's id text (see [`EncodedCommit::store`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryKey {
    /// Version.
    pub version: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Offset of the entry within the body.
    pub body_offset: u32,
    /// Length of the entry.
    pub len: u32,
    store: (u32, u32),
    aggregate: (u32, u32),
}

/// A commit's entries encoded ahead of the writer, in the buffer its frame is written from:
/// room for the frame header, then the entries (the body). The writer fills in the header and
/// adds padding and footer in place ([`EncodedCommit::seal`]), so a commit written alone is
/// written from this buffer without another copy.
#[derive(Debug)]
pub struct EncodedCommit {
    /// Key fields of each entry, in order.
    pub keys: Vec<EntryKey>,
    /// The frame: `FRAME_HEADER_BYTES` for the header, the body, and once sealed padding and
    /// footer.
    frame: Vec<u8>,
    /// Bytes of entries.
    body_len: usize,
    /// The store and aggregate ids of the entries, each once per run of equal ids.
    ids: String,
    /// CRC-32 state over the body, once computed ([`EncodedCommit::finish`]).
    body_crc: Option<Hasher>,
}

impl Default for EncodedCommit {
    fn default() -> Self {
        Self::with_buffers(Vec::new(), Vec::new(), String::new())
    }
}

impl EncodedCommit {
    /// Encodes `events` (each copied into the body once): what tests and fuzz targets build
    /// commits with.
    ///
    /// Lengths must fit their fields (`u16` ids and type, `u32` payload and metadata); the
    /// storage floor's limits guarantee it, and this asserts it.
    #[cfg(any(test, feature = "testing"))]
    pub fn encode(events: Vec<LogEvent>) -> Self {
        let mut commit = Self::default();
        commit.reserve(
            events.len(),
            events.iter().map(|e| entry_len(&e.as_entry())).sum(),
        );
        for event in &events {
            commit.push(&event.as_entry());
        }
        commit
    }

    /// An empty commit that reuses the allocations of `frame`, `keys` and `ids` (see
    /// [`EncodedCommit::into_buffers`]).
    pub fn with_buffers(mut frame: Vec<u8>, mut keys: Vec<EntryKey>, mut ids: String) -> Self {
        frame.clear();
        frame.resize(FRAME_HEADER_BYTES, 0);
        keys.clear();
        ids.clear();
        EncodedCommit {
            keys,
            frame,
            body_len: 0,
            ids,
            body_crc: None,
        }
    }

    /// Bytes allocated for the frame.
    pub fn capacity(&self) -> usize {
        self.frame.capacity()
    }

    /// The allocations of this commit, for [`EncodedCommit::with_buffers`].
    pub fn into_buffers(self) -> (Vec<u8>, Vec<EntryKey>, String) {
        (self.frame, self.keys, self.ids)
    }

    /// Makes room for `events` more entries of `bytes` bytes in all.
    pub fn reserve(&mut self, events: usize, bytes: usize) {
        self.keys.reserve(events);
        self.frame
            .reserve(bytes + FRAME_ALIGN as usize + FRAME_FOOTER_BYTES);
    }

    /// Appends one entry to the body. See [`EncodedCommit::encode`] for the lengths.
    pub fn push(&mut self, entry: &NewEntry<'_>) {
        debug_assert_eq!(
            self.frame.len(),
            FRAME_HEADER_BYTES + self.body_len,
            "not sealed"
        );
        let body_offset = u32::try_from(self.body_len).expect("a commit body fits in u32");
        let len = encode_new_entry(entry, &mut self.frame);
        self.body_crc = None;
        self.body_len += len as usize;
        let store = match self.keys.last() {
            Some(last) if self.id(last.store) == entry.store => last.store,
            _ => push_id(&mut self.ids, entry.store),
        };
        let aggregate = match self.keys.last() {
            Some(last) if self.id(last.aggregate) == entry.aggregate => last.aggregate,
            _ => push_id(&mut self.ids, entry.aggregate),
        };
        self.keys.push(EntryKey {
            version: entry.version,
            timestamp_ms: entry.timestamp_ms,
            body_offset,
            len,
            store,
            aggregate,
        });
    }

    fn id(&self, (start, end): (u32, u32)) -> &str {
        &self.ids[start as usize..end as usize]
    }

    /// Computes the body's checksum, in one pass over the whole body, unless it is known:
    /// what the appender does before handing the commit to the writer, so that the writer
    /// only combines it with the header's.
    pub fn finish(&mut self) {
        if self.body_crc.is_none() {
            self.body_crc = Some(body_crc(self.body()));
        }
    }

    /// The event store id of `key`, an entry of this commit.
    pub fn store(&self, key: &EntryKey) -> &str {
        self.id(key.store)
    }

    /// The aggregate id of `key`, an entry of this commit.
    pub fn aggregate(&self, key: &EntryKey) -> &str {
        self.id(key.aggregate)
    }

    /// The entries' bytes.
    pub fn body(&self) -> &[u8] {
        &self.frame[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + self.body_len]
    }

    /// The frame's bytes: complete once [sealed](EncodedCommit::seal).
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }

    /// Bytes the commit's frame occupies in a segment.
    pub fn frame_len(&self) -> u64 {
        frame_len(self.body_len as u64)
    }

    /// Completes the frame in place (header, padding, footer) and returns its bytes: what
    /// [`write_frame`] appends, without a copy. Sealing again rewrites the header.
    pub fn seal(&mut self, first_position: u64, durable_offset: u64) -> &[u8] {
        self.finish();
        let header = encode_frame_header(self, first_position, durable_offset);
        self.frame[..FRAME_HEADER_BYTES].copy_from_slice(&header);
        let footer_at = self.frame_len() as usize - FRAME_FOOTER_BYTES;
        self.frame.truncate(FRAME_HEADER_BYTES + self.body_len);
        self.frame.resize(footer_at, 0);
        self.frame.extend_from_slice(&FRAME_FOOTER);
        &self.frame
    }
}

fn body_crc(body: &[u8]) -> Hasher {
    let mut crc = Hasher::new();
    crc.update(body);
    crc
}

/// Appends `id` to `ids`; returns its range there.
fn push_id(ids: &mut String, id: &str) -> (u32, u32) {
    let start = u32::try_from(ids.len()).expect("a commit's ids fit in u32");
    ids.push_str(id);
    let end = u32::try_from(ids.len()).expect("a commit's ids fit in u32");
    (start, end)
}

fn entry_len(e: &NewEntry<'_>) -> usize {
    ENTRY_HEADER_BYTES
        + e.store.len()
        + e.aggregate.len()
        + e.event_type.len()
        + e.payload.len()
        + e.metadata.len()
}

/// Appends one entry to `out`; returns its length.
#[cfg(any(test, feature = "testing"))]
pub fn encode_entry(e: &LogEvent, out: &mut Vec<u8>) -> u32 {
    encode_new_entry(&e.as_entry(), out)
}

/// Appends one entry to `out`; returns its length.
fn encode_new_entry(e: &NewEntry<'_>, out: &mut Vec<u8>) -> u32 {
    let len = entry_len(e);
    let len32 = u32::try_from(len).expect("entry length fits u32 (bounded by limits)");
    let start = out.len();
    out.reserve(len);
    let mut header = [0u8; ENTRY_HEADER_BYTES];
    header[0..4].copy_from_slice(&len32.to_le_bytes());
    // Bytes 4 .. 8: the checksum, filled in below.
    header[8..16].copy_from_slice(&e.version.to_le_bytes());
    header[16..24].copy_from_slice(&e.timestamp_ms.to_le_bytes());
    header[24..28].copy_from_slice(&e.schema_version.to_le_bytes());
    for (at, part) in [(28, e.store), (30, e.aggregate), (32, e.event_type)] {
        let l = u16::try_from(part.len()).expect("ids and types fit u16 (bounded by limits)");
        header[at..at + 2].copy_from_slice(&l.to_le_bytes());
    }
    // Bytes 34 .. 36: reserved, zero.
    for (at, part) in [(36, e.payload), (40, e.metadata)] {
        let l = u32::try_from(part.len()).expect("payloads fit u32 (bounded by limits)");
        header[at..at + 4].copy_from_slice(&l.to_le_bytes());
    }
    out.extend_from_slice(&header);
    out.extend_from_slice(e.store.as_bytes());
    out.extend_from_slice(e.aggregate.as_bytes());
    out.extend_from_slice(e.event_type.as_bytes());
    out.extend_from_slice(e.payload);
    out.extend_from_slice(e.metadata);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    len32
}

/// Decodes and verifies one entry occupying exactly `bytes`.
pub fn decode_entry(bytes: &[u8]) -> Result<LogEvent, FrameError> {
    let available = bytes.len() as u64;
    if bytes.len() < ENTRY_HEADER_BYTES {
        return Err(FrameError::Truncated {
            needed: ENTRY_HEADER_BYTES as u64,
            available,
        });
    }
    let len = u32_at(bytes, 0) as usize;
    if len != bytes.len() {
        return Err(FrameError::Malformed("entry length differs from its slot"));
    }
    let stored = u32_at(bytes, 4);
    let computed = crc32fast::hash(&bytes[8..]);
    if stored != computed {
        return Err(FrameError::ChecksumMismatch { stored, computed });
    }
    let store_len = usize::from(u16_at(bytes, 28));
    let aggregate_len = usize::from(u16_at(bytes, 30));
    let type_len = usize::from(u16_at(bytes, 32));
    let payload_len = u32_at(bytes, 36) as usize;
    let metadata_len = u32_at(bytes, 40) as usize;
    let parts = [
        store_len,
        aggregate_len,
        type_len,
        payload_len,
        metadata_len,
    ];
    let total = parts
        .iter()
        .try_fold(ENTRY_HEADER_BYTES, |acc, &p| acc.checked_add(p));
    if total != Some(len) {
        return Err(FrameError::Malformed("entry part lengths do not add up"));
    }
    let mut at = ENTRY_HEADER_BYTES;
    let mut take = |n: usize| {
        let s = &bytes[at..at + n];
        at += n;
        s
    };
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| FrameError::Malformed("not UTF-8"))
    };
    let store = text(take(store_len))?;
    let aggregate = text(take(aggregate_len))?;
    let event_type = text(take(type_len))?;
    let payload = take(payload_len).to_vec();
    let metadata = take(metadata_len).to_vec();
    Ok(LogEvent {
        store,
        aggregate,
        version: u64_at(bytes, 8),
        timestamp_ms: u64_at(bytes, 16) as i64,
        event_type,
        schema_version: u32_at(bytes, 24),
        payload,
        metadata,
    })
}

/// Appends the whole frame of `commit` (header, entries, padding, footer) to `out`: the bytes
/// [`EncodedCommit::seal`] makes in place.
#[cfg(any(test, feature = "testing"))]
pub fn write_frame(
    commit: &EncodedCommit,
    first_position: u64,
    durable_offset: u64,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.extend_from_slice(&encode_frame_header(commit, first_position, durable_offset));
    out.extend_from_slice(commit.body());
    let footer_at = start + commit.frame_len() as usize - FRAME_FOOTER_BYTES;
    out.resize(footer_at, 0);
    out.extend_from_slice(&FRAME_FOOTER);
}

/// Appends a frame holding `entries` (whole, already encoded entries, copied as they are)
/// to `out`: how compaction rewrites the survivors of a commit, each entry keeping its own
/// checksum and the frame getting a new one.
pub fn write_raw_frame(
    entries: &[&[u8]],
    first_position: u64,
    durable_offset: u64,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    let body_len: usize = entries.iter().map(|e| e.len()).sum();
    let mut h = [0u8; FRAME_HEADER_BYTES];
    let body32 = u32::try_from(body_len).expect("a rewritten frame is no larger than its commit");
    let count = u32::try_from(entries.len()).expect("entry count fits in u32");
    h[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    h[8..12].copy_from_slice(&body32.to_le_bytes());
    h[12] = KIND_EVENTS;
    h[16..24].copy_from_slice(&first_position.to_le_bytes());
    h[24..32].copy_from_slice(&durable_offset.to_le_bytes());
    h[32..36].copy_from_slice(&count.to_le_bytes());
    let check = header_check(&h);
    h[36..38].copy_from_slice(&check.to_le_bytes());
    h[39] = HEADER_END_MARK;
    out.extend_from_slice(&h);
    for e in entries {
        out.extend_from_slice(e);
    }
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    let footer_at = start + frame_len(body_len as u64) as usize - FRAME_FOOTER_BYTES;
    out.resize(footer_at, 0);
    out.extend_from_slice(&FRAME_FOOTER);
}

/// The header check of a header's bytes 8 .. 36.
fn header_check(h: &[u8]) -> u16 {
    crc32fast::hash(&h[8..36]) as u16
}

/// Builds the header of a frame around `commit`'s body.
pub fn encode_frame_header(
    commit: &EncodedCommit,
    first_position: u64,
    durable_offset: u64,
) -> [u8; FRAME_HEADER_BYTES] {
    let mut h = [0u8; FRAME_HEADER_BYTES];
    let body_len = u32::try_from(commit.body_len).expect("a commit body fits in u32");
    let count = u32::try_from(commit.keys.len()).expect("entry count fits in u32");
    h[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    h[8..12].copy_from_slice(&body_len.to_le_bytes());
    h[12] = KIND_EVENTS;
    h[16..24].copy_from_slice(&first_position.to_le_bytes());
    h[24..32].copy_from_slice(&durable_offset.to_le_bytes());
    h[32..36].copy_from_slice(&count.to_le_bytes());
    let check = header_check(&h);
    h[36..38].copy_from_slice(&check.to_le_bytes());
    h[39] = HEADER_END_MARK;
    let mut crc = Hasher::new();
    crc.update(&h[8..]);
    match &commit.body_crc {
        Some(body) => crc.combine(body),
        None => crc.combine(&body_crc(commit.body())),
    }
    h[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    h
}

/// Parses a frame header and checks its header check, but not the frame checksum (which needs
/// the body).
pub fn decode_frame_header(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::Truncated {
            needed: FRAME_HEADER_BYTES as u64,
            available: bytes.len() as u64,
        });
    }
    let magic = u32_at(bytes, 0);
    if magic != FRAME_MAGIC {
        return Err(FrameError::BadMagic { found: magic });
    }
    if bytes[39] != HEADER_END_MARK || bytes[38] != 0 {
        return Err(FrameError::Malformed("bad frame header end mark"));
    }
    let stored = u16_at(bytes, 36);
    let computed = header_check(bytes);
    if stored != computed {
        return Err(FrameError::ChecksumMismatch {
            stored: u32::from(stored),
            computed: u32::from(computed),
        });
    }
    let header = FrameHeader {
        body_len: u32_at(bytes, 8),
        kind: bytes[12],
        first_position: u64_at(bytes, 16),
        durable_offset: u64_at(bytes, 24),
        entry_count: u32_at(bytes, 32),
    };
    if header.kind != KIND_EVENTS {
        return Err(FrameError::Malformed("unknown frame kind"));
    }
    if header.entry_count == 0 {
        return Err(FrameError::Malformed("a frame holds at least one entry"));
    }
    Ok(header)
}

/// One entry of a verified frame: its offset within the body, and its bytes.
pub type EntrySlice<'a> = (u32, &'a [u8]);

/// Verifies a whole frame (`bytes` starts with the header and holds at least
/// [`FrameHeader::frame_len`] bytes) and splits its entries. Returns the header and each entry's
/// (offset within the body, bytes).
pub fn decode_frame(bytes: &[u8]) -> Result<(FrameHeader, Vec<EntrySlice<'_>>), FrameError> {
    let header = decode_frame_header(bytes)?;
    let total = FRAME_HEADER_BYTES + header.body_len as usize;
    let whole = header.frame_len();
    if (bytes.len() as u64) < whole {
        return Err(FrameError::Truncated {
            needed: whole,
            available: bytes.len() as u64,
        });
    }
    let footer_at = header.footer_offset() as usize;
    if bytes[footer_at..footer_at + FRAME_FOOTER_BYTES] != FRAME_FOOTER {
        return Err(FrameError::Malformed("bad frame footer"));
    }
    if bytes[total..footer_at].iter().any(|&b| b != 0) {
        return Err(FrameError::Malformed("non-zero frame padding"));
    }
    let stored = u32_at(bytes, 4);
    let computed = crc32fast::hash(&bytes[8..total]);
    if stored != computed {
        return Err(FrameError::ChecksumMismatch { stored, computed });
    }
    let body = &bytes[FRAME_HEADER_BYTES..total];
    let mut entries = Vec::with_capacity(header.entry_count.min(1 << 16) as usize);
    let mut at = 0usize;
    while at < body.len() {
        if body.len() - at < ENTRY_HEADER_BYTES {
            return Err(FrameError::Malformed("partial entry at the end of a frame"));
        }
        let len = u32_at(body, at) as usize;
        if len < ENTRY_HEADER_BYTES || len > body.len() - at {
            return Err(FrameError::Malformed("entry length out of bounds"));
        }
        entries.push((at as u32, &body[at..at + len]));
        at += len;
    }
    if entries.len() != header.entry_count as usize {
        return Err(FrameError::Malformed("entry count differs from the header"));
    }
    Ok((header, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(version: u64) -> LogEvent {
        LogEvent {
            store: "POKEMONS".into(),
            aggregate: "pikachu".into(),
            version,
            timestamp_ms: -5,
            event_type: "POKEMON_APPEARED".into(),
            schema_version: 2,
            payload: vec![1, 2, 3],
            metadata: vec![],
        }
    }

    #[test]
    fn a_frame_round_trips_and_each_entry_verifies_alone() {
        let commit = EncodedCommit::encode(vec![event(1), event(2)]);
        let mut bytes = Vec::new();
        write_frame(&commit, 7, 64, &mut bytes);
        assert_eq!(bytes.len() as u64, frame_len(commit.body().len() as u64));
        let (h, entries) = decode_frame(&bytes).unwrap();
        assert_eq!(
            (h.first_position, h.durable_offset, h.entry_count),
            (7, 64, 2)
        );
        assert_eq!(decode_entry(entries[1].1).unwrap(), event(2));
        assert_eq!(entries[1].0, commit.keys[1].body_offset);
    }

    #[test]
    fn a_frame_sealed_in_place_is_the_frame_written_by_copy() {
        let mut other = event(1);
        other.aggregate = "raichu".into();
        let events = vec![event(1), event(2), other.clone(), event(3)];
        let mut commit = EncodedCommit::encode(events.clone());
        let mut copied = Vec::new();
        write_frame(&commit, 9, 128, &mut copied);
        assert_eq!(commit.seal(9, 128), copied.as_slice());
        // Sealing again (another position) rewrites the header and keeps the rest.
        let mut again = Vec::new();
        write_frame(&commit, 10, 0, &mut again);
        assert_eq!(commit.seal(10, 0), again.as_slice());
        let ids: Vec<(&str, &str, u64)> = commit
            .keys
            .iter()
            .map(|k| (commit.store(k), commit.aggregate(k), k.version))
            .collect();
        let expected: Vec<(&str, &str, u64)> = events
            .iter()
            .map(|e| (e.store.as_str(), e.aggregate.as_str(), e.version))
            .collect();
        assert_eq!(ids, expected);
        // A commit made from the buffers of another holds only its own entries.
        let (frame, keys, ids) = commit.into_buffers();
        let mut reused = EncodedCommit::with_buffers(frame, keys, ids);
        reused.push(&other.as_entry());
        assert_eq!(reused.body(), EncodedCommit::encode(vec![other]).body());
        assert_eq!(reused.keys.len(), 1);
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let commit = EncodedCommit::encode(vec![event(1)]);
        let mut bytes = Vec::new();
        write_frame(&commit, 1, 0, &mut bytes);
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_frame(&damaged).is_err(),
                "flip of bit {bit} went unnoticed"
            );
        }
    }
}
