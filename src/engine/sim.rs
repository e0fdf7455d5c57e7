//! A simulated disk for fault-injection tests, behind the same seam as the real file system.
//!
//! [`SimFs`] keeps, for every file, what readers see (*written*) and what would survive a power
//! loss (*durable*): `sync_data` makes a file's written bytes durable, `sync_dir` makes the
//! directory's created and removed names durable. A crash image ([`SimFs::crash_image`]) is a
//! new file system holding the durable state plus whichever unsynced writes a [`Damage`]
//! variant lets through — none, all, a random subset, or all but a torn last write cut at a
//! sector boundary.
//!
//! Faults ([`Fault`]) fail operations on demand: the k-th mutating operation once or from then
//! on, one fsync, or `ENOSPC` (on every file, or on one file only). Only mutating operations
//! (create, write, set_len, sync, remove, rename) are counted, so "crash after the k-th
//! operation" enumerates every distinct durable state.
//!
//! A rename is durable once its directory is synced: before that, a crash image holds the file
//! under its old name (if that name was durable). Open handles reach a file by its name, so a
//! handle opened before a rename no longer reaches the file (annals reopens renamed files).
//! Locks are held by name, like the real file system's directory lock: deleting a lock file
//! does not release its lock.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Debug};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::io::{FileSystem, StoreFile};

/// A failure to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Fail the `k`-th mutating operation (1-based) with `EIO`, once.
    FailOnce(u64),
    /// Fail the `k`-th and every later mutating operation with `EIO` (a dying disk, or the
    /// moment of a crash).
    FailFrom(u64),
    /// Fail the `n`-th `sync_data` (1-based) with `EIO`, once; the unsynced writes of that
    /// file are *dropped*, as Linux may do after a failed fsync.
    FailSync(u64),
    /// Fail every write and size extension from the `k`-th mutating operation on with
    /// `ENOSPC`, until [`SimFs::clear_faults`].
    NoSpaceFrom(u64),
    /// Fail every write and size extension that grows the file named `name` (say
    /// `"index.redb"`) with `ENOSPC`, until [`SimFs::clear_faults`]; other files, and writes
    /// within a file's present size, still succeed: a disk whose last free blocks are gone
    /// while the log's preallocated segments still have room.
    NoSpaceIn(&'static str),
}

/// Which unsynced writes survive in a crash image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Only durable data survives.
    DropUnsynced,
    /// Every write survives (a process crash without power loss).
    KeepUnsynced,
    /// Each unsynced write survives or not, at random (writes reordered by the disk).
    RandomSubset {
        /// Seed of the choice.
        seed: u64,
    },
    /// Every unsynced write survives but the last, which is cut at a random sector boundary
    /// (a multiple of `sector` in the file): the disk wrote its first sectors only.
    TornLast {
        /// Sector size: 512 or 4096.
        sector: usize,
        /// Seed of the cut.
        seed: u64,
    },
    /// Every unsynced write survives but the last, of which each sector (aligned in the file)
    /// survives or not, at random: the disk wrote some sectors of it, in any order.
    TornSectors {
        /// Sector size: 512 or 4096.
        sector: usize,
        /// Seed of the choice.
        seed: u64,
    },
}

#[derive(Clone, Debug)]
enum Op {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

/// One file. `written` and `durable` are shared copy-on-write (with each other, and with crash
/// images and corruption-test images), so taking an image or reopening a copy of a large file
/// copies only what is written. Invariant: `written` is `durable` with `unsynced` applied.
#[derive(Clone, Debug, Default)]
struct FileData {
    written: Arc<Vec<u8>>,
    durable: Arc<Vec<u8>>,
    unsynced: Vec<Op>,
}

impl FileData {
    /// A file whose bytes are all durable.
    fn durable(bytes: Arc<Vec<u8>>) -> Self {
        FileData {
            written: Arc::clone(&bytes),
            durable: bytes,
            unsynced: Vec::new(),
        }
    }
}

#[derive(Default)]
struct State {
    files: HashMap<PathBuf, FileData>,
    /// Names that survive a crash (created and made durable by `sync_dir`).
    durable_names: HashSet<PathBuf>,
    /// Files renamed since their directory was last synced: new name → the name the file had
    /// when it was last durable.
    renamed: HashMap<PathBuf, PathBuf>,
    dirs: HashSet<PathBuf>,
    locks: HashSet<PathBuf>,
    ops: u64,
    syncs: u64,
    faults: Vec<Fault>,
}

/// The simulated file system. Cloning shares the disk.
#[derive(Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("SimFs")
            .field("files", &s.files.len())
            .field("ops", &s.ops)
            .finish()
    }
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected I/O error ({what})"))
}

/// A small deterministic generator (xorshift64*), enough for choosing damage.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

