//! The admin console through a real HTTP client over loopback: stores, aggregate pages with
//! Castore's tokens, events with the state after each, the global log, the live tail, lag,
//! dead letters behind the token, metrics and the page; and every kind of bad input answered
//! with a 4xx and a JSON message. On the log adapter (with its own figures) and in memory.

use std::sync::Arc;

use annals::NewEvent;
use annals::Timestamp;
use annals::action::http::serve;
use annals::action::{ActionContext, ActionError, EventAction, RetryPolicy};
use annals::admin::{Console, ConsoleError, TimedAdapter};
use annals::codec;
use annals::queue::Queue;
use annals::state::StateStore;
use annals::storage::{AppendEvent, EncodedEvent, LogAdapter, LoggedEvent, StorageAdapter};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Caught, PokemonEvent, appear, in_memory, pokemons, within};

const TOKEN: &str = "a-token-long-enough-for-tests";

/// Serves `router` on a loopback port; returns its base URL.
async fn start(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, router));
    base
}

async fn call(method: Method, url: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {text}"));
    (status, body)
}

async fn get(url: &str) -> (StatusCode, Value) {
    call(Method::GET, url, None).await
}

/// An event of a store the console has no types for, its payload MessagePack.
fn raw(store: &str, id: &str, version: u64, payload: Value) -> AppendEvent {
    AppendEvent {
        event_store_id: store.into(),
        event: EncodedEvent {
            aggregate_id: id.into(),
            version,
            timestamp: Timestamp::from_unix_millis(1_700_000_000_000 + version as i64),
            event_type: "TRAINER_JOINED".into(),
            schema_version: 1,
            payload: codec::encode(&payload).unwrap(),
            metadata: codec::encode(&json!({ "by": "test" })).unwrap(),
        },
    }
}

fn log_adapter(dir: &std::path::Path) -> Arc<LogAdapter> {
    Arc::new(LogAdapter::builder(dir).open().expect("open the log store"))
}

