//! The teams' part of a poll: each configured team's channel listing, all
//! teams concurrently. Which of the channels to read, and the reads
//! themselves, are `read.rs`'s.

use futures_util::future::join_all;

use super::MmState;
use crate::mattermost::client::{Client, MmErrorKind};
use crate::mattermost::config::MattermostConfig;
use crate::mattermost::wire::Channel;

/// One team's channel listing.
pub(super) struct TeamListing {
    pub(super) team: String,
    pub(super) team_id: Option<String>,
    /// The team's channels as listed (none when the listing failed).
    pub(super) channels: Vec<Channel>,
    pub(super) server_time_ms: Option<i64>,
    pub(super) error: Option<String>,
    pub(super) unreachable: bool,
    pub(super) team_gone: bool,
}

/// Lists every configured team's channels, concurrently; one result per
/// team, in the order of `cfg.teams`.
pub(super) async fn list_teams(
    client: &Client,
    cfg: &MattermostConfig,
    state: &MmState,
) -> Vec<TeamListing> {
    join_all(cfg.teams.iter().map(|t| async move {
        let mut out = TeamListing {
            team: t.clone(),
            team_id: None,
            channels: Vec::new(),
            server_time_ms: None,
            error: None,
            unreachable: false,
            team_gone: false,
        };
        if let Some((channels, time)) =
            list_channels(client, t, state.teams.get(t).cloned(), &mut out).await
        {
            let id = out.team_id.clone().unwrap_or_default();
            out.channels = channels.into_iter().filter(|c| c.team_id == id).collect();
            out.server_time_ms = time;
        }
        out
    }))
    .await
}

/// The team's channel listing and the server time of the answer. A cached
/// team id that went stale (team re-created) is resolved once more; a
/// failure is recorded in `out` and gives `None`.
async fn list_channels(
    client: &Client,
    team: &str,
    cached_id: Option<String>,
    out: &mut TeamListing,
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
