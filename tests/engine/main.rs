//! The log engine as users see it through the log adapter: durability across reopen, version
//! conflicts under concurrency, segment rollover and sizes, index checkpoints, locking and the
//! log's counters.

mod basics;
mod counters;
mod durability_modes;
mod segment_sizes;
