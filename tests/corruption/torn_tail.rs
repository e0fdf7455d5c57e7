//! A torn, unacknowledged last record — cut at every offset, or missing any one of its
//! sectors: truncated cleanly, earlier data intact.

use std::time::Instant;

use annals::engine::sim::Damage;
use annals::engine::verify::verify_dir_with;
use annals::storage::{AppendEvent, EncodedEvent, StorageAdapter};
use annals::{Durability, Timestamp};

use crate::bit_flips::end_of_data;
use crate::fixture::{self, Image, contents, open};

/// The fixture plus one more commit (of `payload_len` payload bytes) written without
/// durability, so never acknowledged as durable, as a crash left the disk with that write
/// complete; and where its frame lies in segment 2.
async fn with_unacknowledged_frame(image: &Image, payload_len: usize) -> (Image, usize, usize) {
    let fs = image.disk();
    let log = fixture::open_with(&fs, Durability::None).expect("open");
    let mut payload = b"unacknowledged".to_vec();
    payload.resize(payload_len, b'!');
    let event = AppendEvent {
        event_store_id: "POKEMONS".into(),
        event: EncodedEvent {
            aggregate_id: "zz".into(),
            version: 1,
            timestamp: Timestamp::from_unix_millis(1),
            event_type: "T".into(),
            schema_version: 1,
            payload,
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
    (written, frame_start, frame_end)
}

#[tokio::test]
async fn an_unacknowledged_frame_missing_any_one_sector_is_truncated() {
    let start = Instant::now();
    let (image, expected) = fixture::build(true).await;
    let (written, frame_start, frame_end) = with_unacknowledged_frame(&image, 3000).await;
    let path = fixture::segment(2);
    let mut cases = 0;
    for sector in (frame_start / 512 * 512..frame_end).step_by(512) {
        let (from, to) = (sector.max(frame_start), (sector + 512).min(frame_end));
        let fs = written.disk_with(&path, |b| b[from..to].fill(0));
        let context = format!("sector {sector} lost (frame {frame_start}..{frame_end})");
        let log = open(&fs).unwrap_or_else(|e| panic!("{context}: open failed: {e:?}"));
        let got = contents(&log)
            .await
            .unwrap_or_else(|e| panic!("{context}: read failed: {e:?}"));
        assert!(
            got == expected,
            "{context}: {}",
            fixture::difference(&expected, &got)
        );
        // The fixture was closed cleanly, but the open that wrote this frame removed the
        // clean-close mark: recovery checked the tail and cleared the stale sectors.
        let report = log.verify().expect("verify");
        assert!(report.is_clean(), "{context}: {:?}", report.problems);
        cases += 1;
    }
    println!("lost sectors: {cases} cases in {:?}", start.elapsed());
    assert!(cases >= 6, "the frame spans several sectors");
}

#[tokio::test]
async fn a_torn_unacknowledged_tail_is_truncated_at_every_offset() {
    let start = Instant::now();
    let (image, expected) = fixture::build(true).await;
    let (written, frame_start, frame_end) = with_unacknowledged_frame(&image, 14).await;
    let path = fixture::segment(2);
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
