//! The global log as subscribers see it, on the log adapter (`annals::open` defaults):
//!
//! - **catch-up**: a subscription reads a store of N events (~250-byte events over 1,000
//!   aggregates, bulk-loaded) from position 1 to the end; events/s, median of 3 runs;
//! - **live delivery**: a subscriber waits on the log while one writer pushes single events
//!   (each fdatasync'ed before it is acknowledged); the latency from the push's return to the
//!   subscriber holding the event, and from the push call (so including its fdatasync), p50 and
//!   p99 over 2,000 pushes. The subscriber is woken when the commit is published, which comes
//!   just before the push's acknowledgement, so it often holds the event first.
//!
//! Run with `cargo bench --bench subscriptions`; `ANNALS_BENCH_CATCH_UP_EVENTS` sets N (default
//! 1,000,000). Without `--bench` (as `cargo test --all-targets` builds and runs benches) it makes
//! one quick pass at a tiny size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::Timestamp;
use annals::storage::{AppendEvent, EncodedEvent, StorageAdapter};
use annals::subscription::{Filter, Subscription};

fn event(aggregate: u64, version: u64) -> AppendEvent {
    AppendEvent {
        event_store_id: "BENCH".into(),
        event: EncodedEvent {
            aggregate_id: format!("account-{aggregate:06}"),
            version,
            timestamp: Timestamp::from_unix_millis(1_700_000_000_000),
            event_type: "ACCOUNT_CREDITED".into(),
            schema_version: 1,
            payload: vec![0xA5; 207],
            metadata: vec![0x80; 40],
        },
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let events: u64 = if benching {
        std::env::var("ANNALS_BENCH_CATCH_UP_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000)
    } else {
        2_000
    };
    let pushes = if benching { 2_000 } else { 50 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let adapter: Arc<dyn StorageAdapter> = annals::open(dir.path()).expect("open the store");
        let aggregates = 1_000.min(events);
        let mut next_version = vec![1u64; aggregates as usize];
        let mut loaded = 0;
        while loaded < events {
            let commit: Vec<AppendEvent> = (0..1_000.min(events - loaded))
                .map(|i| {
                    let a = (loaded + i) % aggregates;
                    let v = next_version[a as usize];
                    next_version[a as usize] += 1;
                    event(a, v)
                })
                .collect();
            loaded += commit.len() as u64;
            adapter.push_event_group(commit).await.expect("load");
        }

        let mut rates = Vec::new();
        for _ in 0..3 {
            let start = Instant::now();
            let mut subscription = Subscription::new(Arc::clone(&adapter), 1, Filter::all());
            let mut read = 0u64;
            while subscription.try_next().await.expect("read").is_some() {
                read += 1;
            }
            assert_eq!(read, events);
            rates.push(events as f64 / start.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);

        let mut subscription = Subscription::new(Arc::clone(&adapter), events + 1, Filter::all());
        let (sent, mut received) = tokio::sync::mpsc::unbounded_channel();
        let follower = tokio::spawn(async move {
            for _ in 0..pushes {
                let event = subscription.next().await.expect("next");
                sent.send((event.position, Instant::now())).expect("report");
            }
        });
        let (mut latencies, mut from_call) = (Vec::new(), Vec::new());
        for i in 0..pushes {
            let called = Instant::now();
            let pushed = adapter
                .push_event(event(aggregates + 1, i + 1))
                .await
                .expect("push");
            let acknowledged = Instant::now();
            let (position, seen) = received.recv().await.expect("delivered");
            assert_eq!(position, pushed);
            latencies.push(seen.saturating_duration_since(acknowledged));
            from_call.push(seen.saturating_duration_since(called));
        }
        follower.await.expect("follower");
        latencies.sort();
        from_call.sort();
        println!("subscriptions on the log adapter ({events} events, {pushes} live pushes)");
        println!("| measurement | figure |");
        println!("|---|--:|");
        println!(
            "| catch-up from disk, median of 3 | {:.0} events/s |",
            rates[1]
        );
        for (p, label) in [(0.5, "p50"), (0.99, "p99")] {
            println!(
                "| live delivery from the push call (includes its fdatasync), {label} | {:.1} µs |",
                percentile(&from_call, p).as_secs_f64() * 1e6
            );
        }
        println!(
            "| live delivery after the push returns, p50 | {:.1} µs |",
            percentile(&latencies, 0.5).as_secs_f64() * 1e6
        );
        println!(
            "| live delivery after the push returns, p99 | {:.1} µs |",
            percentile(&latencies, 0.99).as_secs_f64() * 1e6
        );
    });
}
