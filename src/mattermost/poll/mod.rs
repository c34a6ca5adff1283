//! The polling stage: every new post in the configured teams, handed over
//! exactly once.
//!
//! [`poll`] reads the teams' channel listings and the channels with
//! something new concurrently (`team.rs`), each channel by its `since`
//! answer and, when that may be incomplete, a backfill by pages
//! (`page.rs`), drops the posts the skip rules rule out (`skip.rs`) and
//! names the authors (`users.rs`). Around it the cycle keeps the cursor
//! (`cursor.rs`: read its invariant before touching the cursor) and the
//! quiet marks of channels only the agent itself wrote in (`quiet.rs`).

mod cursor;
mod page;
mod quiet;
mod skip;
mod team;
mod users;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::client::{Client, MmError, MmErrorKind};
use super::config::MattermostConfig;
use super::wire::{Channel, Post};
use team::TeamPoll;

pub(crate) use cursor::poll_since;
pub use cursor::{mark_handled, next_cursor, prune_handled};
pub use page::SINCE_CAP;
pub(crate) use quiet::{next_quiet, ChannelMark, Listed};
use skip::{author_skip, skip_reason, SkipCounts, SkippedPost};
use users::CachedUser;

/// What the Mattermost stage keeps between cycles (inside the state file).
/// Everything but `handled` is a cache that can be rebuilt with requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MmState {
    /// Server URL and credential source the caches below belong to.
    identity: String,
    /// The agent's own account.
    pub(crate) me: Option<CachedUser>,
    /// Team name → team id.
    pub teams: BTreeMap<String, String>,
    /// The `ignored_users` list the ids below were resolved from.
    ignored_source: Vec<String>,
    /// Ids of ignored users (resolved usernames plus entries given as ids).
    ignored_ids: BTreeSet<String>,
    /// Poster id → user, so usernames cost no request per cycle.
    users: BTreeMap<String, CachedUser>,
    /// Post id → create_at of every post fully handled (the cursor
    /// invariant of `cursor.rs`).
    pub(crate) handled: BTreeMap<String, i64>,
    /// Channel id → what it shows while nothing but the agent's own posts
    /// happened in it (see `quiet.rs`).
    pub(crate) quiet: BTreeMap<String, ChannelMark>,
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
    pub(crate) skipped_posts: Vec<SkippedPost>,
    /// Channels whose posts were fetched (the rest had nothing new).
    pub channels_fetched: u32,
    /// Channels fetched with page/before backfill because `since` may have been capped.
    pub channels_backfilled: u32,
    /// Server time when the poll started (earliest `Date` of the channel
    /// listings), else the newest server timestamp seen: the next cursor.
    watermark_ms: Option<i64>,
    /// True when every team was polled fully; only then may the cursor move.
    pub complete: bool,
    /// Every channel the listings showed, for [`next_quiet`].
    #[serde(skip)]
    pub(crate) listed: Vec<Listed>,
    /// Channels not read because they showed their quiet mark.
    channels_quiet: u32,
    /// Posts the answer brought back because they changed after they were
    /// created (a reaction, an edit, a reply), whoever wrote them: how the
    /// chat stage learns, for free, which of its replies got a reaction.
    pub(crate) touched: Vec<String>,
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
    let own_id = users::prepare(client, cfg, state, now_ms).await?;
    let results = team::poll_teams(client, cfg, state, since_ms, deadline).await;
    let mut outcome = gather(client, state, results, since_ms, &own_id)?;
    users::refresh_authors(client, state, &outcome.posts, now_ms).await;
    name_authors(&mut outcome, state, &cfg.ignored_users);
    // Ids are unique here, so the unstable sort (which needs no buffer)
    // gives the one order.
    outcome
        .posts
        .sort_unstable_by(|a, b| (a.create_at, &a.id).cmp(&(b.create_at, &b.id)));
    outcome.requests = client.requests().saturating_sub(start_requests);
    Ok(outcome)
}

