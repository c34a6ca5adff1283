//! The polling stage: every new post in the configured teams, handed over
//! exactly once, plus the pure rules for skipping posts and moving the cursor.
//!
//! # What `since` really returns
//! `GET /channels/{id}/posts?since=T` matches `update_at > T` (edits,
//! reactions, replies and deletions bring old posts back), at most 1000
//! rows with no ORDER BY, and mixes thread roots into `posts`. So the poller
//! iterates `order` only, dedupes by id, treats a post as new only when its
//! `create_at > since`, and when a channel answered 1000 rows (or nothing
//! although its `last_post_at` moved) it backfills with `page`/`before`
//! paging down to `since`.
//!
//! # The cursor invariant
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
//!
//! # Quiet channels
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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::client::{Client, MmError, MmErrorKind, MAX_PER_PAGE};
use super::config::MattermostConfig;
use super::wire::{Channel, Post, PostList};
use super::REPLY_PROP;

/// The server's row cap for `since` queries.
pub const SINCE_CAP: usize = 1000;

/// Backfill stops after this many pages of one channel (40,000 posts).
const MAX_BACKFILL_PAGES: u32 = 200;

/// Handled ids are kept at least this long.
pub const HANDLED_RETENTION_MS: i64 = 24 * 3600 * 1000;

/// Cached user lookups are refreshed after this long.
const USER_CACHE_MS: i64 = 24 * 3600 * 1000;

/// At most this many cached users (the state file must stay bounded).
const USER_CACHE_MAX: usize = 5000;

/// A user as far as skip rules and reports care.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CachedUser {
    /// User id.
    pub id: String,
    /// Username.
    pub username: String,
    /// Bot account.
    pub is_bot: bool,
    /// When it was looked up (epoch ms, local clock), for refreshing.
    pub checked_ms: i64,
}

/// What the Mattermost stage keeps between cycles (inside the state file).
/// Everything but `handled` is a cache that can be rebuilt with requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MmState {
    /// Server URL and credential source the caches below belong to.
    pub identity: String,
    /// The agent's own account.
    pub me: Option<CachedUser>,
    /// Team name → team id.
    pub teams: BTreeMap<String, String>,
    /// The `ignored_users` list the ids below were resolved from.
    pub ignored_source: Vec<String>,
    /// Ids of ignored users (resolved usernames plus entries given as ids).
    pub ignored_ids: BTreeSet<String>,
    /// Poster id → user, so usernames cost no request per cycle.
    pub users: BTreeMap<String, CachedUser>,
    /// Post id → create_at of every post fully handled (see the module doc).
    pub handled: BTreeMap<String, i64>,
    /// Channel id → what it shows while nothing but the agent's own posts
    /// happened in it (see "Quiet channels" in the module doc).
    pub quiet: BTreeMap<String, ChannelMark>,
}

/// A channel's "anything new?" figures, as the channel listing shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMark {
    /// `last_post_at`.
    pub last_post_at: i64,
    /// `total_msg_count`.
    pub total_msg_count: i64,
}

impl ChannelMark {
    /// The figures of a listed channel.
    pub fn of(c: &Channel) -> ChannelMark {
        ChannelMark {
            last_post_at: c.last_post_at,
            total_msg_count: c.total_msg_count,
        }
    }
}

/// A channel as this poll's listing showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Channel id.
    pub id: String,
    /// Its figures in the listing.
    pub mark: ChannelMark,
    /// Everything new in it was read (nothing new, quiet, or fetched fully).
    pub read: bool,
}

/// A post handed to the later stages. The fields that repeat across posts
/// (team, channel, author) are shared: at 10,000 posts a copy each was
/// megabytes of peak memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewPost {
    /// Post id.
    pub id: String,
    /// Configured team name (billing is per team).
    pub team: Arc<str>,
    /// Channel id.
    pub channel_id: Arc<str>,
    /// Channel URL name.
    pub channel_name: Arc<str>,
    /// Author id.
    pub user_id: Arc<str>,
    /// Author username (the id when it could not be looked up).
    pub username: Arc<str>,
    /// Author is a bot (never true for posts from [`poll`]; replies re-check it).
    pub is_bot: bool,
    /// Thread root, "" when the post is itself top-level.
    pub root_id: String,
    /// Text.
    pub message: String,
    /// Server creation time, epoch ms.
    pub create_at: i64,
    /// Server update time, epoch ms.
    pub update_at: i64,
    /// Post props (for the reply's last-defence checks).
    pub props: Map<String, Value>,
}

