//! Segment files: the log is a sequence of preallocated files, each starting with a header.
//!
//! A segment is named `{segment_id:010}.seg` inside the store's `log/` directory. It is
//! **prepared** ahead of need under the temporary name `{segment_id:010}.seg.creating`: created
//! at its full size and zero-filled (so a data sync never has to journal a size or extent
//! change) and synced ([`prepare`]; the writer has a background thread do it while the
//! previous segment fills). It is **installed** when the writer rolls over to it: its header is
//! written and synced, the file renamed to its segment name and the directory synced
//! ([`install`]), all before any commit is written to it. So a file under a segment's name
//! always has a durable header; a file under the temporary name holds nothing but zeros and
//! perhaps a header, never data. Stores written by earlier versions created segments in place,
//! header last, so a creation that a crash interrupted there leaves nothing but zeros.
//!
//! Segments grow geometrically: the first is [`FIRST_SEGMENT_BYTES`], each later one twice the
//! one before, up to the configured size ([`next_size`]); each header records its size.
//! Commit frames follow the header back to back (8-byte aligned); zeros mark the end of data.
//!
//! Header (64 bytes, little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `ANNALSEG` |
//! | 8 | 4 | format version (2) |
//! | 12 | 4 | reserved, zero |
//! | 16 | 8 | segment id (1, 2, …) |
//! | 24 | 8 | first_position: global position of the segment's first event |
//! | 32 | 8 | segment size in bytes |
//! | 40 | 20 | reserved, zero (format 3: end position, generation, reserved: see below) |
//! | 60 | 4 | CRC-32 of bytes 0 .. 60 |
//!
//! A **compacted** segment (rewritten without some of its events, see `compaction`) has
//! format version 3: bytes 40..48 hold its end position (the position after the last one the
//! segment ever held, which is the next segment's first position) and bytes 48..52 its
//! generation (how many times it was rewritten, from 1). Its positions may have gaps; its size
//! is exactly its header and frames.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::error::{Corruption, EngineError};
use super::io::{FileSystem, StoreFile};

/// Magic bytes at the start of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"ANNALSEG";
/// The segment format this code writes for a segment of the writer.
pub const SEGMENT_FORMAT_VERSION: u32 = 2;
/// The segment format of a compacted segment (see [`Compacted`]).
pub const COMPACTED_FORMAT_VERSION: u32 = 3;
/// Bytes of the segment header; the first frame starts here.
pub const SEGMENT_HEADER_BYTES: u64 = 64;
static ZEROS: [u8; 1 << 16] = [0; 1 << 16];

/// The checked header of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Sequence number of the segment, from 1.
    pub segment_id: u64,
    /// Global position of the first event stored in it.
    pub first_position: u64,
    /// Size the segment was created with.
    pub size: u64,
    /// Set when the segment was rewritten by compaction (format version 3).
    pub compacted: Option<Compacted>,
}

/// What the header of a compacted segment adds: positions in it may have gaps, and the next
/// segment starts at `end_position`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compacted {
    /// The position after the last one the segment held before any compaction: the next
    /// segment's first position.
    pub end_position: u64,
    /// How many times the segment was rewritten (1 for the first compaction), so that two
    /// rewrites of one segment never have equal headers.
    pub generation: u32,
}

impl SegmentHeader {
    /// The header of a plain (never compacted) segment.
    pub fn plain(segment_id: u64, first_position: u64, size: u64) -> Self {
        SegmentHeader {
            segment_id,
            first_position,
            size,
            compacted: None,
        }
    }

    /// The generation of the segment's content: 0 until it is first compacted.
    pub fn generation(&self) -> u32 {
        self.compacted.map_or(0, |c| c.generation)
    }
}