impl SimFs {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a fault.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Removes every fault (say, after freeing disk space).
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Mutating operations performed so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// The disk after a power loss now: durable state plus what `damage` lets through. Locks
    /// are released, faults and counters reset.
    pub fn crash_image(&self, damage: Damage) -> SimFs {
        let s = self.lock();
        let mut files = HashMap::new();
        // A durable name that an unsynced rename moved away still names the moved file.
        let moved_from: HashSet<&PathBuf> = s.renamed.values().collect();
        for (path, data) in &s.files {
            let path = if s.durable_names.contains(path) && !moved_from.contains(path) {
                path
            } else {
                match s.renamed.get(path) {
                    Some(old) if s.durable_names.contains(old) => old,
                    _ => continue,
                }
            };
            let mut bytes = Arc::clone(&data.durable);
            let (keep_all, mut seed) = match damage {
                Damage::DropUnsynced => (false, 0),
                Damage::KeepUnsynced => (true, 0),
                Damage::RandomSubset { seed } => (false, seed | 1),
                Damage::TornLast { seed, .. } | Damage::TornSectors { seed, .. } => {
                    (true, seed | 1)
                }
            };
            let last = data.unsynced.len().saturating_sub(1);
            for (i, op) in data.unsynced.iter().enumerate() {
                let keep = match damage {
                    Damage::RandomSubset { .. } => next(&mut seed).is_multiple_of(2),
                    _ => keep_all,
                };
                if !keep {
                    continue;
                }
                match op {
                    Op::Write { offset, bytes: w } if i == last => match damage {
                        Damage::TornLast { sector, .. } => {
                            let pieces = sector_pieces(*offset, w.len(), sector);
                            let kept = next(&mut seed) as usize % (pieces.len() + 1);
                            for &(from, to) in &pieces[..kept] {
                                let at = *offset + from as u64;
                                apply_write(Arc::make_mut(&mut bytes), at, &w[from..to]);
                            }
                        }
                        Damage::TornSectors { sector, .. } => {
                            for (from, to) in sector_pieces(*offset, w.len(), sector) {
                                if next(&mut seed).is_multiple_of(2) {
                                    let at = *offset + from as u64;
                                    apply_write(Arc::make_mut(&mut bytes), at, &w[from..to]);
                                }
                            }
                        }
                        _ => apply(Arc::make_mut(&mut bytes), op),
                    },
                    op => apply(Arc::make_mut(&mut bytes), op),
                }
            }
            files.insert(path.clone(), FileData::durable(bytes));
        }
        let state = State {
            durable_names: files.keys().cloned().collect(),
            files,
            dirs: s.dirs.clone(),
            ..Default::default()
        };
        SimFs {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The written contents of a file (for corruption tests), shared: the file system copies
    /// them before its next write to the file.
    pub fn read_file(&self, path: &Path) -> Option<Arc<Vec<u8>>> {
        self.lock().files.get(path).map(|f| Arc::clone(&f.written))
    }

    /// Replaces a file's contents, durably (for corruption tests). Shared bytes are copied only
    /// when the file is first written.
    pub fn write_file(&self, path: &Path, bytes: impl Into<Arc<Vec<u8>>>) {
        let mut s = self.lock();
        s.durable_names.insert(path.to_owned());
        s.files
            .insert(path.to_owned(), FileData::durable(bytes.into()));
    }

    /// Paths of all files.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut p: Vec<PathBuf> = self.lock().files.keys().cloned().collect();
        p.sort();
        p
    }
}

/// Splits a write of `len` bytes at file offset `offset` at the file's `sector` boundaries:
/// the (from, to) ranges of the write that fall in each sector, in order.
fn sector_pieces(offset: u64, len: usize, sector: usize) -> Vec<(usize, usize)> {
    let mut pieces = Vec::new();
    let mut from = 0usize;
    while from < len {
        let at = offset as usize + from;
        let to = (at / sector + 1) * sector - offset as usize;
        pieces.push((from, to.min(len)));
        from = to;
    }
    pieces
}

fn apply(bytes: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, bytes: w } => apply_write(bytes, *offset, w),
        Op::SetLen(len) => bytes.resize(*len as usize, 0),
    }
}

fn apply_write(bytes: &mut Vec<u8>, offset: u64, w: &[u8]) {
    let end = offset as usize + w.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[offset as usize..end].copy_from_slice(w);
}

impl State {
    /// Counts a mutating operation and applies faults; `growing` marks operations that need
    /// space.
    fn op(&mut self, what: &str, growing: bool) -> io::Result<()> {
        self.ops += 1;
        let k = self.ops;
        let mut fail = None;
        self.faults.retain(|f| match *f {
            Fault::FailOnce(n) if n == k => {
                fail = Some(eio(what));
                false
            }
            Fault::FailFrom(n) if k >= n => {
                fail = Some(eio(what));
                true
            }
            Fault::NoSpaceFrom(n) if k >= n && growing => {
                fail = Some(io::Error::from(io::ErrorKind::StorageFull));
                true
            }
            _ => true,
        });
        fail.map_or(Ok(()), Err)
    }

