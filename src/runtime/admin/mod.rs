//! The admin console: a router the application mounts to look at its event store while it
//! runs — JSON endpoints, a web page and Prometheus metrics (feature `console`).
//!
//! [`Console`] builds an axum [`Router`]. Nothing is served unless the application serves
//! it: on an address of its own (the safest: a loopback address, see below) with
//! [`serve_with`](crate::runtime::action::http::serve_with), or next to its own routes with
//! [`Router::merge`], or [`Router::nest`] under a prefix that ends in `/` (`"/admin/"`: the
//! page finds its script and endpoints relative to its own address). The console reads only
//! through [`StorageAdapter`] and [`StateStore`], so it works the same over the log adapter,
//! PostgreSQL and memory.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use annals::admin::Console;
//! use annals::state::StateStore;
//!
//! let dir = tempfile::tempdir()?;
//! let log = annals::open(dir.path())?;
//! let state = Arc::new(StateStore::open(dir.path().join("state.redb"))?);
//! let router = Console::for_log(log)
//!     .state(state)
//!     .token("a long random secret, kept out of the source")
//!     .router()?;
//! // Loopback only: the console is for the people who run the application.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = tokio::spawn(annals::action::http::serve(listener, router));
//! server.abort();
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```
//!
//! # Endpoints
//!
//! Every answer is JSON (but the page, `/metrics` and the tail); every failure is a status with
//! the body `{"error": kind, "message": text}`.
//!
//! - `GET /` — the web page (`/console.js`, `/console.css`).
//! - `GET /api/stats` — head position; on the log adapter its writer's totals and file sizes.
//! - `GET /api/stores` — the event stores, with aggregates and events, and whether each is
//!   [registered](Console::store).
//! - `GET /api/stores/{store}/aggregates?limit=&pageToken=&reverse=` — a page of aggregate ids
//!   in order of their first event, with Castore's `nextPageToken`.
//! - `GET /api/stores/{store}/aggregates/{id}?from=&limit=` — the aggregate's events from
//!   version `from`, each with its JSON payload and metadata and, for a registered store, the
//!   state after it; `nextFrom` for the next page.
//! - `GET /api/stores/{store}/aggregates/{id}/state` — the current state (registered stores).
//! - `GET /api/log?from=&limit=` — a page of the global log from position `from` (the newest
//!   page without it).
//! - `GET /api/tail?stores=&types=&from=` — the live tail as Server-Sent Events.
//! - `GET /api/consumers` — every consumer checkpoint in the state store with its lag in
//!   events and the age of its oldest unhandled event, and the key-value views.
//! - `GET /api/dead-letters` — the actions' dead letters.
//! - `POST /api/dead-letters/{action}/{position}/retry` — asks the action's runner to retry
//!   it (token).
//! - `DELETE /api/dead-letters/{action}/{position}` — drops it (token).
//! - `GET /api/queues` — [registered](Console::queue) queues: depth (visible and in flight)
//!   and dead letters.
//! - `GET /api/entities` — [registered](Console::entities) entity kinds: live instances and
//!   pending timers.
//! - `POST /api/verify` — the log adapter's integrity check (token; reads the whole store).
//! - `GET /metrics` — Prometheus text (see [`metrics`](self#metrics)).
//!
//! Answers are bounded: a `limit` over its cap (500 aggregate ids, 1 000 events) is refused
//! with 400, as are a page token of another store or listing, a malformed query, and an id in
//! the path that is not UTF-8 or breaks the adapter's [limits](crate::storage::Limits). At
//! most [`tails_max`](Console::tails_max) tails are open at once (503 past that).
//!
//! # Security
//!
//! The console shows every event and state of the application to whoever reaches it. Serve
//! it on a loopback address (`127.0.0.1`), reached from elsewhere through an SSH tunnel
//! (`ssh -L 9100:127.0.0.1:9100 host`), or behind a reverse proxy that authenticates; never
//! merge it into a router that faces the public network.
//!
//! Reads need no credentials. Mutations (retrying and dropping dead letters, verifying) need
//! the token set with [`Console::token`], sent as `Authorization: Bearer <token>` and compared
//! in constant time; without a configured token they are refused (403). A browser sends that
//! header only from the page's own script (cross-site requests with it need a CORS preflight,
//! which the console never grants), so another site cannot make a visitor's browser mutate.
//! Requests that name the console by another host than an IP address or `localhost` are
//! refused (403) unless [allowed](Console::allow_host), so a page cannot reach it through a
//! domain made to resolve to `127.0.0.1` (DNS rebinding). The page itself runs under a content
//! security policy that allows only its own script.
//!
//! # Metrics
//!
//! `/metrics` renders figures that already exist, read at scrape time: the head position,
//! events and aggregates per store, the log writer's running counters (commits, events,
//! syncs, bytes written, segment rolls), bytes on disk per file kind, each consumer's lag and
//! oldest unhandled age, dead letters per action, queue depth and dead letters, live entity
//! instances; with a [`TimedAdapter`] registered, a histogram of commit latency. Names start
//! with `annals_`; see `docs/console.md` for the list.

mod assets;
mod auth;
mod consumers;
mod dead_letters;
mod error;
mod hosts;
mod lag;
mod log;
mod metrics;
mod params;
mod parts;
mod render;
mod shared;
mod stats;
mod stores;
mod tail;
mod timed;
mod typed;
mod verify;
mod workers;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::routing::{delete, get, post};
use axum::{Router, middleware};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::event::Events;
use crate::model::event_store::EventStore;
use crate::runtime::action::http::with_json_errors;
use crate::runtime::entity::{Entities, Entity};
use crate::runtime::queue::Queue;
use crate::runtime::state::StateStore;
use crate::storage::{LogAdapter, StorageAdapter};

use self::auth::Token;
use self::hosts::Hosts;
use self::parts::{EntityKind, EntityProbe};
use self::shared::Shared;
use self::timed::CommitLatency;
use self::typed::{Registered, TypedStore};

pub use self::timed::TimedAdapter;

/// Live tails open at once by default.
pub const TAILS_MAX_DEFAULT: usize = 16;
/// The shortest token [`Console::router`] accepts, in bytes.
pub const TOKEN_BYTES_MIN: usize = 16;

/// Builds the console's router: see the [module docs](self).
pub struct Console {
    adapter: Arc<dyn StorageAdapter>,
    log: Option<Arc<LogAdapter>>,
    state: Option<Arc<StateStore>>,
    stores: BTreeMap<String, Arc<dyn TypedStore>>,
    queues: BTreeMap<String, Queue>,
    entities: BTreeMap<String, Arc<dyn EntityProbe>>,
    token: Option<String>,
    tails_max: usize,
    hosts: Vec<String>,
    commit_latency: Option<Arc<CommitLatency>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("log", &self.log.is_some())
            .field("state", &self.state.is_some())
            .field("stores", &self.stores.keys().collect::<Vec<_>>())
            .field("queues", &self.queues.keys().collect::<Vec<_>>())
            .field("entities", &self.entities.keys().collect::<Vec<_>>())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tails_max", &self.tails_max)
            .field("hosts", &self.hosts)
            .field("commit_latency", &self.commit_latency.is_some())
            .finish()
    }
}

/// [`Console::router`] refused the configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// The token is shorter than [`TOKEN_BYTES_MIN`]: too easy to guess for what it guards.
    #[error("the console's token must be at least {TOKEN_BYTES_MIN} bytes long")]
    TokenTooShort,
}

impl Console {
    /// A console over `adapter`, with no state store, registered part or token yet.
    pub fn new(adapter: Arc<dyn StorageAdapter>) -> Self {
        Console {
            adapter,
            log: None,
            state: None,
            stores: BTreeMap::new(),
            queues: BTreeMap::new(),
            entities: BTreeMap::new(),
            token: None,
            tails_max: TAILS_MAX_DEFAULT,
            hosts: Vec::new(),
            commit_latency: None,
        }
    }

    /// A console over the log adapter: as [`new`](Self::new), plus the log's own figures
    /// (writer counters, file sizes) in `/api/stats` and `/metrics`, and `/api/verify`.
    pub fn for_log(log: Arc<LogAdapter>) -> Self {
        let mut console = Console::new(log.clone());
        console.log = Some(log);
        console
    }

    /// The state store of the application's consumers, views, actions and queues: what
    /// `/api/consumers` and `/api/dead-letters` read.
    pub fn state(mut self, state: Arc<StateStore>) -> Self {
        self.state = Some(state);
        self
    }

    /// Shows the events of `store` with its own types (aliases and upcasters applied) and its
    /// aggregates' state as its reducer folds it. A store without an adapter reads through
    /// the console's.
    pub fn store<E, S>(mut self, store: &EventStore<E, S>) -> Self
    where
        E: Events,
        S: Serialize + Clone + Send + Sync + 'static,
    {
        let registered: Arc<dyn TypedStore> = Arc::new(Registered::new(store, &self.adapter));
        self.stores
            .insert(store.event_store_id().to_owned(), registered);
        self
    }

    /// Shows `queue`'s depth and dead letters in `/api/queues` and `/metrics`.
    pub fn queue(mut self, queue: Queue) -> Self {
        self.queues.insert(queue.name().to_owned(), queue);
        self
    }

    /// Shows the entity kind `name`: its live instances and its pending timers (read from the
    /// timer store's log, as [`Timers::pending`](crate::runtime::entity::Timers::pending)
    /// does: the first listing reads the log once, later ones only what is new).
    pub fn entities<T>(mut self, name: impl Into<String>, entities: &Entities<T>) -> Self
    where
        T: Entity,
        T::Command: Serialize + DeserializeOwned + Clone + Sync,
    {
        let probe: Arc<dyn EntityProbe> = Arc::new(EntityKind::new(entities));
        self.entities.insert(name.into(), probe);
        self
    }

    /// The bearer token that mutations need (at least [`TOKEN_BYTES_MIN`] bytes). Without
    /// one, mutations are refused.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Most live tails open at once (default [`TAILS_MAX_DEFAULT`], at least 1).
    pub fn tails_max(mut self, tails: usize) -> Self {
        self.tails_max = tails;
        self
    }

    /// Adds the commit-latency histogram of `timed` (the adapter the application's stores push
    /// through) to `/metrics`, as `annals_commit_seconds`.
    pub fn commit_latency(mut self, timed: &TimedAdapter) -> Self {
        self.commit_latency = Some(timed.latency());
        self
    }

    /// Also answers requests that name the console `host` (say, the name a reverse proxy
    /// forwards): by default only IP addresses and `localhost` are answered, so that a web
    /// page cannot reach the console through a domain made to resolve to it (DNS rebinding).
    pub fn allow_host(mut self, host: impl Into<String>) -> Self {
        self.hosts.push(host.into());
        self
    }

    /// The router: the page, the JSON endpoints and `/metrics` (see the [module docs](self)).
    pub fn router(self) -> Result<Router, ConsoleError> {
        let token = match &self.token {
            Some(token) if token.len() < TOKEN_BYTES_MIN => {
                return Err(ConsoleError::TokenTooShort);
            }
            Some(token) => Some(Token::new(token)),
            None => None,
        };
        let mut shared = Shared::new(self.adapter, self.log, self.state, token, self.tails_max);
        shared.stores = self.stores;
        shared.queues = self.queues;
        shared.entities = self.entities;
        shared.commit_latency = self.commit_latency;
        let router = Router::new()
            .route("/", get(assets::index))
            .route("/console.js", get(assets::script))
            .route("/console.css", get(assets::style))
            .route("/api/stats", get(stats::stats))
            .route("/api/stores", get(stores::list))
            .route("/api/stores/{store}/aggregates", get(stores::aggregates))
            .route(
                "/api/stores/{store}/aggregates/{id}",
                get(stores::aggregate),
            )
            .route(
                "/api/stores/{store}/aggregates/{id}/state",
                get(stores::state),
            )
            .route("/api/log", get(log::page))
            .route("/api/tail", get(tail::tail))
            .route("/api/consumers", get(consumers::list))
            .route("/api/dead-letters", get(dead_letters::list))
            .route(
                "/api/dead-letters/{action}/{position}/retry",
                post(dead_letters::retry),
            )
            .route(
                "/api/dead-letters/{action}/{position}",
                delete(dead_letters::drop_letter),
            )
            .route("/api/queues", get(workers::queues))
            .route("/api/entities", get(workers::entities))
            .route("/api/verify", post(verify::verify))
            .route("/metrics", get(metrics::metrics))
            .with_state(Arc::new(shared));
        let hosts = Arc::new(Hosts(self.hosts));
        let router = router.layer(middleware::from_fn_with_state(hosts, hosts::check));
        Ok(with_json_errors(router))
    }
}
