//! A read-only view of a file that accepts writes: they stay in memory, the file on disk is
//! never written. Opening the index through it lets a store be judged (see `health`) or
//! checked (see `verify`) without changing a byte, even when redb repairs the file as it opens
//! it after an unclean shutdown.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use super::io::StoreFile;

const PAGE: u64 = 4096;

/// A file whose writes stay in memory, over a base file that is only read.
#[derive(Debug)]
pub(crate) struct CopyOnWrite {
    base: Arc<dyn StoreFile>,
    state: Mutex<WrittenPages>,
}

#[derive(Debug)]
struct WrittenPages {
    len: u64,
    /// Bytes of the base file still visible (a shrink hides the rest).
    base_valid: u64,
    pages: HashMap<u64, Vec<u8>>,
}

impl CopyOnWrite {
    /// A view of `base`, which is read, never written.
    pub fn over(base: Arc<dyn StoreFile>) -> io::Result<Arc<Self>> {
        let base_len = base.size()?;
        Ok(Arc::new(CopyOnWrite {
            base,
            state: Mutex::new(WrittenPages {
                len: base_len,
                base_valid: base_len,
                pages: HashMap::new(),
            }),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WrittenPages> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fills `buf` with the base file's bytes at `offset` (zeros past what is visible).
    fn read_base(&self, state: &WrittenPages, buf: &mut [u8], offset: u64) -> io::Result<()> {
        buf.fill(0);
        if offset < state.base_valid {
            let n = ((state.base_valid - offset).min(buf.len() as u64)) as usize;
            self.base.read_exact_at(&mut buf[..n], offset)?;
        }
        Ok(())
    }
}

impl StoreFile for CopyOnWrite {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let state = self.state();
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= state.len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let mut at = offset;
        while at < end {
            let page = at / PAGE;
            let within = (at % PAGE) as usize;
            let n = ((PAGE - at % PAGE).min(end - at)) as usize;
            let out = &mut buf[(at - offset) as usize..(at - offset) as usize + n];
            match state.pages.get(&page) {
                Some(bytes) => out.copy_from_slice(&bytes[within..within + n]),
                None => self.read_base(&state, out, at)?,
            }
            at += n as u64;
        }
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.state();
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut at = offset;
        while at < end {
            let page = at / PAGE;
            if !state.pages.contains_key(&page) {
                let mut bytes = vec![0u8; PAGE as usize];
                if page * PAGE < state.len {
                    self.read_base(&state, &mut bytes, page * PAGE)?;
                }
                state.pages.insert(page, bytes);
            }
            let within = (at % PAGE) as usize;
            let n = ((PAGE - at % PAGE).min(end - at)) as usize;
            let from = (at - offset) as usize;
            let bytes = state.pages.get_mut(&page).expect("inserted above");
            bytes[within..within + n].copy_from_slice(&buf[from..from + n]);
            at += n as u64;
        }
        state.len = state.len.max(end);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.state().len)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state();
        if len < state.len {
            state.base_valid = state.base_valid.min(len);
            state.pages.retain(|&page, _| page * PAGE < len);
            if let Some(bytes) = state.pages.get_mut(&(len / PAGE)) {
                bytes[(len % PAGE) as usize..].fill(0);
            }
        }
        state.len = len;
        Ok(())
    }
}
