//! The cut-over from the old daemon: a state file holding a cursor but
//! nothing this agent writes (`{"last_check_ms": N}`, the runbook's shape)
//! was written by the old daemon, which handled every post at or before
//! `N` itself and kept no record of which.
//!
//! So while the overlap could reach back past that cursor, the poll starts
//! at the cursor itself ([`CutOver::floor`]): the old daemon's posts are
//! never read as new. And a post after the cursor that the old daemon
//! answered before it was stopped (its reply in the thread, by the same
//! account and without this agent's tag) is not answered twice
//! ([`Answered`]). Both hold until the poll's `since` has passed the moment
//! of the cut-over; then the record is dropped ([`retire`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::MmState;
use crate::mattermost::wire::Post;
use crate::mattermost::REPLY_PROP;

/// The imported cursor and when the first poll after it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CutOver {
    /// The old daemon's `last_check_ms`.
    pub(crate) cursor_ms: i64,
    /// The server time of the first poll after the import (epoch ms): the
    /// old daemon may have answered posts up to then. `None` until that
    /// poll has listed the channels.
    pub(crate) at_ms: Option<i64>,
}

impl CutOver {
    /// The poll's `since`: never before the imported cursor.
    pub(crate) fn floor(cut: Option<&CutOver>, since_ms: i64) -> i64 {
        cut.map_or(since_ms, |c| since_ms.max(c.cursor_ms))
    }
}

/// Records the cut-over when `state` was never polled by this agent (its
/// identity is only ever empty in a state another program wrote, or one
/// saved without credentials, whose cursor means the same) but a cursor
/// was imported.
pub(crate) fn note(state: &mut MmState, cursor: Option<i64>) {
    if let (true, None, Some(c)) = (state.identity.is_empty(), state.cut_over, cursor) {
        tracing::info!(
            cursor_ms = c,
            "State without this agent's records: posts at or before its cursor were handled by the previous daemon."
        );
        state.cut_over = Some(CutOver {
            cursor_ms: c,
            at_ms: None,
        });
    }
}

/// The moment of the cut-over, on the server's clock: the first poll's.
pub(super) fn listed(state: &mut MmState, server_ms: i64) {
    if let Some(c) = state.cut_over.as_mut() {
        c.at_ms.get_or_insert(server_ms);
    }
}

/// Drops the record once the next poll's `since` is past the cut-over.
pub(crate) fn retire(state: &mut MmState, next_since_ms: i64) {
    if state
        .cut_over
        .is_some_and(|c| c.at_ms.is_some_and(|at| next_since_ms > at))
    {
        state.cut_over = None;
    }
}

/// Threads the agent's account answered without this agent's tag (the
/// old daemon's replies), seen in one channel's reads: thread root → the
/// newest such reply.
#[derive(Debug, Default)]
pub(super) struct Answered(HashMap<String, i64>);

impl Answered {
    /// Notes `p` when it is an untagged reply by the agent's account.
    pub(super) fn note(&mut self, p: &Post, own_id: &str) {
        if p.user_id == own_id && !p.root_id.is_empty() && !p.props.contains_key(REPLY_PROP) {
            let at = self.0.entry(p.root_id.clone()).or_default();
            *at = (*at).max(p.create_at);
        }
    }

    /// Whether `p`, created before the cut-over, was answered in its thread
    /// after it was written.
    pub(super) fn covers(&self, p: &Post, cut: Option<&CutOver>) -> bool {
        if cut.is_none_or(|c| c.at_ms.is_none_or(|at| p.create_at > at)) {
            return false;
        }
        let root = if p.root_id.is_empty() {
            &p.id
        } else {
            &p.root_id
        };
        self.0.get(root).is_some_and(|at| *at > p.create_at)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::post;
    use super::*;

    #[test]
    fn the_floor_is_the_imported_cursor_and_nothing_else_moves_it() {
        let cut = CutOver {
            cursor_ms: 1_000,
            at_ms: Some(5_000),
        };
        assert_eq!(CutOver::floor(Some(&cut), 880), 1_000);
        assert_eq!(CutOver::floor(Some(&cut), 1_200), 1_200);
        assert_eq!(CutOver::floor(None, 880), 880);
    }

    #[test]
    fn only_a_state_this_agent_never_polled_is_an_import() {
        let mut st = MmState::default();
        note(&mut st, None);
        assert_eq!(st.cut_over, None, "a first run imports nothing");
        note(&mut st, Some(100));
        retire(&mut st, 50);
        assert!(st.cut_over.is_some(), "kept until a poll has listed");
        listed(&mut st, 9);
        listed(&mut st, 20);
        assert_eq!(
            st.cut_over,
            Some(CutOver {
                cursor_ms: 100,
                at_ms: Some(9)
            })
        );
        note(&mut st, Some(200));
        assert_eq!(st.cut_over.unwrap().cursor_ms, 100, "noted once");
        let mut ours = MmState {
            identity: "http://mm|token".into(),
            ..Default::default()
        };
        note(&mut ours, Some(100));
        assert_eq!(ours.cut_over, None);
        retire(&mut st, 9);
        assert!(st.cut_over.is_some(), "since not past the cut-over yet");
        retire(&mut st, 10);
        assert_eq!(st.cut_over, None);
    }

    #[test]
    fn a_thread_the_old_daemon_answered_after_the_post_is_covered() {
        let cut = CutOver {
            cursor_ms: 100,
            at_ms: Some(1_000),
        };
        let root = post("r", "alice", 200);
        let mut reply = post("x", "bot", 300);
        reply.root_id = "r".into();
        let mut later = post("l", "alice", 400);
        later.root_id = "r".into();
        let mut ours = post("t", "bot", 500);
        ours.root_id = "l".into();
        ours.props.insert(REPLY_PROP.into(), "l".into());
        let mut seen = Answered::default();
        for p in [&root, &reply, &later, &ours] {
            seen.note(p, "bot");
        }
        assert!(seen.covers(&root, Some(&cut)), "answered at 300");
        assert!(!seen.covers(&later, Some(&cut)), "written after the reply");
        assert!(!seen.covers(&root, None), "no cut-over: no guess");
        let after = CutOver {
            cursor_ms: 100,
            at_ms: Some(150),
        };
        assert!(
            !seen.covers(&root, Some(&after)),
            "written after the cut-over"
        );
    }
}
