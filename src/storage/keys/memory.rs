//! Keys in memory, for the in-memory adapter and tests.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{KeyStore, SubjectKey, zero};
use crate::storage::StorageError;

/// Keys kept in memory: nothing survives the process. A forgotten key's bytes are overwritten
/// before its entry is removed.
#[derive(Debug, Default)]
pub struct InMemoryKeys {
    keys: Mutex<HashMap<String, SubjectKey>>,
}

impl InMemoryKeys {
    /// No keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many subjects have a key.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no subject has a key.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SubjectKey>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl KeyStore for InMemoryKeys {
    fn get(&self, subject: &str) -> Result<Option<SubjectKey>, StorageError> {
        Ok(self.lock().get(subject).cloned())
    }

    fn get_or_insert(
        &self,
        subject: &str,
        candidate: &SubjectKey,
    ) -> Result<SubjectKey, StorageError> {
        Ok(self
            .lock()
            .entry(subject.to_owned())
            .or_insert_with(|| candidate.clone())
            .clone())
    }

    fn forget(&self, subject: &str) -> Result<bool, StorageError> {
        let mut keys = self.lock();
        match keys.get_mut(subject) {
            Some(key) => {
                zero(&mut key.secret);
                keys.remove(subject);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
