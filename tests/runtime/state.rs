//! The redb state file keeps its format: a file written as `docs/format.md` describes opens
//! unchanged.

use std::sync::Arc;

use annals::state::StateStore;

/// A state file as the format documents it (`docs/format.md`), written table by table with redb
/// itself as an earlier build wrote it, opens unchanged: checkpoints, a key-value view, an
/// action dead letter with its retry request, a queue message and a queue dead letter.
#[test]
fn a_state_file_in_the_documented_format_opens_unchanged() {
    use annals::action::dead_letter;
    use annals::queue::Queue;
    use annals::view::{KvTables, KvView};
    use redb::TableDefinition;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.redb");
    drop(StateStore::open(&path).expect("create"));
    {
        let db = redb::Database::create(&path).expect("open with redb");
        let txn = db.begin_write().expect("write");
        let consumers: TableDefinition<&str, u64> = TableDefinition::new("consumers");
        let versions: TableDefinition<&str, u64> = TableDefinition::new("view_versions");
        let rows: TableDefinition<&str, &[u8]> = TableDefinition::new("view:counts:v1:counts");
        let letters: TableDefinition<(&str, u64), &[u8]> =
            TableDefinition::new("action_dead_letters");
        let requests: TableDefinition<(&str, u64), i64> =
            TableDefinition::new("action_dead_letter_retries");
        let meta: TableDefinition<&str, (u64, u64)> = TableDefinition::new("queue_meta");
        let messages: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue_messages");
        let dead: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue_dead_letters");
        let mut t = txn.open_table(consumers).expect("consumers");
        t.insert("mailer", 7).expect("insert");
        t.insert("view:counts:v1", 12).expect("insert");
        drop(t);
        let mut t = txn.open_table(versions).expect("view versions");
        t.insert("counts", 1).expect("insert");
        drop(t);
        let count = annals::codec::encode(&41u64).expect("encode");
        let mut t = txn.open_table(rows).expect("view rows");
        t.insert("pikachu", count.as_slice()).expect("insert");
        drop(t);
        #[derive(serde::Serialize)]
        struct Letter<'a> {
            action: &'a str,
            position: u64,
            event_store_id: &'a str,
            aggregate_id: &'a str,
            version: u64,
            event_type: &'a str,
            error: &'a str,
            attempts: u32,
            failed_at: annals::Timestamp,
        }
        let mut letter = vec![1u8];
        rmp_serde::encode::write_named(
            &mut letter,
            &Letter {
                action: "mailer",
                position: 5,
                event_store_id: "POKEMONS",
                aggregate_id: "missingno",
                version: 1,
                event_type: "POKEMON_APPEARED",
                error: "no such pokemon",
                attempts: 3,
                failed_at: annals::Timestamp::from_unix_millis(1_700_000_000_000),
            },
        )
        .expect("encode");
        let mut t = txn.open_table(letters).expect("dead letters");
        t.insert(("mailer", 5), letter.as_slice()).expect("insert");
        drop(t);
        let mut t = txn.open_table(requests).expect("retry requests");
        t.insert(("mailer", 5), 1_700_000_000_500).expect("insert");
        drop(t);
        // A queue record: format, receive count, visible-at, enqueued-at, error length, error,
        // body.
        let record = |receive_count: u32, error: &str, body: &[u8]| {
            let mut out = vec![1u8];
            out.extend_from_slice(&receive_count.to_le_bytes());
            out.extend_from_slice(&0i64.to_le_bytes());
            out.extend_from_slice(&1_700_000_000_000i64.to_le_bytes());
            out.extend_from_slice(&(error.len() as u32).to_le_bytes());
            out.extend_from_slice(error.as_bytes());
            out.extend_from_slice(body);
            out
        };
        let mut t = txn.open_table(meta).expect("queue meta");
        t.insert("emails", (3, 1)).expect("insert");
        drop(t);
        let mut t = txn.open_table(messages).expect("queue messages");
        t.insert(("emails", 2), record(0, "", b"welcome").as_slice())
            .expect("insert");
        drop(t);
        let mut t = txn.open_table(dead).expect("queue dead letters");
        t.insert(("emails", 1), record(5, "bounced", b"hello").as_slice())
            .expect("insert");
        drop(t);
        txn.commit().expect("commit");
    }

    let state = Arc::new(StateStore::open(&path).expect("reopen"));
    assert_eq!(state.checkpoint("mailer").expect("checkpoint"), Some(7));
    let view = KvView::builder("counts", 1)
        .on_logged(
            annals::subscription::Filter::all(),
            |_: &mut KvTables<'_>, _: &_| Ok::<(), annals::view::KvError>(()),
        )
        .build(Arc::clone(&state))
        .expect("build");
    assert_eq!(view.active_version().expect("active"), Some(1));
    assert_eq!(view.checkpoint().expect("checkpoint"), 12);
    assert_eq!(view.get::<u64>("counts", "pikachu").expect("get"), Some(41));
    let letters = dead_letter::list_all(&state).expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (
            letters[0].position,
            letters[0].attempts,
            letters[0].error.as_str()
        ),
        (5, 3, "no such pokemon")
    );
    assert_eq!(
        letters[0].retry_requested_at,
        Some(annals::Timestamp::from_unix_millis(1_700_000_000_500))
    );
    let queue = Queue::open(Arc::clone(&state), "emails");
    assert_eq!(queue.len().expect("length"), 1);
    let dead = queue.dead_letters().expect("dead letters");
    assert_eq!(
        (dead[0].id, dead[0].last_error.as_deref()),
        (1, Some("bounced"))
    );
    let message = queue
        .receive()
        .expect("receive")
        .expect("a visible message");
    assert_eq!((message.id, &*message.body), (2, &b"welcome"[..]));
    assert_eq!(queue.enqueue(b"next".to_vec()).expect("enqueue"), 3);
}
