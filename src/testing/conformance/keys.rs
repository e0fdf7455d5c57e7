//! Key stores (feature `personal`), for adapters that keep keys: without the feature, or on
//! an adapter without a key store, the check has nothing to check.

use std::sync::Arc;

use crate::storage::StorageAdapter;

/// `get_or_insert` keeps the first key a subject gets, also when several threads race for it;
/// `get` reads it back; `forget` destroys it (once), after which the subject has no key and a
/// later `get_or_insert` stores a new one. Checked on the store behind the adapter's cache.
pub async fn keys_are_created_once_and_forgotten_for_good(adapter: Arc<dyn StorageAdapter>) {
    #[cfg(feature = "personal")]
    {
        use crate::storage::SubjectKey;
        const CHECK: &str = "keys_are_created_once_and_forgotten_for_good";
        let Some(keys) = adapter.keys() else {
            return;
        };
        let store = keys.store();
        let key = |n: u8| SubjectKey::new([n; 8], [n.wrapping_mul(31); 32]);
        assert_eq!(store.get("ash").expect("get"), None, "{CHECK}: no key yet");
        let winners: Vec<SubjectKey> = std::thread::scope(|scope| {
            let racers: Vec<_> = (1..=4u8)
                .map(|n| scope.spawn(move || store.get_or_insert("ash", &key(n))))
                .collect();
            racers
                .into_iter()
                .map(|r| r.join().expect("no panic").expect("get_or_insert"))
                .collect()
        });
        assert!(
            winners.windows(2).all(|w| w[0] == w[1]),
            "{CHECK}: every racer gets the one key stored"
        );
        let first = winners[0].clone();
        assert_eq!(store.get("ash").expect("get"), Some(first.clone()));
        assert_eq!(
            store.get_or_insert("ash", &key(9)).expect("again"),
            first,
            "{CHECK}: an existing key is kept"
        );
        store
            .get_or_insert("misty", &key(7))
            .expect("another subject");
        assert!(
            store.forget("ash").expect("forget"),
            "{CHECK}: ash had a key"
        );
        assert!(
            !store.forget("ash").expect("forget again"),
            "{CHECK}: no key left"
        );
        assert_eq!(store.get("ash").expect("get"), None, "{CHECK}: forgotten");
        assert_eq!(
            store.get("misty").expect("get"),
            Some(key(7)),
            "{CHECK}: others kept"
        );
        assert_eq!(
            store.get_or_insert("ash", &key(8)).expect("a new key"),
            key(8),
            "{CHECK}: a forgotten subject gets a new key"
        );
    }
    #[cfg(not(feature = "personal"))]
    let _ = adapter;
}
