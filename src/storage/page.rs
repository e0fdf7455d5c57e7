//! Options and pagination of `get_events` and `list_aggregate_ids`.
//!
//! Paging rules, identical for every adapter (the conformance suite checks them):
//! - aggregate ids are ordered by the timestamp of their first event, ties broken by aggregate
//!   id, ascending unless `reverse`;
//! - `initial_event_after` and `initial_event_before` are **inclusive** bounds;
//! - `next_page_token` is returned only when `limit` is set and more ids follow; it is opaque,
//!   bound to its event store, and carries the options of the request that produced it;
//! - options given explicitly together with a page token override the token's.

use serde::{Deserialize, Serialize};

use super::{AggregateIdEntry, StorageError, Timestamp};

/// Which events of an aggregate [`get_events`](super::StorageAdapter::get_events) returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetEventsOptions {
    /// Only events with `version >= min_version`.
    pub min_version: Option<u64>,
    /// Only events with `version <= max_version`.
    pub max_version: Option<u64>,
    /// At most this many events (counted from the end when `reverse`).
    pub limit: Option<usize>,
    /// Newest first. `min_version`/`max_version` keep their meaning.
    pub reverse: bool,
}

impl GetEventsOptions {
    /// Whether `version` lies within `min_version..=max_version`.
    pub fn contains(&self, version: u64) -> bool {
        self.min_version.is_none_or(|min| version >= min)
            && self.max_version.is_none_or(|max| version <= max)
    }
}

/// Which aggregate ids [`list_aggregate_ids`](super::StorageAdapter::list_aggregate_ids)
/// returns. See the [module docs](self) for the ordering and paging rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListAggregateIdsOptions {
    /// At most this many ids per page.
    pub limit: Option<usize>,
    /// Only aggregates whose first event is at or after this instant.
    pub initial_event_after: Option<Timestamp>,
    /// Only aggregates whose first event is at or before this instant.
    pub initial_event_before: Option<Timestamp>,
    /// Newest first. `None` means "as the page token says, else oldest first".
    pub reverse: Option<bool>,
    /// A `next_page_token` from a previous call, to continue where it stopped.
    pub page_token: Option<String>,
}

/// One page of aggregate ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AggregateIdsPage {
    /// The ids, with the timestamp of their first event.
    pub aggregate_ids: Vec<AggregateIdEntry>,
    /// Pass as `page_token` to get the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// A fully resolved `list_aggregate_ids` request, as adapters execute it: options merged with
/// the page token, and the position after which to continue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AggregateIdsQuery {
    /// At most this many entries.
    pub limit: Option<usize>,
    /// Inclusive lower bound on the initial-event timestamp.
    pub initial_event_after: Option<Timestamp>,
    /// Inclusive upper bound on the initial-event timestamp.
    pub initial_event_before: Option<Timestamp>,
    /// Descending order.
    pub reverse: bool,
    /// Return only entries strictly after this one in the scan direction.
    pub after_entry: Option<AggregateIdEntry>,
}

impl AggregateIdsQuery {
    /// Whether `entry` passes the bounds and lies after the cursor in the scan direction.
    pub fn admits(&self, entry: &AggregateIdEntry) -> bool {
        let t = entry.initial_event_timestamp;
        self.initial_event_after.is_none_or(|a| t >= a)
            && self.initial_event_before.is_none_or(|b| t <= b)
            && self
                .after_entry
                .as_ref()
                .is_none_or(|c| if self.reverse { entry < c } else { entry > c })
    }
}

const TOKEN_FORMAT: u32 = 2;

/// Timestamps are kept as Unix milliseconds: every `Timestamp` an event can carry round-trips,
/// including instants outside the four-digit years that the ISO 8601 form can express.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PageToken {
    format: u32,
    event_store_id: String,
    limit: Option<usize>,
    initial_event_after_ms: Option<i64>,
    initial_event_before_ms: Option<i64>,
    reverse: bool,
    last_timestamp_ms: i64,
    last_aggregate_id: String,
}

impl ListAggregateIdsOptions {
    /// Merges the options with their page token (explicit options win) into a query.
    pub fn resolve(&self, event_store_id: &str) -> Result<AggregateIdsQuery, StorageError> {
        let Some(token) = &self.page_token else {
            return Ok(AggregateIdsQuery {
                limit: self.limit,
                initial_event_after: self.initial_event_after,
                initial_event_before: self.initial_event_before,
                reverse: self.reverse.unwrap_or(false),
                after_entry: None,
            });
        };
        let invalid = |reason: String| StorageError::InvalidPageToken { reason };
        let token: PageToken =
            serde_json::from_str(token).map_err(|e| invalid(format!("not a page token: {e}")))?;
        if token.format != TOKEN_FORMAT {
            return Err(invalid(format!("unknown token format {}", token.format)));
        }
        if token.event_store_id != event_store_id {
            return Err(invalid(format!(
                "the token belongs to store {:?}, not {event_store_id:?}",
                token.event_store_id
            )));
        }
        Ok(AggregateIdsQuery {
            limit: self.limit.or(token.limit),
            initial_event_after: self.initial_event_after.or(token
                .initial_event_after_ms
                .map(Timestamp::from_unix_millis)),
            initial_event_before: self.initial_event_before.or(token
                .initial_event_before_ms
                .map(Timestamp::from_unix_millis)),
            reverse: self.reverse.unwrap_or(token.reverse),
            after_entry: Some(AggregateIdEntry {
                initial_event_timestamp: Timestamp::from_unix_millis(token.last_timestamp_ms),
                aggregate_id: token.last_aggregate_id,
            }),
        })
    }
}

impl AggregateIdsQuery {
    /// Turns up to `limit + 1` scanned entries into a page, with a token if more follow.
    pub fn into_page(
        self,
        event_store_id: &str,
        mut entries: Vec<AggregateIdEntry>,
    ) -> AggregateIdsPage {
        let next_page_token = match self.limit {
            Some(limit) if entries.len() > limit => {
                entries.truncate(limit);
                entries.last().map(|last| {
                    let token = PageToken {
                        format: TOKEN_FORMAT,
                        event_store_id: event_store_id.to_owned(),
                        limit: self.limit,
                        initial_event_after_ms: self
                            .initial_event_after
                            .map(Timestamp::unix_millis),
                        initial_event_before_ms: self
                            .initial_event_before
                            .map(Timestamp::unix_millis),
                        reverse: self.reverse,
                        last_timestamp_ms: last.initial_event_timestamp.unix_millis(),
                        last_aggregate_id: last.aggregate_id.clone(),
                    };
                    serde_json::to_string(&token).expect("a page token always serializes")
                })
            }
            _ => None,
        };
        AggregateIdsPage {
            aggregate_ids: entries,
            next_page_token,
        }
    }

    /// How many entries an adapter should scan: one more than `limit`, to know whether a
    /// next page exists.
    pub fn scan_limit(&self) -> Option<usize> {
        self.limit.map(|l| l.saturating_add(1))
    }
}
