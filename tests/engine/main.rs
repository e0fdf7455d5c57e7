//! The log engine as users see it through the log adapter: durability across reopen, version
//! conflicts under concurrency, segment rollover, index checkpoints and locking.

mod basics;
mod durability_modes;
