//! `/api/stores`: the event stores, their aggregates page by page, one aggregate's events with
//! the state after each, and its current state.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::params;
use super::render::{Decoded, event_json, mark_forgotten};
use super::shared::Shared;
use crate::runtime::action::http::shortened;
use crate::storage::{GetEventsOptions, ListAggregateIdsOptions};

/// Aggregate ids per page when the request does not say, and at most.
const AGGREGATES_DEFAULT: usize = 50;
const AGGREGATES_MAX: usize = 500;
/// Events of one aggregate per page when the request does not say, and at most.
const EVENTS_DEFAULT: usize = 100;
const EVENTS_MAX: usize = 1_000;

/// `GET /api/stores`: every store with events (and every registered one), with its counts.
pub(crate) async fn list(State(shared): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let summaries = shared.summaries().await?;
    let mut stores: Vec<Value> = summaries
        .iter()
        .map(|s| {
            let registered = shared.stores.get(&s.event_store_id);
            json!({
                "id": s.event_store_id,
                "aggregates": s.aggregates,
                "events": s.events,
                "registered": registered.is_some(),
                "eventTypes": registered.map(|r| r.event_types()),
            })
        })
        .collect();
    for (id, registered) in &shared.stores {
        if !summaries.iter().any(|s| &s.event_store_id == id) {
            stores.push(json!({
                "id": id, "aggregates": 0, "events": 0, "registered": true,
                "eventTypes": registered.event_types(),
            }));
        }
    }
    Ok(Json(json!({ "head": shared.head(), "stores": stores })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AggregatesQuery {
    limit: Option<usize>,
    page_token: Option<String>,
    reverse: Option<bool>,
}

/// `GET /api/stores/{store}/aggregates`: one page of aggregate ids, oldest first (or newest
/// with `reverse=true`), with Castore's page tokens.
pub(crate) async fn aggregates(
    State(shared): State<Arc<Shared>>,
    store: Result<Path<String>, PathRejection>,
    query: Result<Query<AggregatesQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let store = params::path(store)?;
    let query = params::query(query)?;
    let options = ListAggregateIdsOptions {
        limit: Some(params::limit(
            query.limit,
            AGGREGATES_DEFAULT,
            AGGREGATES_MAX,
        )?),
        reverse: query.reverse,
        page_token: query.page_token.clone(),
        ..Default::default()
    };
    let page = shared.adapter.list_aggregate_ids(&store, &options).await?;
    // A store with events has aggregates: an empty first page names no store at all.
    if page.aggregate_ids.is_empty() && query.page_token.is_none() {
        known_store(&shared, &store).await?;
    }
    let ids: Vec<Value> = page
        .aggregate_ids
        .iter()
        .map(|e| {
            json!({
                "aggregateId": e.aggregate_id,
                "initialEventTimestamp": e.initial_event_timestamp,
            })
        })
        .collect();
    Ok(Json(json!({
        "eventStoreId": store,
        "aggregates": ids,
        "nextPageToken": page.next_page_token,
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// The first version shown (default 1).
    from: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/stores/{store}/aggregates/{id}`: a page of the aggregate's events from version
/// `from`, each with the state after it when the store is registered.
pub(crate) async fn aggregate(
    State(shared): State<Arc<Shared>>,
    ids: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (store, id) = params::path(ids)?;
    let query = params::query(query)?;
    let limit = params::limit(query.limit, EVENTS_DEFAULT, EVENTS_MAX)?;
    let from = query.from.unwrap_or(1).max(1);
    let last = shared
        .adapter
        .get_events(
            &store,
            &id,
            &GetEventsOptions {
                limit: Some(1),
                reverse: true,
                ..Default::default()
            },
        )
        .await?;
    let Some(last) = last.first().map(|e| e.event.version) else {
        known_store(&shared, &store).await?;
        return Err(ApiError::NotFound(format!(
            "store {store:?} has no aggregate {}",
            shortened(&id)
        )));
    };
    let options = GetEventsOptions {
        min_version: Some(from),
        limit: Some(limit),
        ..Default::default()
    };
    let events = shared.adapter.get_events(&store, &id, &options).await?;
    let typed = shared.stores.get(&store);
    let states = match typed {
        Some(typed) => Some(typed.states_after(&id, &events).await?),
        None => None,
    };
    let shown: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, stored)| {
            let event = stored.as_event_ref();
            let decoded = typed.map_or(Decoded::Untyped, |t| t.decode(&event));
            let mut shown = event_json(&store, &event, decoded);
            mark_forgotten(&mut shown, shared.adapter.as_ref());
            if let Some(state) = states.as_ref().and_then(|s| s.get(i)) {
                match state {
                    Ok(state) => shown["stateAfter"] = state.clone(),
                    Err(reason) => shown["stateError"] = json!(reason),
                }
            }
            shown
        })
        .collect();
    let next = events
        .last()
        .map(|e| e.event.version + 1)
        .filter(|next| *next <= last);
    Ok(Json(json!({
        "eventStoreId": store,
        "aggregateId": id,
        "version": last,
        "registered": typed.is_some(),
        "events": shown,
        "nextFrom": next,
    })))
}

/// `GET /api/stores/{store}/aggregates/{id}/state`: the aggregate's current state, folded by
/// the registered store's reducer (snapshots used as the store uses them).
pub(crate) async fn state(
    State(shared): State<Arc<Shared>>,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let (store, id) = params::path(ids)?;
    shared.adapter.limits().check_event_store_id(&store)?;
    shared.adapter.limits().check_aggregate_id(&id)?;
    let Some(typed) = shared.stores.get(&store) else {
        known_store(&shared, &store).await?;
        return Err(ApiError::NotFound(format!(
            "store {store:?} is not registered with the console: it has no reducer to fold with"
        )));
    };
    let last = shared
        .adapter
        .get_events(
            &store,
            &id,
            &GetEventsOptions {
                limit: Some(1),
                reverse: true,
                ..Default::default()
            },
        )
        .await?;
    if last.is_empty() {
        return Err(ApiError::NotFound(format!(
            "store {store:?} has no aggregate {}",
            shortened(&id)
        )));
    }
    let states = typed.states_after(&id, &last).await?;
    let version = last[0].event.version;
    match states.into_iter().next() {
        Some(Ok(state)) => Ok(Json(json!({
            "eventStoreId": store, "aggregateId": id, "version": version, "state": state,
        }))),
        Some(Err(reason)) => Err(ApiError::Internal(reason)),
        None => Err(ApiError::Internal("no state folded".into())),
    }
}

/// 404 unless `store` is registered or holds an aggregate.
async fn known_store(shared: &Shared, store: &str) -> Result<(), ApiError> {
    if shared.stores.contains_key(store) {
        return Ok(());
    }
    let one = ListAggregateIdsOptions {
        limit: Some(1),
        ..Default::default()
    };
    if !shared
        .adapter
        .list_aggregate_ids(store, &one)
        .await?
        .aggregate_ids
        .is_empty()
    {
        return Ok(());
    }
    Err(ApiError::NotFound(format!(
        "no event store {}",
        shortened(store)
    )))
}
