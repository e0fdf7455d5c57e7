//! The list of the targets and their seed inputs.

use super::frame_decoder::{frame_decoder, frame_seeds};
use super::index_decoder::{INDEX_PATCH, INDEX_TRUNCATE, index_decoder};
use super::metadata_decoders::{metadata_decoders, metadata_seeds};
use super::operations::{operation_seeds, operations};
use super::segment_recovery::{segment_recovery, segment_seeds};

/// Structured seed inputs for `target`, for the fuzzer to start from (written to
/// `fuzz/corpus/<target>/` by `tests/fuzz_corpus`). Empty for an unknown target.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "frame_decoder" => frame_seeds(),
        "segment_recovery" => segment_seeds(),
        "index_decoder" => vec![
            vec![INDEX_PATCH],
            vec![INDEX_TRUNCATE, 0, 16, 0],
            vec![INDEX_PATCH, 0, 0, 0xff],
        ],
        "metadata_decoders" => metadata_seeds(),
        "operations" => operation_seeds(),
        _ => Vec::new(),
    }
}

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target: its name and body.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame_decoder", frame_decoder),
    ("segment_recovery", segment_recovery),
    ("index_decoder", index_decoder),
    ("metadata_decoders", metadata_decoders),
    ("operations", operations),
];
