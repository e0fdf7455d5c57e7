//! What an operator sees of a view version.

use crate::storage::Position;

/// What an operator sees of one view version without its handlers (see
/// [`kv::statuses`](super::kv::statuses) and
/// `sql::statuses`): how far it got and whether queries read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewStatus {
    /// The view's name.
    pub name: String,
    /// The version.
    pub version: u64,
    /// The first log position this version has not applied (1: none applied).
    pub next_position: Position,
    /// Whether this is the version queries read.
    pub active: bool,
}
