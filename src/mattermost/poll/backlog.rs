//! Channels catching up: a channel with more new posts than one cycle reads
//! (`[mattermost] max_pages_per_channel` pages of 200) keeps the rest as a
//! [`Backlog`] in the state, and every later cycle reads on from where the
//! last one stopped, so no channel is ever stuck and the global cursor
//! moves on for every other channel meanwhile.
//!
//! A backlog is a range of one channel's history: the posts created after
//! `floor_ms` (its `since` when it fell behind) and before `top_ms` (what
//! the cycles read from the newest post down, and read again as usual in
//! the overlap). It is read newest first by pages anchored on a post
//! ([`Pos`]: `before=<pivot>`, then `page=` offsets below it), which stay
//! put however many posts arrive meanwhile. A page's posts move the
//! position only once every one of them is handled; a page with a post
//! still pending (its task failed, the deadline came) is read again next
//! cycle. `done` holds the posts of the range still to read that were
//! handled already (those of the page read again, and those the overlap
//! of the cycles before had handled when the backlog began), so none is
//! handed over twice; an entry goes once the position is past it. When a
//! page reaches the floor the backlog is gone.
//!
//! Reading by `before=<pivot>` skips the posts that share the pivot's
//! millisecond, so the pivot is always the last post of a page whose
//! millisecond the page holds completely ([`next_pos`]); the posts of the
//! page's last millisecond come again on the next page (they are in
//! `done`, or deduplicated within the cycle). A page that is one
//! millisecond throughout (a bulk import) goes on by offset.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::mattermost::client::MAX_PER_PAGE;
use crate::mattermost::wire::Post;

/// Where the next page of a channel's history starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Pos {
    /// Older than this post (`before=`); `None`: from the newest post.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pivot: Option<String>,
    /// The pivot's `create_at`.
    pub(crate) pivot_ms: i64,
    /// Pages of [`MAX_PER_PAGE`] below the pivot already read.
    pub(crate) page: u32,
}

/// The position after one page (`rows` in the server's order, newest
/// first) read at `at`, or `None` when the history down to `floor_ms` has
/// been read. Pure.
pub(crate) fn next_pos(at: &Pos, rows: &[&Post], floor_ms: i64) -> Option<Pos> {
    let last = rows.last()?;
    if rows.len() < MAX_PER_PAGE as usize || rows.iter().any(|p| p.create_at <= floor_ms) {
        return None;
    }
    // The last row of a millisecond the page holds completely: every post
    // of that millisecond and newer has been read.
    match rows.iter().rev().find(|p| p.create_at > last.create_at) {
        Some(p) => Some(Pos {
            pivot: Some(p.id.clone()),
            pivot_ms: p.create_at,
            page: 0,
        }),
        None => Some(Pos {
            page: at.page + 1,
            ..at.clone()
        }),
    }
}

/// A channel's history not read yet (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Backlog {
    /// Channel id.
    pub(crate) channel_id: String,
    /// Team name and channel name, for `status`.
    pub(crate) team: String,
    /// See `team`.
    pub(crate) channel: String,
    /// Posts created at or before this were handled before.
    pub(crate) floor_ms: i64,
    /// Posts created at or after this are read by the channel's usual poll.
    pub(crate) top_ms: i64,
    /// Where the next page starts.
    pub(crate) at: Pos,
    /// Posts of the range still to read that were handled already: id →
    /// create_at.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) done: BTreeMap<String, i64>,
    /// Posts read from the newest post down to the position so far, and
    /// the newest one's time: the rate the estimate goes by.
    pub(crate) read: u64,
    /// See `read`.
    pub(crate) newest_ms: i64,
}

impl Backlog {
    /// Moves the position to `next` over a page whose posts are all
    /// handled; what is above it now can never be read again.
    pub(crate) fn advance(
        &mut self,
        next: Pos,
        rows: u64,
        handled: impl IntoIterator<Item = (String, i64)>,
    ) {
        self.read += rows;
        self.done.extend(handled);
        let below = next.pivot_ms;
        self.done.retain(|_, at| *at < below);
        self.at = next;
    }

    /// About how many posts, and pages, are left: the rate of the part
    /// read so far over the time still to read. Nothing read yet: unknown.
    pub(crate) fn left(&self) -> Option<(u64, u64)> {
        let read_span = self.newest_ms - self.at.pivot_ms;
        let left_span = self.at.pivot_ms - self.floor_ms;
        if read_span <= 0 || self.read == 0 || left_span <= 0 {
            return None;
        }
        let posts = (self.read as f64 * left_span as f64 / read_span as f64).ceil() as u64;
        Some((posts, posts.div_ceil(u64::from(MAX_PER_PAGE)).max(1)))
    }

