//! HTTP-triggered actions: an axum [`Router`] built from declared actions, JSON in and out.
//!
//! [`HttpActions`] collects routes (`post`, `put`, `patch`, `delete`), each an action
//! `(input, ActionContext) -> Result<Reply<output>, HttpError>`. The request body is parsed as
//! JSON into the input type; the reply is serialized as JSON. Every failure is a JSON body
//! `{"error": kind, "message": text}` with a status that tells the client what to do:
//!
//! | status | when | source |
//! |---|---|---|
//! | 400 | the body is not JSON, or not the input's shape | the framework |
//! | 404 | an aggregate is missing, or no route matches | [`Error::AggregateNotFound`], [`HttpError::NotFound`] |
//! | 409 | a version conflict outlived the command's retries | [`EventAlreadyExists`](crate::EventAlreadyExists), [`HttpError::Conflict`] |
//! | 413 | the body is over the limit ([`HttpActions::body_limit`]) | the framework |
//! | 422 | the input is well-formed but invalid (the body also names the field) | [`ValidationError`] |
//! | 500 | anything else, or the action panicked (details are logged, not sent) | [`HttpError::Internal`] |
//!
//! Errors of the typed layer convert with `?`, so an action can run a command and let its
//! conflict become a 409. [`serve`] runs the router on a [`TcpListener`].
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use annals::action::ActionContext;
//! use annals::action::http::{HttpActions, HttpError, Reply, ValidationError};
//! use annals::state::StateStore;
//!
//! #[derive(serde::Deserialize)]
//! struct Catch { pokemon_id: String, trainer: String }
//!
//! let actions = HttpActions::new(Arc::new(StateStore::in_memory()))
//!     .post("/pokemons/catch", |input: Catch, _ctx: ActionContext| async move {
//!         if input.trainer.is_empty() {
//!             return Err(ValidationError::new("trainer", "must not be empty").into());
//!         }
//!         Ok::<_, HttpError>(Reply::created(serde_json::json!({ "caught": input.pokemon_id })))
//!     });
//! let router = actions.router()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = tokio::spawn(annals::action::http::serve(listener, router));
//! server.abort();
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```
//!
//! [`TcpListener`]: tokio::net::TcpListener

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ActionContext, ActionError, Trigger};
use crate::error::Error;
use crate::state::StateStore;
use crate::storage::StorageError;

/// The default body limit: 64 KiB.
pub const BODY_BYTES_MAX_DEFAULT: usize = 64 << 10;

/// A successful reply: a status (200 or 201) and a body serialized as JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply<T> {
    /// The status code.
    pub status: StatusCode,
    /// The body.
    pub body: T,
}

impl<T> Reply<T> {
    /// `200 OK` with `body`.
    pub fn ok(body: T) -> Self {
        Reply {
            status: StatusCode::OK,
            body,
        }
    }

    /// `201 Created` with `body`.
    pub fn created(body: T) -> Self {
        Reply {
            status: StatusCode::CREATED,
            body,
        }
    }
}

/// Input that is well-formed but breaks a rule: answered with 422 and the field's name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    /// The offending field (a JSON path such as `trainer` or `moves[2]`).
    pub field: String,
    /// The rule it breaks.
    pub reason: String,
}

impl ValidationError {
    /// `field` breaks the rule `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Why an HTTP action failed, and so which status answers it (see the
/// [module docs](self)).
#[derive(Debug)]
#[non_exhaustive]
pub enum HttpError {
    /// 400: the request is malformed.
    BadRequest(String),
    /// 404: what the request names does not exist.
    NotFound(String),
    /// 409: the request lost a race, or conflicts with the current state.
    Conflict(String),
    /// 413: the body is over the limit.
    PayloadTooLarge(String),
    /// 422: the input breaks a rule.
    Invalid(ValidationError),
    /// 500: anything else; the text is logged, not sent.
    Internal(String),
}

impl HttpError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::Conflict(_) => StatusCode::CONFLICT,
            HttpError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            HttpError::BadRequest(_) => "bad_request",
            HttpError::NotFound(_) => "not_found",
            HttpError::Conflict(_) => "conflict",
            HttpError::PayloadTooLarge(_) => "payload_too_large",
            HttpError::Invalid(_) => "invalid",
            HttpError::Internal(_) => "internal",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::BadRequest(m)
            | HttpError::NotFound(m)
            | HttpError::Conflict(m)
            | HttpError::PayloadTooLarge(m)
            | HttpError::Internal(m) => write!(f, "{}: {m}", self.kind()),
            HttpError::Invalid(e) => write!(f, "invalid: {e}"),
        }
    }
}

