//! Mattermost: the agent's eyes and voice.
//!
//! * [`config`]: the `[mattermost]` section.
//! * [`client`]: API v4 over HTTP (auth, token cache, 429/401 handling).
//! * [`wire`]: the API's objects (posts, channels, users, reactions).
//! * [`poll`]: the polling stage: new posts exactly once, skip rules, the
//!   cursor and quiet channels (`poll/cursor.rs` states the cursor
//!   invariant: read it before touching the cursor).
//! * [`replies`]: idempotent thread replies.
//! * [`status`]: the data behind `ops-agent mm status`.
//!
//! A cycle uses it in this order: [`Client::from_config`], [`start`], then
//! batch by batch from the [`Reader`] the later stages, [`reply_in_thread`]
//! and [`mark_handled`] once a post is fully done; finally
//! [`Reader::finish`], [`next_cursor`] and [`prune_handled`] before the
//! state is saved.

pub mod client;
mod config;
mod error;
pub mod poll;
pub mod replies;
pub mod status;
pub(crate) mod wire;

pub use client::{Client, Credentials, MmErrorKind};
pub(crate) use client::{MmError, TokenCache};
pub use config::MattermostConfig;
pub use poll::{
    mark_handled, next_cursor, prune_handled, start, MmState, NewPost, PollOutcome, Reader,
};
pub(crate) use poll::{next_quiet, note_cut_over, poll_since, retire_cut_over, CutOver};
pub(crate) use replies::REPLY_PROP;
pub use replies::{reply_in_thread, ReplyOutcome};
pub(crate) use status::MmStatus;
pub use status::{status, TeamStatus};
pub use wire::User;
