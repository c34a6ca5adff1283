//! Data for `ops-agent mm status`: the runbook's "check MM connectivity",
//! answered with facts (ping, version, who the token is, which teams resolve).

use std::fmt;

use serde::Serialize;

use super::client::{Client, MmErrorKind};
use super::config::MattermostConfig;
use super::poll::MmState;

/// One configured team as the server sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TeamStatus {
    /// Configured team name.
    pub(crate) name: String,
    /// Team id, when resolved.
    pub(crate) id: Option<String>,
    /// True when the server knows the team and the agent can list its channels.
    pub resolved: bool,
    /// The agent's channels in the team (public and private).
    pub channels: Option<usize>,
    /// Why the team is not usable.
    pub(crate) error: Option<String>,
}

/// Everything `mm status` shows; the CLI adds the cursor age.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MmStatus {
    /// Server base URL.
    pub(crate) url: String,
    /// How the agent authenticates (never the secret).
    pub(crate) auth: String,
    /// `GET /system/ping` answered OK.
    pub ping_ok: bool,
    /// Why the ping failed.
    pub ping_error: Option<String>,
    /// Server release from `X-Version-Id`.
    pub server_version: Option<String>,
    /// Username the credentials belong to.
    pub user: Option<String>,
    /// Its id.
    pub(crate) user_id: Option<String>,
    /// Why `users/me` failed (bad token, ...).
    pub(crate) user_error: Option<String>,
    /// Each configured team.
    pub teams: Vec<TeamStatus>,
    /// Requests this status check cost.
    pub(crate) requests: u32,
}

impl MmStatus {
    /// True when everything the polling stage needs works.
    pub fn ok(&self) -> bool {
        self.ping_ok && self.user.is_some() && self.teams.iter().all(|t| t.resolved)
    }
}

/// Checks connectivity step by step; never fails, every problem is a field.
pub async fn status(client: &Client, cfg: &MattermostConfig, state: &MmState) -> MmStatus {
    let start = client.requests();
    let mut s = MmStatus {
        url: client.base_url().to_string(),
        auth: client.identity(),
        ping_ok: false,
        ping_error: None,
        server_version: None,
        user: None,
        user_id: None,
        user_error: None,
        teams: Vec::new(),
        requests: 0,
    };
    match client.ping().await {
        Ok(()) => s.ping_ok = true,
        Err(e) => {
            let unreachable = e.is_unreachable();
            s.ping_error = Some(e.to_string());
            if unreachable {
                s.server_version = client.server_version();
                s.teams = cfg
                    .teams
                    .iter()
                    .map(|t| TeamStatus {
                        name: t.clone(),
                        id: state.teams.get(t).cloned(),
                        resolved: false,
                        channels: None,
                        error: Some("server unreachable".into()),
                    })
                    .collect();
                s.requests = client.requests() - start;
                return s;
            }
        }
    }
    match client.me().await {
        Ok(u) => {
            s.user = Some(u.username);
            s.user_id = Some(u.id);
        }
        Err(e) => s.user_error = Some(e.to_string()),
    }
    let authed = s.user.is_some();
    for name in &cfg.teams {
        let mut t = TeamStatus {
            name: name.clone(),
            id: state.teams.get(name).cloned(),
            resolved: false,
            channels: None,
            error: None,
        };
        if !authed {
            t.error = Some("not authenticated".into());
            s.teams.push(t);
            continue;
        }
        match client.team_by_name(name).await {
            Ok(team) => {
                t.id = Some(team.id.clone());
                match client.my_channels(&team.id).await {
                    Ok((chs, _)) => {
                        t.resolved = true;
                        t.channels = Some(chs.iter().filter(|c| c.team_id == team.id).count());
                    }
                    Err(e) => t.error = Some(e.to_string()),
                }
            }
            Err(e) if e.kind == MmErrorKind::NotFound => {
                t.id = None;
                t.error = Some("no such team (or the agent is not a member)".into());
            }
            Err(e) => t.error = Some(e.to_string()),
        }
        s.teams.push(t);
    }
    s.server_version = client.server_version();
    s.requests = client.requests() - start;
    s
}

impl fmt::Display for MmStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        writeln!(f, "Mattermost  {}", self.url)?;
        writeln!(f, "  auth      {}", self.auth)?;
        match &self.ping_error {
            None => writeln!(f, "  ping      ok")?,
            Some(e) => writeln!(f, "  ping      FAILED: {e}")?,
        }
        writeln!(f, "  version   {}", or_dash(&self.server_version))?;
        match (&self.user, &self.user_error) {
            (Some(u), _) => writeln!(f, "  user      @{u} ({})", or_dash(&self.user_id))?,
            (None, Some(e)) => writeln!(f, "  user      FAILED: {e}")?,
            (None, None) => writeln!(f, "  user      -")?,
        }
        let w = self
            .teams
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            f,
            "  {:<w$}  {:<26}  {:>8}  status",
            "team", "id", "channels"
        )?;
        for t in &self.teams {
            let status = match (&t.error, t.resolved) {
                (Some(e), _) => format!("FAILED: {e}"),
                (None, true) => "ok".into(),
                (None, false) => "unresolved".into(),
            };
            writeln!(
                f,
                "  {:<w$}  {:<26}  {:>8}  {}",
                t.name,
                or_dash(&t.id),
                t.channels.map_or("-".into(), |c| c.to_string()),
                status
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_readable_table() {
        let s = MmStatus {
            url: "http://mm".into(),
            auth: "http://mm (token from env X)".into(),
            ping_ok: true,
            ping_error: None,
            server_version: Some("10.5.0".into()),
            user: Some("opsbot".into()),
            user_id: Some("u1".into()),
            user_error: None,
            teams: vec![
                TeamStatus {
                    name: "basic".into(),
                    id: Some("t1".into()),
                    resolved: true,
                    channels: Some(12),
                    error: None,
                },
                TeamStatus {
                    name: "riad".into(),
                    id: None,
                    resolved: false,
                    channels: None,
                    error: Some("no such team".into()),
                },
            ],
            requests: 6,
        };
        let text = s.to_string();
        assert!(text.contains("ping      ok"), "{text}");
        assert!(text.contains("version   10.5.0"), "{text}");
        assert!(text.contains("@opsbot"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.contains("basic") && l.contains("12") && l.ends_with("ok")),
            "{text}"
        );
        assert!(text.contains("FAILED: no such team"), "{text}");
        assert!(!s.ok());
    }
}
