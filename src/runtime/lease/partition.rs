//! Partitions of the global log by aggregate: which events a group member handles.
//!
//! An event belongs to partition `crc32(aggregate id) mod partitions` (CRC-32/ISO-HDLC of the
//! id's UTF-8 bytes, as `crc32fast` computes it). Every event of an aggregate is in one
//! partition, so a partition's handler sees each aggregate's events in order; and the function
//! is fixed (part of the state format: checkpoints are kept per partition), so every process,
//! of every version, agrees on it.

/// How many partitions a consumer group splits the log into, at most. Each partition has a
/// lease and a checkpoint of its own; a few per process is plenty.
pub const PARTITIONS_MAX: u32 = 1024;

/// The partition, out of `partitions`, that `aggregate_id`'s events belong to. `partitions` of 0
/// counts as 1.
///
/// ```
/// use annals::lease::partition_of;
/// assert_eq!(partition_of("pikachu", 1), 0);
/// assert!(partition_of("pikachu", 8) < 8);
/// assert_eq!(partition_of("pikachu", 8), partition_of("pikachu", 8));
/// ```
pub fn partition_of(aggregate_id: &str, partitions: u32) -> u32 {
    crc32fast::hash(aggregate_id.as_bytes()) % partitions.max(1)
}

/// The partitions member `me` should hold when `members` (every live member, `me` included) share
/// `partitions` partitions: partition `k` goes to the `k mod m`-th member in name order. Every
/// member computing this from the same member list gets a disjoint, complete and balanced
/// assignment (counts differ by at most one); members that briefly disagree on the list at
/// worst wait for a lease that is not released yet. Empty when `me` is not in `members`.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn assigned(partitions: u32, members: &[String], me: &str) -> Vec<u32> {
    let mut sorted: Vec<&str> = members.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let Some(rank) = sorted.iter().position(|m| *m == me) else {
        return Vec::new();
    };
    let count = sorted.len() as u32;
    (0..partitions.max(1))
        .filter(|k| k % count == rank as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_function_is_fixed() {
        // Checkpoints are kept per partition: these values must never change.
        assert_eq!(crc32fast::hash(b"pikachu"), 0xf45d_9698);
        assert_eq!(partition_of("pikachu", 7), 0xf45d_9698 % 7);
        assert_eq!(partition_of("", 4), 0);
        assert_eq!(partition_of("anything", 0), 0);
    }

    #[test]
    fn assignments_are_disjoint_complete_and_balanced() {
        for partitions in 1..=12u32 {
            for count in 1..=5usize {
                let members: Vec<String> = (0..count).map(|i| format!("m{i}")).rev().collect();
                let mut all: Vec<u32> = Vec::new();
                let mut sizes = Vec::new();
                for me in &members {
                    let mine = assigned(partitions, &members, me);
                    sizes.push(mine.len());
                    all.extend(mine);
                }
                all.sort_unstable();
                assert_eq!(all, (0..partitions).collect::<Vec<_>>());
                let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(max - min <= 1, "{partitions} over {count}: {sizes:?}");
            }
        }
        assert!(assigned(4, &["a".into()], "b").is_empty());
    }
}
