//! The polling stage: every new post in the configured teams, handed over
//! exactly once, a batch at a time.
//!
//! [`start`] readies the caches (`users.rs`) and reads the teams' channel
//! listings (`team.rs`); the [`Reader`] it gives back reads the channels
//! with something new (`read.rs`), each by its `since` answer or by pages
//! of its history (`page.rs`), drops the posts the skip rules rule out
//! (`skip.rs`), names the authors, and hands the rest over one batch at a
//! time, so memory never holds the backlog. A channel with more new posts
//! than a cycle reads keeps the rest as a backlog that the next cycles read
//! on (`backlog.rs`). Around it the cycle keeps the cursor (`cursor.rs`:
//! read its invariant before touching the cursor), the quiet marks of
//! channels only the agent itself wrote in (`quiet.rs`), and the cut-over
//! from the old daemon's state (`cut_over.rs`).

mod backlog;
mod cursor;
mod cut_over;
mod page;
mod quiet;
mod read;
mod skip;
mod team;
mod users;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::client::{Client, MmError, MmErrorKind};
use super::config::MattermostConfig;
use team::TeamListing;

pub(crate) use backlog::Backlog;
pub(crate) use cursor::poll_since;
pub use cursor::{mark_handled, next_cursor, prune_handled};
pub(crate) use cut_over::{note as note_cut_over, retire as retire_cut_over, CutOver};
pub use page::SINCE_CAP;
pub(crate) use quiet::{next_quiet, ChannelMark, Listed};
pub use read::Reader;
use skip::SkipCounts;
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
    /// Channel id → where its next read starts while that is later than
    /// the cursor's `since`: the channel was read to its newest post and
    /// all of it handled (see `cursor.rs`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) channel_since: BTreeMap<String, i64>,
    /// Channel id → what it shows while nothing but the agent's own posts
    /// happened in it (see `quiet.rs`).
    pub(crate) quiet: BTreeMap<String, ChannelMark>,
    /// Channels catching up: what of their history is still to read (see
    /// `backlog.rs`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) behind: Vec<Backlog>,
    /// The old daemon's cursor, while the poll could still reach back
    /// past it (see `cut_over.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cut_over: Option<CutOver>,
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

/// The figures of one poll, complete once [`Reader::finish`] ran.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PollOutcome {
    /// Posts handed over.
    pub posts_new: u64,
    /// Requests this poll sent (including logins and retries).
    pub requests: u32,
    /// Teams (or channels' backlogs) that could not be read fully, with why.
    pub teams_failed: Vec<(String, String)>,
    /// Skipped posts per rule.
    pub skipped: SkipCounts,
    /// Channels whose posts were fetched (the rest had nothing new).
    pub channels_fetched: u32,
    /// Channels read by pages because `since` may have been capped.
    pub channels_backfilled: u32,
    /// Server time when the poll started (earliest `Date` of the channel
    /// listings), else the newest server timestamp listed: the next cursor.
    pub watermark_ms: Option<i64>,
    /// True when every channel was read fully (a backlog left for the next
    /// cycles counts as read); only then may the cursor move.
    pub complete: bool,
    /// The deadline stopped the reads.
    pub deadline_hit: bool,
    /// The oldest post of a channel's usual read handed over but not
    /// handled: the cursor stays before it.
    pub oldest_pending: Option<i64>,
    /// Every channel the listings showed, for [`next_quiet`].
    #[serde(skip)]
    pub(crate) listed: Vec<Listed>,
    /// Channels not read because they showed their quiet mark.
    pub channels_quiet: u32,
    /// Posts the answers brought back because they changed after they were
    /// created (a reaction, an edit, a reply), whoever wrote them: how the
    /// chat stage learns, for free, which of its replies got a reaction.
    pub touched: Vec<String>,
}

