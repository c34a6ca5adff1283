//! Who is who: the agent's own account, the ids of the ignored users and
//! the post authors, cached in [`MmState`] so that a cycle looks each of
//! them up at most once a day rather than once per post.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{MmState, NewPost};
use crate::mattermost::client::{Client, MmError};
use crate::mattermost::config::MattermostConfig;

/// Cached user lookups are refreshed after this long.
const USER_CACHE_MS: i64 = 24 * 3600 * 1000;

/// At most this many cached users (the state file must stay bounded).
const USER_CACHE_MAX: usize = 5000;

/// A user as far as skip rules and reports care.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct CachedUser {
    /// User id.
    pub(crate) id: String,
    /// Username.
    pub(crate) username: String,
    /// Bot account.
    pub(crate) is_bot: bool,
    /// When it was looked up (epoch ms, local clock), for refreshing.
    pub(crate) checked_ms: i64,
}

/// Readies `state` for a poll and returns the agent's own id: a new server
/// or account empties every cache but the handled ids and the cut-over
/// (both belong to the cursor, which stays), and the
/// `ignored_users` of the config are resolved to ids when they changed.
/// Errors only when Mattermost cannot be used at all.
pub(super) async fn prepare(
    client: &Client,
    cfg: &MattermostConfig,
    state: &mut MmState,
    now_ms: i64,
) -> Result<String, MmError> {
    let identity = client.identity();
    if state.identity != identity {
        // Another server or account: every cached id may be wrong.
        *state = MmState {
            identity,
            handled: std::mem::take(&mut state.handled),
            cut_over: state.cut_over,
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
    Ok(own_id)
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

/// Looks up the authors of `posts` that are not cached, or were cached
/// more than a day ago; a failed lookup leaves their usernames unknown
/// this cycle.
pub(super) async fn refresh_authors(
    client: &Client,
    state: &mut MmState,
    posts: &[NewPost],
    now_ms: i64,
) {
    let missing: Vec<String> = posts
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
    if missing.is_empty() {
        return;
    }
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
