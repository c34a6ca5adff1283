//! How far each post got, kept in the state file until the post is fully
//! handled, so a cycle cut by the deadline or killed halfway repeats
//! nothing: the label is kept (no second opinion), the task is found by its
//! source post id, and the reply is found in the thread by its prop.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::classify::Label;

/// Progress of posts not seen for this long is dropped (their team keeps
/// failing); a later retry still finds the task and the reply.
pub const FORGET_AFTER_MS: i64 = 7 * 24 * 3600 * 1000;

/// How far one post got.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PostProgress {
    /// The label, once decided (never re-asked).
    pub label: Option<Label>,
    /// The task made for it (TASK and INCIDENT).
    pub task_id: Option<String>,
    /// The task's link (its Planka card) when there is one.
    pub task_url: Option<String>,
    /// The reply post, once posted.
    pub reply_post_id: Option<String>,
    /// The post's create_at, so stale entries can be pruned.
    pub create_at: i64,
}

/// Chat progress in the state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChatState {
    /// Post id → progress, for posts handed over but not yet fully handled.
    pub progress: BTreeMap<String, PostProgress>,
}

impl ChatState {
    /// Drops the progress of posts created more than [`FORGET_AFTER_MS`]
    /// before `now_ms`.
    pub fn forget_stale(&mut self, now_ms: i64) {
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