impl SegmentHeader {
    /// Serialises the header.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
        h[0..8].copy_from_slice(&SEGMENT_MAGIC);
        let version = match self.compacted {
            Some(_) => COMPACTED_FORMAT_VERSION,
            None => SEGMENT_FORMAT_VERSION,
        };
        h[8..12].copy_from_slice(&version.to_le_bytes());
        h[16..24].copy_from_slice(&self.segment_id.to_le_bytes());
        h[24..32].copy_from_slice(&self.first_position.to_le_bytes());
        h[32..40].copy_from_slice(&self.size.to_le_bytes());
        if let Some(c) = self.compacted {
            h[40..48].copy_from_slice(&c.end_position.to_le_bytes());
            h[48..52].copy_from_slice(&c.generation.to_le_bytes());
        }
        let crc = crc32fast::hash(&h[0..60]);
        h[60..64].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Parses and verifies a header; the reason on failure.
    pub fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        if bytes.len() < SEGMENT_HEADER_BYTES as usize {
            return Err("segment shorter than its header");
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err("bad segment magic");
        }
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&bytes[60..64]);
        if u32::from_le_bytes(crc) != crc32fast::hash(&bytes[0..60]) {
            return Err("segment header checksum mismatch");
        }
        let u64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(a)
        };
        let mut version = [0u8; 4];
        version.copy_from_slice(&bytes[8..12]);
        let mut generation = [0u8; 4];
        generation.copy_from_slice(&bytes[48..52]);
        let compacted = match u32::from_le_bytes(version) {
            SEGMENT_FORMAT_VERSION => None,
            COMPACTED_FORMAT_VERSION => {
                if bytes[52..60].iter().any(|&b| b != 0) {
                    return Err("segment header reserved bytes are not zero");
                }
                Some(Compacted {
                    end_position: u64_at(40),
                    generation: u32::from_le_bytes(generation),
                })
            }
            _ => return Err("unsupported segment format version"),
        };
        let header = SegmentHeader {
            segment_id: u64_at(16),
            first_position: u64_at(24),
            size: u64_at(32),
            compacted,
        };
        if header.segment_id == 0
            || header.first_position == 0
            || header.size < SEGMENT_HEADER_BYTES
            || compacted
                .is_some_and(|c| c.generation == 0 || c.end_position < header.first_position)
        {
            return Err("segment header fields out of range");
        }
        Ok(header)
    }
}

/// The file name of segment `segment_id`.
pub fn file_name(segment_id: u64) -> String {
    format!("{segment_id:010}.seg")
}

/// The segment id encoded in a file name, if it is a segment's.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let id = name.strip_suffix(".seg")?;
    if id.len() != 10 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok().filter(|&id| id > 0)
}

/// An open segment.
#[derive(Debug)]
pub struct Segment {
    /// Its header.
    pub header: SegmentHeader,
    /// Its path.
    pub path: PathBuf,
    /// The open file (shared by the writer and readers; reads and writes are positional).
    pub file: Arc<dyn StoreFile>,
}

/// The smallest segment a store creates: its first one. Each later segment is twice the size
/// of the one before, up to the configured size (see [`next_size`]), so a small store stays
/// small while a large one still gets large preallocated segments.
pub const FIRST_SEGMENT_BYTES: u64 = 64 << 10;

/// Bytes of zeros written between two syncs while a segment is prepared, so the prepared
/// file's dirty pages reach the disk in small slices rather than in bursts that would hold up
/// the log's own syncs behind them (8 MiB slices measurably raised the bulk load's p99).
const PREPARE_SYNC_BYTES: u64 = 1 << 20;

/// The size of the segment after one of `previous` bytes, for a commit of `needed` bytes
/// (frame included; 0 when none is waiting): twice `previous`, at most `max`, and at least
/// what the commit needs (the next power of two above it, within `max`).
pub fn next_size(previous: u64, needed: u64, max: u64) -> u64 {
    let grown = previous
        .saturating_mul(2)
        .clamp(FIRST_SEGMENT_BYTES.min(max), max);
    let fits = (needed + SEGMENT_HEADER_BYTES).next_power_of_two().min(max);
    grown.max(fits)
}

/// The temporary name under which segment `id` is prepared: `{id:010}.seg.creating`.
pub fn prepared_file_name(id: u64) -> String {
    format!("{}{}", file_name(id), super::layout::CREATING_SUFFIX)
}

/// The segment id encoded in a prepared segment's temporary name, if it is one.
pub fn parse_prepared_file_name(name: &str) -> Option<u64> {
    parse_file_name(name.strip_suffix(super::layout::CREATING_SUFFIX)?)
}

/// A segment file prepared ahead of need under its temporary name: zero-filled to its full
/// size and synced, without a header. It holds no data and no witness names it: until
/// [`install`] renames it into place, a crash leaves a leftover that opening removes.
#[derive(Debug)]
pub struct Prepared {
    /// The id of the segment it is for.
    pub segment_id: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its temporary path.
    pub path: PathBuf,
    file: Arc<dyn StoreFile>,
}

