//! `[planka]`: the server, the credentials (names of secrets, never
//! values), the API version and the board and list of each team.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::secret::SecretRef;
use crate::tasks::Tag;
use crate::time::Secs;

/// Label colours Planka accepts (the server's `Label.COLORS`); anything
/// else is a 400, so config validation checks against this list.
const LABEL_COLORS: &[&str] = &[
    "muddy-grey",
    "autumn-leafs",
    "morning-sky",
    "antique-blue",
    "egg-yellow",
    "desert-sand",
    "dark-granite",
    "fresh-salad",
    "lagoon-blue",
    "midnight-blue",
    "light-orange",
    "pumpkin-orange",
    "light-concrete",
    "sunny-grass",
    "navy-blue",
    "lilac-eyes",
    "apricot-red",
    "orange-peel",
    "silver-glint",
    "bright-moss",
    "deep-ocean",
    "summer-sky",
    "berry-red",
    "light-cocoa",
    "grey-stone",
    "tank-green",
    "coral-green",
    "sugar-plum",
    "pink-tulip",
    "shady-rust",
    "wet-rock",
    "wet-moss",
    "turquoise-sea",
    "lavender-fields",
    "piggy-red",
    "light-mud",
    "gun-metal",
    "modern-green",
    "french-coast",
    "sweet-lilac",
    "red-burgundy",
    "pirate-gold",
];

/// Which Planka API to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiVersion {
    /// Ask the server (`GET /api/bootstrap`) once per run.
    #[serde(rename = "auto")]
    Auto,
    /// Planka 1.x.
    #[serde(rename = "1")]
    V1,
    /// Planka 2.x.
    #[serde(rename = "2")]
    V2,
}

/// The API generation actually in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum Major {
    /// Planka 1.x.
    V1,
    /// Planka 2.x.
    V2,
}

/// `[planka.boards.<team>]`: where a team's cards go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardTarget {
    /// Project name, needed only when two projects have a board of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Board name.
    pub board: String,
    /// List (column) name new cards go into.
    pub list: String,
}

/// `[planka]`: optional; enabled once credentials are configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlankaConfig {
    /// Base URL; card links are `{url}/cards/{id}`.
    #[serde(serialize_with = "crate::scrub::serialize_url")]
    pub url: String,
    /// `auto`, `1` or `2`.
    pub api_version: ApiVersion,
    /// Username or email to log in with (with `password_env`/`password_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Environment variable holding the password.
    pub password_env: String,
    /// Owner-only file holding the password (wins over `password_env`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding a v2 API key (wins over the password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Owner-only file holding a v2 API key (wins over `api_key_env`: a
    /// scheduled job has no shell variables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// Accept the server's terms on the first v2 login, as a user does once
    /// in the UI; without it such a login fails with a message saying so.
    pub accept_terms: bool,
    /// Every request ends after this many seconds.
    pub timeout_secs: Secs,
    /// Colour of the BILLABLE label when the agent has to create it.
    pub billable_color: String,
    /// Colour of the INTERNAL label when the agent has to create it.
    pub internal_color: String,
    /// The team (a key of `boards`) whose board gets incident cards;
    /// empty: the team of `mattermost.alert_channel` (no alert channel and
    /// no incident team: incidents get a task but no card).
    pub incident_team: String,
    /// Per team: board and list. A team without an entry gets no card.
    pub boards: BTreeMap<String, BoardTarget>,
}

impl Default for PlankaConfig {
    fn default() -> Self {
        PlankaConfig {
            url: "http://localhost:3100".into(),
            api_version: ApiVersion::Auto,
            username: None,
            password_env: "OPS_AGENT_PLANKA_PASSWORD".into(),
            password_file: None,
            api_key_env: None,
            api_key_file: None,
            accept_terms: true,
            timeout_secs: Secs::new(10),
            billable_color: "berry-red".into(),
            internal_color: "lagoon-blue".into(),
            incident_team: String::new(),
            boards: BTreeMap::new(),
        }
    }
}

/// Planka's own check of a login name (`isEmailOrUsername` in the
/// server's validators): an email, or 3 to 32 characters matching
/// `^[a-zA-Z0-9]+((_|\.)?[a-zA-Z0-9])*$`. Anything else is refused with 400
/// before the password is even looked at. Pure, table-tested.
fn is_email_or_username(v: &str) -> bool {
    if let Some((local, domain)) = v.split_once('@') {
        return !local.is_empty() && domain.contains('.') && !v.contains(char::is_whitespace);
    }
    let n = v.chars().count();
    if !(3..=32).contains(&n) {
        return false;
    }
    let bytes = v.as_bytes();
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    alnum(bytes[0])
        && alnum(bytes[bytes.len() - 1])
        && bytes.iter().all(|&b| alnum(b) || b == b'_' || b == b'.')
        && !bytes.windows(2).any(|w| !alnum(w[0]) && !alnum(w[1]))
}

