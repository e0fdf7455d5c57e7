//! Where events live in the log: one event's [`Location`], a point in the log ([`Cursor`]),
//! and a [`Run`] of an aggregate's consecutive events lying back to back in one segment.

/// Where one event's entry lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Global position of the event.
    pub position: u64,
    /// Segment holding it.
    pub segment_id: u64,
    /// Offset of the entry in the segment.
    pub offset: u64,
    /// Length of the entry.
    pub len: u32,
}

/// A point in the log: the next frame goes to `offset` of `segment_id` and gets
/// `next_position`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Segment of the next frame (0: no segment yet).
    pub segment_id: u64,
    /// Offset of the next frame in it.
    pub offset: u64,
    /// Global position of the next event.
    pub next_position: u64,
}

impl Cursor {
    /// The 28 bytes of a checkpoint or clean-close record: segment id, offset and next
    /// position (u64 little-endian each), then the CRC-32 of those 24 bytes. redb checks its
    /// page checksums only when it recovers a file, so a damaged record could otherwise decode
    /// as a valid one: a next position off by any amount would number every later event wrong.
    pub(super) fn encode(&self) -> [u8; 28] {
        let mut b = [0u8; 28];
        b[0..8].copy_from_slice(&self.segment_id.to_le_bytes());
        b[8..16].copy_from_slice(&self.offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.next_position.to_le_bytes());
        let crc = crc32fast::hash(&b[..24]);
        b[24..28].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a record written by [`encode`](Self::encode), checking its CRC, or a 24-byte
    /// record of an index written before records carried one; `None` when it is malformed.
    pub(super) fn decode(b: &[u8]) -> Option<Self> {
        let fields = match b.len() {
            24 => b,
            28 => {
                let (fields, crc) = b.split_at(24);
                if crc32fast::hash(fields).to_le_bytes() != crc {
                    return None;
                }
                fields
            }
            _ => return None,
        };
        let at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&fields[i..i + 8]);
            u64::from_le_bytes(a)
        };
        Some(Cursor {
            segment_id: at(0),
            offset: at(8),
            next_position: at(16),
        })
    }
}

/// The start of a run; its versions run up to the next run's first version (or the tail's
/// last version), and entry lengths live in the tail's `lens`.
#[derive(Clone, Copy, Debug)]
pub(super) struct RunHead {
    pub(super) first_version: u64,
    pub(super) first_position: u64,
    pub(super) segment_id: u64,
    pub(super) offset: u64,
    /// Offset just past the run's last entry.
    pub(super) end: u64,
}

/// A run: consecutive versions of one aggregate whose entries lie back to back in one segment
/// with consecutive positions (the events of one aggregate in one commit, typically). One
/// read fetches a whole run, and the persisted index holds one row per run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// Version of the first event.
    pub first_version: u64,
    /// Global position of the first event; event *i* has `first_position + i`.
    pub first_position: u64,
    /// Segment holding the run.
    pub segment_id: u64,
    /// Offset of the first entry in the segment; entry *i* follows entry *i - 1*.
    pub offset: u64,
    /// Length of each entry, in version order (never empty).
    pub lens: Vec<u32>,
}

impl Run {
    /// The latest version in the run.
    pub fn last_version(&self) -> u64 {
        self.first_version + self.lens.len() as u64 - 1
    }

    /// Offset just past the run's last entry.
    pub fn end(&self) -> u64 {
        self.offset + self.lens.iter().map(|&l| u64::from(l)).sum::<u64>()
    }

    /// Each event of the run with its location, ascending by version.
    pub fn locations(&self) -> impl Iterator<Item = (u64, Location)> + '_ {
        let mut offset = self.offset;
        self.lens.iter().enumerate().map(move |(i, &len)| {
            let loc = Location {
                position: self.first_position + i as u64,
                segment_id: self.segment_id,
                offset,
                len,
            };
            offset += u64::from(len);
            (self.first_version + i as u64, loc)
        })
    }

    /// The part of the run with versions in `lo..=hi`, or `None` when they do not meet.
    pub fn slice(&self, lo: u64, hi: u64) -> Option<Run> {
        let lo = lo.max(self.first_version);
        let hi = hi.min(self.last_version());
        if lo > hi {
            return None;
        }
        let skip = (lo - self.first_version) as usize;
        let take = (hi - lo + 1) as usize;
        let offset = self.offset + self.lens[..skip].iter().map(|&l| u64::from(l)).sum::<u64>();
        Some(Run {
            first_version: lo,
            first_position: self.first_position + skip as u64,
            segment_id: self.segment_id,
            offset,
            lens: self.lens[skip..skip + take].to_vec(),
        })
    }

    /// Drops the first `n` events (`n` less than the run's length).
    pub fn skip_front(&mut self, n: usize) {
        let skipped: u64 = self.lens[..n].iter().map(|&l| u64::from(l)).sum();
        self.lens.drain(..n);
        self.first_version += n as u64;
        self.first_position += n as u64;
        self.offset += skipped;
    }

    /// Decodes a persisted row; `None` when it is malformed.
    pub(super) fn decode(first_version: u64, value: (u64, u64, u64, &[u8])) -> Option<Run> {
        let (first_position, segment_id, offset, lens) = value;
        if lens.is_empty() || lens.len() % 4 != 0 || first_version == 0 {
            return None;
        }
        let lens = lens
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some(Run {
            first_version,
            first_position,
            segment_id,
            offset,
            lens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_record_round_trips_and_any_flipped_bit_is_refused() {
        let cursor = Cursor {
            segment_id: 3,
            offset: 4096,
            next_position: 12,
        };
        let bytes = cursor.encode();
        assert_eq!(Cursor::decode(&bytes), Some(cursor));
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(Cursor::decode(&damaged), None, "bit {bit}");
        }
        // An index written before records carried a CRC still opens.
        assert_eq!(Cursor::decode(&bytes[..24]), Some(cursor));
        assert_eq!(Cursor::decode(&bytes[..27]), None);
    }
}
