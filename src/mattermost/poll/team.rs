//! One team's part of a poll: its channel listing, which channels have
//! something new, and their reads, all teams and channels concurrently
//! under one limit (`channel_concurrency`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::future::join_all;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::page::fetch_channel;
use super::quiet::{ChannelMark, Listed};
use super::MmState;
use crate::mattermost::client::{Client, MmErrorKind};
use crate::mattermost::config::MattermostConfig;
use crate::mattermost::wire::{Channel, Post};

/// What one team's poll produced.
pub(super) struct TeamPoll {
    pub(super) team: String,
    pub(super) team_id: Option<String>,
    /// Each channel read, with its posts.
    pub(super) posts: Vec<(Channel, Vec<Post>)>,
    pub(super) listed: Vec<Listed>,
    pub(super) quiet: u32,
    pub(super) server_time_ms: Option<i64>,
    pub(super) max_seen_ms: i64,
    pub(super) fetched: u32,
    pub(super) backfilled: u32,
    pub(super) error: Option<String>,
    pub(super) unreachable: bool,
    pub(super) team_gone: bool,
}

/// One channel's read: its posts and whether it was backfilled, the error
/// and whether it says the server is unreachable, or `None` when the read
/// was not started because an earlier one failed.
type ChannelRead = Option<Result<(Vec<Post>, bool), (String, bool)>>;

/// Polls every configured team, concurrently; one result per team, in the
/// order of `cfg.teams`. `join_all` rather than spawned tasks: the polls
/// borrow the client and the state.
pub(super) async fn poll_teams(
    client: &Client,
    cfg: &MattermostConfig,
    state: &MmState,
    since_ms: i64,
    deadline: Instant,
) -> Vec<TeamPoll> {
    let sem = Semaphore::new(cfg.channel_concurrency.max(1));
    join_all(cfg.teams.iter().map(|t| {
        poll_team(
            client,
            t,
            state.teams.get(t).cloned(),
            &state.quiet,
            since_ms,
            &sem,
            deadline,
        )
    }))
    .await
}

async fn poll_team(
    client: &Client,
    team: &str,
    cached_id: Option<String>,
    quiet: &BTreeMap<String, ChannelMark>,
    since_ms: i64,
    sem: &Semaphore,
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
    let Some((channels, server_time)) = list_channels(client, team, cached_id, &mut out).await
    else {
        return out;
    };
    out.server_time_ms = server_time;
    let active = out.pick_active(channels, quiet, since_ms);
    let reads = read_channels(client, &active, since_ms, sem, deadline).await;
    for (r, ch) in reads.into_iter().zip(active) {
        out.take_read(ch, r);
    }
    out
}

/// The team's channel listing and the server time of the answer. A cached
/// team id that went stale (team re-created) is resolved once more; a
/// failure is recorded in `out` and gives `None`.
async fn list_channels(
    client: &Client,
    team: &str,
    cached_id: Option<String>,
    out: &mut TeamPoll,
) -> Option<(Vec<Channel>, Option<i64>)> {
    let mut was_cached = cached_id.is_some();
    let mut team_id = cached_id;
    loop {
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
                    return None;
                }
            },
        };
        match client.my_channels(&id).await {
            Ok(l) => {
                out.team_id = Some(id);
                return Some(l);
            }
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
                return None;
            }
        }
    }
}

/// Reads the `active` channels concurrently under `sem`, one result per
/// channel in their order. After a rate limit, an unreachable server or the
/// deadline, the reads not started yet are not started.
async fn read_channels(
    client: &Client,
    active: &[Channel],
    since_ms: i64,
    sem: &Semaphore,
    deadline: Instant,
) -> Vec<ChannelRead> {
    let stop = AtomicBool::new(false);
    let futs = active.iter().map(|ch| async {
        let _permit = sem.acquire().await.expect("semaphore is never closed");
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        if Instant::now() >= deadline {
            stop.store(true, Ordering::Relaxed);
            let e = format!("deadline reached before channel {} was read", ch.name);
            return Some(Err((e, false)));
        }
        let r = fetch_channel(client, ch, since_ms, deadline).await;
        if let Err(e) = &r {
            if matches!(e.kind, MmErrorKind::RateLimited { .. }) || e.is_unreachable() {
                // Nothing is lost: the cursor stays, the next cycle retries.
                stop.store(true, Ordering::Relaxed);
            }
        }
        Some(r.map_err(|e| (e.to_string(), e.is_unreachable())))
    });
    join_all(futs).await
}

impl TeamPoll {
    /// Lists every channel of the team in the listing and returns those to
    /// read: moved since the cursor and not showing their quiet mark.
    fn pick_active(
        &mut self,
        channels: Vec<Channel>,
        quiet: &BTreeMap<String, ChannelMark>,
        since_ms: i64,
    ) -> Vec<Channel> {
        let team_id = self.team_id.clone().unwrap_or_default();
        let mut active: Vec<Channel> = Vec::new();
        for c in channels.into_iter().filter(|c| c.team_id == team_id) {
            self.max_seen_ms = self.max_seen_ms.max(c.last_post_at);
            let mark = ChannelMark::of(&c);
            let is_quiet = quiet.get(&c.id) == Some(&mark);
            self.quiet += u32::from(c.last_post_at > since_ms && is_quiet);
            // Read unless it is fetched below and that fails.
            self.listed.push(Listed {
                id: c.id.clone(),
                mark,
                read: true,
            });
            if c.last_post_at > since_ms && !is_quiet {
                active.push(c);
            }
        }
        active
    }

    /// Takes in one channel's read: its posts, or why it stays unread.
    fn take_read(&mut self, ch: Channel, read: ChannelRead) {
        match read {
            Some(Ok((posts, backfilled))) => {
                self.fetched += 1;
                self.backfilled += u32::from(backfilled);
                // The listing and the read may come from different read
                // replicas: a read that did not reach the post the listing
                // counts as the newest is no ground for a quiet mark.
                let newest = posts.iter().map(|p| p.create_at.max(p.update_at)).max();
                if newest.is_none_or(|n| n < ch.last_post_at) {
                    self.unread(&ch.id);
                }
                for p in &posts {
                    self.max_seen_ms = self.max_seen_ms.max(p.update_at);
                }
                self.posts.push((ch, posts));
            }
            Some(Err((e, unreachable))) => {
                self.unreachable |= unreachable && self.error.is_none();
                self.error.get_or_insert(e);
                self.unread(&ch.id);
            }
            None => {
                self.error
                    .get_or_insert_with(|| "stopped after an earlier failure".into());
                self.unread(&ch.id);
            }
        }
    }

    /// A channel whose fetch did not finish: it gets no quiet mark.
    fn unread(&mut self, channel_id: &str) {
        if let Some(l) = self.listed.iter_mut().find(|l| l.id == channel_id) {
            l.read = false;
        }
    }
}