/// Prepares segment `segment_id` of `size` bytes in `dir` under its temporary name (see
/// [`Prepared`]): the file is created (or truncated, if a leftover is there) and its name
/// synced, then it is zero-filled and synced. On failure the partial file is removed (best effort).
pub fn prepare(
    fs: &dyn FileSystem,
    dir: &Path,
    segment_id: u64,
    size: u64,
) -> io::Result<Prepared> {
    let path = dir.join(prepared_file_name(segment_id));
    let file = fs.open(&path, true)?;
    let result = (|| {
        // The temporary name is made durable at once, so that a crash at any later step of
        // the preparation leaves a leftover for the next open to find and remove, rather than
        // blocks that no name reaches.
        fs.sync_dir(dir)?;
        file.set_len(0)?;
        // Write real zeros rather than set_len or fallocate: the blocks are then allocated and
        // initialised, so later fdatasyncs flush data only, never extent metadata.
        let mut at = 0;
        let mut unsynced = 0;
        while at < size {
            let n = (size - at).min(ZEROS.len() as u64) as usize;
            file.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
            unsynced += n as u64;
            if unsynced >= PREPARE_SYNC_BYTES && at < size {
                file.sync_data()?;
                unsynced = 0;
            }
        }
        file.sync_data()
    })();
    match result {
        Ok(()) => Ok(Prepared {
            segment_id,
            size,
            path,
            file,
        }),
        Err(e) => {
            drop(file);
            let _ = fs.remove(&path);
            Err(e)
        }
    }
}

/// Removes a prepared segment that will not be used (best effort: a leftover is removed when
/// the store next opens).
pub fn discard(fs: &dyn FileSystem, prepared: Prepared) {
    let Prepared { path, file, .. } = prepared;
    drop(file);
    if let Err(e) = fs.remove(&path) {
        tracing::debug!(file = %path.display(), error = %e, "could not remove a prepared segment");
    }
}

/// Makes the prepared segment `prepared` segment `header.segment_id` of `dir`: the header is
/// written and synced, the file renamed to its segment name, and the directory synced. The
/// file thus appears under a segment's name only complete, with a durable header; no commit
/// is written to it before this returns. On failure the file is removed (best effort) under
/// whichever name it has.
pub fn install(
    fs: &dyn FileSystem,
    dir: &Path,
    prepared: Prepared,
    header: SegmentHeader,
) -> io::Result<Segment> {
    let path = dir.join(file_name(header.segment_id));
    if prepared.segment_id != header.segment_id || prepared.size != header.size {
        let reason = format!(
            "the prepared segment ({}, {} bytes) does not match the header ({}, {} bytes)",
            prepared.segment_id, prepared.size, header.segment_id, header.size
        );
        discard(fs, prepared);
        return Err(io::Error::other(reason));
    }
    let Prepared {
        path: temp, file, ..
    } = prepared;
    let mut renamed = false;
    let result = (|| {
        file.write_all_at(&header.encode(), 0)?;
        file.sync_data()?;
        fs.rename(&temp, &path)?;
        renamed = true;
        fs.sync_dir(dir)?;
        // Handles reach a file by name on some file systems (the simulated disk): reopen it.
        fs.open(&path, false)
    })();
    drop(file);
    match result {
        Ok(file) => Ok(Segment { header, path, file }),
        Err(e) => {
            let _ = fs.remove(if renamed { &path } else { &temp });
            let _ = fs.sync_dir(dir);
            Err(e)
        }
    }
}

/// Creates segment `header.segment_id` in `dir` at once: [`prepare`], then [`install`].
pub fn create(fs: &dyn FileSystem, dir: &Path, header: SegmentHeader) -> io::Result<Segment> {
    let prepared = prepare(fs, dir, header.segment_id, header.size)?;
    install(fs, dir, prepared, header)
}

