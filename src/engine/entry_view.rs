//! Decoding one entry in place, as the read path verifies it.

use super::frame;

/// One event as read from the log, borrowed from the read buffer (see
/// [`Engine::visit_events`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryView<'a> {
    /// Version within the aggregate.
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

impl<'a> EntryView<'a> {
    /// Verifies the entry occupying exactly `bytes` (checksum and lengths, as
    /// [`frame::decode_entry`] does) and that it is version `version` of `store`/`aggregate`;
    /// the reason when it is not.
    pub(crate) fn decode(
        bytes: &'a [u8],
        store: &str,
        aggregate: &str,
        version: u64,
    ) -> Result<Self, String> {
        use frame::ENTRY_HEADER_BYTES as HEADER;
        let u16_at = |at: usize| usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(a)
        };
        if bytes.len() < HEADER {
            return Err(format!("truncated entry: {} bytes", bytes.len()));
        }
        if u32_at(0) as usize != bytes.len() {
            return Err("entry length differs from its slot".into());
        }
        let (stored, computed) = (u32_at(4), crc32fast::hash(&bytes[8..]));
        if stored != computed {
            return Err(format!(
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let lens = [
            u16_at(28),
            u16_at(30),
            u16_at(32),
            u32_at(36) as usize,
            u32_at(40) as usize,
        ];
        if lens.iter().sum::<usize>() + HEADER != bytes.len() {
            return Err("entry part lengths do not add up".into());
        }
        let mut at = HEADER;
        let mut parts = lens.map(|n| {
            let part = &bytes[at..at + n];
            at += n;
            part
        });
        let found_version = u64_at(8);
        if parts[0] != store.as_bytes()
            || parts[1] != aggregate.as_bytes()
            || found_version != version
        {
            return Err(format!(
                "index entry for {store:?}/{aggregate:?} v{version} points at {:?}/{:?} \
                 v{found_version}",
                String::from_utf8_lossy(parts[0]),
                String::from_utf8_lossy(parts[1]),
            ));
        }
        let event_type = std::str::from_utf8(std::mem::take(&mut parts[2]))
            .map_err(|_| "event type is not UTF-8")?;
        Ok(EntryView {
            version,
            timestamp_ms: u64_at(16) as i64,
            event_type,
            schema_version: u32_at(24),
            payload: parts[3],
            metadata: parts[4],
        })
    }
}
