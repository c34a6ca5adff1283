//! Reading one channel: its `since` answer, and pages of its history when
//! that answer may be incomplete.
//!
//! `GET /channels/{id}/posts?since=T` matches `update_at > T` (edits,
//! reactions, replies and deletions bring old posts back), at most 1000
//! rows with no ORDER BY, and mixes thread roots into `posts`. So the poller
//! iterates `order` only, dedupes by id, treats a post as new only when its
//! `create_at > since`, and when a channel answered 1000 rows (or nothing
//! although its `last_post_at` moved) it reads the channel by pages from
//! the newest post down to `since` instead (`backlog.rs` says how the pages
//! are anchored), handing each page over as it comes.

use std::collections::HashSet;

use crate::mattermost::client::{Client, MmError, MAX_PER_PAGE};
use crate::mattermost::wire::{Channel, Post, PostList};

use super::backlog::Pos;

/// The server's row cap for `since` queries.
pub const SINCE_CAP: usize = 1000;

/// A channel's `since` answer.
pub(super) struct SinceRead {
    /// Its rows, each once; empty when the channel must be paged instead.
    pub(super) rows: Vec<Post>,
    /// The answer may be incomplete: read the channel by pages.
    pub(super) page_instead: bool,
    /// Rows changed after they were created (a reaction, an edit, a reply).
    pub(super) touched: Vec<String>,
    /// The newest time the answer showed (create or update).
    pub(super) newest_ms: Option<i64>,
}

/// The `since` answer of `ch` for `since_ms`. A capped answer (or an empty
/// one although the listing shows a newer post) is not used: the pages
/// bring every post it had, in an order that can be resumed.
pub(super) async fn read_since(
    client: &Client,
    ch: &Channel,
    since_ms: i64,
) -> Result<SinceRead, MmError> {
    let list = client.posts_since(&ch.id, since_ms).await?;
    let n = list.order.len();
    let page_instead = n >= SINCE_CAP || (n == 0 && ch.last_post_at > since_ms);
    let mut rows = take_rows(list, &mut HashSet::new());
    let touched = rows
        .iter()
        .filter(|p| p.update_at > p.create_at && p.delete_at == 0)
        .map(|p| p.id.clone())
        .collect();
    let newest_ms = rows.iter().map(|p| p.create_at.max(p.update_at)).max();
    if page_instead {
        tracing::info!(channel = %ch.name, rows = n, "Reading a channel by pages: its `since` answer may be incomplete.");
        rows = Vec::new();
    }
    Ok(SinceRead {
        rows,
        page_instead,
        touched,
        newest_ms,
    })
}

/// One page of `channel_id`'s history at `at`, newest first.
pub(super) async fn read_page(
    client: &Client,
    channel_id: &str,
    at: &Pos,
) -> Result<Vec<Post>, MmError> {
    let list = match &at.pivot {
        None => client.posts_page(channel_id, at.page, MAX_PER_PAGE).await?,
        Some(pivot) => {
            client
                .posts_before(channel_id, pivot, at.page, MAX_PER_PAGE)
                .await?
        }
    };
    Ok(take_rows(list, &mut HashSet::new()))
}

/// The rows of `list` (its `order`; `posts` may hold extra thread roots),
/// each id once (`seen`), in the server's order: the answer is consumed,
/// not copied, so a page costs its posts once.
fn take_rows(list: PostList, seen: &mut HashSet<String>) -> Vec<Post> {
    let mut by_id = list.posts;
    let mut rows = Vec::with_capacity(list.order.len());
    for id in list.order {
        if let Some(p) = by_id.remove(&id) {
            if seen.insert(id) {
                rows.push(p);
            }
        }
    }
    rows
}
