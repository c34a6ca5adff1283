//! Tasks: the agent's hands on the team's work trackers (stage 3 of
//! docs/architecture.md#one-cycle).
//!
//! A TASK or INCIDENT post, or an escalation from a health check, becomes a
//! [`Task`]: exactly one task in MC ([`mc`]: an external command, or the
//! built-in [`ledger`]) and, where Planka is configured, exactly one card on
//! the team's board ([`planka`]). [`outbox`] owns the "nothing lost, nothing
//! twice" rules that tie them together across crashes, outages and retries.
//!
//! This file owns the task model itself: how a post becomes a title and a
//! description, which team is billed ([`BillingConfig`]) and which label is
//! urgent ([`priority_for_label`]).

pub mod ledger;
pub mod mc;
pub mod outbox;
pub mod planka;

use std::fmt;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Longest task title, in characters: MC and Planka lists show one line, and
/// the full text is in the description anyway.
const TITLE_MAX_CHARS: usize = 100;

/// Who pays for the work: the team's contract decides, not the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Tag {
    /// Work for a paying client team; billed.
    Billable,
    /// Our own work (default: team basic); not billed.
    Internal,
}

impl Tag {
    /// The wire and label name (`BILLABLE`/`INTERNAL`), as the runbook and MC use it.
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::Billable => "BILLABLE",
            Tag::Internal => "INTERNAL",
        }
    }

    /// Parses a tag as typed on the command line (`--tag billable`), case-insensitively.
    pub(crate) fn parse(s: &str) -> Result<Tag> {
        match s.trim().to_ascii_uppercase().as_str() {
            "BILLABLE" => Ok(Tag::Billable),
            "INTERNAL" => Ok(Tag::Internal),
            _ => bail!("tag '{s}' is neither BILLABLE nor INTERNAL"),
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How soon someone must look: incidents and escalations jump the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Priority {
    /// Something is broken (INCIDENT) or the agent could not fix it (escalation).
    High,
    /// Ordinary requested work (TASK).
    Normal,
}

impl Priority {
    /// The wire name (`HIGH`/`NORMAL`) passed to MC as `{priority}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "HIGH",
            Priority::Normal => "NORMAL",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Label of a health escalation, next to the classifier's TASK and INCIDENT.
const LABEL_ESCALATION: &str = "ESCALATION";

/// Priority follows the label: an INCIDENT or an escalation is HIGH, anything
/// else (TASK) NORMAL. A pure function so the rule is table-tested here.
pub(crate) fn priority_for_label(label: &str) -> Priority {
    match label.trim().to_ascii_uppercase().as_str() {
        "INCIDENT" | LABEL_ESCALATION => Priority::High,
        _ => Priority::Normal,
    }
}

/// `[billing]`: which teams are our own. Every team not listed is a client
/// and its work is BILLABLE, so a newly added team is billed by default
/// rather than silently given away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// Team names whose work is INTERNAL (default `["basic"]`).
    internal_teams: Vec<String>,
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            internal_teams: vec!["basic".to_string()],
        }
    }
}

impl BillingConfig {
    /// The tag for work from `team` (team names compare case-insensitively,
    /// as Mattermost team names are lowercase anyway).
    fn tag_for(&self, team: &str) -> Tag {
        let team = team.trim();
        if self
            .internal_teams
            .iter()
            .any(|t| t.trim().eq_ignore_ascii_case(team))
        {
            Tag::Internal
        } else {
            Tag::Billable
        }
    }

    /// Checks the section without I/O; errors name the key and the bad value.
    pub(crate) fn validate(&self) -> Result<()> {
        for t in &self.internal_teams {
            if t.trim().is_empty() {
                bail!("billing.internal_teams: '{t}' is not a team name");
            }
        }
        Ok(())
    }
}

/// One unit of work for MC and Planka. Plain data: it is stored in the
/// outbox while a card is pending, and every field can be a placeholder in
/// the MC command template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// One line: the first line of the message, trimmed and capped.
    pub title: String,
    /// The full message plus who wrote it where, and the permalink.
    pub description: String,
    /// Who owns the task in MC (config `agent.owner`, default `ops`).
    pub owner: String,
    /// BILLABLE or INTERNAL, from the team.
    pub tag: Tag,
    /// HIGH or NORMAL, from the label.
    pub priority: Priority,
    /// The idempotency key: the Mattermost post id, or `service:issue` for
    /// a health escalation. One source never makes two tasks.
    pub source: String,
    /// The classification label (`TASK`, `INCIDENT`, `ESCALATION`).
    pub label: String,
    /// The Mattermost team name (chooses tag and Planka board).
    pub team: String,
    /// The channel name the post came from (empty for escalations).
    pub channel: String,
    /// The post's author username (`ops-agent` for escalations).
    pub author: String,
    /// Link back to the post, so the task can be traced to the conversation.
    pub permalink: String,
}

/// What [`Task::from_post`] needs to know about a post; borrowed, so the
/// caller keeps its own Mattermost types.
#[derive(Debug, Clone, Copy)]
pub struct PostRef<'a> {
    /// The post id: the task's idempotency key.
    pub post_id: &'a str,
    /// The message text as posted.
    pub message: &'a str,
    /// Author username.
    pub author: &'a str,
    /// Team name.
    pub team: &'a str,
    /// Channel name.
    pub channel: &'a str,
    /// `{mattermost.url}/{team}/pl/{post_id}`.
    pub permalink: &'a str,
}

