//! Quiet channels: the marks that spare the next poll reading a channel
//! only the agent itself wrote in.
//!
//! The agent's own posts (replies, alerts) move a channel's `last_post_at`,
//! which would make the channel look active to the next poll. After a
//! cycle, [`next_quiet`] marks each channel that was read fully, holds no
//! pending post, and changed since only by the agent's own posts, with the
//! `(last_post_at, total_msg_count)` it must then show; a channel that
//! still shows exactly its mark is not read again. Any other post (a
//! reply, a late-visible one with an older `create_at`) bumps
//! `total_msg_count` and so makes the channel active again; join/leave
//! messages, which do not count, still move `last_post_at`. A channel is
//! only marked when its read returned the post the listing shows as its
//! newest: with read replicas the listing may count a post that a lagging
//! read does not return yet, and that channel must be read again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::mattermost::client::Made;
use crate::mattermost::wire::Channel;

/// A channel's "anything new?" figures, as the channel listing shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChannelMark {
    /// `last_post_at`.
    pub(super) last_post_at: i64,
    /// `total_msg_count`.
    total_msg_count: i64,
}

impl ChannelMark {
    /// The figures of a listed channel.
    pub(crate) fn of(c: &Channel) -> ChannelMark {
        ChannelMark {
            last_post_at: c.last_post_at,
            total_msg_count: c.total_msg_count,
        }
    }
}

/// A channel as this poll's listing showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    /// Channel id.
    pub(crate) id: String,
    /// Its figures in the listing.
    pub(crate) mark: ChannelMark,
    /// Everything new in it was read (nothing new, quiet, or fetched fully).
    pub(crate) read: bool,
}

/// The quiet marks for the next poll (see the module doc). `own` is what
/// the agent posted this cycle, per channel id;
/// `next_since_ms` the next poll's `since`, before which a mark is not
/// needed. A channel with posts handed over but not handled, or a backlog,
/// is not `read`. Pure.
pub(crate) fn next_quiet(
    listed: &[Listed],
    own: &BTreeMap<String, Made>,
    next_since_ms: i64,
) -> BTreeMap<String, ChannelMark> {
    let mut marks = BTreeMap::new();
    for ch in listed.iter().filter(|c| c.read) {
        let mut mark = ch.mark;
        if let Some(m) = own.get(&ch.id) {
            mark.last_post_at = mark.last_post_at.max(m.newest_ms);
            mark.total_msg_count += m.count;
        }
        if mark.last_post_at > next_since_ms {
            marks.insert(ch.id.clone(), mark);
        }
    }
    marks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_marks_table() {
        let listed = |id: &str, last: i64, count: i64, read: bool| Listed {
            id: id.into(),
            mark: ChannelMark {
                last_post_at: last,
                total_msg_count: count,
            },
            read,
        };
        let mark = |last: i64, count: i64| ChannelMark {
            last_post_at: last,
            total_msg_count: count,
        };
        let own = |id: &str, at: i64| (id.to_string(), at);
        // (listed channel, own posts, expected mark), next since = 100
        type Case = (Listed, Vec<(String, i64)>, Option<ChannelMark>);
        let cases: Vec<Case> = vec![
            // Read, nothing of ours: marked as listed.
            (listed("a", 150, 7, true), vec![], Some(mark(150, 7))),
            // Two replies of ours: the newest time, two more posts.
            (
                listed("a", 150, 7, true),
                vec![own("a", 160), own("a", 155), own("b", 170)],
                Some(mark(160, 9)),
            ),
            // Not read fully (a failed fetch): never quiet.
            (listed("a", 150, 7, false), vec![own("a", 160)], None),
            // A post in it is still pending (so it is not read fully): it
            // must be read again.
            (listed("busy", 150, 7, false), vec![own("busy", 160)], None),
            // Older than the next since and nothing of ours: no mark needed.
            (listed("a", 90, 7, true), vec![], None),
            // An old channel our alert just moved: marked.
            (
                listed("a", 90, 7, true),
                vec![own("a", 130)],
                Some(mark(130, 8)),
            ),
        ];
        for (i, (ch, own, want)) in cases.into_iter().enumerate() {
            let mut made = BTreeMap::new();
            for (id, at) in &own {
                Made::add(&mut made, id, *at);
            }
            let got = next_quiet(std::slice::from_ref(&ch), &made, 100);
            assert_eq!(got.get(&ch.id).copied(), want, "case {i}");
            assert!(got.len() <= 1, "case {i}: only listed channels");
        }
    }
}
