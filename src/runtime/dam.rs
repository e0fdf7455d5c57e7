//! Castore's dam: pour history into a message channel, as replayed messages.
//!
//! Three pours: every aggregate id of a store ([`pour_aggregate_ids`], aggregate-exists
//! messages), every event of one aggregate ([`pour_aggregate_events`]), and every event of one
//! or several stores in global order ([`pour_events`]), the last two as notification messages.
//! Every message is published with `replay: true`, so bus listeners that did not opt in to
//! replays are left alone. A pour can be paced ([`PourOptions::rate_limit`]) and reports its
//! progress; it returns how many messages it published and the first and last items it poured.
//!
//! Castore calls it a dam because it holds the history back and lets it out into a channel on
//! purpose, at a controlled rate, where live messages flow on their own; other systems call
//! the same thing a replay or a backfill (the names this module is found by in the docs).
#![doc(alias("replay", "backfill"))]

use std::sync::Arc;
use std::time::Duration;

use crate::runtime::channel::{ChannelError, MessageChannel, MessageKind, MessageSource};
use crate::storage::{
    GetEventsOptions, ListAggregateIdsOptions, LoggedEvent, Position, StorageAdapter, Timestamp,
};

/// Events read from storage per batch when pouring the log.
const BATCH: usize = 512;
/// Aggregate ids listed per page.
const PAGE: usize = 500;

/// A progress callback: called after each message with the report so far.
pub type Progress = Arc<dyn Fn(&PourReport) + Send + Sync>;

/// How a pour runs.
#[derive(Clone, Default)]
pub struct PourOptions {
    /// At most this many messages per second (`None`: as fast as the channel takes them).
    pub rate_limit: Option<f64>,
    /// Called after each message.
    pub progress: Option<Progress>,
}

impl std::fmt::Debug for PourOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PourOptions")
            .field("rate_limit", &self.rate_limit)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// One poured item: an aggregate, or one of its events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PouredItem {
    /// The event store.
    pub event_store_id: String,
    /// The aggregate.
    pub aggregate_id: String,
    /// The event's version (for event pours).
    pub version: Option<u64>,
    /// The event's global position (for event pours).
    pub position: Option<Position>,
    /// The event's timestamp, or the aggregate's initial event timestamp.
    pub timestamp: Timestamp,
}

/// What a pour did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PourReport {
    /// Messages published.
    pub poured: u64,
    /// The first item poured.
    pub first: Option<PouredItem>,
    /// The last item poured.
    pub last: Option<PouredItem>,
}

/// Paces and counts the messages of one pour.
struct Pour<'a> {
    channel: &'a dyn MessageChannel,
    options: &'a PourOptions,
    started: tokio::time::Instant,
    report: PourReport,
}

impl<'a> Pour<'a> {
    fn new(channel: &'a dyn MessageChannel, options: &'a PourOptions) -> Self {
        Pour {
            channel,
            options,
            started: tokio::time::Instant::now(),
            report: PourReport::default(),
        }
    }

    async fn send(
        &mut self,
        message: crate::runtime::channel::Message,
        item: PouredItem,
    ) -> Result<(), ChannelError> {
        if let Some(rate) = self.options.rate_limit.filter(|r| *r > 0.0) {
            let due = self.started + Duration::from_secs_f64(self.report.poured as f64 / rate);
            tokio::time::sleep_until(due).await;
        }
        self.channel.publish(message, true).await?;
        self.report.poured += 1;
        if self.report.first.is_none() {
            self.report.first = Some(item.clone());
        }
        self.report.last = Some(item);
        if let Some(progress) = &self.options.progress {
            progress(&self.report);
        }
        Ok(())
    }
}

fn event_item(event: &LoggedEvent) -> PouredItem {
    PouredItem {
        event_store_id: event.event_store_id.clone(),
        aggregate_id: event.event.aggregate_id.clone(),
        version: Some(event.event.version),
        position: Some(event.position),
        timestamp: event.event.timestamp,
    }
}

/// Publishes an aggregate-exists message for every aggregate of `source`'s store, in order of
/// their first event.
#[doc(alias = "replay")]
pub async fn pour_aggregate_ids(
    adapter: &dyn StorageAdapter,
    source: &dyn MessageSource,
    channel: &dyn MessageChannel,
    options: &PourOptions,
) -> Result<PourReport, ChannelError> {
    let store = source.event_store_id();
    let mut pour = Pour::new(channel, options);
    let mut page_token = None;
    loop {
        let page = adapter
            .list_aggregate_ids(
                store,
                &ListAggregateIdsOptions {
                    limit: Some(PAGE),
                    page_token,
                    ..Default::default()
                },
            )
            .await?;
        for entry in page.aggregate_ids {
            let message = crate::runtime::channel::Message::AggregateExists(
                crate::runtime::channel::AggregateExistsMessage {
                    event_store_id: store.to_owned(),
                    aggregate_id: entry.aggregate_id.clone(),
                    initial_event_timestamp: entry.initial_event_timestamp,
                },
            );
            let item = PouredItem {
                event_store_id: store.to_owned(),
                aggregate_id: entry.aggregate_id,
                version: None,
                position: None,
                timestamp: entry.initial_event_timestamp,
            };
            pour.send(message, item).await?;
        }
        match page.next_page_token {
            Some(token) => page_token = Some(token),
            None => return Ok(pour.report),
        }
    }
}

/// Publishes a notification message for every event of one aggregate, in version order.
#[doc(alias = "replay")]
pub async fn pour_aggregate_events(
    adapter: &dyn StorageAdapter,
    source: &dyn MessageSource,
    aggregate_id: &str,
    channel: &dyn MessageChannel,
    options: &PourOptions,
) -> Result<PourReport, ChannelError> {
    let store = source.event_store_id();
    let mut pour = Pour::new(channel, options);
    let events = adapter
        .get_events(store, aggregate_id, &GetEventsOptions::default())
        .await?;
    for stored in events {
        let event = LoggedEvent {
            event_store_id: store.to_owned(),
            position: stored.position,
            event: stored.event,
        };
        let item = event_item(&event);
        let message = source.message(MessageKind::Notification, event).await?;
        pour.send(message, item).await?;
    }
    Ok(pour.report)
}

/// Publishes a notification message for every event of the given stores, in global order
/// (interleaved across stores and aggregates as they were committed).
#[doc(alias = "replay")]
pub async fn pour_events(
    adapter: &dyn StorageAdapter,
    sources: &[Arc<dyn MessageSource>],
    channel: &dyn MessageChannel,
    options: &PourOptions,
) -> Result<PourReport, ChannelError> {
    let mut pour = Pour::new(channel, options);
    let mut from: Position = 1;
    loop {
        let batch = adapter.read_log(from, BATCH).await?;
        let Some(last) = batch.last() else {
            return Ok(pour.report);
        };
        from = last.position + 1;
        for event in batch {
            let Some(source) = sources
                .iter()
                .find(|s| s.event_store_id() == event.event_store_id)
            else {
                continue;
            };
            let item = event_item(&event);
            let message = source.message(MessageKind::Notification, event).await?;
            pour.send(message, item).await?;
        }
    }
}