    /// `catching up: N pages / ~M posts left in team/channel`.
    pub(crate) fn line(&self) -> String {
        let place = format!("{}/{}", self.team, self.channel);
        match self.left() {
            Some((posts, pages)) => {
                format!("catching up: {pages} pages / ~{posts} posts left in {place}")
            }
            None => format!("catching up: {place} (how much is left is not known yet)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::post;
    use super::*;

    fn refs(v: &[Post]) -> Vec<&Post> {
        v.iter().collect()
    }

    #[test]
    fn paging_table() {
        let per = MAX_PER_PAGE as usize;
        let page = |stamps: &[i64]| -> Vec<Post> {
            stamps
                .iter()
                .enumerate()
                .map(|(i, t)| post(&format!("p{i}-{t}"), "u", *t))
                .collect()
        };
        let distinct: Vec<i64> = (0..per as i64).map(|i| 10_000 - i).collect();
        // The last 51 rows share one millisecond (which may go on below).
        let tied_edge: Vec<i64> = (0..per as i64).map(|i| 10_000 - i.min(150)).collect();
        // Two posts of one millisecond straddle the page edge.
        let edge_pair: Vec<i64> = (0..per as i64)
            .map(|i| {
                if i == per as i64 - 1 {
                    10_000 - i + 1
                } else {
                    10_000 - i
                }
            })
            .collect();
        let one_ms: Vec<i64> = vec![7_000; per];
        let short: Vec<i64> = vec![10_000, 9_999];
        let reaches: Vec<i64> = (0..per as i64).map(|i| 5_100 - i).collect();
        let (d, t, e, o, s, r) = (
            page(&distinct),
            page(&tied_edge),
            page(&edge_pair),
            page(&one_ms),
            page(&short),
            page(&reaches),
        );
        let at = |v: &[Post], i: usize| Pos {
            pivot: Some(v[i].id.clone()),
            pivot_ms: v[i].create_at,
            page: 0,
        };
        let pivoted = Pos {
            pivot: Some("x".into()),
            pivot_ms: 11_000,
            page: 3,
        };
        let since = 5_000;
        let table: Vec<(&str, Pos, Vec<&Post>, Option<Pos>)> = vec![
            (
                "distinct stamps: before the next-to-last row, whose millisecond is complete",
                Pos::default(),
                refs(&d),
                Some(at(&d, per - 2)),
            ),
            (
                "a tie group at the edge: before the last row above it",
                Pos::default(),
                refs(&t),
                Some(at(&t, 149)),
            ),
            (
                "a pair straddling the edge: its first half is read again",
                Pos::default(),
                refs(&e),
                Some(at(&e, per - 3)),
            ),
            (
                "one millisecond throughout: the next offset below the same pivot",
                pivoted.clone(),
                refs(&o),
                Some(Pos {
                    page: 4,
                    ..pivoted.clone()
                }),
            ),
            (
                "one millisecond at the newest: the next offset from the newest",
                Pos::default(),
                refs(&o),
                Some(Pos {
                    page: 1,
                    ..Pos::default()
                }),
            ),
            ("a short page is the end", Pos::default(), refs(&s), None),
            ("the floor is reached", pivoted.clone(), refs(&r), None),
            ("an empty page is the end", pivoted, vec![], None),
        ];
        for (name, current, rows, want) in table {
            assert_eq!(next_pos(&current, &rows, since), want, "{name}");
        }
    }

    #[test]
    fn the_estimate_scales_what_was_read_to_what_is_left() {
        let b = Backlog {
            team: "wizard".into(),
            channel: "ci".into(),
            floor_ms: 0,
            top_ms: 900,
            newest_ms: 1_000,
            at: Pos {
                pivot: Some("p".into()),
                pivot_ms: 750,
                page: 0,
            },
            read: 2_000,
            ..Default::default()
        };
        assert_eq!(b.left(), Some((6_000, 30)));
        assert_eq!(
            b.line(),
            "catching up: 30 pages / ~6000 posts left in wizard/ci"
        );
        let fresh = Backlog {
            read: 0,
            ..b.clone()
        };
        assert_eq!(fresh.left(), None);
        assert!(fresh.line().contains("wizard/ci"), "{}", fresh.line());
    }
}
