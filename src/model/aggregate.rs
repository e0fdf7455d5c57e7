//! Aggregates: the state of one entity at a version, computed by folding its events.

use std::ops::{Deref, DerefMut};

use serde::{Deserialize, Serialize};

use crate::model::event::{EventDetail, Events};

/// The state `S` of one aggregate at a version. Aggregates are always computed from events by
/// a [`Reducer`], never stored; the id and version are set by annals, so they always match the
/// last event folded in.
///
/// It dereferences to `S`, and its serde form is Castore's: `aggregateId`, `version` and the
/// state's own fields side by side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Aggregate<S> {
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The version of the last event folded in.
    pub version: u64,
    /// The user-defined state.
    #[serde(flatten)]
    pub state: S,
}

impl<S> Deref for Aggregate<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.state
    }
}

impl<S> DerefMut for Aggregate<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.state
    }
}

/// Folds one event into an aggregate's state: `None` before the first event.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Appeared { pub name: String }
/// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct LeveledUp {}
/// # annals::events! { pub enum PokemonEvent {
/// #     Appeared(Appeared) = "POKEMON_APPEARED", LeveledUp(LeveledUp) = "POKEMON_LEVELED_UP" } }
/// #[derive(Clone, Debug)]
/// struct Pokemon { name: String, level: u32 }
///
/// fn reduce(state: Option<Pokemon>, event: &annals::EventDetail<PokemonEvent>) -> Pokemon {
///     match (state, &event.event) {
///         (_, PokemonEvent::Appeared(e)) => Pokemon { name: e.name.clone(), level: 1 },
///         (Some(p), PokemonEvent::LeveledUp(_)) => Pokemon { level: p.level + 1, ..p },
///         (None, _) => Pokemon { name: String::new(), level: 0 },
///     }
/// }
/// let _: annals::Reducer<PokemonEvent, Pokemon> = std::sync::Arc::new(reduce);
/// ```
pub type Reducer<E, S> = std::sync::Arc<dyn Fn(Option<S>, &EventDetail<E>) -> S + Send + Sync>;

/// Folds `event` into `aggregate` with `reducer`, setting id and version from the event.
pub(crate) fn apply<E: Events, S>(
    reducer: &Reducer<E, S>,
    aggregate: Option<Aggregate<S>>,
    event: &EventDetail<E>,
) -> Aggregate<S> {
    // Folding one aggregate's events keeps its id: no allocation per event.
    let (aggregate_id, state) = match aggregate {
        Some(a) if a.aggregate_id == event.aggregate_id => (a.aggregate_id, Some(a.state)),
        Some(a) => (event.aggregate_id.clone(), Some(a.state)),
        None => (event.aggregate_id.clone(), None),
    };
    Aggregate {
        aggregate_id,
        version: event.version,
        state: reducer(state, event),
    }
}