#[tokio::test]
async fn stores_aggregates_events_and_state_are_served_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_adapter(dir.path());
    let adapter: Arc<dyn StorageAdapter> = log.clone();
    let store = pokemons(&adapter);
    for (id, name) in [("pikachu", "Pikachu"), ("eevee", "Eevee"), ("mew", "Mew")] {
        appear(&store, id, name).await;
    }
    let caught = PokemonEvent::Caught(Caught {
        trainer: "ash".into(),
    });
    store
        .push_event(NewEvent::new("pikachu", 2, caught), Default::default())
        .await
        .unwrap();
    adapter
        .push_event(raw("TRAINERS", "ash", 1, json!({ "name": "Ash" })))
        .await
        .unwrap();
    let base = start(Console::for_log(log).store(&store).router().unwrap()).await;

    let (status, stores) = get(&format!("{base}/api/stores")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stores["head"], 5);
    let pokemons_row = &stores["stores"][0];
    assert_eq!(pokemons_row["id"], "POKEMONS");
    assert_eq!(
        (&pokemons_row["aggregates"], &pokemons_row["events"]),
        (&json!(3), &json!(4))
    );
    assert_eq!(pokemons_row["registered"], true);
    assert_eq!(stores["stores"][1]["registered"], false);

    // Three aggregates, two per page: a token leads to the last one, then none.
    let (_, first) = get(&format!("{base}/api/stores/POKEMONS/aggregates?limit=2")).await;
    let ids: Vec<&str> = first["aggregates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["aggregateId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    let token = first["nextPageToken"].as_str().expect("a next page");
    let url = reqwest::Url::parse_with_params(
        &format!("{base}/api/stores/POKEMONS/aggregates"),
        [("pageToken", token)],
    )
    .unwrap();
    let (status, second) = get(url.as_str()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["aggregates"].as_array().unwrap().len(), 1);
    assert_eq!(second["nextPageToken"], Value::Null);

    // The typed store: Castore's payloads and the state after each event.
    let (status, pikachu) = get(&format!("{base}/api/stores/POKEMONS/aggregates/pikachu")).await;
    assert_eq!(status, StatusCode::OK, "{pikachu}");
    assert_eq!(pikachu["version"], 2);
    let events = pikachu["events"].as_array().unwrap();
    assert_eq!(events[0]["payload"], json!({ "name": "Pikachu" }));
    assert_eq!(events[0]["decodedWith"], "store");
    assert_eq!(events[0]["stateAfter"]["caught_by"], Value::Null);
    assert_eq!(events[1]["type"], "POKEMON_CAUGHT");
    assert_eq!(events[1]["stateAfter"]["caught_by"], "ash");
    assert_eq!(events[1]["stateAfter"]["name"], "Pikachu");

    // A page from version 2 folds the state before it from the store.
    let (_, tail) = get(&format!(
        "{base}/api/stores/POKEMONS/aggregates/pikachu?from=2"
    ))
    .await;
    assert_eq!(tail["events"].as_array().unwrap().len(), 1);
    assert_eq!(tail["events"][0]["stateAfter"]["name"], "Pikachu");
    let (_, one) = get(&format!(
        "{base}/api/stores/POKEMONS/aggregates/pikachu?limit=1"
    ))
    .await;
    assert_eq!(one["nextFrom"], 2);

    let (status, state) = get(&format!(
        "{base}/api/stores/POKEMONS/aggregates/pikachu/state"
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["version"], 2);
    assert_eq!(state["state"]["caught_by"], "ash");

    // The untyped store: MessagePack shown as JSON values, no state.
    let (_, ash) = get(&format!("{base}/api/stores/TRAINERS/aggregates/ash")).await;
    assert_eq!(ash["events"][0]["payload"], json!({ "name": "Ash" }));
    assert_eq!(ash["events"][0]["metadata"], json!({ "by": "test" }));
    assert_eq!(ash["events"][0]["decodedWith"], "messagepack");
    assert!(ash["events"][0].get("stateAfter").is_none());
    let (status, _) = get(&format!("{base}/api/stores/TRAINERS/aggregates/ash/state")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The global log, oldest page and newest page.
    let (_, page) = get(&format!("{base}/api/log?from=1&limit=2")).await;
    let positions: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!((positions, &page["next"]), (vec![1, 2], &json!(3)));
    let (_, newest) = get(&format!("{base}/api/log?limit=2")).await;
    assert_eq!(newest["events"][1]["eventStoreId"], "TRAINERS");
    assert_eq!(newest["events"][0]["position"], 4);

    // The log adapter's own figures.
    let (_, stats) = get(&format!("{base}/api/stats")).await;
    assert_eq!(stats["head"], 5);
    assert_eq!(stats["log"]["events"], 5);
    assert!(stats["log"]["segmentBytes"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn bad_input_gets_a_4xx_with_a_json_message() {
    let adapter = in_memory();
    let store = pokemons(&adapter);
    appear(&store, "pikachu", "Pikachu").await;
    appear(&store, "eevee", "Eevee").await;
    adapter
        .push_event(raw("TRAINERS", "ash", 1, json!({})))
        .await
        .unwrap();
    adapter
        .push_event(raw("TRAINERS", "misty", 1, json!({})))
        .await
        .unwrap();
    let base = start(Console::new(adapter).store(&store).router().unwrap()).await;
    let (_, page) = get(&format!("{base}/api/stores/TRAINERS/aggregates?limit=1")).await;
    let trainers_token = page["nextPageToken"].as_str().unwrap().to_owned();
    let other_listing = reqwest::Url::parse_with_params(
        &format!("{base}/api/stores/POKEMONS/aggregates"),
        [("pageToken", trainers_token.as_str())],
    )
    .unwrap();
    let long_id = "x".repeat(5_000);
    let cases: Vec<(String, StatusCode)> = vec![
        (
            format!("{base}/api/stores/NOPE/aggregates"),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("{base}/api/stores/NOPE/aggregates/x"),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("{base}/api/stores/POKEMONS/aggregates/mew"),
            StatusCode::NOT_FOUND,
        ),
        (other_listing.to_string(), StatusCode::BAD_REQUEST),
        (
            format!("{base}/api/stores/POKEMONS/aggregates?pageToken=garbage"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{base}/api/stores/POKEMONS/aggregates?limit=100000000"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{base}/api/stores/POKEMONS/aggregates?limit=99999999999999999999999"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{base}/api/stores/POKEMONS/aggregates?limit=0"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{base}/api/stores/POKEMONS/aggregates?limt=5"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{base}/api/log?limit=1000000"),
            StatusCode::BAD_REQUEST,
        ),
        (format!("{base}/api/log?from=-1"), StatusCode::BAD_REQUEST),
        (
            format!("{base}/api/stores/POKEMONS/aggregates/%FF%FE"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{base}/api/stores/%FF/aggregates"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{base}/api/stores/POKEMONS/aggregates/a%00b"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{base}/api/stores/POKEMONS/aggregates/{long_id}"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{base}/api/stores/POKEMONS/aggregates/{long_id}/state"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{base}/api/tail?stores=%00"),
            StatusCode::BAD_REQUEST,
        ),
        (format!("{base}/api/nothing-here"), StatusCode::NOT_FOUND),
    ];
    for (url, expected) in cases {
        let (status, body) = get(&url).await;
        assert_eq!(status, expected, "{url}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{url}: {body}"
        );
        assert!(body["error"].is_string(), "{url}: {body}");
    }
    let (status, body) = call(Method::PUT, &format!("{base}/api/stores"), None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
}

#[tokio::test]
async fn dead_letters_are_retried_and_dropped_only_with_the_token() {
    let adapter = in_memory();
    let state = Arc::new(StateStore::in_memory());
    let store = pokemons(&adapter);
    let action = EventAction::new("ocr", |_: LoggedEvent, _: ActionContext| async {
        Err(ActionError::permanent("not a document"))
    })
    .retry_policy(RetryPolicy {
        base: std::time::Duration::from_millis(1),
        max: std::time::Duration::from_millis(1),
        attempts: 1,
    });
    let first = appear(&store, "pikachu", "Pikachu").await;
    let second = appear(&store, "eevee", "Eevee").await;
    let runner = action.spawn(adapter.clone(), state.clone()).unwrap();
    within("both events", runner.wait_past(second))
        .await
        .unwrap();
    runner.stop().await.unwrap();

    let open = start(
        Console::new(adapter.clone())
            .state(state.clone())
            .router()
            .unwrap(),
    )
    .await;
    let (status, body) = call(
        Method::POST,
        &format!("{open}/api/dead-letters/ocr/{first}/retry"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no token configured: {body}");

    let base = start(
        Console::new(adapter)
            .state(state.clone())
            .token(TOKEN)
            .router()
            .unwrap(),
    )
    .await;
    let (_, letters) = get(&format!("{base}/api/dead-letters")).await;
    assert_eq!(letters["total"], 2);
    assert_eq!(letters["deadLetters"][0]["error"], "not a document");

    let retry = format!("{base}/api/dead-letters/ocr/{first}/retry");
    let (status, _) = call(Method::POST, &retry, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(Method::POST, &retry, Some("a-token-long-enough-for-testS")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(Method::POST, &retry, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let letter = annals::action::dead_letter::get(&state, "ocr", first)
        .unwrap()
        .unwrap();
    assert!(letter.retry_requested_at.is_some());

    let drop = format!("{base}/api/dead-letters/ocr/{second}");
    let (status, _) = call(Method::DELETE, &drop, Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(Method::DELETE, &drop, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        annals::action::dead_letter::list(&state, "ocr")
            .unwrap()
            .len(),
        1
    );
    let (status, body) = call(Method::DELETE, &drop, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = call(
        Method::DELETE,
        &format!("{base}/api/dead-letters/ocr/not-a-number"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    assert_eq!(
        Console::new(in_memory()).token("short").router().err(),
        Some(ConsoleError::TokenTooShort)
    );
}

#[tokio::test]
async fn consumers_show_their_lag_and_metrics_expose_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_adapter(dir.path());
    // The stores push through a timed adapter: its commits make the latency histogram.
    let timed = Arc::new(TimedAdapter::new(log.clone()));
    let adapter: Arc<dyn StorageAdapter> = timed.clone();
    let state = Arc::new(StateStore::in_memory());
    let store = pokemons(&adapter);
    for id in ["a", "b", "c", "d", "e"] {
        appear(&store, id, id).await;
    }
    // Handled positions 1 and 2: three events behind.
    state.set_checkpoint("mailer", 3).unwrap();
    state.set_checkpoint("auditor", 6).unwrap();
    let queue = Queue::open(state.clone(), "emails");
    queue.enqueue(b"hello".to_vec()).unwrap();
    queue.enqueue(b"again".to_vec()).unwrap();
    // One of the two is being worked on: received, not yet acknowledged.
    assert!(queue.receive().unwrap().is_some());
    let base = start(
        Console::for_log(log)
            .state(state)
            .queue(queue)
            .commit_latency(&timed)
            .router()
            .unwrap(),
    )
    .await;

    let (_, consumers) = get(&format!("{base}/api/consumers")).await;
    let rows = consumers["consumers"].as_array().unwrap();
    let mailer = rows.iter().find(|c| c["name"] == "mailer").unwrap();
    assert_eq!(mailer["lag"], 3);
    assert!(mailer["oldestUnhandled"].is_string());
    let auditor = rows.iter().find(|c| c["name"] == "auditor").unwrap();
    assert_eq!(
        (&auditor["lag"], &auditor["oldestUnhandled"]),
        (&json!(0), &Value::Null)
    );

    let (_, queues) = get(&format!("{base}/api/queues")).await;
    assert_eq!(queues["queues"][0]["depth"], 2);
    assert_eq!(queues["queues"][0]["inFlight"], 1);

    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    for line in [
        "annals_log_head_position 5",
        "annals_log_events_total 5",
        "annals_consumer_lag_events{consumer=\"mailer\"} 3",
        "annals_consumer_lag_events{consumer=\"auditor\"} 0",
        "annals_queue_depth{queue=\"emails\"} 2",
        "annals_queue_in_flight{queue=\"emails\"} 1",
        "annals_store_events{store=\"POKEMONS\"} 5",
        "annals_commit_seconds_bucket{le=\"+Inf\"} 5",
        "annals_commit_seconds_count 5",
        "annals_commit_failures_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }
    assert!(
        text.contains("# TYPE annals_log_commits_total counter"),
        "{text}"
    );
    // The writer's syncs are timed: some time was spent in them, the longest within it.
    let value = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let (sum, max) = (
        value("annals_log_sync_seconds_sum"),
        value("annals_log_sync_seconds_max"),
    );
    assert!(value("annals_log_syncs_total") >= 1.0, "{text}");
    assert!(sum > 0.0 && max > 0.0 && max <= sum, "{text}");
    assert!(
        text.contains("# TYPE annals_commit_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("annals_disk_bytes{file=\"segments\"}"),
        "{text}"
    );
}

/// Reads the SSE stream until `count` messages of type `event` have come; their data.
async fn sse_events(response: &mut reqwest::Response, count: usize) -> Vec<Value> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = within("an SSE message", response.chunk())
            .await
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let message: String = buffer.drain(..end + 2).collect();
            if message.lines().any(|l| l == "event: event") {
                let data: String = message
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                events.push(serde_json::from_str(&data).unwrap());
            }
        }
    }
    events
}

#[tokio::test]
async fn the_live_tail_streams_new_events_filtered_by_store_and_type() {
    let adapter = in_memory();
    let store = pokemons(&adapter);
    appear(&store, "old", "Old").await;
    let base = start(
        Console::new(adapter.clone())
            .store(&store)
            .tails_max(1)
            .router()
            .unwrap(),
    )
    .await;
    let mut tail = reqwest::get(format!(
        "{base}/api/tail?stores=POKEMONS&types=POKEMON_CAUGHT"
    ))
    .await
    .unwrap();
    assert_eq!(tail.status(), StatusCode::OK);
    assert_eq!(tail.headers()["content-type"], "text/event-stream");
    // One tail at most: the second is refused until the first closes.
    let (status, body) = get(&format!("{base}/api/tail")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    appear(&store, "pikachu", "Pikachu").await;
    adapter
        .push_event(raw("TRAINERS", "ash", 1, json!({})))
        .await
        .unwrap();
    let caught = PokemonEvent::Caught(Caught {
        trainer: "ash".into(),
    });
    store
        .push_event(NewEvent::new("pikachu", 2, caught), Default::default())
        .await
        .unwrap();
    let events = sse_events(&mut tail, 1).await;
    assert_eq!(events[0]["type"], "POKEMON_CAUGHT");
    assert_eq!(events[0]["aggregateId"], "pikachu");
    assert_eq!(events[0]["payload"], json!({ "trainer": "ash" }));
    assert_eq!(events[0]["position"], 4);
    drop(tail);

    // The permit comes back once the server sees the client gone.
    within("the tail's slot", async {
        loop {
            let response = reqwest::get(format!("{base}/api/tail?from=1"))
                .await
                .unwrap();
            if response.status() == StatusCode::OK {
                let mut response = response;
                let replayed = sse_events(&mut response, 2).await;
                assert_eq!(replayed[0]["position"], 1);
                assert_eq!(replayed[1]["position"], 2);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_page_is_embedded_and_locked_down_and_other_hosts_are_refused() {
    let base = start(Console::new(in_memory()).router().unwrap()).await;
    let allowing = start(
        Console::new(in_memory())
            .allow_host("admin.internal")
            .router()
            .unwrap(),
    )
    .await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/console.js", "text/javascript"),
        ("/console.css", "text/css"),
    ] {
        let response = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind));
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(!response.text().await.unwrap().is_empty());
    }
    // A page served from another name that resolves to the console is refused.
    for (host, expected) in [
        ("evil.example", StatusCode::FORBIDDEN),
        ("evil.example:80", StatusCode::FORBIDDEN),
        ("localhost:9100", StatusCode::OK),
        ("admin.internal", StatusCode::OK),
    ] {
        let response = reqwest::Client::new()
            .get(format!("{allowing}/api/stats"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{host}");
    }
    let page = reqwest::get(format!("{base}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("console.js") && !page.contains("http://") && !page.contains("https://"));
}

/// An entity that only books reminders: enough to show live instances and pending timers.
struct Trainer;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum TrainerCommand {
    Book,
    Remind,
}

impl annals::entity::Entity for Trainer {
    type Command = TrainerCommand;
    type Events = PokemonEvent;
    type State = super::Pokemon;
    type Rejection = ();

    fn decide(
        _: Option<&annals::Aggregate<super::Pokemon>>,
        command: &TrainerCommand,
        ctx: &mut annals::entity::CommandContext<'_, TrainerCommand>,
    ) -> Result<Vec<PokemonEvent>, ()> {
        if let TrainerCommand::Book = command {
            let tomorrow = Timestamp::from_unix_millis(ctx.now().unix_millis() + 86_400_000);
            ctx.schedule("reminder", tomorrow, &TrainerCommand::Remind);
        }
        let caught = PokemonEvent::Caught(Caught {
            trainer: "ash".into(),
        });
        Ok(vec![caught])
    }
}

#[tokio::test]
async fn entities_show_live_instances_and_pending_timers_and_verify_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_adapter(dir.path());
    let adapter: Arc<dyn StorageAdapter> = log.clone();
    let store = pokemons(&adapter);
    let trainers =
        annals::entity::Entities::<Trainer>::new(store.clone(), Default::default()).unwrap();
    trainers
        .get("pikachu")
        .send(TrainerCommand::Book)
        .await
        .unwrap();
    let base = start(
        Console::for_log(log)
            .entities("trainers", &trainers)
            .token(TOKEN)
            .router()
            .unwrap(),
    )
    .await;

    let (status, entities) = get(&format!("{base}/api/entities")).await;
    assert_eq!(status, StatusCode::OK, "{entities}");
    let kind = &entities["entities"][0];
    assert_eq!(kind["name"], "trainers");
    assert_eq!(kind["eventStoreId"], "POKEMONS");
    assert_eq!(kind["liveInstances"], 1);
    assert_eq!(kind["mailboxDepth"], 0);
    assert_eq!(kind["pendingTimers"], 1);
    assert_eq!(kind["timers"][0]["aggregateId"], "pikachu");
    assert_eq!(kind["timers"][0]["name"], "reminder");
    assert_eq!(kind["timers"][0]["command"], "Remind");

    let verify = format!("{base}/api/verify");
    let (status, _) = call(Method::POST, &verify, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, report) = call(Method::POST, &verify, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["problemCount"], 0);
    assert!(report["events"].as_u64().unwrap() >= 2, "{report}");

    // Verify checks the log adapter's files: a console over memory has none.
    let memory = start(Console::new(in_memory()).token(TOKEN).router().unwrap()).await;
    let (status, body) = call(Method::POST, &format!("{memory}/api/verify"), Some(TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn nested_under_a_prefix_the_page_and_its_endpoints_resolve() {
    let adapter = in_memory();
    let store = pokemons(&adapter);
    appear(&store, "pikachu", "Pikachu").await;
    let console = Console::new(adapter).router().unwrap();
    let app = axum::Router::new()
        .route(
            "/admin",
            axum::routing::get(|| async { axum::response::Redirect::permanent("/admin/") }),
        )
        .nest("/admin/", console);
    let base = start(app).await;
    // The page at `/admin/`, whose relative addresses (`console.js`, `api/...`) resolve under
    // the prefix.
    for path in ["/admin/", "/admin/console.js", "/admin/console.css"] {
        let response = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let (status, stores) = get(&format!("{base}/admin/api/stores")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stores["stores"][0]["id"], "POKEMONS");
    let (status, _) = get(&format!(
        "{base}/admin/api/stores/POKEMONS/aggregates/pikachu"
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    // `/admin` itself leads to the page.
    let page = reqwest::get(format!("{base}/admin")).await.unwrap();
    assert_eq!(page.url().path(), "/admin/");
    assert_eq!(page.status(), StatusCode::OK);
}
