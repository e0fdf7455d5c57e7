//! HTTP-triggered actions: an axum [`Router`] built from declared actions, JSON in and out.
//!
//! [`HttpActions`] collects routes (`post`, `put`, `patch`, `delete`), each an action
//! `(input, ActionContext) -> Result<Reply<output>, HttpError>`. The request body is parsed as
//! JSON into the input type; the reply is serialized as JSON. Every failure is a JSON body
//! `{"error": kind, "message": text}` with a status that tells the client what to do:
//!
//! | status | when | source |
//! |---|---|---|
//! | 400 | the body is not JSON, has a key twice, is not the input's shape, or an id or size in it breaks a storage [limit](crate::storage::Limits) | the framework, [`HttpError::BadRequest`] |
//! | 404 | an aggregate is missing, or no route matches | [`Error::AggregateNotFound`], [`HttpError::NotFound`] |
//! | 405 | the path exists, the method does not (the `Allow` header lists the methods) | the framework |
//! | 409 | a version conflict outlived the command's retries | [`EventAlreadyExists`](crate::storage::EventAlreadyExists), [`HttpError::Conflict`] |
//! | 413 | the body is over the limit ([`HttpActions::body_limit`]) | the framework |
//! | 415 | the request does not say `Content-Type: application/json` | the framework |
//! | 422 | the input is well-formed but invalid (the body also names the field) | [`ValidationError`] |
//! | 503 | the service is overloaded or stopping; retry later | [`HttpError::Unavailable`] |
//! | 500 | anything else, or the action panicked (details are logged, not sent) | [`HttpError::Internal`] |
//!
//! Every request must carry `Content-Type: application/json` (or `application/<x>+json`,
//! parameters such as `charset` allowed), even with an empty body: a browser sends that header
//! cross-site only after a CORS preflight, so a form or a `no-cors` fetch from another site
//! cannot reach an action. The body is parsed straight into the input type (integers keep
//! their exact value, a key given twice is refused) within [`HttpActions::body_limit`].
//!
//! Only a request that hyper cannot parse as HTTP at all (a malformed request line, headers
//! over its size limit) is answered without the JSON body, by hyper itself.
//!
//! Errors of the typed layer convert with `?`, so an action can run a command and let its
//! conflict become a 409.
//!
//! [`serve`], [`serve_until`] and [`serve_with`] run a router (these, [entities'], or both
//! merged) on a [`TcpListener`] with the connection limits of [`ServeOptions`]: a header-read
//! timeout, an idle timeout and a connection cap, so slow or idle clients cannot hold the
//! server's sockets. Failures of the server (500s, accept errors) are reported through
//! [`tracing`](https://docs.rs/tracing): install a subscriber to see them.
//!
//! [entities']: crate::runtime::entity::http
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

mod server;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::de::{DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::context::{ActionContext, Trigger};
use super::error::ActionError;
use super::panic::panic_message;
use crate::model::Error;
use crate::runtime::state::StateStore;
use crate::storage::{LimitError, StorageError};

pub use server::ServeOptions;

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
    /// 415: the body is not declared as JSON.
    UnsupportedMediaType(String),
    /// 422: the input breaks a rule.
    Invalid(ValidationError),
    /// 503: the service cannot take the request now (overloaded, stopping); retry later.
    Unavailable(String),
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
            HttpError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            HttpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            HttpError::BadRequest(_) => "bad_request",
            HttpError::NotFound(_) => "not_found",
            HttpError::Conflict(_) => "conflict",
            HttpError::PayloadTooLarge(_) => "payload_too_large",
            HttpError::UnsupportedMediaType(_) => "unsupported_media_type",
            HttpError::Invalid(_) => "invalid",
            HttpError::Unavailable(_) => "unavailable",
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
            | HttpError::UnsupportedMediaType(m)
            | HttpError::Unavailable(m)
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

/// Version conflicts are 409, missing aggregates 404, ids and sizes over the storage limits
/// 400 (they come from the request), everything else 500.
impl From<Error> for HttpError {
    fn from(e: Error) -> Self {
        match e {
            Error::EventAlreadyExists(conflict) => HttpError::Conflict(conflict.to_string()),
            Error::Storage(StorageError::EventAlreadyExists(conflict)) => {
                HttpError::Conflict(conflict.to_string())
            }
            Error::Storage(StorageError::Limit(limit)) => HttpError::from(limit),
            e @ Error::AggregateNotFound { .. } => HttpError::NotFound(e.to_string()),
            other => HttpError::Internal(other.to_string()),
        }
    }
}

/// An id, size or count over the storage [limits](crate::storage::Limits) is 400: it came
/// from the request. The message shortens the offending id, which may be huge.
impl From<LimitError> for HttpError {
    fn from(e: LimitError) -> Self {
        let message = match &e {
            LimitError::InvalidAggregateId {
                aggregate_id,
                reason,
            } => format!("invalid aggregate id {}: {reason}", shortened(aggregate_id)),
            LimitError::InvalidEventStoreId {
                event_store_id,
                reason,
            } => format!(
                "invalid event store id {}: {reason}",
                shortened(event_store_id)
            ),
            LimitError::InvalidEventType { event_type, reason } => {
                format!("invalid event type {}: {reason}", shortened(event_type))
            }
            LimitError::EventTooLarge {
                aggregate_id,
                version,
                bytes,
                limit,
            } => format!(
                "event {} v{version} is {bytes} bytes; the limit is {limit}",
                shortened(aggregate_id)
            ),
            other => other.to_string(),
        };
        HttpError::BadRequest(message)
    }
}

/// `text` quoted, cut after 64 characters.
pub(crate) fn shortened(text: &str) -> String {
    const SHOWN: usize = 64;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], text.len()),
        None => format!("{text:?}"),
    }
}

