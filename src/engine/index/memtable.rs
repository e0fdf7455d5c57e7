//! The in-memory tier of the index: [`MemTable`], the locations of events appended since the
//! last checkpoint, with one [`Tail`] of runs per aggregate.

use std::collections::{BTreeSet, HashMap};

use super::run::{Cursor, Location, Run, RunHead};

/// The events of one aggregate appended since the last checkpoint, as runs.
#[derive(Clone, Debug, Default)]
pub struct Tail {
    /// Version of the first event held.
    pub first_version: u64,
    /// Initial-event timestamp, when the aggregate was created in this memtable.
    pub initial_timestamp_ms: Option<i64>,
    /// Timestamp of the first version held.
    pub first_timestamp_ms: i64,
    heads: Vec<RunHead>,
    /// Entry length of every version held, from `first_version`.
    lens: Vec<u32>,
}

impl Tail {
    /// The latest version held.
    pub fn last_version(&self) -> u64 {
        self.first_version + self.lens.len() as u64 - 1
    }

    /// Appends version `last_version() + 1`, extending the last run when it lies right after
    /// it in the log.
    fn push(&mut self, version: u64, loc: Location) {
        let end = loc.offset + u64::from(loc.len);
        match self.heads.last_mut() {
            Some(head)
                if head.segment_id == loc.segment_id
                    && head.end == loc.offset
                    && head.first_position + (version - head.first_version) == loc.position =>
            {
                head.end = end;
            }
            _ => self.heads.push(RunHead {
                first_version: version,
                first_position: loc.position,
                segment_id: loc.segment_id,
                offset: loc.offset,
                end,
            }),
        }
        self.lens.push(loc.len);
    }

    /// The runs held, ascending.
    pub fn runs(&self) -> impl Iterator<Item = Run> + '_ {
        self.runs_in(1, u64::MAX)
    }

    /// The runs held, cut to versions `lo..=hi`, ascending.
    pub fn runs_in(&self, lo: u64, hi: u64) -> impl Iterator<Item = Run> + '_ {
        let last = self.last_version();
        self.heads.iter().enumerate().filter_map(move |(i, head)| {
            let run_last = self
                .heads
                .get(i + 1)
                .map_or(last, |next| next.first_version - 1);
            if run_last < lo || head.first_version > hi {
                return None;
            }
            let start = (head.first_version - self.first_version) as usize;
            let end = (run_last - self.first_version) as usize + 1;
            let run = Run {
                first_version: head.first_version,
                first_position: head.first_position,
                segment_id: head.segment_id,
                offset: head.offset,
                lens: self.lens[start..end].to_vec(),
            };
            if lo <= run.first_version && run_last <= hi {
                Some(run)
            } else {
                run.slice(lo, hi)
            }
        })
    }
}

/// Locations of recently appended events, by store and aggregate.
#[derive(Debug, Default)]
pub struct MemTable {
    pub(super) stores: HashMap<String, HashMap<String, Tail>>,
    created: HashMap<String, BTreeSet<(i64, String)>>,
    /// Number of events held.
    pub events: usize,
    /// The log position just past the last event held (or the start, when empty).
    pub end: Cursor,
    /// Set while the log is replayed from its start past a compacted segment (an index
    /// rebuild): an aggregate first met here past version 1, and unknown to the index, is one
    /// whose earlier versions compaction removed rather than damage (see `Index::apply`).
    pub allow_floors: bool,
}

impl MemTable {
    /// An empty memtable that starts at `end`.
    pub fn starting_at(end: Cursor) -> Self {
        MemTable {
            end,
            ..Default::default()
        }
    }

    /// Empties the memtable, which now starts at `end`, keeping [`MemTable::allow_floors`].
    pub fn restart_at(&mut self, end: Cursor) {
        let allow_floors = self.allow_floors;
        *self = MemTable::starting_at(end);
        self.allow_floors = allow_floors;
    }

    /// The latest version of an aggregate held here.
    pub fn last_version(&self, store: &str, aggregate: &str) -> Option<u64> {
        self.tail(store, aggregate).map(Tail::last_version)
    }

    /// The events of an aggregate held here.
    pub fn tail(&self, store: &str, aggregate: &str) -> Option<&Tail> {
        self.stores.get(store)?.get(aggregate)
    }

    /// Records an event. Versions of an aggregate must arrive in order (`last + 1`; any version
    /// for an aggregate first seen here).
    pub fn insert(
        &mut self,
        store: &str,
        aggregate: &str,
        version: u64,
        timestamp_ms: i64,
        loc: Location,
    ) {
        self.insert_all([(store, aggregate, version, timestamp_ms, loc)]);
    }

