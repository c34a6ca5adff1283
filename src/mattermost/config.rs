//! The `[mattermost]` section of the config file: where the server is, how
//! the agent authenticates, which teams it reads and whom it ignores.
//!
//! Secrets never appear here, only the name of an environment variable or
//! of an owner-only file that holds them (see `crate::secret`).

use std::path::PathBuf;

use crate::secret::SecretRef;
use crate::time::Secs;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Mattermost settings; defaults are the runbook's (docs/configuration.md,
/// "Complete example").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MattermostConfig {
    /// Base URL of the server, without `/api/v4`.
    #[serde(serialize_with = "crate::scrub::serialize_url")]
    pub url: String,
    /// Environment variable holding a bot or personal access token.
    pub token_env: String,
    /// Owner-only file holding a token; wins over `token_env` when set.
    pub token_file: Option<PathBuf>,
    /// Login id (username or email) for password login with a cached session.
    pub login_id: Option<String>,
    /// Environment variable holding the password for `login_id`.
    pub password_env: Option<String>,
    /// Owner-only file holding the password for `login_id`; wins over
    /// `password_env` (a scheduled job has no shell variables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Team names (URL names, not display names) whose channels are polled.
    pub teams: Vec<String>,
    /// Users whose posts are never handed over, by username or user id.
    pub ignored_users: Vec<String>,
    /// Where escalation alerts go, as "team/channel"; empty means no alert posts.
    pub alert_channel: String,
    /// Timeout of every single HTTP request.
    pub timeout_secs: Secs,
    /// How far before the cursor each poll starts again, for clock skew and late commits.
    pub overlap_secs: Secs,
    /// How many channel fetches may be in flight at once (the server rate-limits per IP).
    pub channel_concurrency: usize,
    /// Pages (200 posts each) one channel may be read by in one cycle; a
    /// channel with more new posts reads on in the next cycles, where it
    /// stopped.
    pub max_pages_per_channel: u32,
    /// Hard cap on the length of any post the agent writes.
    pub max_reply_chars: usize,
    /// Set when the config file names `teams`: the operator wants chat, so
    /// a cycle without a usable token is degraded rather than skipped as
    /// "not configured". Never read from or written to the file.
    #[serde(skip)]
    pub required: bool,
}

impl Default for MattermostConfig {
    fn default() -> Self {
        MattermostConfig {
            url: "http://localhost:8065".into(),
            token_env: "OPS_AGENT_MM_TOKEN".into(),
            token_file: None,
            login_id: None,
            password_env: None,
            password_file: None,
            teams: ["basic", "wizard", "rendrom", "riad"]
                .map(String::from)
                .to_vec(),
            ignored_users: ["john", "edita", "system-bot", "boards", "calls", "tester"]
                .map(String::from)
                .to_vec(),
            alert_channel: String::new(),
            timeout_secs: Secs::new(10),
            overlap_secs: Secs::new(120),
            channel_concurrency: 4,
            max_pages_per_channel: 100,
            max_reply_chars: 4000,
            required: false,
        }
    }
}

/// Mattermost refuses posts longer than this many characters (model.PostMessageMaxRunesV2).
const SERVER_MAX_POST_CHARS: usize = 16383;