impl PlankaConfig {
    /// Planka is optional: it is used only when some credential is configured.
    pub fn enabled(&self) -> bool {
        self.username
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty())
            || self.api_key_env.is_some()
            || self.api_key_file.is_some()
    }

    /// The secret the client will use when enabled, by precedence:
    /// `api_key_file`, `api_key_env`, `password_file`, `password_env`.
    pub(crate) fn credential(&self) -> Option<SecretRef> {
        if !self.enabled() {
            return None;
        }
        Some(self.api_key().unwrap_or_else(|| match &self.password_file {
            Some(p) => SecretRef::file("planka.password_file", p),
            None => SecretRef::env("planka.password_env", &self.password_env),
        }))
    }

    /// The API key, when one is configured (it wins over the password).
    pub(crate) fn api_key(&self) -> Option<SecretRef> {
        match (&self.api_key_file, &self.api_key_env) {
            (Some(p), _) => Some(SecretRef::file("planka.api_key_file", p)),
            (None, Some(v)) => Some(SecretRef::env("planka.api_key_env", v)),
            (None, None) => None,
        }
    }

    /// Checks the section without I/O; errors name the key and the bad value.
    pub(crate) fn validate(&self) -> Result<()> {
        let ok = reqwest::Url::parse(self.url.trim())
            .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .unwrap_or(false);
        if !ok {
            bail!(
                "planka.url: '{}' is not an http(s) URL",
                crate::scrub::url(&self.url)
            );
        }
        if self.timeout_secs.is_zero() {
            bail!("planka.timeout_secs: 0 is not a timeout; use more than 0");
        }
        for (key, c) in [
            ("planka.billable_color", &self.billable_color),
            ("planka.internal_color", &self.internal_color),
        ] {
            if !LABEL_COLORS.contains(&c.as_str()) {
                bail!("{key}: '{c}' is not a Planka label colour (e.g. berry-red, lagoon-blue, sunny-grass)");
            }
        }
        if self.enabled()
            && self.api_key_env.is_none()
            && self.api_key_file.is_none()
            && self.password_file.is_none()
            && self.password_env.trim().is_empty()
        {
            bail!("planka.password_env: empty, and no password_file or api_key_env is set");
        }
        if let Some(u) = self.username.as_deref().filter(|u| !u.trim().is_empty()) {
            if !is_email_or_username(u.trim()) {
                bail!("planka.username: '{u}' is neither an email nor a Planka username (3 to 32 letters and digits, with single '_' or '.' between them; Planka refuses '-')");
            }
        }
        let incident = self.incident_team.trim();
        if !incident.is_empty() && !self.boards.contains_key(incident) {
            bail!("planka.incident_team: '{incident}' has no [planka.boards.{incident}]");
        }
        for (team, t) in &self.boards {
            if t.board.trim().is_empty() {
                bail!("planka.boards.{team}.board: empty board name");
            }
            if t.list.trim().is_empty() {
                bail!("planka.boards.{team}.list: empty list name");
            }
        }
        Ok(())
    }

    pub(crate) fn color_for(&self, tag: Tag) -> &str {
        match tag {
            Tag::Billable => &self.billable_color,
            Tag::Internal => &self.internal_color,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_key() {
        let bad = |c: PlankaConfig| c.validate().unwrap_err().to_string();
        assert!(bad(PlankaConfig {
            url: "htp:/x".into(),
            ..Default::default()
        })
        .contains("planka.url"));
        assert!(bad(PlankaConfig {
            billable_color: "red".into(),
            ..Default::default()
        })
        .contains("planka.billable_color"));
        let mut boards = BTreeMap::new();
        boards.insert(
            "wizard".into(),
            BoardTarget {
                project: None,
                board: "W".into(),
                list: " ".into(),
            },
        );
        assert!(bad(PlankaConfig {
            boards,
            ..Default::default()
        })
        .contains("planka.boards.wizard.list"));
        PlankaConfig::default().validate().unwrap();
        assert!(!PlankaConfig::default().enabled());
        assert!(PlankaConfig {
            username: Some("ops".into()),
            ..Default::default()
        }
        .enabled());
    }

    #[test]
    fn the_credential_follows_the_documented_precedence() {
        let mut c = PlankaConfig::default();
        assert_eq!(c.credential(), None);
        c.username = Some("opsagent".into());
        assert_eq!(
            c.credential(),
            Some(SecretRef::env(
                "planka.password_env",
                "OPS_AGENT_PLANKA_PASSWORD"
            ))
        );
        assert_eq!(c.api_key(), None);
        c.password_file = Some("/pw".into());
        assert_eq!(c.credential().unwrap().key, "planka.password_file");
        c.api_key_env = Some("KEY".into());
        assert_eq!(c.api_key().unwrap().key, "planka.api_key_env");
        c.api_key_file = Some("/key".into());
        assert_eq!(
            c.api_key(),
            Some(SecretRef::file("planka.api_key_file", "/key".as_ref()))
        );
        c.username = None;
        c.api_key_env = None;
        assert!(c.enabled(), "an API key file alone enables Planka");
    }

    #[test]
    fn usernames_planka_accepts() {
        for (name, ok) in [
            ("opsagent", true),
            ("ops_agent", true),
            ("ops.agent", true),
            ("o.p_s", true),
            ("ops-agent", false),
            ("ops__agent", false),
            ("_ops", false),
            ("ops.", false),
            ("ab", false),
            (&"a".repeat(33), false),
            ("ops@example.com", true),
            ("ops-agent@example.com", true),
            ("ops@", false),
        ] {
            assert_eq!(is_email_or_username(name), ok, "{name}");
        }
        let bad = PlankaConfig {
            username: Some("ops-agent".into()),
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("planka.username: 'ops-agent'"));
    }

    #[test]
    fn the_incident_team_must_have_a_board() {
        let mut c = PlankaConfig {
            incident_team: "ops".into(),
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("planka.incident_team"));
        c.boards.insert(
            "ops".into(),
            BoardTarget {
                project: None,
                board: "Ops".into(),
                list: "To Do".into(),
            },
        );
        c.validate().unwrap();
    }

    #[test]
    fn config_parses_from_toml() {
        let c: PlankaConfig = toml::from_str(
            r#"
            url = "http://planka:3000"
            username = "ops"
            api_version = "2"
            [boards.wizard]
            board = "Wizard"
            list = "Inbox"
            "#,
        )
        .unwrap();
        assert_eq!(c.api_version, ApiVersion::V2);
        assert_eq!(c.boards["wizard"].list, "Inbox");
        assert!(toml::from_str::<PlankaConfig>("nope = 1").is_err());
    }
}