impl From<ValidationError> for HttpError {
    fn from(e: ValidationError) -> Self {
        HttpError::Invalid(e)
    }
}

/// Version conflicts are 409, missing aggregates 404, everything else 500.
impl From<Error> for HttpError {
    fn from(e: Error) -> Self {
        match e {
            Error::EventAlreadyExists(conflict) => HttpError::Conflict(conflict.to_string()),
            Error::Storage(StorageError::EventAlreadyExists(conflict)) => {
                HttpError::Conflict(conflict.to_string())
            }
            e @ Error::AggregateNotFound { .. } => HttpError::NotFound(e.to_string()),
            other => HttpError::Internal(other.to_string()),
        }
    }
}

/// Version conflicts are 409, everything else 500.
impl From<StorageError> for HttpError {
    fn from(e: StorageError) -> Self {
        HttpError::from(Error::from(e))
    }
}

/// A failed action is a 500.
impl From<ActionError> for HttpError {
    fn from(e: ActionError) -> Self {
        HttpError::Internal(e.reason().to_owned())
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (message, field) = match &self {
            HttpError::Internal(detail) => {
                tracing::error!(%detail, "HTTP action failed");
                ("internal error", None)
            }
            HttpError::Invalid(e) => (e.reason.as_str(), Some(e.field.as_str())),
            HttpError::BadRequest(m)
            | HttpError::NotFound(m)
            | HttpError::Conflict(m)
            | HttpError::PayloadTooLarge(m) => (m.as_str(), None),
        };
        let body = ErrorBody {
            error: self.kind(),
            message,
            field,
        };
        (status, axum::Json(body)).into_response()
    }
}

/// A route's declaration is refused by [`HttpActions::router`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// Paths start with `/` and use letters, digits and `/ - _ . ~` only (no parameters: the
    /// input is the JSON body).
    #[error("invalid route path {path:?}: start with '/' and use letters, digits, '/-_.~'")]
    InvalidPath {
        /// The path.
        path: String,
    },
    /// The same method and path are declared twice.
    #[error("route {method} {path} is declared twice")]
    Duplicate {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
}

type Handler = Arc<dyn Fn(Bytes, ActionContext) -> BoxFuture<'static, Response> + Send + Sync>;

struct Route {
    method: Method,
    path: String,
    handler: Handler,
}

/// Declared HTTP actions, turned into an axum [`Router`] by [`router`](Self::router): see the
/// [module docs](self).
pub struct HttpActions {
    state: Arc<StateStore>,
    routes: Vec<Route>,
    body_bytes_max: usize,
}

impl fmt::Debug for HttpActions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes: Vec<_> = self
            .routes
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        f.debug_struct("HttpActions")
            .field("routes", &routes)
            .field("body_bytes_max", &self.body_bytes_max)
            .finish_non_exhaustive()
    }
}

impl HttpActions {
    /// No routes yet; actions get contexts on `state` (where they enqueue).
    pub fn new(state: Arc<StateStore>) -> Self {
        HttpActions {
            state,
            routes: Vec::new(),
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
        }
    }