impl Task {
    /// Builds the task for a classified post (`label` is TASK or INCIDENT).
    pub fn from_post(post: PostRef<'_>, label: &str, owner: &str, billing: &BillingConfig) -> Task {
        let label = label.trim().to_ascii_uppercase();
        let description = format!(
            "{}\n\n---\nPosted by @{} in {}/{}\n{}",
            post.message.trim_end(),
            post.author,
            post.team,
            post.channel,
            post.permalink
        );
        Task {
            title: title_from_message(post.message),
            description,
            owner: owner.to_string(),
            tag: billing.tag_for(post.team),
            priority: priority_for_label(&label),
            source: post.post_id.to_string(),
            label,
            team: post.team.to_string(),
            channel: post.channel.to_string(),
            author: post.author.to_string(),
            permalink: post.permalink.to_string(),
        }
    }

    /// Builds the HIGH priority task of a health escalation: our own
    /// stack failing is INTERNAL work whoever's board it lands on.
    /// `incident_key` is the idempotency key, so one incident makes one task
    /// however many cycles it lasts; `team` chooses the board.
    pub fn escalation(
        incident_key: &str,
        summary: &str,
        details: &str,
        owner: &str,
        team: Option<&str>,
    ) -> Task {
        let title = title_from_message(summary);
        Task {
            title,
            description: format!(
                "{}\n\n---\nEscalated by ops-agent (incident {incident_key})",
                details.trim_end()
            ),
            owner: owner.to_string(),
            tag: Tag::Internal,
            priority: Priority::High,
            source: incident_key.to_string(),
            label: LABEL_ESCALATION.to_string(),
            team: team.unwrap_or_default().to_string(),
            channel: String::new(),
            author: "ops-agent".to_string(),
            permalink: String::new(),
        }
    }
}

/// The first non-blank line, trimmed, capped at [`TITLE_MAX_CHARS`]
/// characters (never splitting a character), with `…` when cut.
fn title_from_message(message: &str) -> String {
    let line = message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    // Control characters (tabs, escapes) make a one-line title misleading.
    let line: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.is_empty() {
        return "(empty message)".to_string();
    }
    if line.chars().count() <= TITLE_MAX_CHARS {
        return line;
    }
    let mut cut: String = line.chars().take(TITLE_MAX_CHARS - 1).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_table() {
        for (label, want) in [
            ("TASK", Priority::Normal),
            ("INCIDENT", Priority::High),
            ("incident", Priority::High),
            ("ESCALATION", Priority::High),
            ("ROUTINE", Priority::Normal),
            ("", Priority::Normal),
        ] {
            assert_eq!(priority_for_label(label), want, "{label}");
        }
    }

    #[test]
    fn billing_table() {
        let b = BillingConfig::default();
        for (team, want) in [
            ("basic", Tag::Internal),
            ("Basic", Tag::Internal),
            ("wizard", Tag::Billable),
            ("rendrom", Tag::Billable),
            ("riad", Tag::Billable),
            ("brand-new-team", Tag::Billable),
        ] {
            assert_eq!(b.tag_for(team), want, "{team}");
        }
        assert!(BillingConfig {
            internal_teams: vec![" ".into()]
        }
        .validate()
        .unwrap_err()
        .to_string()
        .contains("billing.internal_teams"));
    }

    #[test]
    fn title_table() {
        let long = "é".repeat(150);
        let cases: Vec<(&str, String)> = vec![
            (
                "  fix the login page  \nmore text",
                "fix the login page".into(),
            ),
            ("\n\n  second line wins\n", "second line wins".into()),
            ("", "(empty message)".into()),
            ("tab\there", "tab here".into()),
        ];
        for (msg, want) in cases {
            assert_eq!(title_from_message(msg), want, "{msg:?}");
        }
        let t = title_from_message(&long);
        assert_eq!(t.chars().count(), TITLE_MAX_CHARS);
        assert!(t.ends_with('…'));
    }

    #[test]
    fn from_post_fills_every_field() {
        let post = PostRef {
            post_id: "p1",
            message: "Deploy the new API\nplease by Friday",
            author: "alice",
            team: "wizard",
            channel: "dev",
            permalink: "http://mm/wizard/pl/p1",
        };
        let t = Task::from_post(post, "task", "ops", &BillingConfig::default());
        assert_eq!(t.title, "Deploy the new API");
        assert_eq!(t.tag, Tag::Billable);
        assert_eq!(t.priority, Priority::Normal);
        assert_eq!(t.label, "TASK");
        assert_eq!(t.source, "p1");
        assert!(t.description.contains("please by Friday"));
        assert!(t.description.contains("@alice in wizard/dev"));
        assert!(t.description.contains("http://mm/wizard/pl/p1"));
        let e = Task::escalation(
            "web:down",
            "web is down",
            "3 fixes failed",
            "ops",
            Some("wizard"),
        );
        assert_eq!(
            (e.priority, e.tag, e.label.as_str()),
            (Priority::High, Tag::Internal, "ESCALATION")
        );
    }

    #[test]
    fn tag_parse_and_serde_names() {
        assert_eq!(Tag::parse("billable").unwrap(), Tag::Billable);
        assert!(Tag::parse("x").is_err());
        assert_eq!(
            serde_json::to_string(&Tag::Internal).unwrap(),
            "\"INTERNAL\""
        );
        assert_eq!(serde_json::to_string(&Priority::High).unwrap(), "\"HIGH\"");
    }
}
