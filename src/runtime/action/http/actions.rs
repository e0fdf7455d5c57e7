//! Declared HTTP actions and the axum router they become.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::HttpError;
use super::json::{from_json, rejected, require_json, with_json_errors};
use super::reply::Reply;
use crate::runtime::action::context::{ActionContext, Trigger};
use crate::runtime::action::panic::panic_message;
use crate::runtime::state::StateStore;

/// The default body limit: 64 KiB.
pub const BODY_BYTES_MAX_DEFAULT: usize = 64 << 10;

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
/// [module docs](super).
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

fn valid_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.~".contains(c))
}