    /// Records events (store, aggregate, version, timestamp, location) in order, as
    /// [`MemTable::insert`] does; consecutive events of one aggregate cost one lookup.
    pub fn insert_all<'k>(
        &mut self,
        events: impl IntoIterator<Item = (&'k str, &'k str, u64, i64, Location)>,
    ) {
        let mut current: Option<(&str, &str, &mut Tail)> = None;
        for (store, aggregate, version, timestamp_ms, loc) in events {
            let tail = match current.take() {
                Some((s, a, tail)) if s == store && a == aggregate => tail,
                _ => {
                    let aggregates = match self.stores.get_mut(store) {
                        Some(a) => a,
                        None => self.stores.entry(store.to_owned()).or_default(),
                    };
                    match aggregates.get_mut(aggregate) {
                        Some(t) => t,
                        None => aggregates
                            .entry(aggregate.to_owned())
                            .or_insert_with(|| Tail {
                                first_version: version,
                                first_timestamp_ms: timestamp_ms,
                                ..Tail::default()
                            }),
                    }
                }
            };
            debug_assert_eq!(
                tail.first_version + tail.lens.len() as u64,
                version,
                "versions arrive in order"
            );
            tail.push(version, loc);
            if version == 1 {
                tail.initial_timestamp_ms = Some(timestamp_ms);
                let created = match self.created.get_mut(store) {
                    Some(created) => created,
                    None => self.created.entry(store.to_owned()).or_default(),
                };
                created.insert((timestamp_ms, aggregate.to_owned()));
            }
            self.events += 1;
            current = Some((store, aggregate, tail));
        }
    }

    /// Aggregates created here, ordered by (initial timestamp, id).
    pub fn created(&self, store: &str) -> Option<&BTreeSet<(i64, String)>> {
        self.created.get(store)
    }

    /// Every aggregate held here with the first and the latest version held, in no
    /// particular order.
    pub fn spans(&self) -> impl Iterator<Item = (&str, &str, u64, u64)> + '_ {
        self.stores.iter().flat_map(|(store, aggregates)| {
            aggregates.iter().map(move |(aggregate, tail)| {
                let (first, last) = (tail.first_version, tail.last_version());
                (store.as_str(), aggregate.as_str(), first, last)
            })
        })
    }

    /// Every aggregate held here with its latest version, in no particular order.
    pub fn aggregates(&self) -> impl Iterator<Item = (&str, &str, u64)> + '_ {
        self.stores.iter().flat_map(|(store, aggregates)| {
            aggregates.iter().map(move |(aggregate, tail)| {
                (store.as_str(), aggregate.as_str(), tail.last_version())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(position: u64, segment_id: u64, offset: u64, len: u32) -> Location {
        Location {
            position,
            segment_id,
            offset,
            len,
        }
    }

    #[test]
    fn adjacent_events_share_a_run_and_any_gap_starts_a_new_one() {
        let mut mem = MemTable::default();
        mem.insert_all([
            ("S", "a", 1, 10, loc(1, 1, 100, 50)),
            ("S", "a", 2, 11, loc(2, 1, 150, 60)),
            ("S", "b", 1, 12, loc(3, 1, 210, 70)),
            // Another aggregate's entry lies in between: a new run.
            ("S", "a", 3, 13, loc(4, 1, 280, 40)),
            ("S", "a", 4, 14, loc(5, 1, 320, 40)),
            // Another segment: a new run.
            ("S", "a", 5, 15, loc(6, 2, 64, 40)),
        ]);
        let tail = mem.tail("S", "a").unwrap();
        let runs: Vec<Run> = tail.runs().collect();
        assert_eq!(runs.len(), 3);
        assert_eq!(
            (runs[0].first_version, runs[0].lens.clone()),
            (1, vec![50, 60])
        );
        assert_eq!((runs[1].first_version, runs[1].offset), (3, 280));
        assert_eq!(runs[2].segment_id, 2);
        let all: Vec<(u64, Location)> = runs.iter().flat_map(Run::locations).collect();
        assert_eq!(all[1], (2, loc(2, 1, 150, 60)));
        assert_eq!(all[3], (4, loc(5, 1, 320, 40)));
        assert_eq!(tail.last_version(), 5);
        assert_eq!(mem.events, 6);
        assert_eq!(mem.last_version("S", "b"), Some(1));
    }

    #[test]
    fn a_run_cut_to_a_version_range_keeps_exact_locations() {
        let run = Run {
            first_version: 10,
            first_position: 100,
            segment_id: 3,
            offset: 1000,
            lens: vec![5, 6, 7, 8],
        };
        let part = run.slice(11, 12).unwrap();
        assert_eq!(
            part.locations().collect::<Vec<_>>(),
            vec![(11, loc(101, 3, 1005, 6)), (12, loc(102, 3, 1011, 7))]
        );
        assert_eq!(part.end(), 1018);
        assert!(run.slice(14, 20).is_none());
        let mut front = run.clone();
        front.skip_front(3);
        assert_eq!(front.locations().next(), Some((13, loc(103, 3, 1018, 8))));
    }

    #[test]
    fn malformed_run_rows_are_refused() {
        assert!(Run::decode(1, (1, 1, 64, &[])).is_none());
        assert!(Run::decode(1, (1, 1, 64, &[1, 0, 0])).is_none());
        assert!(Run::decode(0, (1, 1, 64, &[1, 0, 0, 0])).is_none());
        let run = Run::decode(2, (7, 1, 64, &[9, 0, 0, 0, 4, 0, 0, 0])).unwrap();
        assert_eq!((run.last_version(), run.lens.clone()), (3, vec![9, 4]));
    }
}
