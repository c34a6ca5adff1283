//! The cursor: where each poll starts, where the next one may start, and
//! which handled post ids must be remembered until then.
//!
//! The cycle owns `last_check_ms` and polls from `since = last_check_ms -
//! overlap` (first run: now - lookback). It holds that **every post with
//! `create_at <= last_check_ms` was handled (or skipped) before**, and that
//! **every handled post id with `create_at > since` is in
//! [`MmState::handled`]**. Hence a post is handed over iff `create_at >
//! since`, it passes the skip rules, and its id is not in `handled`, so no
//! post is handed over twice and none is lost. [`next_cursor`] keeps the
//! invariant: it advances only to the server time at which a *complete* poll
//! started, and never past a post that was handed over but not marked with
//! [`mark_handled`] (it stays at that post's `create_at - 1`). A poll that was
//! not complete (a team failed, 429, deadline) does not move the cursor.
//! [`prune_handled`] forgets ids only once they are older than both 24 h and
//! the next `since`.

use super::{MmState, PollOutcome};

/// Handled ids are kept at least this long.
const HANDLED_RETENTION_MS: i64 = 24 * 3600 * 1000;

/// Records that a post went through every later stage; from now on it is
/// never handed over again.
pub fn mark_handled(state: &mut MmState, post_id: &str, create_at: i64) {
    state.handled.insert(post_id.to_string(), create_at);
}

/// The `since` of this cycle's poll: the cursor minus the overlap window
/// (a post may become visible after a later one), or, on a first run (no
/// cursor), `first_run_lookback_ms` before now.
pub(crate) fn poll_since(
    cursor: Option<i64>,
    overlap_ms: i64,
    now_ms: i64,
    first_run_lookback_ms: i64,
) -> i64 {
    match cursor {
        Some(c) => c - overlap_ms,
        None => now_ms - first_run_lookback_ms,
    }
}

/// The new `last_check_ms` after a cycle (see the module doc for the
/// invariant). `current` is the stored `last_check_ms` (None on a first
/// run), `since_ms` the cursor this poll used. Posts of `outcome` that are
/// not in `state.handled` are pending: the cursor stays before the oldest.
pub fn next_cursor(
    current: Option<i64>,
    since_ms: i64,
    outcome: &PollOutcome,
    state: &MmState,
) -> i64 {
    let unchanged = current.unwrap_or(since_ms);
    let base = if outcome.complete {
        outcome.watermark_ms.unwrap_or(unchanged)
    } else {
        unchanged
    };
    let oldest_pending = outcome
        .posts
        .iter()
        .filter(|p| !state.handled.contains_key(&p.id))
        .map(|p| p.create_at)
        .min();
    match oldest_pending {
        Some(t) => base.min(t - 1),
        None => base,
    }
}

/// Forgets handled ids older than both 24 h and the next poll's `since`
/// (`cursor_ms - overlap_ms`), which can no longer come back as new.
pub fn prune_handled(state: &mut MmState, cursor_ms: i64, overlap_ms: i64, now_ms: i64) {
    let keep_from = (now_ms - HANDLED_RETENTION_MS).min(cursor_ms - overlap_ms);
    state.handled.retain(|_, created| *created >= keep_from);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::skip::{skip_reason, Skip};
    use super::super::testkit::{new_post, post};
    use super::*;

    #[test]
    fn cursor_moves_to_the_watermark_only_when_complete_and_nothing_pending() {
        let mut st = MmState::default();
        let mut o = PollOutcome {
            posts: vec![new_post("a", 1000), new_post("b", 2000)],
            watermark_ms: Some(5000),
            complete: true,
            ..Default::default()
        };
        // Nothing handled yet: stay before the oldest pending post.
        assert_eq!(next_cursor(Some(500), 380, &o, &st), 999);
        mark_handled(&mut st, "a", 1000);
        assert_eq!(next_cursor(Some(500), 380, &o, &st), 1999);
        mark_handled(&mut st, "b", 2000);
        assert_eq!(next_cursor(Some(500), 380, &o, &st), 5000);
        // Incomplete poll: the cursor does not move (first run: since).
        o.complete = false;
        assert_eq!(next_cursor(Some(500), 380, &o, &st), 500);
        assert_eq!(next_cursor(None, 380, &o, &st), 380);
        // Pending post even before the stored cursor (seen thanks to overlap).
        o.posts.push(new_post("c", 450));
        assert_eq!(next_cursor(Some(500), 380, &o, &st), 449);
        // No server time known: keep the cursor.
        let o = PollOutcome {
            complete: true,
            ..Default::default()
        };
        assert_eq!(next_cursor(Some(500), 380, &o, &st), 500);
    }

    #[test]
    fn a_pending_post_is_handed_over_again_and_a_handled_one_never() {
        // Simulates two cycles with the pure pieces only.
        let mut st = MmState::default();
        let overlap = 100;
        let p1 = post("p1", "u", 1_000);
        let p2 = post("p2", "u", 1_050);
        let cycle1 = PollOutcome {
            posts: vec![new_post("p1", 1_000), new_post("p2", 1_050)],
            watermark_ms: Some(1_100),
            complete: true,
            ..Default::default()
        };
        mark_handled(&mut st, "p1", 1_000); // p2's task creation failed
        let cursor = next_cursor(None, 900, &cycle1, &st);
        assert_eq!(cursor, 1_049);
        let since = cursor - overlap;
        let none = BTreeSet::new();
        assert_eq!(
            skip_reason(&p1, None, since, "me", &none, &[], &st.handled),
            Some(Skip::AlreadyHandled)
        );
        assert_eq!(
            skip_reason(&p2, None, since, "me", &none, &[], &st.handled),
            None
        );
    }

    #[test]
    fn pruning_keeps_a_day_and_everything_after_the_next_since() {
        let day = HANDLED_RETENTION_MS;
        let now = 10 * day;
        let mut st = MmState::default();
        mark_handled(&mut st, "old", now - 2 * day);
        mark_handled(&mut st, "recent", now - day / 2);
        mark_handled(&mut st, "behind_cursor", now - 3 * day);
        // A pending post holds the cursor 4 days back: nothing after it may go.
        prune_handled(&mut st, now - 3 * day - 10, 120_000, now);
        assert_eq!(st.handled.len(), 3);
        prune_handled(&mut st, now, 120_000, now);
        assert_eq!(st.handled.keys().collect::<Vec<_>>(), ["recent"]);
    }

    #[test]
    fn poll_since_table() {
        let (overlap, now, lookback) = (120_000, 10_000_000, 1_800_000);
        for (cursor, want) in [
            (Some(9_000_000), 8_880_000),
            (Some(now), now - overlap),
            (None, now - lookback),
        ] {
            assert_eq!(
                poll_since(cursor, overlap, now, lookback),
                want,
                "{cursor:?}"
            );
        }
    }
}
