//! Entities over HTTP: `POST /<entity>/<id>/<command>` with the command's fields as a JSON body.
//!
//! [`EntityRouter`] builds the axum router of one entity kind. Which commands it serves is the
//! application's choice: **none unless allowed** with [`EntityRouter::allow`], so a command
//! meant for timers or for internal use only (a reminder, a correction) is never reachable
//! from the network by accident. A command that is not allowed is answered exactly like one
//! that does not exist (404), and never runs.
//!
//! The command is built from the path and the body as serde's externally tagged form of the
//! entity's command enum, `{"<command>": <body>}`, read straight from the body into the enum
//! (no intermediate `serde_json::Value`: integers keep their exact value, and a key given twice
//! is refused). An empty body is `null`, for unit variants. So `Command` needs only
//! `#[derive(Deserialize)]` (externally tagged, the default); the names it accepts are the
//! ones serde accepts (with `rename`, `rename_all`, `alias`), read from the derived
//! implementation with [`command_names`].
//!
//! The answer, once the events are durable, is `200 {"version": …, "events": [<event
//! detail>…]}`. Failures have the JSON body `{"error": kind, "message": text}` of
//! [`action::http`](crate::runtime::action::http):
//!
//! - **400** — `error`: `bad_request`; when: the path does not decode (`%FF`), the id breaks the
//!   store's [limits](crate::storage::Limits) (empty, too long, control characters such as `%00`),
//!   the body is not JSON, has a key twice or is not the command's fields, or the events break a
//!   limit
//! - **404** — `error`: `not_found`; when: no allowed command of that name, or no such path
//! - **405** — `error`: `method_not_allowed`; when: not `POST`
//! - **409** — `error`: `conflict`; when: the entity rejected the command, or other writers kept
//!   winning the version
//! - **413** — `error`: `payload_too_large`; when: the body is over the limit
//!   ([`EntityRouter::body_limit`])
//! - **415** — `error`: `unsupported_media_type`; when: no `Content-Type: application/json`, also
//!   required with an empty body (so a cross-site form cannot send commands)
//! - **503** — `error`: `unavailable`; when: the entity's mailbox is full, or its instance stopped
//!   before answering
//! - **500** — `error`: `internal`; when: the store failed (details are logged through `tracing`,
//!   not sent)
//!
//! The router sets no fallback of its own: unknown paths answer the JSON 404 when it is served
//! alone, and it merges ([`Router::merge`]) with other entity routers, with
//! [`HttpActions`](crate::runtime::action::http::HttpActions) and with the application's routes.
//! Serve
//! it with [`serve_with`](crate::runtime::action::http::serve_with) for the connection limits.
//!
//! ```
//! # use std::sync::Arc;
//! # use serde::{Deserialize, Serialize};
//! # use annals::{Aggregate, EventDetail, EventStore, storage::InMemoryAdapter};
//! # use annals::entity::{CommandContext, Entities, Entity, EntityOptions};
//! use annals::entity::http::EntityRouter;
//! # #[derive(Debug, Clone, Serialize, Deserialize)]
//! # pub struct Deposited { pub amount: u64 }
//! # annals::events! { pub enum AccountEvent { Deposited(Deposited) = "DEPOSITED" } }
//! # fn reduce(b: Option<u64>, e: &EventDetail<AccountEvent>) -> u64 {
//! #     let AccountEvent::Deposited(d) = &e.event; b.unwrap_or(0) + d.amount
//! # }
//! #[derive(Deserialize)]
//! enum AccountCommand {
//!     Deposit { amount: u64 },
//!     /// Sent by a timer only: not allowed over HTTP.
//!     RemindLowBalance,
//! }
//! # struct Account;
//! # impl Entity for Account {
//! #     type Command = AccountCommand; type Events = AccountEvent;
//! #     type State = u64; type Rejection = ();
//! #     fn decide(_: Option<&Aggregate<u64>>, c: &AccountCommand,
//! #         _: &mut CommandContext<'_, AccountCommand>) -> Result<Vec<AccountEvent>, ()> {
//! #         match c {
//! #             AccountCommand::Deposit { amount } =>
//! #                 Ok(vec![AccountEvent::Deposited(Deposited { amount: *amount })]),
//! #             AccountCommand::RemindLowBalance => Ok(vec![]),
//! #         }
//! #     }
//! # }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! # let store = EventStore::builder("ACCOUNTS", reduce)
//! #     .storage_adapter(Arc::new(InMemoryAdapter::new())).build()?;
//! let accounts = Entities::<Account>::new(store, EntityOptions::default())?;
//! // POST /accounts/{id}/Deposit, and nothing else.
//! let router = EntityRouter::new("accounts", accounts).allow("Deposit").router()?;
//! # drop(router);
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```

use std::collections::BTreeSet;
use std::fmt;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserializer;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, VariantAccess, Visitor,
};

use super::{Entities, Entity, EntityError};
use crate::model::Error;
use crate::runtime::action::http::{
    BODY_BYTES_MAX_DEFAULT, HttpError, from_json_with, rejected, require_json, shortened,
    with_json_errors,
};
use crate::storage::StorageError;

/// Builds the router of one entity kind: see the [module docs](self).
pub struct EntityRouter<T: Entity> {
    name: String,
    entities: Entities<T>,
    allowed: BTreeSet<String>,
    body_bytes_max: usize,
}

impl<T: Entity> fmt::Debug for EntityRouter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityRouter")
            .field("name", &self.name)
            .field("allowed", &self.allowed)
            .field("body_bytes_max", &self.body_bytes_max)
            .finish_non_exhaustive()
    }
}

/// [`EntityRouter::router`] refused the declaration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntityRouteError {
    /// The entity's name is not a plain path segment (ASCII letters, digits, `-`, `_`).
    #[error("invalid entity name {name:?}: use ASCII letters, digits, '-' and '_'")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// The command type is not deserialized as an externally tagged enum (serde's default for
    /// a derived enum), so its commands have no names to route by.
    #[error("command type {command_type} is not an externally tagged serde enum")]
    NotAnEnum {
        /// The type's name.
        command_type: &'static str,
    },
    /// An allowed command is not a variant name the command enum accepts.
    #[error("no command {command:?} to allow; the command enum accepts {known:?}")]
    UnknownCommand {
        /// The allowed name.
        command: String,
        /// The names the enum accepts.
        known: Vec<&'static str>,
    },
}

impl<T> EntityRouter<T>
where
    T: Entity,
    T::Command: DeserializeOwned,
{
    /// The router of `entities` at `/{name}/{id}/{command}`, serving no command yet, with the
    /// body limit [`BODY_BYTES_MAX_DEFAULT`].
    pub fn new(name: impl Into<String>, entities: Entities<T>) -> Self {
        EntityRouter {
            name: name.into(),
            entities,
            allowed: BTreeSet::new(),
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
        }
    }

    /// Serves `command`, a variant name of the command enum as serde accepts it (after
    /// `rename`); [`router`](Self::router) refuses a name the enum does not accept.
    pub fn allow(mut self, command: impl Into<String>) -> Self {
        self.allowed.insert(command.into());
        self
    }

    /// Refuses bodies over `bytes` with 413 (default [`BODY_BYTES_MAX_DEFAULT`]).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_bytes_max = bytes;
        self
    }

    /// The axum router: `POST /{name}/{id}/{command}` for the allowed commands, the body
    /// limit, and JSON error bodies.
    pub fn router(&self) -> Result<Router, EntityRouteError> {
        let plain = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !plain {
            return Err(EntityRouteError::InvalidName {
                name: self.name.clone(),
            });
        }
        let known = command_names::<T::Command>().ok_or(EntityRouteError::NotAnEnum {
            command_type: std::any::type_name::<T::Command>(),
        })?;
        if let Some(unknown) = self.allowed.iter().find(|c| !known.contains(&c.as_str())) {
            return Err(EntityRouteError::UnknownCommand {
                command: unknown.clone(),
                known: known.to_vec(),
            });
        }
        let allowed = std::sync::Arc::new(self.allowed.clone());
        let entities = self.entities.clone();
        let handler = move |path: Result<Path<(String, String)>, PathRejection>,
                            headers: HeaderMap,
                            body: Result<Bytes, BytesRejection>| {
            let (entities, allowed) = (entities.clone(), allowed.clone());
            async move {
                match path {
                    Ok(Path((id, command))) => {
                        send(&entities, &allowed, id, &command, &headers, body).await
                    }
                    Err(e) => HttpError::BadRequest(format!(
                        "the path does not decode: {}",
                        e.body_text()
                    ))
                    .into_response(),
                }
            }
        };
        // `{id}` never matches an empty segment: `/name//command` gets its own route so an
        // empty id is answered as an invalid id, not as an unknown path.
        let empty_id = |path: Result<Path<String>, PathRejection>| async move {
            let _ = path;
            HttpError::BadRequest("invalid aggregate id \"\": it is empty".into()).into_response()
        };
        let router = Router::new()
            .route(&format!("/{}/{{id}}/{{command}}", self.name), post(handler))
            .route(&format!("/{}//{{command}}", self.name), post(empty_id))
            .layer(DefaultBodyLimit::max(self.body_bytes_max));
        Ok(with_json_errors(router))
    }
}

