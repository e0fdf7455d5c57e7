//! Entities over HTTP with a real client over loopback.

use std::sync::Arc;

use annals::entity::{EntityOptions, http};
use annals::storage::InMemoryAdapter;
use serde_json::{Value, json};

use crate::counters;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_commands_are_served_over_http_with_typed_statuses() {
    let entities = counters(Arc::new(InMemoryAdapter::new()), EntityOptions::default());
    let router = http::router("counters", entities, 1024).expect("a plain name");
    assert!(
        http::router(
            "bad/name",
            counters(Arc::new(InMemoryAdapter::new()), EntityOptions::default()),
            1024
        )
        .is_none()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();
    let post = |path: String, body: Option<Value>| {
        let request = client.post(format!("{base}{path}"));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        async move {
            let response = request.send().await.expect("a response");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    let (status, body) = post("/counters/c1/Count".into(), Some(json!({"tag": [1, 1]}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["events"][0]["type"], "COUNTED");
    assert_eq!(body["events"][0]["payload"]["total"], 1);
    let (status, body) = post(
        "/counters/c1/CountTwice".into(),
        Some(json!({"tag": [1, 2]})),
    )
    .await;
    assert_eq!((status, body["version"].clone()), (200, json!(3)));
    let (status, body) = post("/counters/c1/Peek".into(), None).await;
    assert_eq!(
        (status, body["version"].clone()),
        (200, json!(3)),
        "a unit command"
    );
    let (status, body) = post(
        "/counters/c1/CountBelow".into(),
        Some(json!({"limit": 3, "tag": [1, 3]})),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (409, json!("conflict")),
        "a rejection"
    );
    let (status, _) = post("/counters/c1/Explode".into(), Some(json!({}))).await;
    assert_eq!(status, 404, "an unknown command");
    let (status, _) = post("/counters/c1/Count".into(), Some(json!({"tag": "x"}))).await;
    assert_eq!(status, 400, "fields of the wrong shape");
    let big = json!({"tag": [1, 4], "padding": "x".repeat(2048)});
    let (status, _) = post("/counters/c1/Count".into(), Some(big)).await;
    assert_eq!(status, 413, "a body over the limit");
    let (status, body) = post("/counters/c2/Count".into(), Some(json!({"tag": [2, 1]}))).await;
    assert_eq!(
        (status, body["version"].clone()),
        (200, json!(1)),
        "another id"
    );
    server.abort();
}
