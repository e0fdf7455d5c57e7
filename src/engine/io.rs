//! The file-I/O seam: every byte the engine writes, reads or syncs goes through [`FileSystem`]
//! and [`StoreFile`], so tests can substitute a simulated disk that loses unsynced data, tears
//! writes and fails operations on demand.
//!
//! [`create_atomically`] is how annals creates a database file (the runtime's state, the
//! snapshots): built complete under a temporary name, then renamed into place, so that a crash
//! at any moment leaves either no file or a complete one — never a half-made file that later
//! opens would have to tell apart from a damaged one.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A directory tree of files, as the engine needs it.
pub trait FileSystem: Send + Sync + Debug + 'static {
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens `path` for reading and writing, creating it (empty) when `create` is set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StoreFile>>;
    /// Opens the existing file at `path` for reading only: what a live reader of a store
    /// opens, so that it cannot change a byte even by mistake (writes through the handle fail).
    /// The default opens it as [`open`](Self::open) does, without creating it.
    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn StoreFile>> {
        self.open(path, false)
    }
    /// The names of the files in `dir` (not recursive), unordered.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Deletes the file at `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames the file `from` to `to` atomically, replacing any file at `to`. Durable once
    /// the directory is synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes `dir`'s entries (created, renamed, removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive advisory lock of the store whose lock file is `path` (a `LOCK` in
    /// the store directory), held until the returned guard drops; `Ok(None)` when another
    /// handle, in this process or another, holds it. The lock must hold even if someone
    /// deletes the lock file meanwhile: the real file system locks the directory too.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Debug + Send + Sync>>>;
    /// Takes an exclusive advisory lock on the file at `path` itself, creating the file
    /// (empty) if missing, held until the returned guard drops; `Ok(None)` when another
    /// handle holds it. Once taken, the locked file is the one at `path` (not one that was
    /// deleted or renamed away meanwhile).
    fn try_lock_file(&self, path: &Path) -> io::Result<Option<Box<dyn Debug + Send + Sync>>>;
}

/// One open file.
pub trait StoreFile: Send + Sync + Debug {
    /// Fills `buf` from `offset`; an error if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes written data durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Writes all of `buf` at `offset` and makes it durable before returning. The default is
    /// [`write_all_at`](Self::write_all_at) then [`sync_data`](Self::sync_data); the real file
    /// system uses one `pwritev2(RWF_DSYNC)`, which syncs just this range in a single call.
    fn write_all_durable_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(buf, offset)?;
        self.sync_data()
    }
    /// The file's size in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Truncates or extends (with zeros) the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFileSystem;

#[derive(Debug)]
struct OsFile {
    file: File,
}