async fn send<T>(
    entities: &Entities<T>,
    allowed: &BTreeSet<String>,
    id: String,
    command_name: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response
where
    T: Entity,
    T::Command: DeserializeOwned,
{
    if !allowed.contains(command_name) {
        let message = format!("no command {}", shortened(command_name));
        return HttpError::NotFound(message).into_response();
    }
    if let Ok(adapter) = entities.store().storage_adapter()
        && let Err(invalid) = adapter.limits().check_aggregate_id(&id)
    {
        return HttpError::from(invalid).into_response();
    }
    if let Err(refused) = require_json(headers) {
        return refused.into_response();
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return rejected(rejection),
    };
    let fields: &[u8] = if body.is_empty() { b"null" } else { &body };
    let command: T::Command = match from_json_with(fields, |json| {
        let tagged = Tagged {
            command: command_name,
            json,
        };
        <T::Command as de::Deserialize>::deserialize(tagged)
    }) {
        Ok(command) => command,
        Err(e) => {
            let message = format!("not the fields of {command_name}: {e}");
            return HttpError::BadRequest(message).into_response();
        }
    };
    match entities.get(id).send(command).await {
        Ok(reply) => match serde_json::to_value(&reply.events) {
            Ok(events) => {
                let body = serde_json::json!({ "version": reply.version, "events": events });
                (StatusCode::OK, axum::Json(body)).into_response()
            }
            Err(e) => HttpError::Internal(format!("cannot render the events: {e}")).into_response(),
        },
        Err(EntityError::Rejected(rejection)) => {
            HttpError::Conflict(format!("rejected: {rejection:?}")).into_response()
        }
        Err(e @ EntityError::Contended { .. }) => {
            HttpError::Conflict(e.to_string()).into_response()
        }
        Err(e @ (EntityError::Overloaded { .. } | EntityError::Stopped { .. })) => {
            HttpError::Unavailable(e.to_string()).into_response()
        }
        Err(EntityError::Store { source, .. })
            if matches!(&*source, Error::Storage(StorageError::Limit(_))) =>
        {
            match &*source {
                Error::Storage(StorageError::Limit(limit)) => {
                    HttpError::from(limit.clone()).into_response()
                }
                other => HttpError::Internal(other.to_string()).into_response(),
            }
        }
        Err(e) => HttpError::Internal(e.to_string()).into_response(),
    }
}

/// The variant names serde accepts for the enum `C` (its aliases included), as its derived
/// `Deserialize` declares them; `None` when `C` does not deserialize as an externally tagged
/// enum (a struct, an `untagged` or internally tagged enum).
///
/// The names are read by handing `C::deserialize` a deserializer that only records the list a
/// derived enum passes to `deserialize_enum`; nothing is parsed. An `EntityRouter` checks its
/// allowed commands against them.
///
/// ```
/// #[derive(serde::Deserialize)]
/// #[serde(rename_all = "snake_case")]
/// enum Command { Deposit { amount: u64 }, Withdraw(u64) }
/// assert_eq!(
///     annals::entity::http::command_names::<Command>(),
///     Some(&["deposit", "withdraw"][..])
/// );
/// assert_eq!(annals::entity::http::command_names::<u64>(), None);
/// ```
pub fn command_names<C: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut names = None;
    let _ = C::deserialize(VariantNames { names: &mut names });
    names
}

