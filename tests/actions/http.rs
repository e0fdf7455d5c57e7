//! HTTP actions through a real client over loopback: statuses, JSON bodies (also for wrong
//! methods, unknown paths and storage limits), the JSON content type required, duplicate keys
//! refused, a race on one aggregate, and a server that keeps answering while slow clients hold
//! more connections than its cap (they are cut at the header timeout, idle ones at the idle
//! timeout).

use std::sync::Arc;

use annals::action::ActionContext;
use annals::action::http::{
    HttpActions, HttpError, Reply, ServeOptions, ValidationError, serve, serve_with,
};
use annals::command::CommandFailure;
use annals::state::StateStore;
use annals::storage::StorageAdapter;
use annals::{Command, EventAlreadyExists, NewEvent};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Caught, PokemonEvent, Pokemons, appear, in_memory, log_store, pokemons, within};

#[derive(Debug, Clone, Deserialize)]
struct CatchRequest {
    pokemon_id: String,
    trainer: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct CatchReply {
    pokemon_id: String,
    trainer: String,
    version: u64,
}

/// The catch command's failures: the domain's rejection, or the typed layer's errors.
#[derive(Debug)]
enum CatchError {
    AlreadyCaught { by: String },
    Annals(annals::Error),
}

impl From<annals::Error> for CatchError {
    fn from(e: annals::Error) -> Self {
        CatchError::Annals(e)
    }
}

impl CommandFailure for CatchError {
    fn event_already_exists(&self) -> Option<&EventAlreadyExists> {
        match self {
            CatchError::Annals(e) => e.event_already_exists(),
            CatchError::AlreadyCaught { .. } => None,
        }
    }
}

const BODY_LIMIT: usize = 1024;

/// `POST /pokemons/catch`: validates the trainer, runs the catch command (which retries on
/// version conflicts and refuses a Pokémon already caught).
fn actions(store: &Pokemons, state: Arc<StateStore>) -> HttpActions {
    let catch = Arc::new(Command::new(
        "CATCH_POKEMON",
        (store.clone(),),
        |request: CatchRequest, (pokemons,): (Pokemons,), (): ()| async move {
            let id = &request.pokemon_id;
            let pokemon = pokemons
                .get_existing_aggregate(id, Default::default())
                .await?;
            if let Some(by) = &pokemon.aggregate.caught_by {
                return Err(CatchError::AlreadyCaught { by: by.clone() });
            }
            let version = pokemon.aggregate.version + 1;
            let caught = PokemonEvent::Caught(Caught {
                trainer: request.trainer,
            });
            pokemons
                .push_event(NewEvent::new(id, version, caught), Default::default())
                .await?;
            Ok(version)
        },
    ));
    HttpActions::new(state).body_limit(BODY_LIMIT).post(
        "/pokemons/catch",
        move |request: CatchRequest, mut ctx: ActionContext| {
            let catch = catch.clone();
            async move {
                if request.trainer.trim().is_empty() {
                    return Err(ValidationError::new("trainer", "must not be empty").into());
                }
                match ctx.run(&catch, request.clone(), ()).await {
                    Ok(version) => Ok(Reply::created(CatchReply {
                        pokemon_id: request.pokemon_id,
                        trainer: request.trainer,
                        version,
                    })),
                    Err(CatchError::AlreadyCaught { by }) => {
                        Err(HttpError::Conflict(format!("already caught by {by}")))
                    }
                    Err(CatchError::Annals(e)) => Err(e.into()),
                }
            }
        },
    )
}

/// A server on a free loopback port; its base URL.
async fn start(store: &Pokemons) -> String {
    let router = actions(store, Arc::new(StateStore::in_memory()))
        .router()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, router));
    format!("http://{address}")
}

async fn post(base: &str, body: reqwest::Body) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/pokemons/catch"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn catch(base: &str, pokemon_id: &str, trainer: &str) -> (StatusCode, Value) {
    let body = json!({ "pokemon_id": pokemon_id, "trainer": trainer }).to_string();
    post(base, body.into()).await
}

#[tokio::test]
async fn successful_catch_answers_201_with_the_json_reply() {
    let store = pokemons(&in_memory());
    appear(&store, "pikachu", "Pikachu").await;
    let base = start(&store).await;
    let (status, body) = catch(&base, "pikachu", "ash").await;
    assert_eq!(status, StatusCode::CREATED);
    let reply: CatchReply = serde_json::from_value(body).unwrap();
    let expected = CatchReply {
        pokemon_id: "pikachu".into(),
        trainer: "ash".into(),
        version: 2,
    };
    assert_eq!(reply, expected);
    let pikachu = store
        .get_existing_aggregate("pikachu", Default::default())
        .await
        .unwrap();
    assert_eq!(pikachu.aggregate.caught_by.as_deref(), Some("ash"));
}

