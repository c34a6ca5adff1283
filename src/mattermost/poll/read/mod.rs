//! The reads of one poll, handed over as they come: a batch of one
//! channel's posts at a time (its `since` answer, or one page of its
//! history), so memory holds what one batch needs, never the backlog.
//!
//! [`Reader::next_batch`] is called by the chat stage after it handled the
//! batch before; it first settles that batch (which posts are handled now,
//! which stay pending), then reads on. The `since` answers of the next
//! channels are read a few at a time (up to `channel_concurrency`, see
//! [`window_after`]); pages one
//! after the other, at most `max_pages_per_channel` per channel and cycle.
//! A channel that has more keeps the rest as a backlog (`backlog.rs`), read
//! on by the next cycles; a backlog moves only over pages whose posts are
//! all handled. Pending posts of a channel's usual read hold the global
//! cursor (`cursor.rs`), as they always did. What a read brought is
//! admitted in `admit.rs` (the skip rules), and a handled batch settled in
//! `settle.rs`.

mod admit;
mod settle;

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use futures_util::future::join_all;
use tokio::time::Instant;

use super::backlog::{next_pos, Backlog, Pos};
use super::cursor::{channel_lower, channel_read};
use super::cut_over::Answered;
use super::page::{read_page, read_since, SinceRead};
use super::quiet::Listed;
use super::{MmState, NewPost, PollOutcome};
use crate::mattermost::client::{Client, MmError, MmErrorKind};
use crate::mattermost::wire::{Channel, Post};
use crate::time::elapsed_ms;

/// Posts handed over at most at once: routed, classified and acted on
/// together before the next batch is read.
pub(crate) const BATCH: usize = 500;

/// A channel to read this cycle.
pub(super) struct Job {
    pub(super) team: Arc<str>,
    pub(super) ch: Channel,
    /// Its usual read: posts created after this (`None`: nothing new above
    /// its backlogs).
    pub(super) lower_ms: Option<i64>,
}

/// What is being handed over from the current channel.
enum Phase {
    /// The rows of its `since` answer, oldest first.
    Rows(VecDeque<Post>),
    /// Pages of its history from `at` down to `floor_ms`; `backlog` is the
    /// `top_ms` of the backlog read, `None` for the usual read.
    Pages {
        at: Pos,
        floor_ms: i64,
        backlog: Option<i64>,
    },
    /// Its next backlog, if any.
    Backlogs,
}

/// The channel being handed over.
struct Current {
    team: Arc<str>,
    channel_id: Arc<str>,
    channel_name: Arc<str>,
    /// The usual read's lower bound.
    lower_ms: i64,
    phase: Phase,
    pages_left: u32,
    /// Backlogs (by `top_ms`) read or stopped this cycle.
    backlogs_seen: BTreeSet<i64>,
    answered: Answered,
    /// Ids of the page before (a page's last millisecond comes again).
    prev_page: HashSet<String>,
    /// The listing's newest post time, and the newest the reads showed.
    last_post_at: i64,
    newest_ms: Option<i64>,
    /// Rows the usual read's pages brought.
    paged: u64,
    /// Posts of the channel's usual read handed over, or skipped as
    /// handled, this cycle: forgotten from the handled set once the channel
    /// is read (see `cursor.rs`). A backlog's pages are not in it: a cycle
    /// reads a backlog only where its own read found nothing new.
    seen: Vec<(String, i64)>,
}

/// A page handed over, settled when the next batch is asked for.
struct PageDone {
    next: Option<Pos>,
    floor_ms: i64,
    backlog: Option<i64>,
    /// The page's rows below `next`'s pivot (the next page brings them
    /// again), with their create_at.
    trailing: Vec<(String, i64)>,
    /// Rows of the page that were read in a way that counts for an
    /// estimate of the backlog.
    rows: u64,
    /// The channel's last page this cycle (its budget is spent).
    last: bool,
}

/// The batch handed over last.
struct Handed {
    channel_id: Arc<str>,
    ids: Vec<(String, i64)>,
    page: Option<PageDone>,
}