/// A deserializer that records the variant names of the enum asked for, and fails.
struct VariantNames<'a> {
    names: &'a mut Option<&'static [&'static str]>,
}

impl<'de> Deserializer<'de> for VariantNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not an enum"))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.names = Some(variants);
        Err(de::Error::custom("only the names were wanted"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

/// The command `{"<command>": <body>}` without building it: the variant name from the path,
/// its content read from the body's JSON by `json`.
struct Tagged<'c, D> {
    command: &'c str,
    json: D,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Tagged<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

impl<'de, D: Deserializer<'de>> EnumAccess<'de> for Tagged<'_, D> {
    type Error = D::Error;
    type Variant = Fields<D>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Fields<D>), Self::Error> {
        let name: de::value::StrDeserializer<'_, D::Error> = self.command.into_deserializer();
        let variant = seed.deserialize(name)?;
        Ok((variant, Fields(self.json)))
    }
}

/// A variant's content, read from the body.
struct Fields<D>(D);

impl<'de, D: Deserializer<'de>> VariantAccess<'de> for Fields<D> {
    type Error = D::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        <() as de::Deserialize>::deserialize(self.0)
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, Self::Error> {
        seed.deserialize(self.0)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_struct("", fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::runtime::action::http::from_json_with;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Command {
        Unit,
        Newtype(u64),
        Tuple(u8, String),
        Struct {
            amount: u64,
        },
        #[serde(alias = "old_name")]
        Renamed,
    }

    fn parse(command: &str, body: &str) -> Result<Command, serde_json::Error> {
        from_json_with(body.as_bytes(), |json| {
            Command::deserialize(Tagged { command, json })
        })
    }

    #[test]
    fn every_kind_of_variant_is_read_from_its_name_and_body() {
        assert_eq!(parse("unit", "null").ok(), Some(Command::Unit));
        assert_eq!(parse("newtype", "7").ok(), Some(Command::Newtype(7)));
        assert_eq!(
            parse("tuple", r#"[1, "x"]"#).ok(),
            Some(Command::Tuple(1, "x".into()))
        );
        assert_eq!(
            parse("struct", r#"{"amount": 3}"#).ok(),
            Some(Command::Struct { amount: 3 })
        );
        assert_eq!(parse("old_name", "null").ok(), Some(Command::Renamed));
        assert!(
            parse("unit", "{}").is_err(),
            "a unit variant takes no fields"
        );
        assert!(parse("struct", r#"{"amount": 3, "amount": 4}"#).is_err());
        assert!(
            parse("Unit", "null").is_err(),
            "names are serde's, after rename_all"
        );
    }

    #[test]
    fn variant_names_are_read_from_the_derived_deserialize() {
        assert_eq!(
            command_names::<Command>(),
            Some(&["unit", "newtype", "tuple", "struct", "old_name", "renamed"][..])
        );
        #[derive(Deserialize)]
        #[serde(untagged)]
        #[allow(dead_code)]
        enum Untagged {
            A(u64),
        }
        assert_eq!(command_names::<Untagged>(), None);
        assert_eq!(command_names::<String>(), None);
    }
}
