//! The skip rules: which post read from a channel is not new work for the
//! agent (deleted, seen before, its own, a bot's, a system message, an
//! ignored user's), and the per-rule counts and audit entries of a poll.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::users::CachedUser;
use crate::mattermost::wire::Post;
use crate::mattermost::REPLY_PROP;

/// Why a post was not handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    /// `delete_at > 0`.
    Deleted,
    /// Already handled: an edit, reaction or reply brought it back.
    AlreadyHandled,
    /// Created before `since`: an old post that was touched.
    BeforeCursor,
    /// Written by the agent itself.
    Own,
    /// Carries the agent's reply tag (even from another account).
    AgentReply,
    /// `props.from_bot` or a bot account.
    Bot,
    /// `props.from_webhook`.
    Webhook,
    /// Non-empty `type`: join/leave/header and other system messages.
    System,
    /// Author is in `ignored_users`.
    IgnoredUser,
    /// Written before the cut-over and answered in its thread by the old
    /// daemon (`cut_over.rs`).
    AnsweredBeforeCutOver,
}

impl Skip {
    /// The rule's name in the audit trail.
    pub(super) fn code(self) -> &'static str {
        match self {
            Skip::Deleted => "deleted",
            Skip::AlreadyHandled => "already_handled",
            Skip::BeforeCursor => "before_cursor",
            Skip::Own => "own",
            Skip::AgentReply => "agent_reply",
            Skip::Bot => "bot",
            Skip::Webhook => "webhook",
            Skip::System => "system",
            Skip::IgnoredUser => "ignored_user",
            Skip::AnsweredBeforeCutOver => "answered_before_cut_over",
        }
    }

    /// A rule that decides about a new post of someone else (the others
    /// only recognise posts already seen, or the agent's own).
    pub(super) fn is_decision(self) -> bool {
        matches!(
            self,
            Skip::Bot
                | Skip::Webhook
                | Skip::System
                | Skip::IgnoredUser
                | Skip::AnsweredBeforeCutOver
        )
    }
}

/// How many posts each rule skipped, for the cycle report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SkipCounts {
    /// See [`Skip::Deleted`].
    pub deleted: u32,
    /// See [`Skip::AlreadyHandled`].
    pub already_handled: u32,
    /// See [`Skip::BeforeCursor`].
    pub before_cursor: u32,
    /// See [`Skip::Own`] and [`Skip::AgentReply`].
    pub own: u32,
    /// See [`Skip::Bot`].
    pub bot: u32,
    /// See [`Skip::Webhook`].
    pub webhook: u32,
    /// See [`Skip::System`].
    pub system: u32,
    /// See [`Skip::IgnoredUser`].
    pub ignored_user: u32,
    /// See [`Skip::AnsweredBeforeCutOver`].
    pub cut_over: u32,
}

impl SkipCounts {
    pub(super) fn add(&mut self, s: Skip) {
        let c = match s {
            Skip::Deleted => &mut self.deleted,
            Skip::AlreadyHandled => &mut self.already_handled,
            Skip::BeforeCursor => &mut self.before_cursor,
            Skip::Own | Skip::AgentReply => &mut self.own,
            Skip::Bot => &mut self.bot,
            Skip::Webhook => &mut self.webhook,
            Skip::System => &mut self.system,
            Skip::IgnoredUser => &mut self.ignored_user,
            Skip::AnsweredBeforeCutOver => &mut self.cut_over,
        };
        *c += 1;
    }

    /// Total skipped.
    pub(crate) fn total(&self) -> u32 {
        self.deleted
            + self.already_handled
            + self.before_cursor
            + self.own
            + self.bot
            + self.webhook
            + self.system
            + self.ignored_user
            + self.cut_over
    }
}

