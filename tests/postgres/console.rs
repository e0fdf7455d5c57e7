//! The admin console over the PostgreSQL adapter, through a real HTTP client: it reads only
//! through `StorageAdapter` and the local state store, so the stores, aggregate pages with
//! their tokens, an aggregate's events, the global log, the live tail, consumers' lag and the
//! metrics are the same as on the embedded log.

use std::sync::Arc;
use std::time::Duration;

use annals::admin::Console;
use annals::state::StateStore;
use annals::storage::StorageAdapter;
use serde_json::Value;

use crate::fixture::{self, STORE, event};
use crate::harness::{Needs, trials};

/// The tests of this module.
pub fn trials() -> Vec<libtest_mimic::Trial> {
    trials!(Needs::Server, threads = 2;
        the_console_shows_a_postgres_store_its_log_tail_and_lag,
    )
}

async fn get(url: &str) -> Value {
    let response = reqwest::get(url).await.expect("request");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.expect("JSON")
}

async fn the_console_shows_a_postgres_store_its_log_tail_and_lag() {
    let url = fixture::url();
    let (adapter, _guard) = fixture::adapter(&url).await;
    let adapter: Arc<dyn StorageAdapter> = Arc::new(adapter);
    for id in ["pikachu", "eevee", "mew"] {
        adapter.push_event(event(id, 1)).await.expect("push");
    }
    adapter.push_event(event("pikachu", 2)).await.expect("push");
    let state = Arc::new(StateStore::in_memory());
    state.set_checkpoint("mailer", 2).expect("checkpoint");
    let router = Console::new(Arc::clone(&adapter))
        .state(state)
        .router()
        .expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(annals::action::http::serve(listener, router));

    let stores = get(&format!("{base}/api/stores")).await;
    assert_eq!(stores["head"], 4);
    assert_eq!(stores["stores"][0]["id"], STORE);
    assert_eq!(stores["stores"][0]["aggregates"], 3);
    assert_eq!(stores["stores"][0]["events"], 4);

    let first = get(&format!("{base}/api/stores/{STORE}/aggregates?limit=2")).await;
    assert_eq!(first["aggregates"].as_array().expect("ids").len(), 2);
    let token = first["nextPageToken"].as_str().expect("a next page");
    let next = reqwest::Url::parse_with_params(
        &format!("{base}/api/stores/{STORE}/aggregates"),
        [("pageToken", token)],
    )
    .expect("url");
    let second = get(next.as_str()).await;
    assert_eq!(second["aggregates"].as_array().expect("ids").len(), 1);

    let pikachu = get(&format!("{base}/api/stores/{STORE}/aggregates/pikachu")).await;
    assert_eq!(pikachu["version"], 2);
    // The fixture's payloads are plain text, not MessagePack: shown in hex, not refused.
    let hex: String = b"pikachu@1".iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(pikachu["events"][0]["payload"]["hex"], hex);

    let log = get(&format!("{base}/api/log?from=3&limit=10")).await;
    let positions: Vec<u64> = log["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["position"].as_u64().expect("position"))
        .collect();
    assert_eq!(positions, [3, 4]);

    let consumers = get(&format!("{base}/api/consumers")).await;
    assert_eq!(consumers["consumers"][0]["name"], "mailer");
    assert_eq!(consumers["consumers"][0]["lag"], 3);

    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l == "annals_consumer_lag_events{consumer=\"mailer\"} 3"),
        "{metrics}"
    );

    let mut tail = reqwest::get(format!("{base}/api/tail?stores={STORE}"))
        .await
        .expect("tail");
    adapter.push_event(event("snorlax", 1)).await.expect("push");
    let mut seen = String::new();
    while !seen.contains("snorlax") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), tail.chunk())
            .await
            .expect("an event in time")
            .expect("read")
            .expect("the stream stays open");
        seen.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
    }
    assert!(seen.contains("\"position\":5"), "{seen}");
}
