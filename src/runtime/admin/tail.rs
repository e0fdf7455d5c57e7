//! `/api/tail`: the live tail, new events as Server-Sent Events as they are committed,
//! filtered by store and event type.
//!
//! Each event is one SSE message of type `event` whose data is the event's JSON (as in the log
//! page); a comment is sent every 15 s so that proxies keep the stream open. The stream follows
//! the log through a [`Subscription`], so it is woken by commits and never polls, and it is
//! written only as fast as the client reads: a slow client holds one batch of events, not a
//! growing buffer. At most [`Console::tails_max`](super::Console::tails_max) tails are open at
//! once; past that, 503.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;

use super::error::ApiError;
use super::params;
use super::render::{Decoded, event_json, logged_ref, mark_forgotten};
use super::shared::Shared;
use crate::runtime::subscription::{Filter, Subscription};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TailQuery {
    /// Comma-separated store ids; absent: every store.
    stores: Option<String>,
    /// Comma-separated event types; absent: every type.
    types: Option<String>,
    /// The first position sent; absent: the next event committed.
    from: Option<u64>,
}

/// `GET /api/tail?stores=&types=&from=`: see the [module docs](self).
pub(crate) async fn tail(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<TailQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let query = params::query(query)?;
    let mut filter = Filter::all();
    if let Some(stores) = params::list(query.stores.as_deref()) {
        for store in &stores {
            shared.adapter.limits().check_event_store_id(store)?;
        }
        filter = filter.stores(stores);
    }
    if let Some(types) = params::list(query.types.as_deref()) {
        filter = filter.event_types(types);
    }
    let permit = shared.tails.clone().try_acquire_owned().map_err(|_| {
        ApiError::Unavailable("too many live tails are open; close one or retry later".into())
    })?;
    let from = query.from.unwrap_or_else(|| shared.head() + 1);
    let subscription = Subscription::new(shared.adapter.clone(), from, filter);
    let stream = events(shared, subscription, permit);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The SSE messages of `subscription`; the permit is released when the client goes away and
/// the stream is dropped. A storage failure ends the stream with an `error` message.
fn events(
    shared: Arc<Shared>,
    subscription: Subscription,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(Some((shared, subscription, permit)), |state| async move {
        let (shared, mut subscription, permit) = state?;
        match subscription.next().await {
            Ok(logged) => {
                let event = logged_ref(&logged);
                let decoded = shared
                    .stores
                    .get(&logged.event_store_id)
                    .map_or(Decoded::Untyped, |t| t.decode(&event));
                let mut json = event_json(&logged.event_store_id, &event, decoded);
                mark_forgotten(&mut json, shared.adapter.as_ref());
                let message = Event::default()
                    .event("event")
                    .id(logged.position.to_string())
                    .data(json.to_string());
                Some((Ok(message), Some((shared, subscription, permit))))
            }
            Err(e) => {
                tracing::warn!(error = %e, "console tail stopped");
                let message = Event::default().event("error").data(e.to_string());
                Some((Ok(message), None))
            }
        }
    })
}
