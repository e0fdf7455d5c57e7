//! Floor 4, the runtime: what runs on the events once they are stored.
//!
//! At its base, a [`subscription`] follows the global log in order, a [`consumer`] remembers
//! how far it got in the [`state`] store, and [`channel`]s carry messages (the [`dam`] pours
//! history into them). On that base: [`view`]s project events into tables applied exactly
//! once, [`action`]s react to events, HTTP requests and [`queue`] messages (and may call
//! commands, never the reverse), and [`entity`] actors run one live instance per aggregate id.
//! The `admin` console (feature `console`) shows all of it to operators while it runs.

pub mod action;
#[cfg(feature = "console")]
pub mod admin;
pub mod channel;
pub mod consumer;
pub mod dam;
pub mod entity;
pub mod lease;
pub mod queue;
pub mod state;
pub mod subscription;
pub mod view;
