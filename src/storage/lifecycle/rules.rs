//! The lifecycle rules in force: the fold of the `$lifecycle` events, and what they leave
//! visible of each aggregate.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{DeleteMode, LIFECYCLE_STORE, LifecycleRecord, RecordError, Retention};
use crate::storage::{StorageError, Timestamp};

/// The rules of every event store, folded from the `$lifecycle` events in version order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Lifecycle {
    stores: HashMap<String, StoreRules>,
}

#[derive(Clone, Debug, Default)]
struct StoreRules {
    /// Version of the store's last `$lifecycle` event (its aggregate in `$lifecycle`).
    version: u64,
    retention: Retention,
    aggregates: HashMap<String, AggregateRules>,
}

#[derive(Clone, Copy, Debug, Default)]
struct AggregateRules {
    deleted: Option<DeleteMode>,
    /// Versions below this one are hidden (0 or 1: none).
    truncated_before: u64,
}

/// What the rules leave of one aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Visible {
    /// Nothing: the aggregate is deleted.
    Deleted(DeleteMode),
    /// Its versions from this one on (beyond its last version: none of them).
    From(u64),
}

/// What the rules need to know of one aggregate, answered by the adapter that holds it. Asked
/// only when a rule depends on it (retention).
pub(crate) trait AggregateFacts {
    /// The aggregate's last version (0 when it has none).
    fn last_version(&mut self) -> Result<u64, StorageError>;
    /// The first version at or after `from` whose timestamp is at or after `cutoff`, if any.
    fn first_since(&mut self, from: u64, cutoff: Timestamp) -> Result<Option<u64>, StorageError>;
}

/// [`AggregateFacts`] of any aggregate, as an index answers them (for compaction).
// The log engine's compaction calls the predicate built on it once it is wired in.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) trait IndexFacts: Sync {
    /// The aggregate's last version (0 when it has none).
    fn last_version(&self, store: &str, aggregate: &str) -> Result<u64, StorageError>;
    /// The first version of the aggregate at or after `from` whose timestamp is at or after
    /// `cutoff`, if any.
    fn first_since(
        &self,
        store: &str,
        aggregate: &str,
        from: u64,
        cutoff: Timestamp,
    ) -> Result<Option<u64>, StorageError>;
}

/// One aggregate's facts from an [`IndexFacts`].
#[cfg_attr(not(test), allow(dead_code))]
struct FactsOf<'a> {
    index: &'a dyn IndexFacts,
    store: &'a str,
    aggregate: &'a str,
}

impl AggregateFacts for FactsOf<'_> {
    fn last_version(&mut self) -> Result<u64, StorageError> {
        self.index.last_version(self.store, self.aggregate)
    }

    fn first_since(&mut self, from: u64, cutoff: Timestamp) -> Result<Option<u64>, StorageError> {
        self.index
            .first_since(self.store, self.aggregate, from, cutoff)
    }
}

/// `now - age`, saturating.
fn cutoff(now: Timestamp, age: std::time::Duration) -> Timestamp {
    let age = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_unix_millis(now.unix_millis().saturating_sub(age))
}

impl Lifecycle {
    /// Folds one `$lifecycle` event of `store` (its aggregate in `$lifecycle`) at `version`.
    pub(crate) fn apply_event(
        &mut self,
        store: &str,
        version: u64,
        event_type: &str,
        payload: &[u8],
    ) -> Result<(), RecordError> {
        let record = LifecycleRecord::decode(event_type, payload)?;
        self.apply(store, version, &record);
        Ok(())
    }