/// Why a post was not handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
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
}

impl Skip {
    /// The rule's name in the audit trail.
    pub fn code(self) -> &'static str {
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
        }
    }

    /// A rule that decides about a new post of someone else (the others
    /// only recognise posts already seen, or the agent's own).
    pub fn is_decision(self) -> bool {
        matches!(
            self,
            Skip::Bot | Skip::Webhook | Skip::System | Skip::IgnoredUser
        )
    }
}

/// A post skipped by a rule that decides about it ([`Skip::is_decision`]),
/// for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedPost {
    /// Post id.
    pub id: String,
    /// Channel id.
    pub channel_id: String,
    /// Author id.
    pub user_id: String,
    /// Server creation time, epoch ms.
    pub create_at: i64,
    /// The rule ([`Skip::code`]).
    pub reason: &'static str,
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
}

impl SkipCounts {
    fn add(&mut self, s: Skip) {
        let c = match s {
            Skip::Deleted => &mut self.deleted,
            Skip::AlreadyHandled => &mut self.already_handled,
            Skip::BeforeCursor => &mut self.before_cursor,
            Skip::Own | Skip::AgentReply => &mut self.own,
            Skip::Bot => &mut self.bot,
            Skip::Webhook => &mut self.webhook,
            Skip::System => &mut self.system,
            Skip::IgnoredUser => &mut self.ignored_user,
        };
        *c += 1;
    }

    /// Total skipped.
    pub fn total(&self) -> u32 {
        self.deleted
            + self.already_handled
            + self.before_cursor
            + self.own
            + self.bot
            + self.webhook
            + self.system
            + self.ignored_user
    }
}

/// The result of one poll.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PollOutcome {
    /// New posts, oldest first (handle them in this order).
    pub posts: Vec<NewPost>,
    /// Requests this poll sent (including logins and retries).
    pub requests: u32,
    /// Teams that could not be polled fully, with the reason.
    pub teams_failed: Vec<(String, String)>,
    /// Skipped posts per rule.
    pub skipped: SkipCounts,
    /// The skipped posts a rule decided about, for the audit trail.
    pub skipped_posts: Vec<SkippedPost>,
    /// Channels whose posts were fetched (the rest had nothing new).
    pub channels_fetched: u32,
    /// Channels fetched with page/before backfill because `since` may have been capped.
    pub channels_backfilled: u32,
    /// Server time when the poll started (earliest `Date` of the channel
    /// listings), else the newest server timestamp seen: the next cursor.
    pub watermark_ms: Option<i64>,
    /// True when every team was polled fully; only then may the cursor move.
    pub complete: bool,
    /// Every channel the listings showed, for [`next_quiet`].
    #[serde(skip)]
    pub listed: Vec<Listed>,
    /// Channels not read because they showed their quiet mark.
    pub channels_quiet: u32,
    /// Posts the answer brought back because they changed after they were
    /// created (a reaction, an edit, a reply), whoever wrote them: how the
    /// chat stage learns, for free, which of its replies got a reaction.
    pub touched: Vec<String>,
}

impl PollOutcome {
    /// Counts a skipped post, and lists it when a rule decided about it.
    fn skip(&mut self, s: Skip, id: &str, channel_id: &str, user_id: &str, create_at: i64) {
        self.skipped.add(s);
        if s.is_decision() {
            self.skipped_posts.push(SkippedPost {
                id: id.to_string(),
                channel_id: channel_id.to_string(),
                user_id: user_id.to_string(),
                create_at,
                reason: s.code(),
            });
        }
    }
}

