//! Damage to the index alone (truncation, deletion): open rebuilds it from the log.

use std::time::Instant;

use crate::fixture::{self, contents, open};

#[tokio::test]
async fn a_truncated_or_deleted_index_is_rebuilt_with_identical_results() {
    let start = Instant::now();
    let (image, expected) = fixture::build(true).await;
    let path = fixture::index();
    let len = image.file(&path).len();
    let mut cases = 0;
    let lengths = [0, 1, 8, 511, 4096, len / 4, len / 2, len - 4096, len - 1];
    for keep in lengths.into_iter().map(Some).chain([None]) {
        let fs = match keep {
            Some(keep) => image.disk_with(&path, |b| b.truncate(keep)),
            None => {
                let fs = image.disk();
                fs.write_file(&path, Vec::new());
                fs
            }
        };
        let context = format!("index cut to {keep:?} bytes");
        let log = open(&fs).unwrap_or_else(|e| panic!("{context}: open failed: {e:?}"));
        let got = contents(&log)
            .await
            .unwrap_or_else(|e| panic!("{context}: read failed: {e:?}"));
        assert!(
            got == expected,
            "{context}: {}",
            fixture::difference(&expected, &got)
        );
        let report = log.verify().expect("verify");
        assert!(report.is_clean(), "{context}: {:?}", report.problems);
        cases += 1;
    }
    println!(
        "index truncation/deletion: {cases} cases in {:?}",
        start.elapsed()
    );
}