    /// Folds one decoded `$lifecycle` event.
    pub(crate) fn apply(&mut self, store: &str, version: u64, record: &LifecycleRecord) {
        let rules = self.stores.entry(store.to_owned()).or_default();
        rules.version = rules.version.max(version);
        let aggregate = |rules: &mut StoreRules, id: &str| -> AggregateRules {
            rules.aggregates.get(id).copied().unwrap_or_default()
        };
        match record {
            LifecycleRecord::Deleted { aggregate_id, mode } => {
                let mut a = aggregate(rules, aggregate_id);
                // A hard delete is final: a later soft one (refused when asked) cannot soften it.
                if a.deleted != Some(DeleteMode::Hard) {
                    a.deleted = Some(*mode);
                }
                rules.aggregates.insert(aggregate_id.clone(), a);
            }
            LifecycleRecord::Restored { aggregate_id } => {
                let mut a = aggregate(rules, aggregate_id);
                if a.deleted == Some(DeleteMode::Soft) {
                    a.deleted = None;
                }
                rules.aggregates.insert(aggregate_id.clone(), a);
            }
            LifecycleRecord::Truncated {
                aggregate_id,
                before,
            } => {
                let mut a = aggregate(rules, aggregate_id);
                a.truncated_before = a.truncated_before.max(*before);
                rules.aggregates.insert(aggregate_id.clone(), a);
            }
            LifecycleRecord::RetentionSet(retention) => rules.retention = *retention,
        }
    }

    /// The version the next `$lifecycle` event of `store` takes.
    pub(crate) fn next_version(&self, store: &str) -> u64 {
        self.stores.get(store).map_or(0, |s| s.version) + 1
    }

    /// Whether any rule applies to any store (when none does, compaction has nothing to do).
    pub(crate) fn has_any_rule(&self) -> bool {
        self.stores.keys().any(|store| self.has_rules(store))
    }

    /// Whether any rule applies to `store` (when none does, everything of it is visible).
    pub(crate) fn has_rules(&self, store: &str) -> bool {
        self.stores
            .get(store)
            .is_some_and(|s| !s.aggregates.is_empty() || !s.retention.is_none())
    }

    /// How the aggregate is deleted, if it is.
    pub(crate) fn deleted(&self, store: &str, aggregate: &str) -> Option<DeleteMode> {
        self.stores.get(store)?.aggregates.get(aggregate)?.deleted
    }

    /// The retention rule of `store`.
    pub(crate) fn retention(&self, store: &str) -> Retention {
        self.stores
            .get(store)
            .map_or_else(Retention::default, |s| s.retention)
    }