    /// Refuses bodies over `bytes` with 413 (default [`BODY_BYTES_MAX_DEFAULT`]).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_bytes_max = bytes;
        self
    }

    /// Declares `POST path`.
    pub fn post<I, O, F, Fut>(self, path: impl Into<String>, action: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(I, ActionContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply<O>, HttpError>> + Send + 'static,
    {
        self.route(Method::POST, path.into(), action)
    }

    /// Declares `PUT path`.
    pub fn put<I, O, F, Fut>(self, path: impl Into<String>, action: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(I, ActionContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply<O>, HttpError>> + Send + 'static,
    {
        self.route(Method::PUT, path.into(), action)
    }

    /// Declares `PATCH path`.
    pub fn patch<I, O, F, Fut>(self, path: impl Into<String>, action: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(I, ActionContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply<O>, HttpError>> + Send + 'static,
    {
        self.route(Method::PATCH, path.into(), action)
    }

    /// Declares `DELETE path`.
    pub fn delete<I, O, F, Fut>(self, path: impl Into<String>, action: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(I, ActionContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply<O>, HttpError>> + Send + 'static,
    {
        self.route(Method::DELETE, path.into(), action)
    }

    fn route<I, O, F, Fut>(mut self, method: Method, path: String, action: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(I, ActionContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply<O>, HttpError>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |body: Bytes, ctx: ActionContext| {
            let input = match serde_json::from_slice::<I>(&body) {
                Ok(input) => input,
                Err(e) => {
                    let error = HttpError::BadRequest(format!("the body is not valid input: {e}"));
                    return futures::future::ready(error.into_response()).boxed();
                }
            };
            let run = action(input, ctx);
            async move {
                match run.await {
                    Ok(reply) => (reply.status, axum::Json(reply.body)).into_response(),
                    Err(error) => error.into_response(),
                }
            }
            .boxed()
        });
        self.routes.push(Route {
            method,
            path,
            handler,
        });
        self
    }

    /// The axum router serving every declared route, the body limit, and JSON 404s for
    /// unknown paths. Merge it into a larger router if the application has one.
    pub fn router(&self) -> Result<Router, RouteError> {
        let mut by_path: BTreeMap<&str, (MethodRouter, Vec<&Method>)> = BTreeMap::new();
        for route in &self.routes {
            if !valid_path(&route.path) {
                return Err(RouteError::InvalidPath {
                    path: route.path.clone(),
                });
            }
            let (router, methods) = by_path.entry(&route.path).or_default();
            if methods.contains(&&route.method) {
                return Err(RouteError::Duplicate {
                    method: route.method.to_string(),
                    path: route.path.clone(),
                });
            }
            methods.push(&route.method);
            let filter = match route.method {
                Method::PUT => MethodFilter::PUT,
                Method::PATCH => MethodFilter::PATCH,
                Method::DELETE => MethodFilter::DELETE,
                _ => MethodFilter::POST,
            };
            let endpoint = self.endpoint(route);
            *router = std::mem::take(router).merge(on(filter, endpoint));
        }
        let router = by_path
            .into_iter()
            .fold(Router::new(), |app, (path, (methods, _))| {
                app.route(path, methods)
            })
            .fallback(|| async { HttpError::NotFound("no such route".into()).into_response() })
            .layer(DefaultBodyLimit::max(self.body_bytes_max));
        Ok(router)
    }

    /// The axum handler of one route: buffers the body (within the limit), makes the action
    /// context, runs the action with panics contained.
    fn endpoint(
        &self,
        route: &Route,
    ) -> impl Fn(Result<Bytes, BytesRejection>) -> BoxFuture<'static, Response>
    + Clone
    + Send
    + Sync
    + 'static {
        let handler = route.handler.clone();
        let state = self.state.clone();
        let name: Arc<str> = Arc::from(format!("{} {}", route.method, route.path));
        let trigger = Trigger::Http {
            method: route.method.to_string(),
            path: route.path.clone(),
        };
        move |body: Result<Bytes, BytesRejection>| {
            let body = match body {
                Ok(body) => body,
                Err(rejection) => return futures::future::ready(rejected(rejection)).boxed(),
            };
            let ctx = ActionContext::new(name.clone(), trigger.clone(), 1, state.clone());
            let handler = handler.clone();
            let run = async move { handler(body, ctx).await };
            AssertUnwindSafe(run)
                .catch_unwind()
                .map(|outcome| match outcome {
                    Ok(response) => response,
                    Err(panic) => HttpError::Internal(format!(
                        "the action panicked: {}",
                        super::event::panic_message(panic.as_ref())
                    ))
                    .into_response(),
                })
                .boxed()
        }
    }
}

/// A body that could not be read: over the limit (413), or broken off (400).
fn rejected(rejection: BytesRejection) -> Response {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        HttpError::PayloadTooLarge(rejection.body_text()).into_response()
    } else {
        HttpError::BadRequest(rejection.body_text()).into_response()
    }
}

fn valid_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.~".contains(c))
}

/// Serves `router` on `listener` until the task is dropped or the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

/// Serves `router` on `listener` until `shutdown` completes, then lets requests in flight
/// finish.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_errors_map_to_statuses() {
        let conflict = crate::EventAlreadyExists {
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
}