    /// Applies [`Fault::NoSpaceIn`] to an operation on `path` that grows it.
    fn no_space_in(&self, path: &Path, growing: bool) -> io::Result<()> {
        let name = path.file_name().and_then(|n| n.to_str());
        let full = self
            .faults
            .iter()
            .any(|f| matches!(*f, Fault::NoSpaceIn(n) if growing && Some(n) == name));
        if full {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    path: PathBuf,
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.dirs.insert(dir.to_owned());
        Ok(())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StoreFile>> {
        let mut s = self.lock();
        if !s.files.contains_key(path) {
            if !create {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
            s.op("create", false)?;
            s.files.insert(path.to_owned(), FileData::default());
        }
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            path: path.to_owned(),
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        Ok(s.files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        Ok(self.lock().files.contains_key(path))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.op("remove", false)?;
        s.renamed.remove(path);
        s.files
            .remove(path)
            .map(drop)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        if !s.files.contains_key(from) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        s.op("rename", false)?;
        let data = s.files.remove(from).expect("checked above");
        // A file replaced at `to` is gone from the crash image too: annals never renames
        // over a file, so the model need not keep it.
        s.files.insert(to.to_owned(), data);
        let origin = s.renamed.remove(from).unwrap_or_else(|| from.to_owned());
        s.renamed.insert(to.to_owned(), origin);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.op("sync_dir", false)?;
        let present: Vec<PathBuf> = s
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect();
        s.durable_names.retain(|p| p.parent() != Some(dir));
        s.durable_names.extend(present);
        s.renamed.retain(|p, _| p.parent() != Some(dir));
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Debug + Send + Sync>>> {
        let mut s = self.lock();
        if !s.locks.insert(path.to_owned()) {
            return Ok(None);
        }
        Ok(Some(Box::new(SimLock {
            fs: self.clone(),
            path: path.to_owned(),
        })))
    }

    fn try_lock_file(&self, path: &Path) -> io::Result<Option<Box<dyn Debug + Send + Sync>>> {
        // Locks are by name here, so the locked file is always the one at the path. The
        // real file system creates the file; its creators create it (`open`) right after.
        self.try_lock(path)
    }
}

#[derive(Debug)]
struct SimLock {
    fs: SimFs,
    path: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.fs.lock().locks.remove(&self.path);
    }
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut State, &Path) -> io::Result<T>) -> io::Result<T> {
        let mut s = self.fs.lock();
        if !s.files.contains_key(&self.path) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        f(&mut s, &self.path)
    }
}

fn file<'a>(s: &'a mut State, path: &Path) -> &'a mut FileData {
    s.files.get_mut(path).expect("checked by SimFile::with")
}

impl StoreFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(|s, p| {
            let data = &file(s, p).written;
            let end = offset as usize + buf.len();
            if end > data.len() {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            buf.copy_from_slice(&data[offset as usize..end]);
            Ok(())
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(|s, p| {
            let grows = offset + buf.len() as u64 > file(s, p).written.len() as u64;
            s.op("write", grows)?;
            s.no_space_in(p, grows)?;
            let f = file(s, p);
            apply_write(Arc::make_mut(&mut f.written), offset, buf);
            f.unsynced.push(Op::Write {
                offset,
                bytes: buf.to_vec(),
            });
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|s, p| {
            s.op("sync", false)?;
            s.syncs += 1;
            let n = s.syncs;
            let failed = s.faults.iter().position(|f| *f == Fault::FailSync(n));
            let f = file(s, p);
            if let Some(i) = failed {
                // Like Linux after a failed fsync: the dirty data is dropped and the page
                // cache shows the durable state again.
                f.written = Arc::clone(&f.durable);
                f.unsynced.clear();
                s.faults.remove(i);
                return Err(eio("sync"));
            }
            let ops = std::mem::take(&mut f.unsynced);
            if !ops.is_empty() {
                let durable = Arc::make_mut(&mut f.durable);
                for op in &ops {
                    apply(durable, op);
                }
            }
            Ok(())
        })
    }

    fn size(&self) -> io::Result<u64> {
        self.with(|s, p| Ok(file(s, p).written.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|s, p| {
            let grows = len > file(s, p).written.len() as u64;
            s.op("set_len", grows)?;
            s.no_space_in(p, grows)?;
            let f = file(s, p);
            Arc::make_mut(&mut f.written).resize(len as usize, 0);
            f.unsynced.push(Op::SetLen(len));
            Ok(())
        })
    }
}