    /// Refuses a commit that writes to a deleted aggregate.
    pub(crate) fn check_push<'e>(
        &self,
        events: impl IntoIterator<Item = (&'e str, &'e str)>,
    ) -> Result<(), StorageError> {
        if self.stores.is_empty() {
            return Ok(());
        }
        for (store, aggregate) in events {
            if let Some(mode) = self.deleted(store, aggregate) {
                return Err(deleted_error(store, aggregate, mode));
            }
        }
        Ok(())
    }

    /// Refuses an operation the rules in force forbid: restoring or soft-deleting a
    /// hard-deleted aggregate, truncating a deleted one, a retention of `max_count: 0`.
    pub(crate) fn check(&self, store: &str, record: &LifecycleRecord) -> Result<(), StorageError> {
        match record {
            LifecycleRecord::Deleted {
                aggregate_id,
                mode: DeleteMode::Soft,
            }
            | LifecycleRecord::Restored { aggregate_id } => {
                match self.deleted(store, aggregate_id) {
                    Some(DeleteMode::Hard) => {
                        Err(deleted_error(store, aggregate_id, DeleteMode::Hard))
                    }
                    _ => Ok(()),
                }
            }
            LifecycleRecord::Deleted { .. } => Ok(()),
            LifecycleRecord::Truncated { aggregate_id, .. } => {
                match self.deleted(store, aggregate_id) {
                    Some(mode) => Err(deleted_error(store, aggregate_id, mode)),
                    None => Ok(()),
                }
            }
            LifecycleRecord::RetentionSet(retention) => match retention.max_count {
                Some(0) => Err(StorageError::InvalidRetention {
                    reason: "max_count must be at least 1 (delete the aggregates instead)"
                        .to_owned(),
                }),
                _ => Ok(()),
            },
        }
    }

    /// What the rules leave visible of an aggregate at `now`. `facts` is asked only when a
    /// retention rule needs them.
    pub(crate) fn visible(
        &self,
        store: &str,
        aggregate: &str,
        now: Timestamp,
        facts: &mut dyn AggregateFacts,
    ) -> Result<Visible, StorageError> {
        let Some(rules) = self.stores.get(store) else {
            return Ok(Visible::From(1));
        };
        let a = rules.aggregates.get(aggregate).copied().unwrap_or_default();
        if let Some(mode) = a.deleted {
            return Ok(Visible::Deleted(mode));
        }
        let mut first = a.truncated_before.max(1);
        if let Some(count) = rules.retention.max_count {
            let last = facts.last_version()?;
            first = first.max(last.saturating_sub(count) + 1);
        }
        if let Some(age) = rules.retention.max_age {
            // The expired events are the retained ones older than the cutoff up to the first
            // that is not: so an event expires only with every earlier retained version.
            first = match facts.first_since(first, cutoff(now, age))? {
                Some(version) => version,
                None => first.max(facts.last_version()? + 1),
            };
        }
        Ok(Visible::From(first))
    }

    /// Whether one event of the log is visible at `now`; `memo` keeps what was worked out for
    /// each aggregate across the events of one read.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn admits<F: AggregateFacts>(
        &self,
        memo: &mut HashMap<(String, String), Visible>,
        store: &str,
        aggregate: &str,
        version: u64,
        now: Timestamp,
        facts: impl FnOnce() -> F,
    ) -> Result<bool, StorageError> {
        if store == LIFECYCLE_STORE || !self.has_rules(store) {
            return Ok(true);
        }
        let key = (store.to_owned(), aggregate.to_owned());
        let visible = match memo.get(&key) {
            Some(v) => *v,
            None => {
                let v = self.visible(store, aggregate, now, &mut facts())?;
                memo.insert(key, v);
                v
            }
        };
        Ok(matches!(visible, Visible::From(first) if version >= first))
    }

    /// The compaction predicate: whether an entry of the log survives a compaction at `now`.
    // The log engine's compaction calls it (through [`Compaction`]) once it is wired in.
    /// `$lifecycle` entries, and every event of a soft-deleted aggregate, are always kept;
    /// an entry is removed only when the rules hide it (hard delete, truncation, retention).
    /// `index` is asked for an aggregate's last version and timestamps only when a retention
    /// rule needs them; if it fails, the entry is kept.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn keeps(
        &self,
        store: &str,
        aggregate: &str,
        version: u64,
        timestamp: Timestamp,
        now: Timestamp,
        index: &dyn IndexFacts,
    ) -> bool {
        self.first_kept(store, aggregate, version, timestamp, now, &mut |_| {
            self.visible(
                store,
                aggregate,
                now,
                &mut FactsOf {
                    index,
                    store,
                    aggregate,
                },
            )
        })
    }

    /// [`keeps`](Self::keeps), with the aggregate's visibility worked out by `visible` (which
    /// is called only when the entry's own fields do not settle it).
    #[cfg_attr(not(test), allow(dead_code))]
    fn first_kept(
        &self,
        store: &str,
        aggregate: &str,
        version: u64,
        timestamp: Timestamp,
        now: Timestamp,
        visible: &mut dyn FnMut(&Self) -> Result<Visible, StorageError>,
    ) -> bool {
        if store == LIFECYCLE_STORE {
            return true;
        }
        let Some(rules) = self.stores.get(store) else {
            return true;
        };
        let a = rules.aggregates.get(aggregate).copied().unwrap_or_default();
        match a.deleted {
            Some(DeleteMode::Soft) => return true,
            Some(DeleteMode::Hard) => return false,
            None => {}
        }
        if version < a.truncated_before {
            return false;
        }
        let retention = rules.retention;
        let young = retention
            .max_age
            .is_none_or(|age| timestamp >= cutoff(now, age));
        if retention.max_count.is_none() && young {
            return true;
        }
        match visible(self) {
            Ok(Visible::From(first)) => version >= first,
            Ok(Visible::Deleted(_)) | Err(_) => true,
        }
    }

    /// The compaction predicate at `now`, over `index`, remembering each aggregate's first
    /// visible version: see [`Compaction::keeps`].
    pub(crate) fn compaction<'i>(
        &self,
        now: Timestamp,
        index: &'i dyn IndexFacts,
    ) -> Compaction<'i> {
        Compaction {
            rules: self.clone(),
            now,
            index,
            memo: Mutex::default(),
            last: Mutex::default(),
        }
    }
}

