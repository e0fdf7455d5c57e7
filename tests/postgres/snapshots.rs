//! The typed layer on PostgreSQL: an event store takes snapshots into the adapter's table on
//! reads, later reads start from them, and the aggregate is the one a full replay gives.

use std::sync::Arc;

use annals::storage::{SnapshotStorage, StorageAdapter};
use annals::{EventDetail, EventStore, NewEvent, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::fixture;
use crate::harness::{Needs, trials};

/// The tests of this module.
pub fn trials() -> Vec<libtest_mimic::Trial> {
    trials!(Needs::Server, threads = 2;
        reads_start_from_snapshots_kept_in_postgres,
    )
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trained {
    pub points: u64,
}

annals::events! {
    pub enum PokemonEvent {
        Trained(Trained) = "POKEMON_TRAINED",
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pokemon {
    pub experience: u64,
}

fn reduce(state: Option<Pokemon>, event: &EventDetail<PokemonEvent>) -> Pokemon {
    let PokemonEvent::Trained(t) = &event.event;
    Pokemon {
        experience: state.unwrap_or_default().experience + t.points,
    }
}

async fn reads_start_from_snapshots_kept_in_postgres() {
    let url = fixture::url();
    let (adapter, _guard) = fixture::adapter(&url).await;
    let adapter = Arc::new(adapter);
    let pokemons = EventStore::builder("POKEMONS", reduce)
        .storage_adapter(Arc::clone(&adapter) as Arc<dyn StorageAdapter>)
        .snapshots(SnapshotPolicy::every(10))
        .build()
        .expect("the store builds");
    for version in 1..=25 {
        let trained = PokemonEvent::Trained(Trained { points: version });
        pokemons
            .push_event(NewEvent::new("mew", version, trained), Default::default())
            .await
            .expect("push");
    }
    let full = pokemons
        .get_existing_aggregate("mew", Default::default())
        .await
        .expect("a full replay");
    assert_eq!(full.events.len(), 25);
    pokemons.flush_snapshots().await;
    let record = adapter
        .snapshot_storage()
        .latest("POKEMONS", "mew", u64::MAX)
        .expect("snapshots are read")
        .expect("a snapshot was taken by the read");
    assert_eq!(record.version, 20);
    let from_snapshot = pokemons
        .get_existing_aggregate("mew", Default::default())
        .await
        .expect("a read from the snapshot");
    assert_eq!(
        from_snapshot.events.len(),
        5,
        "only the events after the snapshot"
    );
    assert_eq!(from_snapshot.aggregate, full.aggregate);
    assert_eq!(from_snapshot.aggregate.experience, (1..=25).sum::<u64>());
}
