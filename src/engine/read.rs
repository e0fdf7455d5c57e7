//! The read path of one aggregate: runs of locations from the index tiers, read from the
//! segments in coalesced reads and verified entry by entry.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use super::continuity;
use super::engine_state::EngineState;
use super::entry_view::EntryView;
use super::error::EngineError;
use super::handle::Engine;
use super::index::{Location, Run};
use super::scan::SegmentSource;
use super::segment::Segment;

impl Engine {
    /// Visits the events of one aggregate with versions in `min..=max` — at most `limit`, the
    /// oldest ones, or the newest ones when `reverse` — in **ascending** version order, each
    /// with its position, borrowed from the read buffer: nothing is allocated per event.
    /// Every entry is verified (checksum, lengths, store, aggregate and version) before it is
    /// visited. The read stops, without reading further segments, once `visit` breaks.
    #[allow(clippy::too_many_arguments)]
    pub fn visit_events(
        &self,
        store: &str,
        aggregate: &str,
        min: u64,
        max: u64,
        limit: Option<usize>,
        reverse: bool,
        visit: &mut dyn FnMut(u64, EntryView<'_>) -> ControlFlow<()>,
    ) -> Result<(), EngineError> {
        // No segment file is swapped while the runs are read (see `compaction`).
        let _gate = self.shared.reading();
        let (mut runs, pinned) = self.runs_pinned(store, aggregate, min.max(1), max)?;
        if let Some(limit) = limit {
            limit_runs(&mut runs, limit, reverse);
        }
        let path = &self.shared.index_path;
        let source = Pinned {
            base: &self.shared,
            pinned,
        };
        read_runs(&source, path, store, aggregate, &runs, visit)
    }

    /// Locations of versions `min..=max` of an aggregate, ascending by version.
    pub(crate) fn locations(
        &self,
        store: &str,
        aggregate: &str,
        min: u64,
        max: u64,
    ) -> Result<Vec<(u64, Location)>, EngineError> {
        let runs = self.runs(store, aggregate, min.max(1), max)?;
        Ok(runs.iter().flat_map(Run::locations).collect())
    }

    /// The runs holding versions `min..=max` of an aggregate, cut to that range, ascending.
    fn runs(
        &self,
        store: &str,
        aggregate: &str,
        min: u64,
        max: u64,
    ) -> Result<Vec<Run>, EngineError> {
        Ok(self.runs_pinned(store, aggregate, min, max)?.0)
    }

    /// [`Engine::runs`], with the handle of the segment a compaction is replacing that
    /// matches the index view the runs were read from, when one of them lies in it: between
    /// the compaction's index commit and its swap, the engine's segment map still holds the
    /// old file, which only a view from before the commit may read.
    fn runs_pinned(
        &self,
        store: &str,
        aggregate: &str,
        min: u64,
        max: u64,
    ) -> Result<(Vec<Run>, Option<Arc<Segment>>), EngineError> {
        if min > max {
            return Ok((Vec::new(), None));
        }
        let (tails, last_in_memory, reader) = {
            let tiers = self.shared.tiers.read().unwrap_or_else(|p| p.into_inner());
            // Frozen (older) first, then active.
            let mut tails: Vec<(u64, Vec<Run>)> = Vec::with_capacity(2);
            // The newest memtable holding the aggregate knows its latest version.
            let mut last_in_memory = None;
            for mem in [tiers.frozen.as_deref(), Some(&tiers.active)]
                .into_iter()
                .flatten()
            {
                if let Some(tail) = mem.tail(store, aggregate) {
                    tails.push((tail.first_version, tail.runs_in(min, max).collect()));
                    last_in_memory = Some(tail.last_version());
                }
            }
            // Opened under the tiers' lock: see `Writer::check_versions`.
            (tails, last_in_memory, self.shared.index_reader()?)
        };
        let oldest_in_memory = tails
            .iter()
            .map(|(first, _)| *first)
            .min()
            .unwrap_or(u64::MAX);
        let mut out = if min < oldest_in_memory {
            reader.runs(
                store,
                aggregate,
                min,
                max.min(oldest_in_memory.saturating_sub(1)),
            )?
        } else {
            Vec::new()
        };
        // A version present twice (in the index and a frozen memtable) keeps one copy.
        for (_, runs) in tails {
            for mut run in runs {
                let next = out.last().map_or(0, |r| r.last_version() + 1);
                if run.last_version() < next {
                    continue;
                }
                if run.first_version < next {
                    run.skip_front((next - run.first_version) as usize);
                }
                out.push(run);
            }
        }
        let last = match last_in_memory {
            Some(last) => last,
            None => reader.last_version(store, aggregate)?.unwrap_or(0),
        };
        // Versions a compaction removed are not asked for: a read starts at the first
        // version the log still holds, which the index keeps apart from the runs.
        let mut min = min;
        if min <= max.min(last) && out.first().is_none_or(|r| r.first_version != min) {
            let first = reader.first_version(store, aggregate)?.unwrap_or(1);
            min = min.max(first);
            if min > max {
                return Ok((Vec::new(), None));
            }
        }
        let path = &self.shared.index_path;
        continuity::check(&out, min, max, last, path, (store, aggregate))?;
        // Read after the index view was opened: see `EngineState::transition`.
        let pinned = match self.shared.in_transition() {
            Some(id) if out.iter().any(|r| r.segment_id == id) => {
                let generation = reader.segment_generation(id)?;
                self.shared.transition_handle(id, generation)
            }
            _ => None,
        };
        Ok((out, pinned))
    }

    /// Aggregates of `store` by initial-event timestamp (inclusive bounds), strictly beyond
    /// `cursor` in scan order, at most `limit`.
    pub fn list_aggregates(
        &self,
        store: &str,
        after: Option<i64>,
        before: Option<i64>,
        reverse: bool,
        cursor: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, EngineError> {
        let admits = |t: i64, id: &str| {
            after.is_none_or(|a| t >= a)
                && before.is_none_or(|b| t <= b)
                && cursor.is_none_or(|c| if reverse { (t, id) < c } else { (t, id) > c })
        };
        let (mut found, reader) = {
            let tiers = self.shared.tiers.read().unwrap_or_else(|p| p.into_inner());
            let mut found = Vec::new();
            for mem in [Some(&tiers.active), tiers.frozen.as_deref()]
                .into_iter()
                .flatten()
            {
                if let Some(created) = mem.created(store) {
                    found.extend(created.iter().filter(|(t, id)| admits(*t, id)).cloned());
                }
            }
            (found, self.shared.index_reader()?)
        };
        found.extend(reader.aggregates_by_initial(store, after, before, reverse, cursor, limit)?);
        found.sort_unstable();
        found.dedup();
        if reverse {
            found.reverse();
        }
        found.truncate(limit);
        Ok(found)
    }
}

/// The engine's segments, with one handle pinned (see [`Engine::runs_pinned`]).
struct Pinned<'a> {
    base: &'a EngineState,
    pinned: Option<Arc<Segment>>,
}

impl SegmentSource for Pinned<'_> {
    fn log_dir(&self) -> &Path {
        SegmentSource::log_dir(self.base)
    }

