//! The cursor: where each poll starts, where the next one may start, and
//! which handled post ids must be remembered until then.
//!
//! The cycle owns `last_check_ms` and polls from `since = last_check_ms -
//! overlap` (first run: now - lookback; right after the cut-over from the
//! old daemon, its cursor itself, see `cut_over.rs`). It holds that
//! **every post with `create_at <= last_check_ms` was handled (or skipped)
//! before**, except what a channel's backlog still holds (`backlog.rs`,
//! which keeps its own position), and that **every handled post id with
//! `create_at > since` is in [`MmState::handled`]**. Hence a post is
//! handed over iff `create_at > since`, it passes the skip rules, and its
//! id is not in `handled`, so no post is handed over twice and none is
//! lost. [`next_cursor`] keeps the invariant: it advances only to the
//! server time at which a *complete* poll started, and never past a post
//! of a channel's usual read that was handed over but not marked with
//! [`mark_handled`] (it stays at that post's `create_at - 1`). A poll that
//! was not complete (a team failed, 429, deadline) does not move the
//! cursor. [`prune_handled`] forgets the ids the next `since` no longer
//! reaches: the set holds what the overlap reads again, not a day of posts.
//!
//! A channel can be ahead of the cursor: one read to the newest post its
//! listing showed, with no post of it left pending, holds every post created
//! at or before the poll's watermark handled, whatever became of the other
//! channels. [`channel_read`] records that as the channel's own `since`
//! ([`MmState::channel_since`]: the watermark less the overlap, where its
//! next read starts) and forgets at once the ids of the channel at or
//! before it, so a cycle's set holds about one channel's posts rather than
//! every post of the cycle. A channel's own `since` goes once the cursor's
//! reaches it. Until the end of the cycle both live in memory only: after a
//! crash the journal brings the handled ids back and the channel is read
//! from the cursor again, deduplicated by them.

use super::{MmState, PollOutcome};

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
/// run), `since_ms` the cursor this poll used.
pub fn next_cursor(current: Option<i64>, since_ms: i64, outcome: &PollOutcome) -> i64 {
    let unchanged = current.unwrap_or(since_ms);
    let base = if outcome.complete {
        outcome.watermark_ms.unwrap_or(unchanged)
    } else {
        unchanged
    };
    match outcome.oldest_pending {
        Some(t) => base.min(t - 1),
        None => base,
    }
}

/// Forgets handled ids created at or before the next poll's `since`
/// (`cursor_ms - overlap_ms`): no later poll hands them over again; nor
/// does a channel need its own `since` any more once the cursor's reaches it.
pub fn prune_handled(state: &mut MmState, cursor_ms: i64, overlap_ms: i64) {
    let keep_from = cursor_ms - overlap_ms;
    state.handled.retain(|_, created| *created > keep_from);
    state.channel_since.retain(|_, since| *since > keep_from);
}

/// A channel read to its newest post with none of its posts pending (see
/// the module doc): its next read starts at `since_ms` (never earlier than
/// one recorded before), and the ids `seen` this cycle in it (handed over,
/// or skipped as handled) created at or before that are forgotten.
pub(super) fn channel_read(
    state: &mut MmState,
    channel_id: &str,
    since_ms: i64,
    seen: &[(String, i64)],
) {
    let own = state
        .channel_since
        .entry(channel_id.to_string())
        .or_insert(since_ms);
    *own = (*own).max(since_ms);
    let own = *own;
    for (id, created) in seen {
        if *created <= own {
            state.handled.remove(id);
        }
    }
}

