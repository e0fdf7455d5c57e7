//! A torn, unacknowledged last record, cut at every offset: truncated cleanly, earlier data
//! intact.

use std::time::Instant;

use annals::engine::sim::Damage;
use annals::engine::verify::verify_dir_with;
use annals::storage::{AppendEvent, EncodedEvent, StorageAdapter};
use annals::{Durability, Timestamp};

use crate::bit_flips::end_of_data;
use crate::fixture::{self, Image, contents, open};

#[tokio::test]
async fn a_torn_unacknowledged_tail_is_truncated_at_every_offset() {
    let start = Instant::now();
    let (image, expected) = fixture::build(true).await;
    // Append one more small commit without durability (never acknowledged as durable), and
    // take the disk as a crash left it with that write complete.
    let fs = image.disk();
    let log = fixture::open_with(&fs, Durability::None).expect("open");
    let event = AppendEvent {
        event_store_id: "POKEMONS".into(),
        event: EncodedEvent {
            aggregate_id: "zz".into(),
            version: 1,
            timestamp: Timestamp::from_unix_millis(1),
            event_type: "T".into(),
            schema_version: 1,
            payload: b"unacknowledged".to_vec(),
            metadata: vec![],
        },
    };
    log.push_event(event).await.expect("written");
    let written = Image::take(&fs.crash_image(Damage::KeepUnsynced));
    drop(log);
    let path = fixture::segment(2);
    let before = end_of_data(image.file(&path));
    let frame_start = before.next_multiple_of(8);
    let frame_end = end_of_data(written.file(&path));
    assert!(
        frame_end > frame_start,
        "the unacknowledged frame was written"
    );
    let (mut truncated, mut kept) = (0, 0);
    for cut in frame_start..frame_end {
        let fs = written.disk_with(&path, |b| b[cut..frame_end].fill(0));
        let context = format!("tail torn at offset {cut} (frame {frame_start}..{frame_end})");
        let offline = verify_dir_with(
            std::sync::Arc::new(fs.clone()),
            std::path::Path::new(fixture::DIR),
        )
        .unwrap_or_else(|e| panic!("{context}: verify_dir: {e:?}"));
        assert!(offline.is_clean(), "{context}: {:?}", offline.problems);
        let log = open(&fs).unwrap_or_else(|e| panic!("{context}: open failed: {e:?}"));
        let got = contents(&log)
            .await
            .unwrap_or_else(|e| panic!("{context}: read failed: {e:?}"));
        if got == expected {
            let remains = written.file(&path)[frame_start..cut]
                .iter()
                .any(|&b| b != 0);
            assert_eq!(
                offline.torn_tail.is_some(),
                remains,
                "{context}: verify_dir's torn tail"
            );
            truncated += 1;
        } else {
            // Only zeros were cut: the commit is whole, and nothing else changed.
            assert_eq!(got.last_position, expected.last_position + 1, "{context}");
            let mut without = got.clone();
            without
                .events
                .retain(|(s, a), _| !(s == "POKEMONS" && a == "zz"));
            without
                .listed
                .values_mut()
                .for_each(|l| l.retain(|(a, _)| a != "zz"));
            without.last_position -= 1;
            assert!(
                without == expected,
                "{context}: {}",
                fixture::difference(&expected, &without)
            );
            kept += 1;
        }
        let report = log.verify().expect("verify");
        assert!(report.is_clean(), "{context}: {:?}", report.problems);
    }
    println!(
        "torn tail: {} offsets ({truncated} truncated, {kept} whole) in {:?}",
        frame_end - frame_start,
        start.elapsed()
    );
    assert!(truncated > 0);
}