/// The pure skip rules, in order. `user` is the author when known.
pub fn skip_reason(
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
pub fn author_skip(
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

/// Records that a post went through every later stage; from now on it is
/// never handed over again.
pub fn mark_handled(state: &mut MmState, post_id: &str, create_at: i64) {
    state.handled.insert(post_id.to_string(), create_at);
}

/// The `since` of this cycle's poll: the cursor minus the overlap window
/// (a post may become visible after a later one), or, on a first run (no
/// cursor), `first_run_lookback_ms` before now.
pub fn poll_since(
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

/// Runs futures concurrently on the current task (no `'static` needed, so
/// they can borrow the client); concurrency is bounded by semaphores inside.
/// The quiet marks for the next poll (see "Quiet channels" in the module
/// doc). `own` is every post the agent made this cycle as (channel id,
/// create_at); `pending` the channels of posts handed over but not
/// handled; `next_since_ms` the next poll's `since`, before which a mark is
/// not needed. Pure.
pub fn next_quiet(
    listed: &[Listed],
    own: &[(String, i64)],
    pending: &BTreeSet<String>,
    next_since_ms: i64,
) -> BTreeMap<String, ChannelMark> {
    let mut marks = BTreeMap::new();
    for ch in listed.iter().filter(|c| c.read && !pending.contains(&c.id)) {
        let mut mark = ch.mark;
        for (_, at) in own.iter().filter(|(id, _)| *id == ch.id) {
            mark.last_post_at = mark.last_post_at.max(*at);
            mark.total_msg_count += 1;
        }
        if mark.last_post_at > next_since_ms {
            marks.insert(ch.id.clone(), mark);
        }
    }
    marks
}

async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => out[i] = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// What one team's poll produced.
struct TeamPoll {
    team: String,
    team_id: Option<String>,
    /// Each channel read, with its posts.
    posts: Vec<(Channel, Vec<Post>)>,
    listed: Vec<Listed>,
    quiet: u32,
    server_time_ms: Option<i64>,
    max_seen_ms: i64,
    fetched: u32,
    backfilled: u32,
    error: Option<String>,
    unreachable: bool,
    team_gone: bool,
}

/// Polls every configured team once. Errors only when Mattermost cannot be
/// used at all (unreachable, credentials refused); a single team's trouble
/// is reported in [`PollOutcome::teams_failed`] and keeps the cursor.
pub async fn poll(
    client: &Client,
    cfg: &MattermostConfig,
    state: &mut MmState,
    since_ms: i64,
    now_ms: i64,
    deadline: Instant,
) -> Result<PollOutcome, MmError> {
    client.set_deadline(deadline);
    let start_requests = client.requests();
    let identity = client.identity();
    if state.identity != identity {
        // Another server or account: every cached id may be wrong.
        *state = MmState {
            identity,
            handled: std::mem::take(&mut state.handled),
            ..Default::default()
        };
    }
    let own_id = ensure_me(client, state, now_ms).await?;
    if state.ignored_source != cfg.ignored_users {
        match client.users_by_usernames(&cfg.ignored_users).await {
            Ok(users) => {
                state.ignored_ids = users.into_iter().map(|u| u.id).collect();
                state.ignored_source = cfg.ignored_users.clone();
            }
            Err(e) if e.is_unreachable() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "Could not resolve ignored usernames; matching them by name only.")
            }
        }
    }

    let sem = Arc::new(Semaphore::new(cfg.channel_concurrency.max(1)));
    let futs = cfg
        .teams
        .iter()
        .map(|t| {
            poll_team(
                client,
                t,
                state.teams.get(t).cloned(),
                &state.quiet,
                since_ms,
                &sem,
                deadline,
            )
        })
        .collect();
    let results: Vec<TeamPoll> = join_all(futs).await;

    let mut outcome = PollOutcome {
        complete: true,
        ..Default::default()
    };
    // Room for every post read, so the list is never copied to grow: at
    // 10,000 posts the doubling was megabytes of peak memory.
    let read: usize = results
        .iter()
        .flat_map(|r| &r.posts)
        .map(|(_, posts)| posts.len())
        .sum();
    outcome.posts.reserve_exact(read);
    let mut server_time: Option<i64> = None;
    let mut max_seen = i64::MIN;
    // A post belongs to one channel, so a channel read twice (two team
    // names for one team) is what could bring a post twice.
    let mut seen_channels: HashSet<String> = HashSet::new();
    // Each author's id once, shared by all their posts.
    let mut authors: HashSet<Arc<str>> = HashSet::new();
    let mut unreachable: Option<String> = None;
    let mut any_ok = false;
    for r in results {
        match (&r.team_id, r.team_gone) {
            (_, true) => {
                state.teams.remove(&r.team);
            }
            (Some(id), false) => {
                state.teams.insert(r.team.clone(), id.clone());
            }
            _ => {}
        }
        outcome.channels_fetched += r.fetched;
        outcome.channels_backfilled += r.backfilled;
        outcome.channels_quiet += r.quiet;
        outcome.listed.extend(r.listed);
        max_seen = max_seen.max(r.max_seen_ms);
        if let Some(t) = r.server_time_ms {
            server_time = Some(server_time.map_or(t, |s: i64| s.min(t)));
        }
        match &r.error {
            Some(e) => {
                outcome.complete = false;
                if r.unreachable {
                    unreachable.get_or_insert_with(|| e.clone());
                }
                outcome.teams_failed.push((r.team.clone(), e.clone()));
            }
            None => any_ok = true,
        }
        // Rules that need no user lookup first, so lookups are only for
        // survivors; each post becomes its `NewPost` (the one copy kept)
        // as soon as it passes them.
        let no_names: Vec<String> = Vec::new();
        let team: Arc<str> = r.team.as_str().into();
        for (ch, posts) in r.posts {
            if !seen_channels.insert(ch.id.clone()) {
                continue;
            }
            let channel_id: Arc<str> = ch.id.as_str().into();
            let channel_name: Arc<str> = ch.name.as_str().into();
            for p in posts {
                if p.update_at > p.create_at && p.delete_at == 0 {
                    outcome.touched.push(p.id.clone());
                }
                let known = state.users.get(&p.user_id);
                let rule = skip_reason(
                    &p,
                    known,
                    since_ms,
                    &own_id,
                    &state.ignored_ids,
                    &no_names,
                    &state.handled,
                );
                if let Some(s) = rule {
                    outcome.skip(s, &p.id, &p.channel_id, &p.user_id, p.create_at);
                    continue;
                }
                let user_id = match authors.get(p.user_id.as_str()) {
                    Some(id) => Arc::clone(id),
                    None => {
                        let id: Arc<str> = p.user_id.into();
                        authors.insert(Arc::clone(&id));
                        id
                    }
                };
                outcome.posts.push(NewPost {
                    username: Arc::clone(&user_id),
                    is_bot: false,
                    id: p.id,
                    team: Arc::clone(&team),
                    channel_id: Arc::clone(&channel_id),
                    channel_name: Arc::clone(&channel_name),
                    user_id,
                    root_id: p.root_id,
                    message: p.message,
                    create_at: p.create_at,
                    update_at: p.update_at,
                    props: p.props,
                });
            }
        }
    }
    if let (false, Some(e)) = (any_ok, unreachable) {
        return Err(MmError {
            kind: MmErrorKind::Transport,
            endpoint: client.base_url().to_string(),
            detail: format!("no team could be polled: {e}"),
        });
    }
    outcome.watermark_ms = server_time.or((max_seen > i64::MIN).then_some(max_seen));

    let missing: Vec<String> = outcome
        .posts
        .iter()
        .map(|p| &*p.user_id)
        .filter(|id| {
            state
                .users
                .get(*id)
                .is_none_or(|u| now_ms - u.checked_ms > USER_CACHE_MS)
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(str::to_string)
        .collect();
    if !missing.is_empty() {
        match client.users_by_ids(&missing).await {
            Ok(users) => {
                if state.users.len() + users.len() > USER_CACHE_MAX {
                    state.users.clear();
                }
                for u in users {
                    state.users.insert(
                        u.id.clone(),
                        CachedUser {
                            id: u.id,
                            username: u.username,
                            is_bot: u.is_bot,
                            checked_ms: now_ms,
                        },
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "Could not look up post authors; usernames stay unknown this cycle.")
            }
        }
    }
    drop(authors);
    let mut posts = std::mem::take(&mut outcome.posts);
    // Each author's username once, shared by all their posts.
    let mut names: HashMap<Arc<str>, Arc<str>> = HashMap::new();
    posts.retain_mut(|p| {
        let user = state.users.get(&*p.user_id);
        let rule = author_skip(&p.user_id, user, &state.ignored_ids, &cfg.ignored_users);
        if let Some(s) = rule {
            outcome.skip(s, &p.id, &p.channel_id, &p.user_id, p.create_at);
            return false;
        }
        if let Some(u) = user {
            let name = names
                .entry(Arc::clone(&p.user_id))
                .or_insert_with(|| u.username.as_str().into());
            p.username = Arc::clone(name);
        }
        p.is_bot = user.is_some_and(|u| u.is_bot);
        true
    });
    posts.shrink_to_fit();
    // Ids are unique here, so the unstable sort (which needs no buffer)
    // gives the one order.
    posts.sort_unstable_by(|a, b| (a.create_at, &a.id).cmp(&(b.create_at, &b.id)));
    outcome.posts = posts;
    outcome.requests = client.requests().saturating_sub(start_requests);
    Ok(outcome)
}

/// The agent's own id: cached for 24 h, refreshed when the login says otherwise.
async fn ensure_me(client: &Client, state: &mut MmState, now_ms: i64) -> Result<String, MmError> {
    let fresh = state
        .me
        .as_ref()
        .filter(|m| now_ms - m.checked_ms <= USER_CACHE_MS)
        .filter(|m| client.own_user_id().is_none_or(|id| id == m.id));
    if let Some(m) = fresh {
        client.set_own_user_id(&m.id);
        return Ok(m.id.clone());
    }
    let u = client.me().await?;
    state.me = Some(CachedUser {
        id: u.id.clone(),
        username: u.username,
        is_bot: u.is_bot,
        checked_ms: now_ms,
    });
    Ok(u.id)
}

async fn poll_team(
    client: &Client,
    team: &str,
    cached_id: Option<String>,
    quiet: &BTreeMap<String, ChannelMark>,
    since_ms: i64,
    sem: &Arc<Semaphore>,
    deadline: Instant,
) -> TeamPoll {
    let mut out = TeamPoll {
        team: team.to_string(),
        team_id: None,
        posts: Vec::new(),
        listed: Vec::new(),
        quiet: 0,
        server_time_ms: None,
        max_seen_ms: i64::MIN,
        fetched: 0,
        backfilled: 0,
        error: None,
        unreachable: false,
        team_gone: false,
    };
    let mut was_cached = cached_id.is_some();
    let mut team_id = cached_id;
    let listing = loop {
        let id = match team_id.clone() {
            Some(id) => id,
            None => match client.team_by_name(team).await {
                Ok(t) => t.id,
                Err(e) => {
                    out.unreachable = e.is_unreachable();
                    out.team_gone = e.kind == MmErrorKind::NotFound;
                    out.error = Some(if out.team_gone {
                        format!("team '{team}' not found ({e})")
                    } else {
                        e.to_string()
                    });
                    return out;
                }
            },
        };
        match client.my_channels(&id).await {
            Ok(l) => {
                out.team_id = Some(id);
                break l;
            }
            // A cached id that went stale (team re-created): resolve once more.
            Err(e)
                if was_cached
                    && matches!(e.kind, MmErrorKind::NotFound | MmErrorKind::Forbidden) =>
            {
                tracing::info!(team, error = %e, "Cached team id is stale; resolving the team again.");
                was_cached = false;
                team_id = None;
            }
            Err(e) => {
                out.team_id = Some(id);
                out.unreachable = e.is_unreachable();
                out.error = Some(e.to_string());
                return out;
            }
        }
    };
    let (channels, server_time) = listing;
    out.server_time_ms = server_time;
    let team_id = out.team_id.clone().unwrap_or_default();
    let mut active: Vec<Channel> = Vec::new();
    for c in channels.into_iter().filter(|c| c.team_id == team_id) {
        out.max_seen_ms = out.max_seen_ms.max(c.last_post_at);
        let mark = ChannelMark::of(&c);
        let is_quiet = quiet.get(&c.id) == Some(&mark);
        out.quiet += u32::from(c.last_post_at > since_ms && is_quiet);
        // Read unless it is fetched below and that fails.
        out.listed.push(Listed {
            id: c.id.clone(),
            mark,
            read: true,
        });
        if c.last_post_at > since_ms && !is_quiet {
            active.push(c);
        }
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let futs = active
        .iter()
        .map(|ch| async {
            let _permit = sem.acquire().await.expect("semaphore is never closed");
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            if Instant::now() >= deadline {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                let e = format!("deadline reached before channel {} was read", ch.name);
                return Some(Err((e, false)));
            }
            let r = fetch_channel(client, ch, since_ms, deadline).await;
            if let Err(e) = &r {
                if matches!(e.kind, MmErrorKind::RateLimited { .. }) || e.is_unreachable() {
                    // Nothing is lost: the cursor stays, the next cycle retries.
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Some(r.map_err(|e| (e.to_string(), e.is_unreachable())))
        })
        .collect();
    let results = join_all(futs).await;
    for (r, ch) in results.into_iter().zip(active) {
        match r {
            Some(Ok((posts, backfilled))) => {
                out.fetched += 1;
                out.backfilled += u32::from(backfilled);
                // The listing and the read may come from different read
                // replicas: a read that did not reach the post the listing
                // counts as the newest is no ground for a quiet mark.
                let newest = posts.iter().map(|p| p.create_at.max(p.update_at)).max();
                if newest.is_none_or(|n| n < ch.last_post_at) {
                    out.unread(&ch.id);
                }
                for p in &posts {
                    out.max_seen_ms = out.max_seen_ms.max(p.update_at);
                }
                out.posts.push((ch, posts));
            }
            Some(Err((e, unreachable))) => {
                out.unreachable |= unreachable && out.error.is_none();
                out.error.get_or_insert(e);
                out.unread(&ch.id);
            }
            None => {
                out.error
                    .get_or_insert_with(|| "stopped after an earlier failure".into());
                out.unread(&ch.id);
            }
        }
    }
    out
}

impl TeamPoll {
    /// A channel whose fetch did not finish: it gets no quiet mark.
    fn unread(&mut self, channel_id: &str) {
        if let Some(l) = self.listed.iter_mut().find(|l| l.id == channel_id) {
            l.read = false;
        }
    }
}

/// Every post of one channel that `since` matches, deduped, plus a
/// backfill when the answer may be capped. Returns (posts, backfilled).
async fn fetch_channel(
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
        take_rows(list, &mut seen, &mut posts);
        match after {
            Some(p) => next = p,
            None => return Ok((posts, true)),
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
    use super::*;

    fn post(id: &str, user: &str, create_at: i64) -> Post {
        Post {
            id: id.into(),
            user_id: user.into(),
            create_at,
            update_at: create_at,
            ..Default::default()
        }
    }

    fn new_post(id: &str, create_at: i64) -> NewPost {
        NewPost {
            id: id.into(),
            team: "t".into(),
            channel_id: "c".into(),
            channel_name: "c".into(),
            user_id: "u".into(),
            username: "u".into(),
            is_bot: false,
            root_id: String::new(),
            message: String::new(),
            create_at,
            update_at: create_at,
            props: Map::new(),
        }
    }

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
    fn old_state_files_load() {
        let st: MmState = serde_json::from_str(r#"{"teams":{"basic":"t1"}}"#).unwrap();
        assert_eq!(st.teams["basic"], "t1");
        assert!(st.handled.is_empty());
    }

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
        let pending: BTreeSet<String> = ["busy".to_string()].into();
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
            // A post in it is still pending: it must be read again.
            (listed("busy", 150, 7, true), vec![own("busy", 160)], None),
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
            let got = next_quiet(std::slice::from_ref(&ch), &own, &pending, 100);
            assert_eq!(got.get(&ch.id).copied(), want, "case {i}");
            assert!(got.len() <= 1, "case {i}: only listed channels");
        }
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
