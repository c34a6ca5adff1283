//! How far each post got, kept in the state file until the post is fully
//! handled, so a cycle cut by the deadline or killed halfway repeats
//! nothing: the label is kept (no second opinion), the task is found by its
//! source post id, and the reply is found in the thread by its prop.
//!
//! The post's link is made here as well: the task filed on first sight
//! (`act`) and the one filed after a correction (`relabel`) must point at
//! the post the same way, and this is the file both already read.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::classify::Label;

/// Progress of posts not seen for this long is dropped (their team keeps
/// failing); a later retry still finds the task and the reply.
const FORGET_AFTER_MS: i64 = 7 * 24 * 3600 * 1000;

/// How far one post got.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PostProgress {
    /// The label, once decided (never re-asked).
    pub(crate) label: Option<Label>,
    /// The task made for it (TASK and INCIDENT).
    pub(crate) task_id: Option<String>,
    /// The task's link (its Planka card) when there is one.
    pub(crate) task_url: Option<String>,
    /// The reply post, once posted.
    pub(crate) reply_post_id: Option<String>,
    /// The post's create_at, so stale entries can be pruned.
    pub(crate) create_at: i64,
}

/// Chat progress in the state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ChatState {
    /// Post id → progress, for posts handed over but not yet fully handled.
    pub(crate) progress: BTreeMap<String, PostProgress>,
    /// Post id → what the agent did with it, for the watched posts the
    /// watch file (`chat::watch`) does not hold right: handled but not yet
    /// written there, a correction pending, or corrected. Every other post
    /// whose label the team may still correct is only in the file.
    pub(crate) watch: BTreeMap<String, Watched>,
    /// The `create_at` of the oldest post the watch file may hold (epoch
    /// ms): when it is well out of the window, the file is compacted.
    pub(crate) watch_file_oldest_ms: Option<i64>,
    /// This process wrote to the watch file and has not synced it yet.
    #[serde(skip)]
    pub(crate) watch_unsynced: bool,
    /// When reactions were last read for every watched post (epoch ms).
    pub(crate) corrections_swept_ms: Option<i64>,
}

/// A handled post whose label can still be corrected by a reaction. Team,
/// channel and author are shared with the cycle's posts rather than
/// copied: a busy cycle holds thousands of these at once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Watched {
    /// The post's create_at (epoch ms): it leaves the watch after the window.
    pub(crate) create_at: i64,
    /// Its team.
    pub(crate) team: Arc<str>,
    /// Its channel.
    pub(crate) channel_id: Arc<str>,
    /// The channel's URL name (for a task filed later).
    pub(crate) channel_name: Arc<str>,
    /// Its author's username (for a task filed later).
    pub(crate) author: Arc<str>,
    /// The label it has now (the agent's, or the last correction's).
    pub(crate) label: Option<Label>,
    /// The agent's reply in its thread, where the team reacts.
    pub(crate) reply_id: Option<String>,
    /// The task made for it, if any.
    pub(crate) task_id: Option<String>,
    /// A correction seen but not fully carried out yet.
    /// Boxed: one post in thousands has one, and the watch holds every
    /// post of its window.
    pub(crate) pending: Option<Box<PendingCorrection>>,
    /// The watch file has a line for this post (the entry came from it):
    /// this copy overrides the line and is never written there again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) in_file: bool,
}

/// A correction being carried out, step by step (each done once).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PendingCorrection {
    /// The right label.
    pub(crate) to: Option<Label>,
    /// Who said so (username).
    pub(crate) by: String,
    /// When they reacted (epoch ms, server clock).
    pub(crate) at_ms: i64,
    /// Steps done so far, by name.
    pub(crate) done: Vec<String>,
}

impl Watched {
    /// The post where the team reacts to correct the label: the agent's
    /// reply, or the post itself when the agent did not reply (ROUTINE).
    pub(crate) fn target<'a>(&'a self, post_id: &'a str) -> &'a str {
        self.reply_id.as_deref().unwrap_or(post_id)
    }
}

/// The link to a post, for task descriptions: on the server's URL as
/// [`crate::scrub::url`] shows it (a task is no place for a password).
pub(crate) fn permalink(base_url: &str, team: &str, post_id: &str) -> String {
    let base = crate::scrub::url(base_url.trim());
    format!("{}/{team}/pl/{post_id}", base.trim_end_matches('/'))
}

impl ChatState {
    /// Drops the progress of posts created more than [`FORGET_AFTER_MS`]
    /// before `now_ms`.
    pub(crate) fn forget_stale(&mut self, now_ms: i64) {
        let cutoff = now_ms - FORGET_AFTER_MS;
        self.progress.retain(|_, p| p.create_at > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_progress_is_forgotten_after_a_week() {
        let now = 100 * FORGET_AFTER_MS;
        let mut s = ChatState::default();
        for (id, age) in [
            ("fresh", 0),
            ("six-days", 6 * 24 * 3600 * 1000),
            ("exactly-a-week", FORGET_AFTER_MS),
            ("older", FORGET_AFTER_MS + 1),
        ] {
            s.progress.insert(
                id.into(),
                PostProgress {
                    create_at: now - age,
                    ..Default::default()
                },
            );
        }
        s.forget_stale(now);
        let kept: Vec<&str> = s.progress.keys().map(String::as_str).collect();
        assert_eq!(kept, ["fresh", "six-days"]);
    }
}