/// Folds the teams' polls into one outcome: the team ids learnt, the
/// counts, the failures, the watermark, and every post that passes the
/// rules needing no author lookup. Errors when no team could be polled and
/// one found the server unreachable.
fn gather(
    client: &Client,
    state: &mut MmState,
    results: Vec<TeamPoll>,
    since_ms: i64,
    own_id: &str,
) -> Result<PollOutcome, MmError> {
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
    let mut admit = Admit::default();
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
        admit.team(&mut outcome, state, &r.team, r.posts, since_ms, own_id);
    }
    if let (false, Some(e)) = (any_ok, unreachable) {
        return Err(MmError {
            kind: MmErrorKind::Transport,
            endpoint: client.base_url().to_string(),
            detail: format!("no team could be polled: {e}"),
        });
    }
    outcome.watermark_ms = server_time.or((max_seen > i64::MIN).then_some(max_seen));
    Ok(outcome)
}

/// Turns the posts read into [`NewPost`]s, across the teams of one poll.
#[derive(Default)]
struct Admit {
    /// A post belongs to one channel, so a channel read twice (two team
    /// names for one team) is what could bring a post twice.
    seen_channels: HashSet<String>,
    /// Each author's id once, shared by all their posts.
    authors: HashSet<Arc<str>>,
}

impl Admit {
    /// Applies the rules that need no user lookup to one team's posts
    /// (first, so lookups are only for survivors); each post becomes its
    /// `NewPost` (the one copy kept) as soon as it passes them.
    fn team(
        &mut self,
        outcome: &mut PollOutcome,
        state: &MmState,
        team: &str,
        read: Vec<(Channel, Vec<Post>)>,
        since_ms: i64,
        own_id: &str,
    ) {
        let no_names: Vec<String> = Vec::new();
        let team: Arc<str> = team.into();
        for (ch, posts) in read {
            if !self.seen_channels.insert(ch.id.clone()) {
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
                    own_id,
                    &state.ignored_ids,
                    &no_names,
                    &state.handled,
                );
                if let Some(s) = rule {
                    outcome.skip(s, &p.id, &p.channel_id, &p.user_id, p.create_at);
                    continue;
                }
                let user_id = self.author(p.user_id);
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

    /// The shared copy of an author's id.
    fn author(&mut self, user_id: String) -> Arc<str> {
        match self.authors.get(user_id.as_str()) {
            Some(id) => Arc::clone(id),
            None => {
                let id: Arc<str> = user_id.into();
                self.authors.insert(Arc::clone(&id));
                id
            }
        }
    }
}

/// The rules that look at the author ([`author_skip`]), on the posts that
/// passed every other rule, now that their authors are looked up; the
/// survivors get their author's username, one copy per author.
fn name_authors(outcome: &mut PollOutcome, state: &MmState, ignored_names: &[String]) {
    let mut posts = std::mem::take(&mut outcome.posts);
    let mut names: HashMap<Arc<str>, Arc<str>> = HashMap::new();
    posts.retain_mut(|p| {
        let user = state.users.get(&*p.user_id);
        let rule = author_skip(&p.user_id, user, &state.ignored_ids, ignored_names);
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
    outcome.posts = posts;
}

#[cfg(test)]
/// Posts for the tests of this stage's files.
mod testkit {
    use super::*;

    pub(super) fn post(id: &str, user: &str, create_at: i64) -> Post {
        Post {
            id: id.into(),
            user_id: user.into(),
            create_at,
            update_at: create_at,
            ..Default::default()
        }
    }

    pub(super) fn new_post(id: &str, create_at: i64) -> NewPost {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_state_files_load() {
        let st: MmState = serde_json::from_str(r#"{"teams":{"basic":"t1"}}"#).unwrap();
        assert_eq!(st.teams["basic"], "t1");
        assert!(st.handled.is_empty());
    }
}
