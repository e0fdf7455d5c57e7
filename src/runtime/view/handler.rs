//! What view handlers share whatever their tables: decoding events for them, containing
//! their failures and panics, and routing the subscription to the stores they read.

use std::collections::BTreeSet;

use super::error::{BoxError, ViewError};
use super::id::ViewId;
use crate::model::event::{EventDetail, Events};
use crate::model::event_store::EventStore;
use crate::runtime::subscription::Filter;
use crate::storage::lifecycle::LifecycleRecord;
use crate::storage::{DeleteMode, LIFECYCLE_STORE, LoggedEvent, StoredEvent};

/// Why a handler did not apply an event.
pub(crate) enum Failure {
    Decode(crate::model::Error),
    Handler(BoxError),
    Panicked(String),
}

impl Failure {
    /// The error reported for this failure on `event`.
    pub(crate) fn into_error(self, id: &ViewId, event: &LoggedEvent) -> ViewError {
        let (view, version, position) = (id.name.clone(), id.version, event.position);
        match self {
            Failure::Decode(source) => ViewError::Decode {
                view,
                version,
                position,
                source: Box::new(source),
            },
            Failure::Handler(source) => ViewError::Handler {
                view,
                version,
                position,
                aggregate_id: event.event.aggregate_id.clone(),
                event_version: event.event.version,
                event_type: event.event.event_type.clone(),
                source,
            },
            Failure::Panicked(message) => ViewError::HandlerPanicked {
                view,
                version,
                position,
                message,
            },
        }
    }
}

/// Runs `handler`, turning a panic into [`Failure::Panicked`]: a panicking handler must not
/// be mistaken for a damaged database by the layers below.
pub(crate) fn guarded(handler: impl FnOnce() -> Result<(), Failure>) -> Result<(), Failure> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(handler)) {
        Ok(out) => out,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic".to_owned());
            Err(Failure::Panicked(message))
        }
    }
}

/// Decodes a logged event of `store` into its typed form (running its upcasters).
pub(crate) fn decoder<E, S>(
    store: &EventStore<E, S>,
) -> impl Fn(&LoggedEvent) -> Result<EventDetail<E>, Failure> + Send + Sync + 'static
where
    E: Events,
    S: Clone + Send + Sync + 'static,
{
    let store = store.clone();
    move |logged| {
        store
            .decode(StoredEvent {
                position: logged.position,
                event: logged.event.clone(),
            })
            .map_err(Failure::Decode)
    }
}

/// The stores a view's handlers read, so its subscription reads only those (when every
/// handler names its store).
#[derive(Debug, Default)]
pub(crate) struct Routes {
    /// `None` once a handler takes events of any store.
    stores: Option<BTreeSet<String>>,
    any: bool,
}

impl Routes {
    pub(crate) fn add_store(&mut self, store: &str) {
        if !self.any {
            self.stores
                .get_or_insert_with(BTreeSet::new)
                .insert(store.to_owned());
        }
    }

    pub(crate) fn add_any(&mut self) {
        self.any = true;
        self.stores = None;
    }

    /// The subscription filter: the union of the handlers' stores, or everything.
    pub(crate) fn filter(&self) -> Filter {
        match &self.stores {
            Some(stores) if !self.any => Filter::all().stores(stores.iter().cloned()),
            _ => Filter::all(),
        }
    }
}

/// The deletes of one event store's aggregates, as views see them: [`Deletes::filter`] admits
/// the `$lifecycle` events that record deletes, and [`Deletes::read`] turns such an event into
/// the deleted aggregate's id and mode.
pub(crate) struct Deletes {
    /// The event store whose deletes these are (the `$lifecycle` aggregate id).
    target: String,
}

impl Deletes {
    pub(crate) fn of(event_store_id: &str) -> Self {
        Deletes {
            target: event_store_id.to_owned(),
        }
    }

    /// The `$lifecycle` events recording deletes (of any store).
    pub(crate) fn filter(&self) -> Filter {
        let deleted = LifecycleRecord::Deleted {
            aggregate_id: String::new(),
            mode: DeleteMode::Soft,
        };
        Filter::all()
            .stores([LIFECYCLE_STORE])
            .event_types([deleted.event_type()])
    }

    /// The aggregate `logged` deletes and how, or `None` for another store's delete.
    pub(crate) fn read(
        &self,
        logged: &LoggedEvent,
    ) -> Result<Option<(String, DeleteMode)>, Failure> {
        if logged.event.aggregate_id != self.target {
            return Ok(None);
        }
        let event = &logged.event;
        match LifecycleRecord::decode(&event.event_type, &event.payload) {
            Ok(LifecycleRecord::Deleted { aggregate_id, mode }) => Ok(Some((aggregate_id, mode))),
            Ok(_) => Ok(None),
            Err(e) => Err(Failure::Decode(crate::model::Error::Decode {
                event_store_id: logged.event_store_id.clone(),
                aggregate_id: event.aggregate_id.clone(),
                version: event.version,
                event_type: event.event_type.clone(),
                reason: e.0,
            })),
        }
    }
}
