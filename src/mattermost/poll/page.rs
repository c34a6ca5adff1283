//! Reading one channel: its `since` answer, and the backfill by pages when
//! that answer may be incomplete.
//!
//! `GET /channels/{id}/posts?since=T` matches `update_at > T` (edits,
//! reactions, replies and deletions bring old posts back), at most 1000
//! rows with no ORDER BY, and mixes thread roots into `posts`. So the poller
//! iterates `order` only, dedupes by id, treats a post as new only when its
//! `create_at > since`, and when a channel answered 1000 rows (or nothing
//! although its `last_post_at` moved) it backfills with `page`/`before`
//! paging down to `since`.

use std::collections::HashSet;

use tokio::time::Instant;

use crate::mattermost::client::{Client, MmError, MmErrorKind, MAX_PER_PAGE};
use crate::mattermost::wire::{Channel, Post, PostList};

/// The server's row cap for `since` queries.
pub const SINCE_CAP: usize = 1000;

/// Backfill stops after this many pages of one channel (40,000 posts).
const MAX_BACKFILL_PAGES: u32 = 200;

/// Every post of one channel that `since` matches, deduped, plus a
/// backfill when the answer may be capped. Returns (posts, backfilled).
pub(super) async fn fetch_channel(
    client: &Client,
    ch: &Channel,
    since_ms: i64,
    deadline: Instant,
) -> Result<(Vec<Post>, bool), MmError> {
    let list = client.posts_since(&ch.id, since_ms).await?;
    let mut seen = HashSet::new();
    let mut posts = Vec::new();
    let rows = list.order.len();
    let maybe_capped = rows >= SINCE_CAP;
    let looks_wrong = rows == 0 && ch.last_post_at > since_ms;
    take_rows(list, &mut seen, &mut posts);
    if !(maybe_capped || looks_wrong) {
        return Ok((posts, false));
    }
    tracing::info!(channel = %ch.name, rows, "Backfilling a channel whose `since` answer may be incomplete.");
    backfill(client, ch, since_ms, deadline, &mut seen, &mut posts).await?;
    Ok((posts, true))
}

/// Pages back through the channel's history from its newest post down to
/// `since_ms`, adding the posts not `seen` yet to `posts`.
async fn backfill(
    client: &Client,
    ch: &Channel,
    since_ms: i64,
    deadline: Instant,
    seen: &mut HashSet<String>,
    posts: &mut Vec<Post>,
) -> Result<(), MmError> {
    let mut next = Page::Newest;
    for page in 0..MAX_BACKFILL_PAGES {
        if page > 0 && Instant::now() >= deadline {
            return Err(MmError {
                kind: MmErrorKind::Timeout,
                endpoint: format!("GET {}/api/v4/channels/{}/posts", client.base_url(), ch.id),
                detail: "deadline reached during backfill".into(),
            });
        }
        let list = match &next {
            Page::Newest => client.posts_page(&ch.id, 0, MAX_PER_PAGE).await?,
            Page::Before(pivot) => client.posts_before(&ch.id, pivot, MAX_PER_PAGE).await?,
            Page::Offset(n) => client.posts_page(&ch.id, *n, MAX_PER_PAGE).await?,
        };
        let rows: Vec<&Post> = list
            .order
            .iter()
            .filter_map(|id| list.posts.get(id))
            .collect();
        let after = next_page(&next, &rows, since_ms);
        take_rows(list, seen, posts);
        match after {
            Some(p) => next = p,
            None => return Ok(()),
        }
    }
    Err(MmError {
        kind: MmErrorKind::BadResponse,
        endpoint: format!("GET {}/api/v4/channels/{}/posts", client.base_url(), ch.id),
        detail: format!("backfill did not reach the cursor within {MAX_BACKFILL_PAGES} pages"),
    })
}