/// Where a channel's usual read starts: the poll's `since`, or the
/// channel's own when it is later.
pub(super) fn channel_lower(state: &MmState, channel_id: &str, since_ms: i64) -> i64 {
    state
        .channel_since
        .get(channel_id)
        .map_or(since_ms, |own| (*own).max(since_ms))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::skip::{skip_reason, Skip};
    use super::super::testkit::post;
    use super::*;

    #[test]
    fn cursor_moves_to_the_watermark_only_when_complete_and_nothing_pending() {
        let mut o = PollOutcome {
            watermark_ms: Some(5000),
            complete: true,
            oldest_pending: Some(1000),
            ..Default::default()
        };
        // A post pending: stay before it.
        assert_eq!(next_cursor(Some(500), 380, &o), 999);
        o.oldest_pending = None;
        assert_eq!(next_cursor(Some(500), 380, &o), 5000);
        // Incomplete poll: the cursor does not move (first run: since).
        o.complete = false;
        assert_eq!(next_cursor(Some(500), 380, &o), 500);
        assert_eq!(next_cursor(None, 380, &o), 380);
        // Pending post even before the stored cursor (seen thanks to overlap).
        o.oldest_pending = Some(450);
        assert_eq!(next_cursor(Some(500), 380, &o), 449);
        // No server time known: keep the cursor.
        let o = PollOutcome {
            complete: true,
            ..Default::default()
        };
        assert_eq!(next_cursor(Some(500), 380, &o), 500);
    }

    #[test]
    fn a_pending_post_is_handed_over_again_and_a_handled_one_never() {
        // Simulates two cycles with the pure pieces only.
        let mut st = MmState::default();
        let overlap = 100;
        let p1 = post("p1", "u", 1_000);
        let p2 = post("p2", "u", 1_050);
        mark_handled(&mut st, "p1", 1_000); // p2's task creation failed
        let cycle1 = PollOutcome {
            watermark_ms: Some(1_100),
            complete: true,
            oldest_pending: Some(1_050),
            ..Default::default()
        };
        let cursor = next_cursor(None, 900, &cycle1);
        assert_eq!(cursor, 1_049);
        prune_handled(&mut st, cursor, overlap);
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
    fn pruning_keeps_what_the_next_since_reaches_and_nothing_older() {
        let mut st = MmState::default();
        mark_handled(&mut st, "old", 1_000);
        mark_handled(&mut st, "at_since", 4_880);
        mark_handled(&mut st, "in_overlap", 4_900);
        mark_handled(&mut st, "new", 5_000);
        // A pending post holds the cursor back: everything after it stays.
        prune_handled(&mut st, 1_050, 120);
        assert_eq!(st.handled.len(), 4);
        prune_handled(&mut st, 5_000, 120);
        assert_eq!(st.handled.keys().collect::<Vec<_>>(), ["in_overlap", "new"]);
    }

    #[test]
    fn a_channel_read_whole_reads_on_from_its_own_since_until_the_cursor_passes_it() {
        let mut st = MmState::default();
        mark_handled(&mut st, "a_old", 1_000);
        mark_handled(&mut st, "a_overlap", 4_950);
        mark_handled(&mut st, "b_old", 1_000);
        let seen = [
            ("a_old".to_string(), 1_000),
            ("a_overlap".to_string(), 4_950),
        ];
        channel_read(&mut st, "a", 4_900, &seen);
        // Only the channel's own ids, and only those its `since` covers.
        assert_eq!(
            st.handled.keys().collect::<Vec<_>>(),
            ["a_overlap", "b_old"]
        );
        assert_eq!(channel_lower(&st, "a", 3_000), 4_900);
        assert_eq!(channel_lower(&st, "b", 3_000), 3_000);
        assert_eq!(channel_lower(&st, "a", 6_000), 6_000);
        // What the channel's next read starts from, it skips.
        let none = BTreeSet::new();
        let old = post("a_old", "u", 1_000);
        let since = channel_lower(&st, "a", 3_000);
        assert_eq!(
            skip_reason(&old, None, since, "me", &none, &[], &st.handled),
            Some(Skip::BeforeCursor)
        );
        // A later read that starts earlier does not move it back.
        channel_read(&mut st, "a", 4_000, &[]);
        assert_eq!(channel_lower(&st, "a", 3_000), 4_900);
        // The cursor's `since` reaching it makes it redundant.
        prune_handled(&mut st, 4_950, 100);
        assert_eq!(st.channel_since.get("a"), Some(&4_900));
        prune_handled(&mut st, 5_000, 100);
        assert!(st.channel_since.is_empty());
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