/// Readies the caches and reads every configured team's channel listing;
/// the [`Reader`] then reads the channels. Errors only when Mattermost
/// cannot be used at all (unreachable, credentials refused); a single
/// team's trouble is reported in [`PollOutcome::teams_failed`] and keeps
/// the cursor.
pub async fn start(
    client: &Client,
    cfg: &MattermostConfig,
    state: &mut MmState,
    since_ms: i64,
    now_ms: i64,
    deadline: Instant,
) -> Result<Reader, MmError> {
    client.set_deadline(deadline);
    let start_requests = client.requests();
    let own_id = users::prepare(client, cfg, state, now_ms).await?;
    let listings = team::list_teams(client, cfg, state).await;
    let (mut outcome, jobs) = gather(client, state, listings, since_ms)?;
    outcome.requests = client.requests().saturating_sub(start_requests);
    // The `Date` header counts whole seconds; the newest post listed is
    // exact.
    let newest = outcome.listed.iter().map(|l| l.mark.last_post_at).max();
    let server_ms = outcome.watermark_ms.map_or(now_ms, |w| w + 999);
    cut_over::listed(state, server_ms.max(newest.unwrap_or(i64::MIN)));
    Ok(Reader::new(
        state, jobs, outcome, since_ms, own_id, now_ms, deadline, cfg,
    ))
}

/// Folds the teams' listings into the poll's figures and the channels to
/// read: the team ids learnt, the failures, the watermark. Errors when no
/// team could be listed and one found the server unreachable.
fn gather(
    client: &Client,
    state: &mut MmState,
    listings: Vec<TeamListing>,
    since_ms: i64,
) -> Result<(PollOutcome, VecDeque<read::Job>), MmError> {
    let mut outcome = PollOutcome {
        complete: true,
        ..Default::default()
    };
    let mut jobs = VecDeque::new();
    let mut server_time: Option<i64> = None;
    let mut max_seen = i64::MIN;
    let mut unreachable: Option<String> = None;
    let mut any_ok = false;
    let mut seen_channels = BTreeSet::new();
    for l in listings {
        match (&l.team_id, l.team_gone) {
            (_, true) => {
                state.teams.remove(&l.team);
            }
            (Some(id), false) => {
                state.teams.insert(l.team.clone(), id.clone());
            }
            _ => {}
        }
        if let Some(t) = l.server_time_ms {
            server_time = Some(server_time.map_or(t, |s: i64| s.min(t)));
        }
        match &l.error {
            Some(e) => {
                outcome.complete = false;
                if l.unreachable {
                    unreachable.get_or_insert_with(|| e.clone());
                }
                outcome.teams_failed.push((l.team.clone(), e.clone()));
                continue;
            }
            None => any_ok = true,
        }
        // A channel belongs to one team, so a team named twice is read once.
        let channels: Vec<_> = l
            .channels
            .into_iter()
            .filter(|c| seen_channels.insert(c.id.clone()))
            .collect();
        for c in &channels {
            max_seen = max_seen.max(c.last_post_at);
        }
        let team: Arc<str> = l.team.as_str().into();
        let picked = read::pick(
            &team,
            channels,
            state,
            since_ms,
            &mut outcome.listed,
            &mut outcome.channels_quiet,
        );
        jobs.extend(picked);
    }
    if let (false, Some(e)) = (any_ok, unreachable) {
        return Err(MmError {
            kind: MmErrorKind::Transport,
            endpoint: client.base_url().to_string(),
            detail: format!("no team could be polled: {e}"),
        });
    }
    outcome.watermark_ms = server_time.or((max_seen > i64::MIN).then_some(max_seen));
    Ok((outcome, jobs))
}

#[cfg(test)]
/// Posts for the tests of this stage's files.
mod testkit {
    use crate::mattermost::wire::Post;

    pub(super) fn post(id: &str, user: &str, create_at: i64) -> Post {
        Post {
            id: id.into(),
            user_id: user.into(),
            create_at,
            update_at: create_at,
            ..Default::default()
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
