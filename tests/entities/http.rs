//! Entities over HTTP with a real client over loopback: only allowed commands are reachable
//! (others answer 404 as if unknown and never run), 404 is decided from the command enum's
//! variant names so a bad nested field is a 400, ids from the path are checked against the
//! storage limits (400, not 500), bodies are read straight into the command (a key twice is
//! refused, integers stay exact), JSON bodies must say so (415), and every failure has the
//! JSON error body, also when the router is served alone or merged with HTTP actions.

use std::sync::Arc;

use annals::action::ActionContext;
use annals::action::http::{HttpActions, HttpError, Reply, serve};
use annals::entity::http::{EntityRouteError, EntityRouter, command_names};
use annals::entity::{CommandContext, Entities, Entity, EntityOptions};
use annals::state::StateStore;
use annals::storage::InMemoryAdapter;
use annals::{Aggregate, EventDetail, EventStore, GetEventsOptions};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{counters, within};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Currency {
    Eur,
    Usd,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deposited {
    pub amount: u64,
    pub currency: Currency,
}

annals::events! {
    pub enum AccountEvent {
        Deposited(Deposited) = "DEPOSITED",
        Closed(()) = "CLOSED",
    }
}

fn reduce(balance: Option<u64>, event: &EventDetail<AccountEvent>) -> u64 {
    match &event.event {
        AccountEvent::Deposited(d) => balance.unwrap_or(0).saturating_add(d.amount),
        AccountEvent::Closed(()) => balance.unwrap_or(0),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AccountCommand {
    Deposit {
        amount: u64,
        currency: Currency,
    },
    Withdraw(u64),
    Close,
    /// Meant for timers only: never allowed over HTTP here.
    Remind,
}

#[derive(Debug)]
#[expect(dead_code, reason = "read through its Debug, in the 409's message")]
pub struct Insufficient {
    pub balance: u64,
}

pub struct Account;

impl Entity for Account {
    type Command = AccountCommand;
    type Events = AccountEvent;
    type State = u64;
    type Rejection = Insufficient;

    fn decide(
        state: Option<&Aggregate<u64>>,
        command: &AccountCommand,
        _ctx: &mut CommandContext<'_, AccountCommand>,
    ) -> Result<Vec<AccountEvent>, Insufficient> {
        let balance = state.map_or(0, |a| a.state);
        match *command {
            AccountCommand::Deposit { amount, currency } => {
                Ok(vec![AccountEvent::Deposited(Deposited {
                    amount,
                    currency,
                })])
            }
            AccountCommand::Withdraw(amount) if amount > balance => Err(Insufficient { balance }),
            AccountCommand::Withdraw(_) => Ok(Vec::new()),
            AccountCommand::Close => Ok(vec![AccountEvent::Closed(())]),
            // Would record an event if it ever ran: the test checks it never does.
            AccountCommand::Remind => Ok(vec![AccountEvent::Closed(())]),
        }
    }
}

type Accounts = EventStore<AccountEvent, u64>;

fn accounts() -> (Accounts, Entities<Account>) {
    let store = EventStore::builder("ACCOUNTS", reduce)
        .storage_adapter(Arc::new(InMemoryAdapter::new()))
        .build()
        .expect("a valid store");
    let entities = Entities::new(store.clone(), EntityOptions::default()).expect("entities");
    (store, entities)
}

const BODY_LIMIT: usize = 1024;

/// The accounts router (Deposit, Withdraw and Close allowed) served alone on loopback.
async fn start() -> (Accounts, String) {
    let (store, entities) = accounts();
    let router = EntityRouter::new("accounts", entities)
        .allow("Deposit")
        .allow("Withdraw")
        .allow("Close")
        .body_limit(BODY_LIMIT)
        .router()
        .expect("a valid router");
    (store, listen(router).await)
}

async fn listen(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(serve(listener, router));
    base
}

/// `POST base+path` with `body` as JSON (declared as such); the status and the JSON body.
async fn post(base: &str, path: &str, body: &str) -> (u16, Value) {
    send(base, path, Some("application/json"), body).await
}

async fn send(base: &str, path: &str, content_type: Option<&str>, body: &str) -> (u16, Value) {
    let request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .body(body.to_owned());
    let request = match content_type {
        Some(kind) => request.header("content-type", kind),
        None => request,
    };
    let response = within(request.send()).await.expect("a response");
    let status = response.status().as_u16();
    let is_json = response
        .headers()
        .get("content-type")
        .is_some_and(|kind| kind == "application/json");
    let text = response.text().await.expect("a body");
    assert!(is_json, "{status} answers JSON, got {text:?}");
    let body = serde_json::from_str(&text).expect("a JSON body");
    (status, body)
}

async fn events(store: &Accounts, id: &str) -> Vec<EventDetail<AccountEvent>> {
    store
        .get_events(id, GetEventsOptions::default())
        .await
        .expect("read the events")
}

/// The error body's shape: `{"error": kind, "message": text}`.
fn assert_error(answer: &(u16, Value), status: u16, kind: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"], kind, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_commands_are_served_with_typed_statuses() {
    let (store, base) = start().await;
    let deposit = r#"{"amount": 5, "currency": "Eur"}"#;
    let (status, body) = post(&base, "/accounts/a1/Deposit", deposit).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["events"][0]["type"], "DEPOSITED");
    assert_eq!(body["events"][0]["payload"]["amount"], 5);
    let (status, body) = post(&base, "/accounts/a1/Close", "").await;
    assert_eq!(
        (status, &body["version"]),
        (200, &json!(2)),
        "a unit command"
    );
    let rejected = post(&base, "/accounts/a1/Withdraw", "100").await;
    assert_error(&rejected, 409, "conflict");
    let message = rejected.1["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("balance: 5"),
        "the rejection is told: {message}"
    );
    let big = format!(
        r#"{{"amount": 1, "currency": "Eur", "x": "{}"}}"#,
        "x".repeat(2048)
    );
    let too_big = post(&base, "/accounts/a1/Deposit", &big).await;
    assert_error(&too_big, 413, "payload_too_large");
    assert_eq!(events(&store, "a1").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_not_allowed_answers_404_like_an_unknown_one_and_never_runs() {
    let (store, base) = start().await;
    let not_allowed = post(&base, "/accounts/a1/Remind", "").await;
    assert_error(&not_allowed, 404, "not_found");
    let unknown = post(&base, "/accounts/a1/Explode", "").await;
    assert_error(&unknown, 404, "not_found");
    assert_eq!(
        not_allowed.1["message"]
            .as_str()
            .map(|m| m.replace("Remind", "X")),
        unknown.1["message"]
            .as_str()
            .map(|m| m.replace("Explode", "X")),
        "a command that is not allowed is indistinguishable from one that does not exist"
    );
    assert!(events(&store, "a1").await.is_empty(), "Remind never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_value_in_a_nested_enum_field_is_400_not_an_unknown_command() {
    let (store, base) = start().await;
    let gbp = post(
        &base,
        "/accounts/a1/Deposit",
        r#"{"amount": 1, "currency": "GBP"}"#,
    )
    .await;
    assert_error(&gbp, 400, "bad_request");
    let wrong_shape = post(&base, "/accounts/a1/Deposit", r#"{"amount": "one"}"#).await;
    assert_error(&wrong_shape, 400, "bad_request");
    assert!(events(&store, "a1").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ids_from_the_path_answer_400_and_store_nothing() {
    let (store, base) = start().await;
    let deposit = r#"{"amount": 1, "currency": "Usd"}"#;
    let long = "a".repeat(257);
    for id in ["", long.as_str(), "%00", "%0A", "a%00b"] {
        let answer = post(&base, &format!("/accounts/{id}/Deposit"), deposit).await;
        assert_error(&answer, 400, "bad_request");
        assert!(
            answer.1["message"].as_str().is_some_and(|m| m.len() < 300),
            "the message does not echo a huge id: {}",
            answer.1
        );
    }
    let undecodable = post(&base, "/accounts/%FF/Deposit", deposit).await;
    assert_error(&undecodable, 400, "bad_request");
    let page = store
        .list_aggregate_ids(Default::default())
        .await
        .expect("list the ids");
    assert!(page.aggregate_ids.is_empty(), "nothing was stored");
    let fine = "a".repeat(256);
    let (status, body) = post(&base, &format!("/accounts/{fine}/Deposit"), deposit).await;
    assert_eq!(status, 200, "an id at the limit is fine: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_are_refused_and_integers_stay_exact() {
    let (store, base) = start().await;
    let twice = r#"{"amount": 1, "currency": "Eur", "amount": 1000}"#;
    let refused = post(&base, "/accounts/a1/Deposit", twice).await;
    assert_error(&refused, 400, "bad_request");
    assert!(events(&store, "a1").await.is_empty(), "nothing stored");
    let above = r#"{"amount": 18446744073709551616, "currency": "Eur"}"#;
    let refused = post(&base, "/accounts/a1/Deposit", above).await;
    assert_error(&refused, 400, "bad_request");
    let max = r#"{"amount": 18446744073709551615, "currency": "Eur"}"#;
    let (status, body) = post(&base, "/accounts/a1/Deposit", max).await;
    assert_eq!(status, 200, "{body}");
    let stored = events(&store, "a1").await;
    match &stored[..] {
        [event] => match &event.event {
            AccountEvent::Deposited(d) => assert_eq!(d.amount, u64::MAX),
            other => panic!("unexpected event {other:?}"),
        },
        other => panic!("one event expected, got {other:?}"),
    }
    let trailing = post(&base, "/accounts/a1/Withdraw", "1 2").await;
    assert_error(&trailing, 400, "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_has_the_json_error_body() {
    let (store, base) = start().await;
    let deposit = r#"{"amount": 1, "currency": "Eur"}"#;
    let plain = send(&base, "/accounts/a1/Deposit", Some("text/plain"), deposit).await;
    assert_error(&plain, 415, "unsupported_media_type");
    let form = send(
        &base,
        "/accounts/a1/Close",
        Some("application/x-www-form-urlencoded"),
        "",
    )
    .await;
    assert_error(&form, 415, "unsupported_media_type");
    let missing = send(&base, "/accounts/a1/Close", None, "").await;
    assert_error(&missing, 415, "unsupported_media_type");
    assert!(events(&store, "a1").await.is_empty(), "nothing ran");
    let charset = send(
        &base,
        "/accounts/a1/Deposit",
        Some("application/json; charset=utf-8"),
        deposit,
    )
    .await;
    assert_eq!(charset.0, 200, "{}", charset.1);

    let response = within(reqwest::get(format!("{base}/accounts/a1/Deposit")))
        .await
        .expect("a response");
    assert_eq!(response.status(), 405);
    assert!(response.headers().contains_key("allow"));
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["error"], "method_not_allowed", "{body}");
    let nowhere = post(&base, "/nowhere", "{}").await;
    assert_error(&nowhere, 404, "not_found");
    let short = post(&base, "/accounts/a1", "{}").await;
    assert_error(&short, 404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_and_action_routers_merge_into_one_server() {
    let (store, entities) = accounts();
    let accounts = EntityRouter::new("accounts", entities)
        .allow("Deposit")
        .router()
        .expect("a valid router");
    let counters = EntityRouter::new(
        "counters",
        counters(Arc::new(InMemoryAdapter::new()), EntityOptions::default()),
    )
    .allow("Count")
    .router()
    .expect("a valid router");
    let actions = HttpActions::new(Arc::new(StateStore::in_memory()))
        .post("/ping", |(): (), _ctx: ActionContext| async {
            Ok::<_, HttpError>(Reply::ok("pong"))
        })
        .router()
        .expect("valid routes");
    let base = listen(actions.merge(accounts).merge(counters)).await;
    let (status, body) = post(&base, "/ping", "null").await;
    assert_eq!((status, body), (200, json!("pong")));
    let (status, _) = post(
        &base,
        "/accounts/a/Deposit",
        r#"{"amount":1,"currency":"Eur"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = post(&base, "/counters/c/Count", r#"{"tag":[1,1]}"#).await;
    assert_eq!(status, 200);
    let nowhere = post(&base, "/nowhere", "{}").await;
    assert_error(&nowhere, 404, "not_found");
    assert_eq!(events(&store, "a").await.len(), 1);
}

#[test]
fn router_declarations_are_checked_against_the_command_enum() {
    assert_eq!(
        command_names::<AccountCommand>(),
        Some(&["Deposit", "Withdraw", "Close", "Remind"][..])
    );
    let (_, entities) = accounts();
    let unknown = EntityRouter::new("accounts", entities.clone())
        .allow("Explode")
        .router();
    assert!(
        matches!(unknown, Err(EntityRouteError::UnknownCommand { ref command, .. })
            if command == "Explode"),
        "{unknown:?}"
    );
    let bad_name = EntityRouter::new("bad/name", entities).router();
    assert!(matches!(
        bad_name,
        Err(EntityRouteError::InvalidName { .. })
    ));
}
