//! Settling a batch once the chat stage handled it: which posts are handled
//! now, which stay pending and hold the cursor, and how a page moves a
//! channel's backlog.

use crate::mattermost::poll::backlog::Backlog;
use crate::mattermost::poll::MmState;

use super::{Phase, Reader};

impl Reader {
    /// What became of the batch handed over last: pending posts of a
    /// usual read hold the global cursor; a page of the usual read whose
    /// channel spent its budget leaves the rest as a backlog; a backlog's
    /// page moves it only when all of it is handled.
    pub(super) fn settle(&mut self, state: &mut MmState) {
        let Some(h) = self.last.take() else {
            return;
        };
        let handled = |id: &str| state.handled.contains_key(id);
        let pending: Vec<&(String, i64)> = h.ids.iter().filter(|(id, _)| !handled(id)).collect();
        let Some(page) = h.page else {
            self.hold(&h.channel_id, pending.iter().map(|(_, at)| *at));
            return;
        };
        match page.backlog {
            None => {
                // A range with room for a post: (floor, pivot) is empty when
                // the read stopped right above another backlog's top.
                let leaves_backlog = page.last
                    && page
                        .next
                        .as_ref()
                        .is_some_and(|n| n.pivot_ms > page.floor_ms + 1);
                let below = |at: i64| page.next.as_ref().is_some_and(|n| at < n.pivot_ms);
                // Rows of the backlog's range are the backlog's now.
                let held = pending
                    .iter()
                    .filter(|(_, at)| !(leaves_backlog && below(*at)))
                    .map(|(_, at)| *at);
                self.hold(&h.channel_id, held);
                if let (true, Some(next)) = (leaves_backlog, page.next) {
                    let cur = self.current.as_ref();
                    // What the cycles before handled in the range (the
                    // overlap) is not handed over again when it is read.
                    let done = state
                        .handled
                        .iter()
                        .filter(|(_, at)| **at > page.floor_ms && **at < next.pivot_ms)
                        .map(|(id, at)| (id.clone(), *at))
                        .collect();
                    let b = Backlog {
                        channel_id: h.channel_id.to_string(),
                        team: cur.map(|c| c.team.to_string()).unwrap_or_default(),
                        channel: cur.map(|c| c.channel_name.to_string()).unwrap_or_default(),
                        floor_ms: page.floor_ms,
                        top_ms: next.pivot_ms,
                        done,
                        at: next,
                        read: cur.map_or(0, |c| c.paged),
                        newest_ms: cur.and_then(|c| c.newest_ms).unwrap_or(page.floor_ms),
                    };
                    tracing::warn!(
                        channel = %b.channel,
                        team = %b.team,
                        "Channel has more new posts than one cycle reads; the next cycles read on where this one stopped."
                    );
                    if let Some(c) = self.current.as_mut() {
                        c.backlogs_seen.insert(b.top_ms);
                    }
                    self.unread(&b.channel_id);
                    state.behind.push(b);
                }
            }
            Some(top) => {
                let Some(i) = state
                    .behind
                    .iter()
                    .position(|b| *b.channel_id == *h.channel_id && b.top_ms == top)
                else {
                    return;
                };
                if !pending.is_empty() {
                    // Read again next cycle; what of it is handled stays done.
                    let now_done: Vec<(String, i64)> = h
                        .ids
                        .iter()
                        .filter(|(id, _)| handled(id))
                        .cloned()
                        .collect();
                    state.behind[i].done.extend(now_done);
                    if let Some(c) = self.current.as_mut() {
                        c.phase = Phase::Backlogs;
                    }
                    return;
                }
                match page.next {
                    None => {
                        let b = state.behind.remove(i);
                        tracing::info!(channel = %b.channel, team = %b.team, "Channel caught up.");
                    }
                    Some(next) => state.behind[i].advance(next, page.rows, page.trailing),
                }
            }
        }
    }

    /// Pending posts of a channel's usual read: the global cursor stays
    /// before the oldest.
    pub(super) fn hold(&mut self, channel_id: &str, created: impl Iterator<Item = i64>) {
        for at in created {
            self.outcome.oldest_pending =
                Some(self.outcome.oldest_pending.map_or(at, |o| o.min(at)));
            self.pending_channels.insert(channel_id.to_string());
        }
    }
}