/// Version conflicts are 409, limits 400, everything else 500.
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
            | HttpError::PayloadTooLarge(m)
            | HttpError::UnsupportedMediaType(m)
            | HttpError::Unavailable(m) => (m.as_str(), None),
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
            let input = match from_json::<I>(&body) {
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

    /// The axum router serving every declared route, the body limit, and JSON error bodies
    /// (also for unknown paths and wrong methods). It sets no fallback of its own, so it merges
    /// with [entity routers](crate::runtime::entity::http) and the application's routes
    /// ([`Router::merge`]); an application fallback, if any, answers unknown paths.
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
            .layer(DefaultBodyLimit::max(self.body_bytes_max));
        Ok(with_json_errors(router))
    }

    /// The axum handler of one route: buffers the body (within the limit), makes the action
    /// context, runs the action with panics contained.
    fn endpoint(
        &self,
        route: &Route,
    ) -> impl Fn(HeaderMap, Result<Bytes, BytesRejection>) -> BoxFuture<'static, Response>
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
        move |headers: HeaderMap, body: Result<Bytes, BytesRejection>| {
            if let Err(refused) = require_json(&headers) {
                return futures::future::ready(refused.into_response()).boxed();
            }
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
                        panic_message(panic.as_ref())
                    ))
                    .into_response(),
                })
                .boxed()
        }
    }
}

/// A body that could not be read: over the limit (413), or broken off (400).
pub(crate) fn rejected(rejection: BytesRejection) -> Response {
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

/// Serves `router` on `listener` with the default [`ServeOptions`] until the task is dropped
/// (then open connections finish their request in flight and close).
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    serve_with(
        listener,
        router,
        ServeOptions::default(),
        std::future::pending(),
    )
    .await
}

/// Serves `router` on `listener` with the default [`ServeOptions`] until `shutdown`
/// completes, then stops accepting, lets requests in flight finish and returns once every
/// connection is closed.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, ServeOptions::default(), shutdown).await
}

/// [`serve_until`] with `options`: at most [`ServeOptions::connections_max`] connections, each
/// closed when its request head is slower than [`ServeOptions::header_read_timeout`] or it
/// idles longer than [`ServeOptions::idle_timeout`]. HTTP/1.1 only.
///
/// Errors accepting connections (for example at the file-descriptor limit) are logged through
/// `tracing` and retried after a short pause; they do not stop the server.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::run(listener, router, options, shutdown).await
}

/// Refuses (415) a request that does not declare a JSON body: `application/json` or
/// `application/<x>+json`, any parameters.
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), HttpError> {
    let declared = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            let essence = value.split(';').next().unwrap_or("").trim();
            let essence = essence.to_ascii_lowercase();
            essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"))
        });
    match declared {
        Some(true) => Ok(()),
        Some(false) => Err(HttpError::UnsupportedMediaType(
            "the body must be JSON: send Content-Type: application/json".into(),
        )),
        None => Err(HttpError::UnsupportedMediaType(
            "no Content-Type: send Content-Type: application/json, also with an empty body".into(),
        )),
    }
}

/// `body` parsed as `T`, refusing a key that appears twice in any object (serde keeps the
/// last one for maps and `serde_json::Value`, which would silently drop what the client sent).
pub(crate) fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    from_json_with(body, |json| T::deserialize(json))
}

/// [`from_json`] with the reading done by `read` (which may wrap the JSON deserializer), and
/// nothing allowed after the value.
pub(crate) fn from_json_with<'b, T>(
    body: &'b [u8],
    read: impl FnOnce(
        &mut serde_json::Deserializer<serde_json::de::SliceRead<'b>>,
    ) -> Result<T, serde_json::Error>,
) -> Result<T, serde_json::Error> {
    reject_duplicate_keys(body)?;
    let mut json = serde_json::Deserializer::from_slice(body);
    let value = read(&mut json)?;
    json.end()?;
    Ok(value)
}

/// Walks `body` once, without building it, and fails on the first object with a key twice.
pub(crate) fn reject_duplicate_keys(body: &[u8]) -> Result<(), serde_json::Error> {
    let mut json = serde_json::Deserializer::from_slice(body);
    UniqueKeys::deserialize(&mut json)?;
    json.end()
}

/// A JSON value whose objects have no key twice, checked while it is read and then dropped.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if !seen.insert(key.0.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "the key {} appears twice",
                    shortened(&key.0)
                )));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// `router` with a JSON error body on every error response that has none (a wrong method,
/// an unknown path, a rejection of axum's): `{"error": kind, "message": text}`.
pub(crate) fn with_json_errors(router: Router) -> Router {
    router.layer(axum::middleware::map_response(json_error_body))
}

async fn json_error_body(response: Response) -> Response {
    let status = response.status();
    let is_error = status.is_client_error() || status.is_server_error();
    if !is_error || response.headers().contains_key(CONTENT_TYPE) {
        return response;
    }
    let (kind, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this path does not take this method (see the Allow header)",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the body is over the limit"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send Content-Type: application/json",
        ),
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "retry later"),
        s if s.is_client_error() => ("bad_request", s.canonical_reason().unwrap_or("bad request")),
        _ => ("internal", "internal error"),
    };
    let body = ErrorBody {
        error: kind,
        message,
        field: None,
    };
    let Ok(bytes) = serde_json::to_vec(&body) else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
