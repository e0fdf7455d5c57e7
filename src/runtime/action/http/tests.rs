use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue};

use super::json::{from_json, reject_duplicate_keys, require_json};
use super::*;
use crate::model::Error;
use crate::runtime::action::context::ActionContext;
use crate::runtime::state::StateStore;
use crate::storage::{LimitError, StorageError};

#[test]
fn typed_errors_map_to_statuses() {
    let conflict = crate::storage::EventAlreadyExists {
        event_store_id: "POKEMONS".into(),
        aggregate_id: "pikachu".into(),
        version: 2,
    };
    assert_eq!(HttpError::from(Error::from(conflict.clone())).status(), 409);
    let storage = StorageError::EventAlreadyExists(conflict);
    assert_eq!(HttpError::from(storage).status(), 409);
    let missing = Error::AggregateNotFound {
        event_store_id: "POKEMONS".into(),
        aggregate_id: "mew".into(),
    };
    assert_eq!(HttpError::from(missing).status(), 404);
    assert_eq!(
        HttpError::from(ValidationError::new("a", "b")).status(),
        422
    );
    assert_eq!(HttpError::from(StorageError::Closed).status(), 500);
}

#[test]
fn invalid_and_duplicate_routes_are_refused_not_panicked_on() {
    let state = Arc::new(StateStore::in_memory());
    let action = |_: (), _: ActionContext| async { Ok::<_, HttpError>(Reply::ok(())) };
    let bad = HttpActions::new(state.clone()).post("/pokemons/{id}", action);
    assert!(matches!(bad.router(), Err(RouteError::InvalidPath { .. })));
    let relative = HttpActions::new(state.clone()).post("pokemons", action);
    assert!(matches!(
        relative.router(),
        Err(RouteError::InvalidPath { .. })
    ));
    let twice = HttpActions::new(state.clone())
        .post("/a", action)
        .post("/a", action);
    assert!(matches!(twice.router(), Err(RouteError::Duplicate { .. })));
    let fine = HttpActions::new(state)
        .post("/a", action)
        .put("/a", action)
        .delete("/b", action);
    assert!(fine.router().is_ok());
}

#[test]
fn duplicate_keys_are_found_at_any_depth_and_integers_are_kept() {
    assert!(reject_duplicate_keys(br#"{"a": 1, "b": {"a": 2}, "c": [{"a": 3}]}"#).is_ok());
    for twice in [
        &br#"{"a": 1, "a": 2}"#[..],
        br#"{"x": {"a": 1, "a": 2}}"#,
        br#"[{"a": 1}, {"b": 1, "b": 2}]"#,
        br#"{"\u0061": 1, "a": 2}"#,
    ] {
        let error = reject_duplicate_keys(twice).expect_err("a key twice");
        assert!(error.to_string().contains("appears twice"), "{error}");
    }
    assert!(reject_duplicate_keys(b"{} {}").is_err(), "trailing data");
    let exact: std::collections::HashMap<String, u64> =
        from_json(br#"{"a": 18446744073709551615}"#).expect("u64::MAX");
    assert_eq!(exact["a"], u64::MAX);
    let above =
        from_json::<std::collections::HashMap<String, u64>>(br#"{"a": 18446744073709551616}"#);
    assert!(above.is_err());
}

#[test]
fn only_declared_json_bodies_are_accepted() {
    let with = |value: &'static str| {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
        require_json(&headers).is_ok()
    };
    assert!(with("application/json"));
    assert!(with("Application/JSON; charset=utf-8"));
    assert!(with("application/merge-patch+json"));
    assert!(!with("text/plain"));
    assert!(!with("application/x-www-form-urlencoded"));
    assert!(!with("multipart/form-data; boundary=x"));
    assert!(!with("application/jsonx"));
    assert!(require_json(&HeaderMap::new()).is_err());
}

#[test]
fn limit_errors_are_400_with_a_short_message() {
    let huge = "a".repeat(10 << 10);
    let error = LimitError::InvalidAggregateId {
        aggregate_id: huge,
        reason: "it is too long",
    };
    let http = HttpError::from(Error::Storage(StorageError::Limit(error)));
    assert_eq!(http.status(), 400);
    assert!(http.to_string().len() < 200, "{http}");
}