/// Moves the rows of `list` (its `order`; `posts` may hold extra thread
/// roots) into `into`, each id once (`seen`): the answer is consumed, not
/// copied, so a page costs its posts once.
fn take_rows(list: PostList, seen: &mut HashSet<String>, into: &mut Vec<Post>) {
    let mut by_id = list.posts;
    for id in list.order {
        if let Some(p) = by_id.remove(&id) {
            if seen.insert(id) {
                into.push(p);
            }
        }
    }
}

/// Which page of a channel's history to read next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Page {
    /// `page=0`: the newest posts.
    Newest,
    /// `before=<id>`: older than that post. Stable while posts come and go,
    /// but the server compares `CreateAt < CreateAt(id)`, so posts sharing
    /// the pivot's millisecond would be skipped.
    Before(String),
    /// `page=n`: by offset, which walks through posts sharing a millisecond.
    Offset(u32),
}

/// The page after `rows` (one page, in the server's order), or `None` when
/// the history down to `since_ms` has been read. The pivot is the server's
/// last row, never a minimum we compute (the server's tie order is its
/// own); a page whose last millisecond it shares with other rows switches to
/// offset paging, which cannot skip or repeat a tie group. Pure.
fn next_page(current: &Page, rows: &[&Post], since_ms: i64) -> Option<Page> {
    let last = rows.last()?;
    let reached = rows.iter().any(|p| p.create_at <= since_ms);
    if reached || rows.len() < MAX_PER_PAGE as usize {
        return None;
    }
    let tie_at_edge = rows
        .iter()
        .filter(|p| p.create_at == last.create_at)
        .count()
        > 1;
    Some(match current {
        Page::Offset(n) => Page::Offset(n + 1),
        Page::Newest if tie_at_edge => Page::Offset(1),
        // Ties at a `before` edge: restart by offset (posts already read are
        // deduplicated by id).
        Page::Before(_) if tie_at_edge => Page::Offset(0),
        Page::Newest | Page::Before(_) => Page::Before(last.id.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::post;
    use super::*;

    fn refs(v: &[Post]) -> Vec<&Post> {
        v.iter().collect()
    }

    #[test]
    fn backfill_paging_table() {
        let per = MAX_PER_PAGE as usize;
        let page = |stamps: &[i64]| -> Vec<Post> {
            stamps
                .iter()
                .enumerate()
                .map(|(i, t)| post(&format!("p{i}-{t}"), "u", *t))
                .collect()
        };
        let distinct: Vec<i64> = (0..per as i64).map(|i| 10_000 - i).collect();
        let tied_edge: Vec<i64> = (0..per as i64).map(|i| 10_000 - i.min(150)).collect();
        let short: Vec<i64> = vec![10_000, 9_999];
        let reaches: Vec<i64> = (0..per as i64).map(|i| 5_100 - i).collect();
        let last_id = |v: &[Post]| v.last().unwrap().id.clone();
        let (d, t, s, r) = (
            page(&distinct),
            page(&tied_edge),
            page(&short),
            page(&reaches),
        );
        let since = 5_000;
        let table: Vec<(&str, Page, Vec<&Post>, Option<Page>)> = vec![
            (
                "distinct stamps: before the server's last row",
                Page::Newest,
                refs(&d),
                Some(Page::Before(last_id(&d))),
            ),
            (
                "a tie at the first page's edge: offset paging",
                Page::Newest,
                refs(&t),
                Some(Page::Offset(1)),
            ),
            (
                "a tie at a before page's edge: restart by offset",
                Page::Before("x".into()),
                refs(&t),
                Some(Page::Offset(0)),
            ),
            (
                "offset paging goes on",
                Page::Offset(3),
                refs(&t),
                Some(Page::Offset(4)),
            ),
            ("a short page is the end", Page::Newest, refs(&s), None),
            (
                "the cursor is reached",
                Page::Before("x".into()),
                refs(&r),
                None,
            ),
            ("an empty page is the end", Page::Offset(2), vec![], None),
        ];
        for (name, current, rows, want) in table {
            assert_eq!(next_page(&current, &rows, since), want, "{name}");
        }
    }
}
