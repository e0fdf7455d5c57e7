//! HTTP actions through a real client over loopback: statuses, JSON bodies, and a race.

use std::sync::Arc;

use annals::action::ActionContext;
use annals::action::http::{HttpActions, HttpError, Reply, ValidationError, serve};
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