#[tokio::test]
async fn malformed_json_and_wrong_shapes_answer_400() {
    let store = pokemons(&in_memory());
    let base = start(&store).await;
    let (status, body) = post(&base, "{not json".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "bad_request");
    let (status, _) = post(&base, r#"{"pokemon_id": 7}"#.into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn body_over_the_limit_answers_413() {
    let store = pokemons(&in_memory());
    appear(&store, "pikachu", "Pikachu").await;
    let base = start(&store).await;
    let trainer = "a".repeat(2 * BODY_LIMIT);
    let (status, body) = catch(&base, "pikachu", &trainer).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "payload_too_large");
    let pikachu = store
        .get_existing_aggregate("pikachu", Default::default())
        .await
        .unwrap();
    assert_eq!(pikachu.aggregate.version, 1, "nothing was pushed");
}

#[tokio::test]
async fn invalid_input_answers_422_naming_the_field() {
    let store = pokemons(&in_memory());
    appear(&store, "pikachu", "Pikachu").await;
    let base = start(&store).await;
    let (status, body) = catch(&base, "pikachu", "  ").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        json!({ "error": "invalid", "message": "must not be empty", "field": "trainer" })
    );
}

#[tokio::test]
async fn missing_aggregate_and_unknown_route_answer_404() {
    let store = pokemons(&in_memory());
    let base = start(&store).await;
    let (status, body) = catch(&base, "mew", "ash").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    assert!(body["message"].as_str().unwrap().contains("mew"));

    let response = reqwest::Client::new()
        .post(format!("{base}/pokemons/release"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn a_wrong_method_answers_405_with_the_json_error_body() {
    let store = pokemons(&in_memory());
    let base = start(&store).await;
    let response = reqwest::get(format!("{base}/pokemons/catch"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(response.headers().contains_key("allow"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
    assert!(body["message"].is_string());
}

#[tokio::test]
async fn a_body_not_declared_as_json_answers_415_and_runs_nothing() {
    let store = pokemons(&in_memory());
    appear(&store, "pikachu", "Pikachu").await;
    let base = start(&store).await;
    let body = json!({ "pokemon_id": "pikachu", "trainer": "ash" }).to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let request = reqwest::Client::new()
            .post(format!("{base}/pokemons/catch"))
            .body(body.clone());
        let request = match content_type {
            Some(kind) => request.header("content-type", kind),
            None => request,
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            answer["error"], "unsupported_media_type",
            "{content_type:?}"
        );
    }
    let pikachu = store
        .get_existing_aggregate("pikachu", Default::default())
        .await
        .unwrap();
    assert_eq!(pikachu.aggregate.caught_by, None, "nothing ran");
}

/// `POST /tally`: sums a map of counts; `POST /pokemons/appear`: pushes `POKEMON_APPEARED` for
/// the id in the body. Bodies up to 64 KiB.
async fn start_open(store: &Pokemons) -> String {
    let store = store.clone();
    let router = HttpActions::new(Arc::new(StateStore::in_memory()))
        .post(
            "/tally",
            |counts: std::collections::HashMap<String, u64>, _ctx: ActionContext| async move {
                Ok::<_, HttpError>(Reply::ok(counts.values().sum::<u64>()))
            },
        )
        .post(
            "/pokemons/appear",
            move |input: Appear, _ctx: ActionContext| {
                let store = store.clone();
                async move {
                    let event = PokemonEvent::Appeared(super::Appeared { name: input.name });
                    let pushed = store
                        .push_event(NewEvent::new(&input.id, 1, event), Default::default())
                        .await?;
                    Ok::<_, HttpError>(Reply::created(pushed.position))
                }
            },
        )
        .router()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, router));
    format!("http://{address}")
}

#[derive(Debug, Deserialize)]
struct Appear {
    id: String,
    name: String,
}

async fn post_to(base: &str, path: &str, body: String) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn duplicate_keys_and_integers_above_u64_answer_400() {
    let store = pokemons(&in_memory());
    let base = start_open(&store).await;
    let (status, body) = post_to(&base, "/tally", r#"{"a": 1, "b": 2}"#.into()).await;
    assert_eq!((status, body), (StatusCode::OK, json!(3)));
    let (status, body) = post_to(&base, "/tally", r#"{"a": 1, "a": 1000}"#.into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "bad_request");
    let nested = r#"{"a": 1, "b": 2}"#;
    let (status, _) = post_to(&base, "/tally", nested.into()).await;
    assert_eq!(status, StatusCode::OK);
    let big = r#"{"a": 18446744073709551616}"#;
    let (status, body) = post_to(&base, "/tally", big.into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn ids_over_the_storage_limits_in_the_body_answer_400_not_500() {
    let store = pokemons(&in_memory());
    let base = start_open(&store).await;
    for id in ["a".repeat(10 << 10), "mew\\u0000".into(), String::new()] {
        let body = format!(r#"{{"id": "{id}", "name": "Mew"}}"#);
        let (status, body) = post_to(&base, "/pokemons/appear", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "bad_request");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.len() < 300,
            "the message does not echo the id: {message}"
        );
    }
    let (status, _) = post_to(
        &base,
        "/pokemons/appear",
        r#"{"id":"mew","name":"Mew"}"#.into(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

/// One raw connection that sends a request head one byte at a time, `pause` apart, for at
/// most `bytes` bytes; true when the server closed it before the head was complete.
async fn slow_client(address: std::net::SocketAddr, pause: std::time::Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
        return true;
    };
    let head = b"POST /pokemons/catch HTTP/1.1\r\nhost: x\r\nx-slow: ";
    let padding = std::iter::repeat(b'a');
    let mut buffer = [0_u8; 64];
    for byte in head.iter().copied().chain(padding).take(2_000) {
        if stream.write_all(&[byte]).await.is_err() {
            return true;
        }
        // A closed connection reads as end of file (or a reset).
        let read = tokio::time::timeout(pause, stream.read(&mut buffer)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_beyond_the_connection_cap_are_cut_and_normal_requests_still_answered() {
    let store = pokemons(&in_memory());
    appear(&store, "pikachu", "Pikachu").await;
    let router = actions(&store, Arc::new(StateStore::in_memory()))
        .router()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let options = ServeOptions {
        header_read_timeout: std::time::Duration::from_millis(300),
        idle_timeout: std::time::Duration::from_millis(300),
        connections_max: 8,
    };
    tokio::spawn(serve_with(
        listener,
        router,
        options,
        std::future::pending(),
    ));
    let base = format!("http://{address}");
    // Three times the cap, each sending a byte every 50 ms: without timeouts they would hold
    // every slot for 100 s.
    let slow: Vec<_> = (0..24)
        .map(|_| tokio::spawn(slow_client(address, std::time::Duration::from_millis(50))))
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (status, body) = within(
        "a normal request among slow clients",
        catch(&base, "pikachu", "ash"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for client in slow {
        let cut = within("a slow client is cut", client).await.unwrap();
        assert!(cut, "the server closed every slow connection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let store = pokemons(&in_memory());
    let router = actions(&store, Arc::new(StateStore::in_memory()))
        .router()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let options = ServeOptions {
        idle_timeout: std::time::Duration::from_millis(200),
        ..ServeOptions::default()
    };
    tokio::spawn(serve_with(
        listener,
        router,
        options,
        std::future::pending(),
    ));
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = "POST /nowhere HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0_u8; 1024];
    let closed = within("the idle connection is closed", async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    });
    closed.await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

#[tokio::test]
async fn catching_a_caught_pokemon_answers_409() {
    let store = pokemons(&in_memory());
    appear(&store, "pikachu", "Pikachu").await;
    let base = start(&store).await;
    assert_eq!(catch(&base, "pikachu", "ash").await.0, StatusCode::CREATED);
    let (status, body) = catch(&base, "pikachu", "gary").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["message"], "already caught by ash");
}

/// 20 trainers race for one Pokémon. The catch command reruns on a version conflict and then
/// sees the Pokémon caught, so exactly one request wins (201) and every other one answers 409;
/// the store holds exactly one catch, by the winner.
async fn racing_catches_have_exactly_one_winner(adapter: Arc<dyn StorageAdapter>) {
    let store = pokemons(&adapter);
    appear(&store, "eevee", "Eevee").await;
    let base = start(&store).await;
    let requests = (0..20).map(|i| {
        let base = base.clone();
        tokio::spawn(async move { catch(&base, "eevee", &format!("trainer-{i}")).await })
    });
    let answers = within("20 answers", futures::future::join_all(requests)).await;
    let answers: Vec<(StatusCode, Value)> = answers.into_iter().map(Result::unwrap).collect();

    let winners: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    let losers = answers
        .iter()
        .filter(|(status, body)| *status == StatusCode::CONFLICT && body["error"] == "conflict")
        .count();
    assert_eq!(losers, 19, "{answers:?}");

    let eevee = store
        .get_existing_aggregate("eevee", Default::default())
        .await
        .unwrap();
    assert_eq!(eevee.aggregate.version, 2, "exactly one catch was pushed");
    assert_eq!(
        eevee.aggregate.caught_by.as_deref(),
        winners[0]["trainer"].as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_catches_of_one_pokemon_have_exactly_one_winner_in_memory() {
    racing_catches_have_exactly_one_winner(in_memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_catches_of_one_pokemon_have_exactly_one_winner_on_the_log() {
    let dir = tempfile::tempdir().unwrap();
    racing_catches_have_exactly_one_winner(log_store(dir.path())).await;
}
