//! A view's validated name and version.

use super::error::ViewError;

/// Longest view name accepted.
const NAME_BYTES_MAX: usize = 64;

/// A view's name and version, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ViewId {
    pub(crate) name: String,
    pub(crate) version: u64,
}

impl ViewId {
    pub(crate) fn new(name: String, version: u64) -> Result<Self, ViewError> {
        let valid = !name.is_empty()
            && name.len() <= NAME_BYTES_MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(ViewError::InvalidName { name });
        }
        if version == 0 {
            return Err(ViewError::InvalidVersion { view: name });
        }
        Ok(ViewId { name, version })
    }

    pub(crate) fn superseded(&self, active: u64) -> ViewError {
        ViewError::Superseded {
            view: self.name.clone(),
            version: self.version,
            active,
        }
    }

    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) fn damaged(&self, reason: impl Into<String>) -> ViewError {
        ViewError::Damaged {
            view: self.name.clone(),
            version: self.version,
            reason: reason.into(),
        }
    }
}