impl FileSystem for OsFileSystem {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StoreFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .open(path)?;
        Ok(Arc::new(OsFile { file }))
    }

    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn StoreFile>> {
        let file = OpenOptions::new().read(true).open(path)?;
        Ok(Arc::new(OsFile { file }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Debug + Send + Sync>>> {
        // The directory itself is the lock: unlike the LOCK file, it cannot be deleted while
        // the store is in it. flock(2) locks belong to the open file description, and every
        // call opens its own, so a second open in the same process is refused just like
        // another process.
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let Some(dir_file) = retry_while_held(|| {
            let dir_file = File::open(dir)?;
            io::Result::Ok(flock(&dir_file)?.then_some(dir_file))
        })?
        else {
            return Ok(None);
        };
        // The LOCK file is locked as well, for older versions of annals, which lock only it.
        let Some(file) = lock_file(path)? else {
            return Ok(None);
        };
        Ok(Some(Box::new(LockGuard {
            _files: vec![dir_file, file],
            _path: path.to_owned(),
        })))
    }

    fn try_lock_file(&self, path: &Path) -> io::Result<Option<Box<dyn Debug + Send + Sync>>> {
        Ok(
            lock_file(path)?.map(|file| -> Box<dyn Debug + Send + Sync> {
                Box::new(LockGuard {
                    _files: vec![file],
                    _path: path.to_owned(),
                })
            }),
        )
    }
}

/// Locks the file at `path` (created if missing): `None` if another handle holds it. After
/// taking the lock, checks that the locked file is still the one at the path: one deleted or
/// renamed away in between (by a holder finishing with it) locks nothing anyone else sees, so
/// the lock is taken again on the file now there.
fn lock_file(path: &Path) -> io::Result<Option<File>> {
    // Each retry means another handle replaced the file in the instant between open and
    // lock; a few suffice unless something replaces it in a loop.
    for _ in 0..100 {
        let Some(file) = retry_while_held(|| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            io::Result::Ok(flock(&file)?.then_some(file))
        })?
        else {
            return Ok(None);
        };
        let locked = file.metadata()?;
        match fs::metadata(path) {
            Ok(now) if now.dev() == locked.dev() && now.ino() == locked.ino() => {
                return Ok(Some(file));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "{} keeps being replaced while it is locked",
        path.display()
    )))
}

/// Takes the exclusive flock(2) lock of `file` without waiting: `false` when it is held.
fn flock(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// How long a held lock is tried again before its holder is reported.
///
/// A lock released an instant ago can still look held: flock(2) locks belong to the open
/// file description, and a child process forked (by any thread of the holder's process)
/// while the lock was held shares that description until its `exec` closes the inherited
/// descriptor. Retrying for this long lets such a lock settle, so that closing a store and
/// opening it again in the same process never fails because another thread spawned a
/// process in between.
pub(crate) const LOCK_SETTLE: Duration = Duration::from_millis(500);

/// Runs `attempt` until it takes its lock (`Ok(Some)`), fails, or has found the lock held
/// for [`LOCK_SETTLE`]; `Ok(None)` then.
pub(crate) fn retry_while_held<T, E>(
    mut attempt: impl FnMut() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(taken) = attempt()? {
            return Ok(Some(taken));
        }
        if start.elapsed() >= LOCK_SETTLE {
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[derive(Debug)]
struct LockGuard {
    /// Closing them releases the locks.
    _files: Vec<File>,
    _path: PathBuf,
}

impl StoreFile for OsFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    #[cfg(target_os = "linux")]
    fn write_all_durable_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        use rustix::io::{ReadWriteFlags, pwritev2};
        while !buf.is_empty() {
            // Each call returns only once its bytes (and the metadata needed to read them)
            // are on stable storage, like a write followed by fdatasync of that range.
            match pwritev2(
                &self.file,
                &[io::IoSlice::new(buf)],
                offset,
                ReadWriteFlags::DSYNC,
            ) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(e) if e == rustix::io::Errno::INTR => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

/// A [`StoreFile`] as redb's storage backend, so that redb files (the index, snapshots) go
/// through the I/O seam like the log, fault injection included.
#[derive(Debug)]
pub struct RedbBackend(pub Arc<dyn StoreFile>);

impl redb::StorageBackend for RedbBackend {
    fn len(&self) -> Result<u64, redb::BackendError> {
        Ok(self.0.size()?)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), redb::BackendError> {
        // A damaged file can make redb ask for absurd ranges: say so rather than read zeros.
        let size = self.0.size()?;
        let len = out.len();
        if offset.checked_add(len as u64).is_none_or(|end| end > size) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read of {len} bytes at {offset} past the end of the file ({size} bytes)"),
            )
            .into());
        }
        Ok(self.0.read_exact_at(out, offset)?)
    }

    fn set_len(&self, len: u64) -> Result<(), redb::BackendError> {
        Ok(self.0.set_len(len)?)
    }

    fn sync_data(&self) -> Result<(), redb::BackendError> {
        Ok(self.0.sync_data()?)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), redb::BackendError> {
        Ok(self.0.write_all_at(data, offset)?)
    }
}

/// What [`create_atomically`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Creation {
    /// The file was already there: untouched, whatever it holds.
    Existing,
    /// The file was missing and is now there, complete and durable.
    Created,
    /// Another handle is creating the file right now.
    Busy,
}

/// The temporary name a file is built under before [`create_atomically`] renames it into
/// place: `<name>.creating`, beside it.
pub fn creating_path(path: &Path) -> PathBuf {
    super::layout::creating(path)
}

/// Creates the file at `path` if it is missing, so that a crash at any moment leaves either no
/// file at `path` or a complete one. `init` builds the complete file (a database with its
/// header and tables, say) at the temporary path it is given, through `fs`, and closes it;
/// then the file is synced, renamed to `path`, and the directory synced.
///
/// A file already at `path` is never touched, whatever it holds: it finished its creation, so
/// damage found in it later is damage, for the caller to report. A file left at the temporary
/// name by a creation that did not finish never held anything acknowledged: it is replaced,
/// or removed when `path` exists. Concurrent creators are kept apart by a lock on the
/// temporary file ([`FileSystem::try_lock_file`]): the loser gets [`Creation::Busy`].
///
/// `io_error` names a failed step (`operation`, the file) in the caller's error type; errors
/// of `init` pass through. After an error the temporary file may remain, to be replaced by
/// the next creation.
pub fn create_atomically<E>(
    fs: &dyn FileSystem,
    path: &Path,
    init: impl FnOnce(&Path) -> Result<(), E>,
    io_error: impl Fn(&'static str, &Path, io::Error) -> E,
) -> Result<Creation, E> {
    let temp = creating_path(path);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let exists = |p: &Path| fs.exists(p).map_err(|e| io_error("look for", p, e));
    if exists(path)? {
        remove_leftover(fs, &temp, &io_error)?;
        return Ok(Creation::Existing);
    }
    let Some(guard) = fs
        .try_lock_file(&temp)
        .map_err(|e| io_error("lock", &temp, e))?
    else {
        return Ok(Creation::Busy);
    };
    // Another creator may have finished between the first look and the lock.
    if exists(path)? {
        fs.remove(&temp).map_err(|e| io_error("remove", &temp, e))?;
        drop(guard);
        return Ok(Creation::Existing);
    }
    // Empty, or what a killed creation left: nothing in it was ever acknowledged.
    fs.open(&temp, true)
        .and_then(|f| f.set_len(0))
        .map_err(|e| io_error("truncate", &temp, e))?;
    init(&temp)?;
    fs.open(&temp, false)
        .and_then(|f| f.sync_data())
        .map_err(|e| io_error("sync", &temp, e))?;
    // Renamed while still locked, so no other creator can be replacing the temporary file.
    fs.rename(&temp, path)
        .map_err(|e| io_error("rename into place", &temp, e))?;
    fs.sync_dir(dir)
        .map_err(|e| io_error("sync directory", dir, e))?;
    drop(guard);
    Ok(Creation::Created)
}

/// Removes the temporary file of a creation that did not finish, unless a creator holds it.
fn remove_leftover<E>(
    fs: &dyn FileSystem,
    temp: &Path,
    io_error: &impl Fn(&'static str, &Path, io::Error) -> E,
) -> Result<(), E> {
    if !fs.exists(temp).map_err(|e| io_error("look for", temp, e))? {
        return Ok(());
    }
    let Some(guard) = fs
        .try_lock_file(temp)
        .map_err(|e| io_error("lock", temp, e))?
    else {
        return Ok(());
    };
    match fs.remove(temp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("remove", temp, e)),
    }
    drop(guard);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_released_within_the_settle_time_is_taken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("file");
        let fs = OsFileSystem;
        let held = fs.try_lock_file(&path).expect("lock").expect("free");
        // Released by another thread a moment later, as a forked child's inherited
        // descriptor is released by its exec.
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(LOCK_SETTLE / 5);
            drop(held);
        });
        let taken = fs.try_lock_file(&path).expect("lock");
        releaser.join().expect("releaser");
        assert!(
            taken.is_some(),
            "the lock was released within the settle time"
        );
    }

    #[test]
    fn a_lock_held_past_the_settle_time_is_reported_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = OsFileSystem;
        let lock = dir.path().join("LOCK");
        let _held = fs.try_lock(&lock).expect("lock").expect("free");
        assert!(fs.try_lock(&lock).expect("lock").is_none());
        assert!(fs.try_lock_file(&lock).expect("lock").is_none());
    }
}
