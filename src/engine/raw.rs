//! Pieces of the byte format that tests outside the crate use to damage a store precisely
//! (`tests/corruption`, `tests/crash`). Not an API: it changes with the format.

pub use super::frame::{FrameError, FrameHeader, decode_frame_header};
pub use super::io::RedbBackend;
pub use super::segment::{SEGMENT_HEADER_BYTES, SegmentHeader};