    fn segment(&self, id: u64) -> Option<Arc<Segment>> {
        match &self.pinned {
            Some(segment) if segment.header.segment_id == id => Some(Arc::clone(segment)),
            _ => SegmentSource::segment(self.base, id),
        }
    }

    fn next_segment(&self, id: u64) -> Option<Arc<Segment>> {
        self.base.next_segment(id)
    }

    fn segment_holding(&self, position: u64) -> Option<Arc<Segment>> {
        self.base.segment_holding(position)
    }
}

/// Reads and verifies the entries of `runs` (one aggregate's, located through `index`, the
/// file errors name when they point astray) from `source`'s segments, coalescing
/// neighbouring runs of a segment into single reads, and visits them in order.
pub(crate) fn read_runs(
    source: &dyn SegmentSource,
    index: &Path,
    store: &str,
    aggregate: &str,
    runs: &[Run],
    visit: &mut dyn FnMut(u64, EntryView<'_>) -> ControlFlow<()>,
) -> Result<(), EngineError> {
    const GAP_MAX: u64 = 64 << 10;
    // The read buffer is what a fold of a long aggregate holds besides its state: 1 MiB
    // reads cost a few hundred syscalls per 100,000 events and keep that memory small.
    const READ_MAX: u64 = 1 << 20;
    let mut buf = Vec::new();
    let mut i = 0;
    while i < runs.len() {
        let first = &runs[i];
        let mut end = first.end();
        let mut j = i + 1;
        while j < runs.len() {
            let next = &runs[j];
            if next.segment_id != first.segment_id
                || next.offset < end
                || next.offset - end > GAP_MAX
                || next.end() - first.offset > READ_MAX
            {
                break;
            }
            end = next.end();
            j += 1;
        }
        let segment = source.segment(first.segment_id).ok_or_else(|| {
            EngineError::corruption(
                index.to_owned(),
                0,
                format!("index points into missing segment {}", first.segment_id),
            )
        })?;
        // A damaged index can locate entries past the segment's end: that is the index's
        // damage, not a short read of the log.
        if end > segment.header.size {
            return Err(EngineError::corruption(
                index.to_owned(),
                0,
                format!(
                    "the index locates entries of {store:?}/{aggregate:?} up to offset {end} \
                     of segment {}, which is {} bytes long",
                    first.segment_id, segment.header.size
                ),
            ));
        }
        buf.resize((end - first.offset) as usize, 0);
        segment
            .file
            .read_exact_at(&mut buf, first.offset)
            // A lazily opened segment that fails its check on first use reports corruption.
            .map_err(|e| EngineError::io("read", &segment.path, e))?;
        for run in &runs[i..j] {
            for (version, loc) in run.locations() {
                let start = (loc.offset - first.offset) as usize;
                let bytes = &buf[start..start + loc.len as usize];
                let entry =
                    EntryView::decode(bytes, store, aggregate, version).map_err(|reason| {
                        EngineError::corruption(segment.path.clone(), loc.offset, reason)
                    })?;
                if visit(loc.position, entry).is_break() {
                    return Ok(());
                }
            }
        }
        i = j;
    }
    Ok(())
}

/// Keeps the first `limit` events of `runs` (the last `limit` when `reverse`).
pub(crate) fn limit_runs(runs: &mut Vec<Run>, limit: usize, reverse: bool) {
    let total: usize = runs.iter().map(|r| r.lens.len()).sum();
    if total <= limit {
        return;
    }
    if reverse {
        let mut skip = total - limit;
        while let Some(first) = runs.first_mut() {
            if first.lens.len() > skip {
                if skip > 0 {
                    first.skip_front(skip);
                }
                break;
            }
            skip -= first.lens.len();
            runs.remove(0);
        }
    } else {
        let mut kept = 0;
        let mut cut = runs.len();
        for (i, run) in runs.iter_mut().enumerate() {
            if kept + run.lens.len() >= limit {
                run.lens.truncate(limit - kept);
                cut = i + 1;
                break;
            }
            kept += run.lens.len();
        }
        runs.truncate(cut);
        runs.retain(|r| !r.lens.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(lengths: &[usize]) -> Vec<Run> {
        let mut first_version = 1;
        lengths
            .iter()
            .map(|&n| {
                let run = Run {
                    first_version,
                    first_position: first_version,
                    segment_id: 1,
                    offset: 64 + first_version * 100,
                    lens: vec![10; n],
                };
                first_version += n as u64;
                run
            })
            .collect()
    }

    fn versions(runs: &[Run]) -> Vec<u64> {
        runs.iter()
            .flat_map(Run::locations)
            .map(|(v, _)| v)
            .collect()
    }

    #[test]
    fn a_limit_keeps_the_oldest_or_with_reverse_the_newest_events() {
        let mut forward = runs(&[2, 3, 2]);
        limit_runs(&mut forward, 4, false);
        assert_eq!(versions(&forward), vec![1, 2, 3, 4]);
        let mut exact = runs(&[2, 3, 2]);
        limit_runs(&mut exact, 5, false);
        assert_eq!(versions(&exact), vec![1, 2, 3, 4, 5]);
        let mut reverse = runs(&[2, 3, 2]);
        limit_runs(&mut reverse, 4, true);
        assert_eq!(versions(&reverse), vec![4, 5, 6, 7]);
        let mut boundary = runs(&[2, 3, 2]);
        limit_runs(&mut boundary, 2, true);
        assert_eq!(versions(&boundary), vec![6, 7]);
        let mut all = runs(&[2, 3]);
        limit_runs(&mut all, 9, true);
        assert_eq!(versions(&all), vec![1, 2, 3, 4, 5]);
    }
}