/// The typed refusal for a deleted aggregate.
pub(crate) fn deleted_error(store: &str, aggregate: &str, mode: DeleteMode) -> StorageError {
    StorageError::AggregateDeleted {
        event_store_id: store.to_owned(),
        aggregate_id: aggregate.to_owned(),
        hard: mode == DeleteMode::Hard,
    }
}

/// The rules as they stood when a compaction started, as the predicate the log engine's
/// compaction calls for every entry of the segments it rewrites.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct Compaction<'i> {
    rules: Lifecycle,
    now: Timestamp,
    index: &'i dyn IndexFacts,
    /// First visible version of each aggregate whose entries needed it.
    memo: Mutex<HashMap<(String, String), Visible>>,
    /// Last version of each aggregate that had a hidden entry.
    last: Mutex<HashMap<(String, String), u64>>,
}

impl Compaction<'_> {
    /// Whether a compaction of the log keeps the entry: when [`Compaction::keeps`] does, and
    /// also for the **last** event of an aggregate that is not hard deleted, hidden or not. An
    /// aggregate truncated or expired to nothing still exists (listed, numbering on from its
    /// last version, see docs/data-lifecycle.md); the log's index only knows an aggregate
    /// whose events the log holds, so its last event stays, hidden from reads by the rules.
    /// What remains is still a suffix of the aggregate's versions.
    pub(crate) fn retains(
        &self,
        store: &str,
        aggregate: &str,
        version: u64,
        timestamp: Timestamp,
    ) -> bool {
        if self.keeps(store, aggregate, version, timestamp) {
            return true;
        }
        let hard = self
            .rules
            .stores
            .get(store)
            .and_then(|rules| rules.aggregates.get(aggregate))
            .is_some_and(|a| a.deleted == Some(DeleteMode::Hard));
        if hard {
            return false;
        }
        let key = (store.to_owned(), aggregate.to_owned());
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let last = match last.get(&key) {
            Some(v) => *v,
            None => match self.index.last_version(store, aggregate) {
                Ok(v) => *last.entry(key).or_insert(v),
                // Unknown: keep the entry (never remove on less information).
                Err(_) => return true,
            },
        };
        version >= last
    }

    /// Whether the entry survives: [`Lifecycle::keeps`] at the compaction's `now`, asking the
    /// index at most once per aggregate.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn keeps(
        &self,
        store: &str,
        aggregate: &str,
        version: u64,
        timestamp: Timestamp,
    ) -> bool {
        self.rules.first_kept(
            store,
            aggregate,
            version,
            timestamp,
            self.now,
            &mut |rules| {
                let key = (store.to_owned(), aggregate.to_owned());
                if let Some(v) = self
                    .memo
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&key)
                {
                    return Ok(*v);
                }
                let v = rules.visible(
                    store,
                    aggregate,
                    self.now,
                    &mut FactsOf {
                        index: self.index,
                        store,
                        aggregate,
                    },
                )?;
                self.memo
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, v);
                Ok(v)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// One aggregate's timestamps (index `i` = version `i + 1`), in milliseconds.
    struct Stream(Vec<i64>);

    impl AggregateFacts for &Stream {
        fn last_version(&mut self) -> Result<u64, StorageError> {
            Ok(self.0.len() as u64)
        }
        fn first_since(
            &mut self,
            from: u64,
            cutoff: Timestamp,
        ) -> Result<Option<u64>, StorageError> {
            Ok((from.max(1)..=self.0.len() as u64)
                .find(|v| self.0[(*v - 1) as usize] >= cutoff.unix_millis()))
        }
    }

    impl IndexFacts for Stream {
        fn last_version(&self, _: &str, _: &str) -> Result<u64, StorageError> {
            AggregateFacts::last_version(&mut &*self)
        }
        fn first_since(
            &self,
            _: &str,
            _: &str,
            from: u64,
            cutoff: Timestamp,
        ) -> Result<Option<u64>, StorageError> {
            AggregateFacts::first_since(&mut &*self, from, cutoff)
        }
    }

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(ms)
    }

    fn rules(records: &[LifecycleRecord]) -> Lifecycle {
        let mut l = Lifecycle::default();
        for (i, r) in records.iter().enumerate() {
            l.apply("S", i as u64 + 1, r);
        }
        l
    }

    fn deleted(mode: DeleteMode) -> LifecycleRecord {
        LifecycleRecord::Deleted {
            aggregate_id: "a".into(),
            mode,
        }
    }

    fn retention(max_age_ms: Option<u64>, max_count: Option<u64>) -> LifecycleRecord {
        LifecycleRecord::RetentionSet(Retention {
            max_age: max_age_ms.map(Duration::from_millis),
            max_count,
        })
    }

    fn visible(l: &Lifecycle, stream: &Stream, now: i64) -> Visible {
        l.visible("S", "a", at(now), &mut &*stream).unwrap()
    }

    #[test]
    fn without_rules_everything_is_visible_and_kept() {
        let l = Lifecycle::default();
        let s = Stream(vec![1, 2, 3]);
        assert_eq!(visible(&l, &s, 10), Visible::From(1));
        assert!(l.keeps("S", "a", 1, at(1), at(10), &s));
        assert!(!l.has_rules("S"));
        assert_eq!(l.next_version("S"), 1);
    }

    #[test]
    fn soft_delete_hides_everything_keeps_everything_and_restores() {
        let s = Stream(vec![1, 2, 3]);
        let l = rules(&[deleted(DeleteMode::Soft)]);
        assert_eq!(visible(&l, &s, 10), Visible::Deleted(DeleteMode::Soft));
        assert!(l.keeps("S", "a", 1, at(1), at(10), &s));
        assert!(l.check_push([("S", "a")]).is_err());
        assert!(l.check_push([("S", "b")]).is_ok());
        let l = rules(&[
            deleted(DeleteMode::Soft),
            LifecycleRecord::Restored {
                aggregate_id: "a".into(),
            },
        ]);
        assert_eq!(visible(&l, &s, 10), Visible::From(1));
        assert_eq!(l.next_version("S"), 3);
    }

    #[test]
    fn hard_delete_is_final_and_removed_by_compaction() {
        let s = Stream(vec![1, 2, 3]);
        let l = rules(&[deleted(DeleteMode::Hard)]);
        assert!(!l.keeps("S", "a", 3, at(3), at(10), &s));
        assert!(l.keeps("S", "b", 3, at(3), at(10), &s));
        let restore = LifecycleRecord::Restored {
            aggregate_id: "a".into(),
        };
        assert!(matches!(
            l.check("S", &restore),
            Err(StorageError::AggregateDeleted { hard: true, .. })
        ));
        assert!(l.check("S", &deleted(DeleteMode::Soft)).is_err());
        // Even folded anyway, a restore or soft delete does not undo it.
        let l = rules(&[
            deleted(DeleteMode::Hard),
            restore,
            deleted(DeleteMode::Soft),
        ]);
        assert_eq!(visible(&l, &s, 10), Visible::Deleted(DeleteMode::Hard));
    }

    #[test]
    fn truncation_hides_and_removes_the_versions_before_it_and_only_grows() {
        let s = Stream(vec![1, 2, 3, 4]);
        let truncate = |before| LifecycleRecord::Truncated {
            aggregate_id: "a".into(),
            before,
        };
        let l = rules(&[truncate(3), truncate(2)]);
        assert_eq!(visible(&l, &s, 10), Visible::From(3));
        assert!(!l.keeps("S", "a", 2, at(2), at(10), &s));
        assert!(l.keeps("S", "a", 3, at(3), at(10), &s));
        assert!(l.check("S", &truncate(9)).is_ok());
        let l = rules(&[deleted(DeleteMode::Soft)]);
        assert!(l.check("S", &truncate(9)).is_err());
    }

    #[test]
    fn max_count_keeps_the_newest_events_of_each_aggregate() {
        let s = Stream(vec![1, 2, 3, 4, 5]);
        let l = rules(&[retention(None, Some(2))]);
        assert_eq!(visible(&l, &s, 10), Visible::From(4));
        let kept: Vec<u64> = (1..=5)
            .filter(|v| l.keeps("S", "a", *v, at(*v as i64), at(10), &s))
            .collect();
        assert_eq!(kept, [4, 5]);
        let short = Stream(vec![1]);
        assert_eq!(visible(&l, &short, 10), Visible::From(1));
        assert!(l.check("S", &retention(None, Some(0))).is_err());
    }

    #[test]
    fn max_age_expires_an_event_only_with_every_earlier_version() {
        // Version 2 is young: it protects version 3 although 3 is old.
        let s = Stream(vec![1, 50, 2, 60]);
        let l = rules(&[retention(Some(20), None)]);
        // cutoff = 70 - 20 = 50
        assert_eq!(visible(&l, &s, 70), Visible::From(2));
        let kept: Vec<u64> = (1..=4)
            .filter(|v| l.keeps("S", "a", *v, at(s.0[(*v - 1) as usize]), at(70), &s))
            .collect();
        assert_eq!(kept, [2, 3, 4]);
        // Everything old: nothing visible, nothing kept.
        assert_eq!(visible(&l, &s, 1_000), Visible::From(5));
        assert!(!l.keeps("S", "a", 4, at(60), at(1_000), &s));
    }

    #[test]
    fn retention_rules_combine_into_one_suffix() {
        let s = Stream(vec![1, 2, 100, 3, 100]);
        // max_count 4 leaves 2..=5; age (cutoff 50) then expires 2 only: 3 is young.
        let l = rules(&[retention(Some(50), Some(4))]);
        assert_eq!(visible(&l, &s, 100), Visible::From(3));
        let compaction = l.compaction(at(100), &s);
        let kept: Vec<u64> = (1..=5)
            .filter(|v| compaction.keeps("S", "a", *v, at(s.0[(*v - 1) as usize])))
            .collect();
        assert_eq!(kept, [3, 4, 5]);
        // Removing the retention rule makes everything visible again.
        let l = rules(&[retention(Some(50), Some(4)), retention(None, None)]);
        assert_eq!(visible(&l, &s, 100), Visible::From(1));
        assert!(!l.has_rules("S"));
    }

    #[test]
    fn lifecycle_entries_are_always_kept() {
        let s = Stream(vec![1]);
        let l = rules(&[retention(Some(1), Some(1))]);
        assert!(l.keeps(LIFECYCLE_STORE, "S", 1, at(0), at(1_000_000), &s));
    }

    #[test]
    fn an_index_failure_keeps_the_entry() {
        struct Failing;
        impl IndexFacts for Failing {
            fn last_version(&self, _: &str, _: &str) -> Result<u64, StorageError> {
                Err(StorageError::Closed)
            }
            fn first_since(
                &self,
                _: &str,
                _: &str,
                _: u64,
                _: Timestamp,
            ) -> Result<Option<u64>, StorageError> {
                Err(StorageError::Closed)
            }
        }
        let l = rules(&[retention(None, Some(1))]);
        assert!(l.keeps("S", "a", 1, at(0), at(10), &Failing));
    }
}