/// The ids of the prepared segments (temporary files) in `dir`, ascending.
pub fn list_prepared(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<u64>, EngineError> {
    let mut ids: Vec<u64> = fs
        .list(dir)
        .map_err(|e| EngineError::io("list", dir, e))?
        .iter()
        .filter_map(|name| parse_prepared_file_name(name))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// A segment file found on disk, opened, with its header checked against its name and size.
#[derive(Debug)]
pub struct Found {
    /// Its path.
    pub path: PathBuf,
    /// The open file.
    pub file: Arc<dyn StoreFile>,
    /// Its size in bytes.
    pub len: u64,
    /// The header, or why it is unusable (unreadable, or not matching the name or size).
    pub header: Result<SegmentHeader, String>,
}

impl Found {
    /// Whether every byte of the file, its header included, is zero (vacuously for an empty
    /// file): what a creation that did not finish leaves (see [`create`]).
    pub fn all_zero(&self) -> Result<bool, EngineError> {
        let mut at = 0;
        let mut buf = vec![0u8; 1 << 20];
        while at < self.len {
            let n = ((self.len - at).min(buf.len() as u64)) as usize;
            self.file
                .read_exact_at(&mut buf[..n], at)
                .map_err(|e| EngineError::io("read", &self.path, e))?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
        Ok(true)
    }

    /// The open segment, when its header is good.
    pub fn into_segment(self) -> Option<Segment> {
        let header = self.header.ok()?;
        Some(Segment {
            header,
            path: self.path,
            file: self.file,
        })
    }
}

/// The ids of the segment files in `dir`, ascending.
pub fn list_ids(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<u64>, EngineError> {
    let mut ids: Vec<u64> = fs
        .list(dir)
        .map_err(|e| EngineError::io("list", dir, e))?
        .iter()
        .filter_map(|name| parse_file_name(name))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Opens segment `id` of `dir` for reading only (see [`FileSystem::open_read_only`]) and reads
/// its header: how a live reader opens the segments of a store another process writes.
pub fn find_read_only(fs: &dyn FileSystem, dir: &Path, id: u64) -> Result<Found, EngineError> {
    find_with(dir, id, |path| fs.open_read_only(path))
}

/// Opens the file at `path`, holding segment `id` (a compaction's rewrite of it, say), and
/// reads its header.
pub fn find_at(fs: &dyn FileSystem, path: &Path, id: u64) -> Result<Found, EngineError> {
    find_path(path.to_owned(), id, |path| fs.open(path, false))
}

fn find_with(
    dir: &Path,
    id: u64,
    open: impl FnOnce(&Path) -> io::Result<Arc<dyn StoreFile>>,
) -> Result<Found, EngineError> {
    find_path(dir.join(file_name(id)), id, open)
}

fn find_path(
    path: PathBuf,
    id: u64,
    open: impl FnOnce(&Path) -> io::Result<Arc<dyn StoreFile>>,
) -> Result<Found, EngineError> {
    let file = open(&path).map_err(|e| EngineError::io("open", &path, e))?;
    let len = file.size().map_err(|e| EngineError::io("stat", &path, e))?;
    let mut head = vec![0u8; SEGMENT_HEADER_BYTES.min(len) as usize];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| EngineError::io("read", &path, e))?;
    let header = check_header(&head, id, len);
    Ok(Found {
        path,
        file,
        len,
        header,
    })
}

/// Decodes the header `head` of segment `id`, a file of `len` bytes, and checks it against
/// the file's name and length; the reason, lengths included, when it does not match.
fn check_header(head: &[u8], id: u64, len: u64) -> Result<SegmentHeader, String> {
    if len < SEGMENT_HEADER_BYTES {
        return Err(format!(
            "the file is {len} bytes long, shorter than the {SEGMENT_HEADER_BYTES}-byte \
             segment header"
        ));
    }
    let h = SegmentHeader::decode(head).map_err(str::to_owned)?;
    if h.segment_id != id {
        return Err(format!(
            "the header names segment {}, not the file's {id}",
            h.segment_id
        ));
    }
    if h.size != len {
        return Err(format!(
            "the file is {len} bytes long, but its header says {} bytes",
            h.size
        ));
    }
    Ok(h)
}

/// The length of the file at `path` (`None` when it does not exist), without reading it.
pub fn path_len(fs: &dyn FileSystem, path: &Path) -> Result<Option<u64>, EngineError> {
    let path = path.to_owned();
    let file = match fs.open(&path, false) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EngineError::io("open", &path, e)),
    };
    let len = file.size().map_err(|e| EngineError::io("stat", &path, e))?;
    Ok(Some(len))
}

impl Segment {
    /// A sealed segment whose header is already known (recorded in the index): the file is
    /// opened, and its header checked against `header`, on first use. Opening a store thus
    /// touches only the segments it must read, whatever their number.
    pub fn lazy(fs: Arc<dyn FileSystem>, dir: &Path, header: SegmentHeader) -> Segment {
        let path = dir.join(file_name(header.segment_id));
        let file = Arc::new(LazyFile {
            fs,
            path: path.clone(),
            header,
            file: OnceLock::new(),
        });
        Segment { header, path, file }
    }
}

/// A segment file opened on first use (see [`Segment::lazy`]).
#[derive(Debug)]
struct LazyFile {
    fs: Arc<dyn FileSystem>,
    path: PathBuf,
    header: SegmentHeader,
    file: OnceLock<Arc<dyn StoreFile>>,
}

impl LazyFile {
    /// The open file, opening it and checking its header the first time. A file that does not
    /// match the index's record fails with [`Corruption`] (reported as corruption, see
    /// [`EngineError::io`]).
    fn file(&self) -> io::Result<&Arc<dyn StoreFile>> {
        if let Some(file) = self.file.get() {
            return Ok(file);
        }
        let damaged = |offset: u64, reason: String| {
            Corruption::new(self.path.clone(), offset, reason).into_io()
        };
        let file = match self.fs.open(&self.path, false) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let reason = format!(
                    "the file is missing, but the index records it ({} bytes)",
                    self.header.size
                );
                return Err(damaged(0, reason));
            }
            Err(e) => return Err(e),
        };
        let len = file.size()?;
        let mut head = vec![0u8; SEGMENT_HEADER_BYTES.min(len) as usize];
        file.read_exact_at(&mut head, 0)?;
        match check_header(&head, self.header.segment_id, len) {
            Ok(h) if h == self.header => {}
            Ok(h) => {
                return Err(damaged(0, differs_from_record(&h, &self.header)));
            }
            Err(reason) => {
                let reason = format!(
                    "{reason}; the index records it as {} bytes",
                    self.header.size
                );
                return Err(damaged(len.min(SEGMENT_HEADER_BYTES), reason));
            }
        }
        Ok(self.file.get_or_init(|| file))
    }
}

