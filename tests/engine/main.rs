//! The log engine as users see it through the log adapter: durability across reopen, version
//! conflicts under concurrency, segment rollover and sizes, index checkpoints, locking, the
//! log's counters, and live readers beside a writer.

mod basics;
mod compaction;
mod counters;
mod durability_modes;
mod live_reader;
mod segment_sizes;