/// Reads a poll's channels and hands their posts over batch by batch.
pub struct Reader {
    since_ms: i64,
    own_id: String,
    now_ms: i64,
    deadline: Instant,
    max_pages: u32,
    concurrency: usize,
    /// How many `since` answers the next read asks for at once.
    window: usize,
    overlap_ms: i64,
    ignored_names: Vec<String>,
    cut: Option<super::cut_over::CutOver>,
    jobs: VecDeque<Job>,
    ready: VecDeque<(Job, Result<SinceRead, MmError>)>,
    current: Option<Current>,
    last: Option<Handed>,
    stop: bool,
    /// Skips already in the audit trail (read once, at the first one).
    audited: Option<HashSet<String>>,
    /// Time spent reading (ms).
    pub ms: u64,
    /// The figures of the poll; complete once [`Reader::finish`] ran.
    pub outcome: PollOutcome,
    /// Channels with posts handed over but not handled.
    pending_channels: BTreeSet<String>,
}

impl Reader {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        state: &MmState,
        jobs: VecDeque<Job>,
        outcome: PollOutcome,
        since_ms: i64,
        own_id: String,
        now_ms: i64,
        deadline: Instant,
        cfg: &crate::mattermost::config::MattermostConfig,
    ) -> Reader {
        Reader {
            since_ms,
            own_id,
            now_ms,
            deadline,
            max_pages: cfg.max_pages_per_channel.max(1),
            concurrency: cfg.channel_concurrency.max(1),
            window: 1,
            overlap_ms: cfg.overlap_secs.as_millis() as i64,
            ignored_names: cfg.ignored_users.clone(),
            cut: state.cut_over,
            jobs,
            ready: VecDeque::new(),
            current: None,
            last: None,
            stop: false,
            audited: None,
            ms: 0,
            outcome,
            pending_channels: BTreeSet::new(),
        }
    }

    /// Stops reading: the rest is read next cycle.
    pub fn stop(&mut self) {
        self.stop = true;
        self.outcome.complete = false;
    }

    /// The next batch of new posts, oldest first within it, or `None` when
    /// every channel was read (or the reads stopped). Settles the batch
    /// handed over before.
    pub async fn next_batch(
        &mut self,
        client: &Client,
        state: &mut MmState,
    ) -> Option<Vec<NewPost>> {
        let t = std::time::Instant::now();
        // The requests between batches are the replies'; the poll's own
        // are those made here.
        let before = client.requests();
        let batch = self.read_on(client, state).await;
        self.ms += elapsed_ms(t);
        self.outcome.requests += client.requests().saturating_sub(before);
        if let Some(b) = &batch {
            self.outcome.posts_new += b.len() as u64;
        }
        batch
    }

    async fn read_on(&mut self, client: &Client, state: &mut MmState) -> Option<Vec<NewPost>> {
        loop {
            self.settle(state);
            if self.stop {
                return None;
            }
            if self.current.is_none() {
                self.current = Some(self.next_channel(client, state).await?);
            }
            if let Some(batch) = self.step(client, state).await {
                if !batch.is_empty() {
                    return Some(batch);
                }
            }
        }
    }

    /// The next channel whose `since` answer is in (reading the next few
    /// concurrently), or `None` when none is left.
    async fn next_channel(&mut self, client: &Client, state: &MmState) -> Option<Current> {
        loop {
            if self.ready.is_empty() {
                if self.jobs.is_empty() || self.stop {
                    return None;
                }
                if Instant::now() >= self.deadline {
                    self.cut_by_deadline("before every channel was read");
                    return None;
                }
                let n = self.window.min(self.jobs.len());
                let window: Vec<Job> = self.jobs.drain(..n).collect();
                let this = &*self;
                let reads = join_all(window.iter().map(|j| async move {
                    match j.lower_ms {
                        Some(lower) => this.within(read_since(client, &j.ch, lower)).await,
                        None => Ok(SinceRead {
                            rows: Vec::new(),
                            page_instead: false,
                            touched: Vec::new(),
                            newest_ms: None,
                        }),
                    }
                }))
                .await;
                self.window = window_after(self.window, self.concurrency, &reads);
                self.ready.extend(window.into_iter().zip(reads));
            }
            let (job, read) = self.ready.pop_front()?;
            match read {
                Ok(r) => return Some(self.open(job, r, state)),
                Err(e) => self.channel_failed(&job, &e),
            }
        }
    }

    /// Runs `fut` unless the deadline comes first.
    async fn within<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, MmError>>,
    ) -> Result<T, MmError> {
        match tokio::time::timeout_at(self.deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(MmError {
                kind: MmErrorKind::Timeout,
                endpoint: String::new(),
                detail: "deadline reached during the poll".into(),
            }),
        }
    }

    /// Starts handing over a channel whose `since` answer came.
    fn open(&mut self, job: Job, read: SinceRead, state: &MmState) -> Current {
        let lower_ms = job.lower_ms.unwrap_or(self.since_ms);
        self.outcome.channels_fetched += 1;
        self.outcome.touched.extend(read.touched);
        let phase = if job.lower_ms.is_none() {
            Phase::Backlogs
        } else if read.page_instead {
            self.outcome.channels_backfilled += 1;
            Phase::Pages {
                at: Pos::default(),
                floor_ms: lower_ms,
                backlog: None,
            }
        } else {
            let mut rows = read.rows;
            rows.sort_unstable_by(|a, b| (a.create_at, &a.id).cmp(&(b.create_at, &b.id)));
            Phase::Rows(rows.into())
        };
        if state.behind.iter().any(|b| b.channel_id == job.ch.id) {
            self.unread(&job.ch.id);
        }
        Current {
            team: job.team,
            channel_id: job.ch.id.as_str().into(),
            channel_name: job.ch.name.as_str().into(),
            lower_ms,
            phase,
            pages_left: self.max_pages,
            backlogs_seen: BTreeSet::new(),
            answered: Answered::default(),
            prev_page: HashSet::new(),
            last_post_at: if job.lower_ms.is_some() {
                job.ch.last_post_at
            } else {
                i64::MIN
            },
            newest_ms: read.newest_ms,
            paged: 0,
            seen: Vec::new(),
        }
    }

    /// One step of the current channel: a batch (maybe empty), or `None`
    /// when the channel is done.
    async fn step(&mut self, client: &Client, state: &mut MmState) -> Option<Vec<NewPost>> {
        let cur = self.current.as_mut()?;
        match &mut cur.phase {
            Phase::Rows(rows) => {
                if rows.is_empty() {
                    cur.phase = Phase::Backlogs;
                    return Some(Vec::new());
                }
                let n = rows.len().min(BATCH);
                let take: Vec<Post> = rows.drain(..n).collect();
                let since = cur.lower_ms;
                let batch = self.admit(client, state, take, since, None).await;
                self.hand(batch, None)
            }
            Phase::Pages {
                at,
                floor_ms,
                backlog,
            } => {
                let (at, floor_ms, backlog) = (at.clone(), *floor_ms, *backlog);
                if Instant::now() >= self.deadline {
                    self.cut_by_deadline("while a channel was read by pages");
                    return None;
                }
                let channel_id = cur.channel_id.clone();
                let rows = match self.within(read_page(client, &channel_id, &at)).await {
                    Ok(r) => r,
                    Err(e) => {
                        self.page_failed(backlog.is_some(), &e);
                        return None;
                    }
                };
                let cur = self.current.as_mut()?;
                cur.pages_left = cur.pages_left.saturating_sub(1);
                if backlog.is_none() {
                    let newest = rows.iter().map(|p| p.create_at.max(p.update_at)).max();
                    cur.newest_ms = cur.newest_ms.max(newest);
                    cur.paged += rows.len() as u64;
                }
                let refs: Vec<&Post> = rows.iter().collect();
                let next = next_pos(&at, &refs, floor_ms);
                let trailing: Vec<(String, i64)> = match &next {
                    Some(n) if n.page == 0 => rows
                        .iter()
                        .filter(|p| p.create_at < n.pivot_ms)
                        .map(|p| (p.id.clone(), p.create_at))
                        .collect(),
                    _ => Vec::new(),
                };
                // The usual read goes on past its budget only until it has a
                // pivot: a position from the newest post does not keep.
                let last = match &next {
                    None => true,
                    Some(n) => cur.pages_left == 0 && (backlog.is_some() || n.pivot.is_some()),
                };
                let page = PageDone {
                    next: next.clone(),
                    floor_ms,
                    backlog,
                    trailing,
                    rows: rows.len() as u64,
                    last,
                };
                // Without a backlog, the posts it already handled are in
                // `handled`; with one, in its `done`.
                let done: HashSet<String> = backlog
                    .and_then(|top| find(state, &cur.channel_id, top))
                    .map(|b| b.done.keys().cloned().collect())
                    .unwrap_or_default();
                let mut fresh = Vec::with_capacity(rows.len());
                let mut seen = HashSet::with_capacity(rows.len());
                for p in rows {
                    seen.insert(p.id.clone());
                    if cur.prev_page.contains(&p.id) || done.contains(&p.id) {
                        cur.answered.note(&p, &self.own_id);
                        continue;
                    }
                    fresh.push(p);
                }
                cur.prev_page = seen;
                cur.phase = match (&next, last) {
                    (Some(n), false) => Phase::Pages {
                        at: n.clone(),
                        floor_ms,
                        backlog,
                    },
                    _ => Phase::Backlogs,
                };
                fresh.reverse();
                let batch = self.admit(client, state, fresh, floor_ms, backlog).await;
                self.hand(batch, Some(page))
            }
            Phase::Backlogs => {
                let channel_id = cur.channel_id.clone();
                let next = state
                    .behind
                    .iter()
                    .filter(|b| *b.channel_id == *channel_id)
                    .filter(|b| !cur.backlogs_seen.contains(&b.top_ms))
                    .max_by_key(|b| b.top_ms)
                    .cloned();
                let Some(b) = next else {
                    self.close_channel(state);
                    return None;
                };
                cur.backlogs_seen.insert(b.top_ms);
                if cur.pages_left == 0 {
                    return Some(Vec::new());
                }
                cur.prev_page.clear();
                cur.phase = Phase::Pages {
                    at: b.at.clone(),
                    floor_ms: b.floor_ms,
                    backlog: Some(b.top_ms),
                };
                Some(Vec::new())
            }
        }
    }

    /// The current channel is done. The listing and the reads may come from
    /// different read replicas: a read that did not reach the post the
    /// listing counts as the newest is no ground for a quiet mark, nor for
    /// the channel's own `since`; one that did, with nothing of the channel
    /// pending, moves the channel's `since` on (`cursor.rs`).
    fn close_channel(&mut self, state: &mut MmState) {
        let Some(cur) = self.current.take() else {
            return;
        };
        if cur.newest_ms.is_none_or(|n| n < cur.last_post_at) {
            self.unread(&cur.channel_id);
            return;
        }
        if self.pending_channels.contains(&*cur.channel_id) {
            return;
        }
        if let Some(w) = self.outcome.watermark_ms {
            channel_read(state, &cur.channel_id, w - self.overlap_ms, &cur.seen);
        }
    }

    /// Records a batch as handed over (for [`Reader::settle`]).
    fn hand(&mut self, batch: Vec<NewPost>, page: Option<PageDone>) -> Option<Vec<NewPost>> {
        let cur = self.current.as_mut()?;
        let ids: Vec<(String, i64)> = batch.iter().map(|p| (p.id.clone(), p.create_at)).collect();
        if page.as_ref().is_none_or(|p| p.backlog.is_none()) {
            cur.seen.extend(ids.iter().cloned());
        }
        self.last = Some(Handed {
            channel_id: cur.channel_id.clone(),
            ids,
            page,
        });
        Some(batch)
    }

    /// A channel whose `since` answer failed: its team is not polled fully.
    fn channel_failed(&mut self, job: &Job, e: &MmError) {
        self.unread(&job.ch.id);
        self.fail(job.team.to_string(), e, true);
    }

    /// A page that failed: the usual read leaves the poll incomplete; a
    /// backlog stays where it was (it holds no cursor).
    fn page_failed(&mut self, backlog: bool, e: &MmError) {
        let Some(cur) = self.current.take() else {
            return;
        };
        self.unread(&cur.channel_id);
        let what = if backlog {
            format!("{} (backlog of {})", cur.team, cur.channel_name)
        } else {
            cur.team.to_string()
        };
        self.fail(what, e, !backlog);
    }

    fn fail(&mut self, what: String, e: &MmError, incomplete: bool) {
        if incomplete {
            self.outcome.complete = false;
        }
        if matches!(e.kind, MmErrorKind::RateLimited { .. }) || e.is_unreachable() {
            // Nothing is lost: the cursor stays, the next cycle retries.
            self.stop = true;
            self.outcome.complete = false;
        }
        if e.kind == MmErrorKind::Timeout && Instant::now() >= self.deadline {
            self.outcome.deadline_hit = true;
        }
        if !self.outcome.teams_failed.iter().any(|(t, _)| *t == what) {
            self.outcome.teams_failed.push((what, e.to_string()));
        }
    }

    fn cut_by_deadline(&mut self, when: &str) {
        self.stop = true;
        self.outcome.complete = false;
        self.outcome.deadline_hit = true;
        if let Some(cur) = self.current.take() {
            self.unread(&cur.channel_id);
        }
        tracing::warn!("The poll stopped at the deadline {when}; the rest is read next cycle.");
    }

    /// A channel that was not read fully gets no quiet mark.
    fn unread(&mut self, channel_id: &str) {
        if let Some(l) = self.outcome.listed.iter_mut().find(|l| l.id == channel_id) {
            l.read = false;
        }
    }

    /// Settles the last batch and closes the poll's figures: the channels
    /// not reached are unread, and so are those with pending posts.
    pub fn finish(&mut self, state: &mut MmState) {
        self.settle(state);
        if let Some(cur) = self.current.take() {
            // Stopped before the channel was done.
            self.unread(&cur.channel_id);
            self.outcome.complete = false;
        }
        let unread: Vec<String> = self
            .ready
            .drain(..)
            .map(|(j, _)| j.ch.id)
            .chain(self.jobs.drain(..).map(|j| j.ch.id))
            .collect();
        if !unread.is_empty() {
            self.outcome.complete = false;
        }
        for id in unread.iter().chain(self.pending_channels.clone().iter()) {
            self.unread(id);
        }
    }
}