/// Why a segment's header `found` does not match the index's record `recorded`.
pub fn differs_from_record(found: &SegmentHeader, recorded: &SegmentHeader) -> String {
    format!(
        "the header (first position {}, {} bytes, generation {}) differs from the index's \
         record (first position {}, {} bytes, generation {})",
        found.first_position,
        found.size,
        found.generation(),
        recorded.first_position,
        recorded.size,
        recorded.generation()
    )
}

impl StoreFile for LazyFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file()?.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file()?.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file()?.sync_data()
    }
    fn write_all_durable_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file()?.write_all_durable_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        self.file()?.size()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file()?.set_len(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compacted_header_round_trips_and_a_plain_one_reads_as_before() {
        let plain = SegmentHeader::plain(3, 100, 1 << 20);
        assert_eq!(SegmentHeader::decode(&plain.encode()), Ok(plain));
        assert_eq!(plain.encode()[8..12], 2u32.to_le_bytes());
        assert!(plain.encode()[40..60].iter().all(|&b| b == 0));
        let compacted = SegmentHeader {
            size: 4096,
            compacted: Some(Compacted {
                end_position: 250,
                generation: 2,
            }),
            ..plain
        };
        let bytes = compacted.encode();
        assert_eq!(bytes[8..12], 3u32.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&bytes), Ok(compacted));
        assert_ne!(compacted.encode(), plain.encode());
        for bit in 0..(60 * 8) {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&damaged).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn a_compacted_header_out_of_range_is_refused() {
        let header = |end_position, generation| SegmentHeader {
            compacted: Some(Compacted {
                end_position,
                generation,
            }),
            ..SegmentHeader::plain(1, 10, 64)
        };
        assert!(SegmentHeader::decode(&header(9, 1).encode()).is_err());
        assert!(SegmentHeader::decode(&header(10, 0).encode()).is_err());
        assert!(SegmentHeader::decode(&header(10, 1).encode()).is_ok());
    }
}