/// The pure skip rules, in order. `user` is the author when known.
pub(crate) fn skip_reason(
    post: &Post,
    user: Option<&CachedUser>,
    since_ms: i64,
    own_user_id: &str,
    ignored_ids: &BTreeSet<String>,
    ignored_names: &[String],
    handled: &BTreeMap<String, i64>,
) -> Option<Skip> {
    if post.delete_at > 0 {
        return Some(Skip::Deleted);
    }
    if handled.contains_key(&post.id) {
        return Some(Skip::AlreadyHandled);
    }
    if post.create_at <= since_ms {
        return Some(Skip::BeforeCursor);
    }
    if !own_user_id.is_empty() && post.user_id == own_user_id {
        return Some(Skip::Own);
    }
    if post.props.contains_key(REPLY_PROP) {
        return Some(Skip::AgentReply);
    }
    if post.prop_flag("from_bot") {
        return Some(Skip::Bot);
    }
    let by_author = author_skip(&post.user_id, user, ignored_ids, ignored_names);
    if by_author == Some(Skip::Bot) {
        return by_author;
    }
    if post.prop_flag("from_webhook") {
        return Some(Skip::Webhook);
    }
    if !post.kind.is_empty() {
        return Some(Skip::System);
    }
    by_author
}

/// The skip rules that look at the author only ([`Skip::Bot`] by account,
/// then [`Skip::IgnoredUser`]), part of [`skip_reason`]. The poll applies
/// them alone, once the authors are looked up, to the posts that passed
/// every other rule: they are all that can change for such a post.
pub(crate) fn author_skip(
    user_id: &str,
    user: Option<&CachedUser>,
    ignored_ids: &BTreeSet<String>,
    ignored_names: &[String],
) -> Option<Skip> {
    if user.is_some_and(|u| u.is_bot) {
        return Some(Skip::Bot);
    }
    let by_name = user.is_some_and(|u| {
        ignored_names
            .iter()
            .any(|n| n.trim_start_matches('@').eq_ignore_ascii_case(&u.username))
    });
    if ignored_ids.contains(user_id) || ignored_names.iter().any(|n| n == user_id) || by_name {
        return Some(Skip::IgnoredUser);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::testkit::post;
    use super::*;

    #[test]
    fn skip_rules_table() {
        let ignored_ids: BTreeSet<String> = ["ign".to_string()].into();
        let names = vec!["john".to_string(), "rawid".to_string()];
        let mut handled = BTreeMap::new();
        handled.insert("h".to_string(), 150);
        let john = CachedUser {
            id: "j".into(),
            username: "John".into(),
            ..Default::default()
        };
        let botu = CachedUser {
            id: "b".into(),
            username: "ci".into(),
            is_bot: true,
            ..Default::default()
        };
        let with = |f: fn(&mut Post)| {
            let mut p = post("p", "u", 200);
            f(&mut p);
            p
        };
        let cases: Vec<(Post, Option<&CachedUser>, Option<Skip>)> = vec![
            (post("p", "u", 200), None, None),
            (with(|p| p.delete_at = 5), None, Some(Skip::Deleted)),
            (post("h", "u", 150), None, Some(Skip::AlreadyHandled)),
            (post("old", "u", 100), None, Some(Skip::BeforeCursor)),
            (post("p", "me", 200), None, Some(Skip::Own)),
            (
                with(|p| {
                    p.props.insert(REPLY_PROP.into(), "x".into());
                }),
                None,
                Some(Skip::AgentReply),
            ),
            (
                with(|p| {
                    p.props.insert("from_bot".into(), "true".into());
                }),
                None,
                Some(Skip::Bot),
            ),
            (post("p", "b", 200), Some(&botu), Some(Skip::Bot)),
            (
                with(|p| {
                    p.props.insert("from_webhook".into(), "true".into());
                }),
                None,
                Some(Skip::Webhook),
            ),
            (
                with(|p| p.kind = "system_join_channel".into()),
                None,
                Some(Skip::System),
            ),
            (post("p", "ign", 200), None, Some(Skip::IgnoredUser)),
            (post("p", "rawid", 200), None, Some(Skip::IgnoredUser)),
            (post("p", "j", 200), Some(&john), Some(Skip::IgnoredUser)),
        ];
        for (i, (p, u, want)) in cases.into_iter().enumerate() {
            let got = skip_reason(&p, u, 100, "me", &ignored_ids, &names, &handled);
            assert_eq!(got, want, "case {i}: {p:?}");
        }
    }
}
