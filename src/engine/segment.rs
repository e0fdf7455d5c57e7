//! Segment files: the log is a sequence of preallocated files, each starting with a header.
//!
//! A segment is named `{segment_id:010}.seg` inside the store's `log/` directory. It is created
//! at its full size and zero-filled (so a data sync never has to journal a size or extent
//! change) and synced, then its header is written and synced, then its directory is synced,
//! all before any commit is written to it. Because the header comes last, a creation that a
//! crash interrupted leaves nothing but zeros.
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
//! | 40 | 20 | reserved, zero |
//! | 60 | 4 | CRC-32 of bytes 0 .. 60 |

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::error::{Corruption, EngineError};
use super::io::{FileSystem, StoreFile};

/// Magic bytes at the start of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"ANNALSEG";
/// The segment format this code writes and reads.
pub const SEGMENT_FORMAT_VERSION: u32 = 2;
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
}

impl SegmentHeader {
    /// Serialises the header.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
        h[0..8].copy_from_slice(&SEGMENT_MAGIC);
        h[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
        h[16..24].copy_from_slice(&self.segment_id.to_le_bytes());
        h[24..32].copy_from_slice(&self.first_position.to_le_bytes());
        h[32..40].copy_from_slice(&self.size.to_le_bytes());
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
        if u32::from_le_bytes(version) != SEGMENT_FORMAT_VERSION {
            return Err("unsupported segment format version");
        }
        let header = SegmentHeader {
            segment_id: u64_at(16),
            first_position: u64_at(24),
            size: u64_at(32),
        };
        if header.segment_id == 0
            || header.first_position == 0
            || header.size < SEGMENT_HEADER_BYTES
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

/// Creates segment `header.segment_id` in `dir`: zero-filled to its full size and synced, then
/// the header written and synced, then the directory synced. The header is written last, so a
/// creation that a crash interrupted leaves a file of zeros only (of any length up to the
/// size): the one state recovery may take for an unfinished creation (see `health`). On
/// failure the partial file is removed (best effort).
pub fn create(fs: &dyn FileSystem, dir: &Path, header: SegmentHeader) -> io::Result<Segment> {
    let path = dir.join(file_name(header.segment_id));
    let file = fs.open(&path, true)?;
    let result = (|| {
        file.set_len(0)?;
        // Write real zeros rather than set_len or fallocate: the blocks are then allocated and
        // initialised, so later fdatasyncs flush data only, never extent metadata.
        let mut at = 0;
        while at < header.size {
            let n = (header.size - at).min(ZEROS.len() as u64) as usize;
            file.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        file.sync_data()?;
        file.write_all_at(&header.encode(), 0)?;
        file.sync_data()?;
        fs.sync_dir(dir)
    })();
    match result {
        Ok(()) => Ok(Segment { header, path, file }),
        Err(e) => {
            drop(file);
            let _ = fs.remove(&path);
            let _ = fs.sync_dir(dir);
            Err(e)
        }
    }
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

/// Opens segment `id` of `dir` and reads its header.
pub fn find(fs: &dyn FileSystem, dir: &Path, id: u64) -> Result<Found, EngineError> {
    let path = dir.join(file_name(id));
    let file = fs
        .open(&path, false)
        .map_err(|e| EngineError::io("open", &path, e))?;
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

/// The length of segment `id`'s file (`None` when it does not exist), without reading it.
pub fn file_len(fs: &dyn FileSystem, dir: &Path, id: u64) -> Result<Option<u64>, EngineError> {
    let path = dir.join(file_name(id));
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
        "the header (first position {}, {} bytes) differs from the index's record (first \
         position {}, {} bytes)",
        found.first_position, found.size, recorded.first_position, recorded.size
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
