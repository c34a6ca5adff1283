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
//! A cycle uses it in this order: [`Client::from_config`], [`poll`], then
//! per post (oldest first) the later stages, [`reply_in_thread`] and
//! [`mark_handled`] once the post is fully done; finally [`next_cursor`]
//! and [`prune_handled`] before the state is saved.

pub mod client;
pub mod config;
pub mod poll;
pub mod replies;
pub mod status;
pub mod wire;

pub use client::{Client, Credentials, MmError, MmErrorKind, TokenCache};
pub use config::MattermostConfig;
pub use poll::{
    mark_handled, next_cursor, next_quiet, poll, poll_since, prune_handled, ChannelMark, Listed,
    MmState, NewPost, PollOutcome, SkipCounts,
};
pub use replies::{reply_in_thread, ReplyOutcome, REPLY_PROP};
pub use status::{status, MmStatus, TeamStatus};
pub use wire::{Channel, Post, Reaction, Team, User};