/// How many `since` answers to read at once after `reads` came in at
/// `window`: a capped answer (a thousand posts, parsed only to be read
/// again by pages) is a megabyte or more, so after one the channels are
/// read one at a time; answers that all fit let the window double up to
/// `max`. It starts at one. Pure.
fn window_after(window: usize, max: usize, reads: &[Result<SinceRead, MmError>]) -> usize {
    if reads
        .iter()
        .any(|r| r.as_ref().is_ok_and(|r| r.page_instead))
    {
        1
    } else {
        (window * 2).min(max).max(1)
    }
}

/// The backlog of `channel_id` with `top_ms`.
fn find<'a>(state: &'a MmState, channel_id: &str, top_ms: i64) -> Option<&'a Backlog> {
    state
        .behind
        .iter()
        .find(|b| b.channel_id == channel_id && b.top_ms == top_ms)
}

/// The listing's channels of one team as jobs: every channel moved since
/// the cursor and not showing its quiet mark, and every channel with a
/// backlog. Each listed channel goes into `listed`.
pub(super) fn pick(
    team: &Arc<str>,
    channels: Vec<Channel>,
    state: &MmState,
    since_ms: i64,
    listed: &mut Vec<Listed>,
    quiet: &mut u32,
) -> Vec<Job> {
    let mut jobs = Vec::new();
    for c in channels {
        let mark = super::quiet::ChannelMark::of(&c);
        let is_quiet = state.quiet.get(&c.id) == Some(&mark);
        // The usual read starts above the channel's backlogs.
        let above = state
            .behind
            .iter()
            .filter(|b| b.channel_id == c.id)
            .map(|b| b.top_ms - 1)
            .max();
        let own = channel_lower(state, &c.id, since_ms);
        let lower = above.map_or(own, |a| a.max(own));
        *quiet += u32::from(c.last_post_at > lower && is_quiet);
        listed.push(Listed {
            id: c.id.clone(),
            mark,
            read: true,
        });
        let moved = c.last_post_at > lower && !is_quiet;
        if moved || above.is_some() {
            jobs.push(Job {
                team: Arc::clone(team),
                lower_ms: moved.then_some(lower),
                ch: c,
            });
        }
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(capped: bool) -> Result<SinceRead, MmError> {
        Ok(SinceRead {
            rows: Vec::new(),
            page_instead: capped,
            touched: Vec::new(),
            newest_ms: None,
        })
    }

    #[test]
    fn since_answers_are_read_one_at_a_time_after_a_capped_one_and_the_window_grows_on_small_ones()
    {
        let failed: Result<SinceRead, MmError> = Err(MmError {
            kind: MmErrorKind::Timeout,
            endpoint: String::new(),
            detail: String::new(),
        });
        // (window, answers, next window) with at most 4 at once.
        let table = [
            (1, vec![answer(false)], 2),
            (2, vec![answer(false), answer(false)], 4),
            (4, (0..4).map(|_| answer(false)).collect(), 4),
            (4, vec![answer(false), answer(true), answer(false)], 1),
            (1, vec![answer(true)], 1),
            (2, vec![failed, answer(false)], 4),
        ];
        for (i, (window, reads, want)) in table.into_iter().enumerate() {
            assert_eq!(window_after(window, 4, &reads), want, "case {i}");
        }
        assert_eq!(window_after(1, 1, &[answer(false)]), 1);
    }
}
