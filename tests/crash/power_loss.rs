//! Power loss after every k-th mutating I/O operation, with every kind of damage to the
//! unsynced data.

use annals::engine::sim::{Damage, Fault, SimFs};

use crate::workload::{self, append_more, check, open, run};

const COMMITS: usize = 40;

#[tokio::test]
async fn acknowledged_commits_survive_power_loss_at_every_io_step() {
    let total = workload::count_ops(COMMITS).await;
    let mut images = 0;
    for k in 1..=total + 1 {
        let fs = SimFs::new();
        fs.inject(Fault::FailFrom(k));
        let Ok(log) = open(&fs) else {
            // The crash came while creating the store: nothing was acknowledged.
            continue;
        };
        let attempts = run(&log, COMMITS).await;
        let damages = [
            Damage::DropUnsynced,
            Damage::KeepUnsynced,
            Damage::RandomSubset { seed: k },
            Damage::TornLast {
                sector: 512,
                seed: k,
            },
            Damage::TornLast {
                sector: 4096,
                seed: k * 31,
            },
            Damage::TornSectors {
                sector: 512,
                seed: k * 17,
            },
        ];
        let crashed: Vec<SimFs> = damages.iter().map(|d| fs.crash_image(*d)).collect();
        drop(log);
        for (image, damage) in crashed.into_iter().zip(damages) {
            let context = format!("crash after op {k}/{total}, {damage:?}");
            let log = open(&image).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
            check(&log, &attempts, &context).await;
            append_more(&log, &context).await;
            drop(log);
            // And once more: the repaired store reopens to the same state.
            let log =
                open(&image).unwrap_or_else(|e| panic!("{context}: second reopen failed: {e}"));
            append_more(&log, &context).await;
            images += 1;
        }
    }
    println!("power loss: {total} I/O steps, {images} crash images checked");
    assert!(
        images as u64 >= total * 4,
        "most crash points produced images"
    );
}
