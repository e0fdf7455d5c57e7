//! Schema evolution: upcasters that turn a stored payload of an older schema version into the
//! current shape, and aliases that map a renamed event type to its new name.
//!
//! Events are immutable, so a payload type that changes shape does not rewrite history: the
//! type's schema version goes up ([`Events::schema_version`], `schema N` in
//! [`events!`](crate::events)), new events are stored with the new version, and the store is
//! given one upcaster per step, from version `n` to `n + 1`. Reading an event stored with
//! version `n` decodes its payload into a dynamic [`serde_json::Value`], runs the steps
//! `n → n + 1 → …` up to the current version, and only then decodes the result into the
//! current Rust type. Events already at the current version skip all of this. Upcasting
//! happens in [`EventStore::decode`], so every read of the typed layer (`get_events`,
//! `get_aggregate`, and whatever is built on `decode`) sees the current shape only.
//!
//! A step is either dynamic ([`EventStoreBuilder::upcaster`]:
//! `Fn(Value) -> Result<Value, UpcastError>`) or typed ([`typed_upcaster`]: `Fn(Old) -> New`
//! over the old and new payload structs).
//!
//! A renamed type keeps its old events readable through an alias ([`event_type_alias`]):
//! events stored under the old name are read as the new type, and their schema versions
//! continue the new type's numbering.
//!
//! Metadata is not upcast: metadata types should only ever gain optional fields.
//!
//! [`EventStore::decode`]: crate::model::event_store::EventStore::decode
//! [`EventStoreBuilder::upcaster`]: crate::model::event_store::EventStoreBuilder::upcaster
//! [`typed_upcaster`]: crate::model::event_store::EventStoreBuilder::typed_upcaster
//! [`event_type_alias`]: crate::model::event_store::EventStoreBuilder::event_type_alias

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::model::error::Error;
use crate::model::event::Events;

/// Why an upcaster could not convert a payload; reading the event then fails with
/// [`Error::Decode`] naming the event and this reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UpcastError(pub String);

impl UpcastError {
    /// An error with this reason.
    pub fn new(reason: impl Into<String>) -> Self {
        UpcastError(reason.into())
    }
}

impl From<serde_json::Error> for UpcastError {
    fn from(e: serde_json::Error) -> Self {
        UpcastError(e.to_string())
    }
}

/// One step: a payload of schema version `n` in, version `n + 1` out.
pub(crate) type Step = Arc<dyn Fn(Value) -> Result<Value, UpcastError> + Send + Sync>;

/// A store's upcasters and aliases.
#[derive(Clone, Default)]
pub(crate) struct Evolution {
    /// (event type, from schema version) → the step to `from + 1`.
    steps: HashMap<(String, u32), Step>,
    /// old type name → current type name.
    aliases: HashMap<String, String>,
    /// Steps or aliases registered twice, reported by [`check`](Self::check).
    duplicates: Vec<String>,
}

impl fmt::Debug for Evolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut steps: Vec<_> = self.steps.keys().collect();
        steps.sort();
        f.debug_struct("Evolution")
            .field("steps", &steps)
            .field("aliases", &self.aliases)
            .finish()
    }
}

impl Evolution {
    pub(crate) fn add_step(&mut self, event_type: String, from: u32, step: Step) {
        if self.steps.contains_key(&(event_type.clone(), from)) {
            self.duplicates.push(format!(
                "two upcasters for {event_type:?} from schema version {from}"
            ));
        }
        self.steps.insert((event_type, from), step);
    }

    pub(crate) fn add_alias(&mut self, old: String, new: String) {
        if self.aliases.contains_key(&old) {
            self.duplicates
                .push(format!("two aliases for event type {old:?}"));
        }
        self.aliases.insert(old, new);
    }

    /// Checks that every registration fits the store's event types.
    pub(crate) fn check<E: Events>(&self, event_store_id: &str) -> Result<(), Error> {
        let invalid = |reason: String| Error::InvalidSchemaEvolution {
            event_store_id: event_store_id.to_owned(),
            reason,
        };
        if let Some(duplicate) = self.duplicates.first() {
            return Err(invalid(duplicate.clone()));
        }
        let declared = |t: &str| E::EVENT_TYPES.contains(&t);
        for (event_type, from) in self.steps.keys() {
            if !declared(event_type) {
                return Err(invalid(format!(
                    "an upcaster for {event_type:?}, which the store does not declare"
                )));
            }
            let current = E::schema_version(event_type);
            if *from == 0 || *from >= current {
                return Err(invalid(format!(
                    "an upcaster for {event_type:?} from schema version {from}, but its \
                     versions run from 1 to the current {current}"
                )));
            }
        }
        for (old, new) in &self.aliases {
            if declared(old) {
                return Err(invalid(format!(
                    "alias {old:?} is itself a declared event type"
                )));
            }
            if !declared(new) {
                return Err(invalid(format!(
                    "alias {old:?} points to {new:?}, which the store does not declare"
                )));
            }
        }
        Ok(())
    }

    /// The current name of a stored event type: its alias target, or itself.
    pub(crate) fn resolve<'a>(&'a self, event_type: &'a str) -> &'a str {
        self.aliases
            .get(event_type)
            .map_or(event_type, String::as_str)
    }

    /// Runs the steps of `event_type` from schema version `from` up to `to`.
    pub(crate) fn upcast(
        &self,
        event_type: &str,
        from: u32,
        to: u32,
        mut payload: Value,
    ) -> Result<Value, String> {
        for version in from..to {
            let step = self
                .steps
                .get(&(event_type.to_owned(), version))
                .ok_or_else(|| {
                    format!(
                        "stored with schema version {from}, but no upcaster is registered from \
                         version {version} to {}",
                        version + 1
                    )
                })?;
            payload = step(payload).map_err(|e| {
                format!(
                    "upcasting from schema version {version} to {} failed: {e}",
                    version + 1
                )
            })?;
        }
        Ok(payload)
    }
}