impl MattermostConfig {
    /// Checks every key without touching the network or the environment, so
    /// a typo is reported before a cycle starts. Errors name key and value.
    pub(crate) fn validate(&self) -> Result<()> {
        let url = self.url.trim();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        match rest {
            Some(host) if !host.is_empty() && !host.starts_with('/') => {}
            _ => bail!(
                "mattermost.url: '{}' is not an http(s) URL",
                crate::scrub::url(&self.url)
            ),
        }
        if url.contains("/api/v4") {
            bail!(
                "mattermost.url: '{}' must be the server's base URL, without /api/v4",
                crate::scrub::url(&self.url)
            );
        }
        crate::secret::check_env_name("mattermost.token_env", &self.token_env)?;
        let has_password = self.password_env.is_some() || self.password_file.is_some();
        match (&self.login_id, has_password) {
            (Some(id), _) if id.trim().is_empty() => {
                bail!("mattermost.login_id: '' must not be empty when set")
            }
            (Some(_), false) => {
                bail!("mattermost.password_file or mattermost.password_env: must be set when mattermost.login_id is set")
            }
            (None, true) => {
                bail!("mattermost.login_id: must be set when mattermost.password_file or mattermost.password_env is set")
            }
            _ => {}
        }
        if let Some(p) = &self.password_env {
            crate::secret::check_env_name("mattermost.password_env", p)?;
        }
        if self
            .password_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            bail!("mattermost.password_file: '' is not a path");
        }
        if self.token_file.is_some() && self.login_id.is_some() {
            bail!("mattermost.token_file and mattermost.login_id: set one way to authenticate, not both");
        }
        if let Some(p) = &self.token_file {
            if p.as_os_str().is_empty() {
                bail!("mattermost.token_file: '' is not a path");
            }
        }
        if self.teams.is_empty() {
            bail!("mattermost.teams: [] must name at least one team");
        }
        for t in &self.teams {
            if t.trim().is_empty() || t.contains('/') {
                bail!("mattermost.teams: '{t}' is not a team name");
            }
        }
        for u in &self.ignored_users {
            if u.trim().is_empty() {
                bail!("mattermost.ignored_users: '' is not a username or user id");
            }
        }
        if !self.alert_channel.is_empty() {
            let ok = matches!(self.alert_channel.split_once('/'),
                Some((t, c)) if !t.is_empty() && !c.is_empty() && !c.contains('/'));
            if !ok {
                bail!(
                    "mattermost.alert_channel: '{}' is not of the form \"team/channel\"",
                    self.alert_channel
                );
            }
        }
        if self.timeout_secs.is_zero() || self.timeout_secs > Secs::new(300) {
            bail!(
                "mattermost.timeout_secs: {} must be more than 0 and at most 300",
                self.timeout_secs
            );
        }
        if self.overlap_secs > Secs::new(3600) {
            bail!(
                "mattermost.overlap_secs: {} must be at most 3600",
                self.overlap_secs
            );
        }
        if !(1..=32).contains(&self.channel_concurrency) {
            bail!(
                "mattermost.channel_concurrency: {} must be between 1 and 32",
                self.channel_concurrency
            );
        }
        if !(1..=1000).contains(&self.max_pages_per_channel) {
            bail!(
                "mattermost.max_pages_per_channel: {} must be between 1 and 1000",
                self.max_pages_per_channel
            );
        }
        if !(100..=SERVER_MAX_POST_CHARS).contains(&self.max_reply_chars) {
            bail!(
                "mattermost.max_reply_chars: {} must be between 100 and {SERVER_MAX_POST_CHARS}",
                self.max_reply_chars
            );
        }
        Ok(())
    }

    /// The secret the client will read, by precedence: `token_file`, then
    /// `login_id` with `password_file` or `password_env`, then `token_env`.
    pub(crate) fn credential(&self) -> SecretRef {
        if let Some(path) = &self.token_file {
            return SecretRef::file("mattermost.token_file", path);
        }
        if self.login_id.is_some() {
            if let Some(path) = &self.password_file {
                return SecretRef::file("mattermost.password_file", path);
            }
            if let Some(var) = &self.password_env {
                return SecretRef::env("mattermost.password_env", var);
            }
        }
        SecretRef::env("mattermost.token_env", &self.token_env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_runbook() {
        let c = MattermostConfig::default();
        c.validate().unwrap();
        assert_eq!(c.url, "http://localhost:8065");
        assert_eq!(c.teams, ["basic", "wizard", "rendrom", "riad"]);
        assert_eq!(c.ignored_users.len(), 6);
    }

    #[test]
    fn toml_section_parses_and_rejects_unknown_keys() {
        let c: MattermostConfig =
            toml::from_str("url = \"https://mm.example\"\nteams = [\"a\"]\n").unwrap();
        assert_eq!(c.teams, ["a"]);
        assert_eq!(c.timeout_secs, Secs::new(10));
        assert!(toml::from_str::<MattermostConfig>("tokn_env = \"X\"").is_err());
    }

    #[test]
    fn the_credential_follows_the_documented_precedence() {
        let mut c = MattermostConfig::default();
        assert_eq!(
            c.credential(),
            SecretRef::env("mattermost.token_env", "OPS_AGENT_MM_TOKEN")
        );
        c.login_id = Some("bot".into());
        c.password_env = Some("MM_PW".into());
        assert_eq!(
            c.credential(),
            SecretRef::env("mattermost.password_env", "MM_PW")
        );
        c.password_file = Some("/pw".into());
        assert_eq!(
            c.credential(),
            SecretRef::file("mattermost.password_file", "/pw".as_ref())
        );
        c.login_id = None;
        c.password_env = None;
        c.password_file = None;
        c.token_file = Some("/tok".into());
        assert_eq!(
            c.credential(),
            SecretRef::file("mattermost.token_file", "/tok".as_ref())
        );
    }

    #[test]
    fn validation_names_key_and_value() {
        type Edit = fn(&mut MattermostConfig);
        let cases: Vec<(Edit, &str)> = vec![
            (|c| c.url = "htp:/x".into(), "mattermost.url: 'htp:/x'"),
            (|c| c.url = "http://h/api/v4".into(), "without /api/v4"),
            (
                |c| c.token_env = "A-B".into(),
                "mattermost.token_env must name an environment variable",
            ),
            (
                |c| c.login_id = Some("bot".into()),
                "mattermost.password_file or mattermost.password_env",
            ),
            (
                |c| c.password_file = Some("/p".into()),
                "mattermost.login_id: must be set",
            ),
            (|c| c.password_env = Some("P".into()), "mattermost.login_id"),
            (|c| c.teams.clear(), "mattermost.teams"),
            (
                |c| c.alert_channel = "nochannel".into(),
                "mattermost.alert_channel: 'nochannel'",
            ),
            (
                |c| c.timeout_secs = Secs::new(0),
                "mattermost.timeout_secs: 0",
            ),
            (
                |c| c.channel_concurrency = 0,
                "mattermost.channel_concurrency: 0",
            ),
            (
                |c| c.max_reply_chars = 20000,
                "mattermost.max_reply_chars: 20000",
            ),
        ];
        for (edit, want) in cases {
            let mut c = MattermostConfig::default();
            edit(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err} should contain {want}");
        }
        let c = MattermostConfig {
            alert_channel: "basic/ops-alerts".into(),
            ..Default::default()
        };
        c.validate().unwrap();
        assert_eq!(
            c.alert_channel.split_once('/'),
            Some(("basic", "ops-alerts"))
        );
    }
}
