//! HTTP-triggered actions: an axum [`Router`](axum::Router) built from declared actions, JSON in
//! and out.
//!
//! [`HttpActions`] collects routes (`post`, `put`, `patch`, `delete`), each an action
//! `(input, ActionContext) -> Result<Reply<output>, HttpError>`. The request body is parsed as
//! JSON into the input type; the reply is serialized as JSON. Every failure is a JSON body
//! `{"error": kind, "message": text}` with a status that tells the client what to do:
//!
//! - **400** — when: the body is not JSON, has a key twice, is not the input's shape, or an id or
//!   size in it breaks a storage [limit](crate::storage::Limits); source: the framework,
//!   [`HttpError::BadRequest`]
//! - **404** — when: an aggregate is missing, or no route matches; source:
//!   [`Error::AggregateNotFound`](crate::model::Error::AggregateNotFound), [`HttpError::NotFound`]
//! - **405** — when: the path exists, the method does not (the `Allow` header lists the methods);
//!   source: the framework
//! - **409** — when: a version conflict outlived the command's retries; source:
//!   [`EventAlreadyExists`](crate::storage::EventAlreadyExists), [`HttpError::Conflict`]
//! - **413** — when: the body is over the limit ([`HttpActions::body_limit`]); source: the
//!   framework
//! - **415** — when: the request does not say `Content-Type: application/json`; source: the
//!   framework
//! - **422** — when: the input is well-formed but invalid (the body also names the field); source:
//!   [`ValidationError`]
//! - **503** — when: the service is overloaded or stopping; retry later; source:
//!   [`HttpError::Unavailable`]
//! - **500** — when: anything else, or the action panicked (details are logged, not sent); source:
//!   [`HttpError::Internal`]
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

mod actions;
mod error;
mod json;
mod reply;
mod server;
#[cfg(test)]
mod tests;

pub use actions::{BODY_BYTES_MAX_DEFAULT, HttpActions, RouteError};
pub(crate) use error::shortened;
pub use error::{HttpError, ValidationError};
pub(crate) use json::{from_json_with, rejected, require_json, with_json_errors};
pub use reply::Reply;
pub use server::{ServeOptions, serve, serve_until, serve_with};
