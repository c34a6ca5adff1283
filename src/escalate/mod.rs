//! Escalation (stage 7 of docs/architecture.md#one-cycle): what the team
//! sees when the agent cannot fix something. One clear alert per incident,
//! a follow-up only when nobody reacted, a recovery notice, and nothing
//! new during a silence (an incident alerted before it still gets its
//! recovery notice).
//!
//! Gatus' alerting habit, split in two:
//!
//! * [`plan`] (pure): from this cycle's [`ServiceSummary`]s, the stored
//!   [`EscalationState`], the silenced services and `now`, the [`Action`](plan::Action)s
//!   still owed: open an incident, create its task, post the alert, follow
//!   up, remind, and on recovery the recovery post, the card comment and
//!   move, the MC resolve, then close. Each is derived from what is *not
//!   yet marked done*, so an action that failed is simply owed again next
//!   cycle, and a restart (state round-trip) changes nothing.
//! * [`exec`]: performs them against Mattermost, MC/Planka and the resolve
//!   command, marking each done only after it succeeded; it also notices
//!   acknowledgements (a reaction on the alert, a reply in its thread) and
//!   answers the chat silence command.
//!
//! Silences live in [`silence`]; their set of silenced services is
//! computed once per cycle and gates both the fix stage and [`plan`].
//! The evidence an incident carries (the incident brief) is gathered by
//! [`brief`] when the incident opens and for its follow-up.

pub(crate) mod brief;
pub(crate) mod exec;
mod plan;
pub mod silence;

use anyhow::{bail, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::fix::ServiceSummary;
use crate::time::Secs;
use silence::Silences;

pub use exec::{answer_silence_post, run, Book, Ctx, EscalateOutcome, SilenceRules};

/// Placeholders the resolve command may use.
const RESOLVE_PLACEHOLDERS: &[&str] = &["task_id", "source"];
/// Closed incidents kept for `status` and `explain` (newest win).
const KEEP_CLOSED: usize = 100;
/// The most log lines a brief asks for: more would not fit its cap.
const MAX_BRIEF_LOG_LINES: usize = 500;

/// `[escalation]`: who is on call and how patient the agent is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EscalationConfig {
    /// Mattermost usernames mentioned in the one follow-up when nobody
    /// acknowledged an alert (never @channel). Empty: no follow-up.
    pub on_call: Vec<String>,
    /// Minutes an alert may go unacknowledged before the follow-up.
    pub ack_timeout_mins: u64,
    /// Hours between reminders of an unacknowledged incident.
    pub reminder_hours: u64,
    /// Usernames allowed to silence a service from chat.
    pub silence_allowlist: Vec<String>,
    /// Planka list (per board) resolved incident cards move to; empty: the
    /// card stays where it is (it still gets the recovery comment).
    pub done_list: String,
    /// argv template run once per recovered incident to mark its task
    /// resolved in MC, without a shell; placeholders `{task_id}` and
    /// `{source}` (the incident key). Empty: MC is not told.
    pub resolve_command: Vec<String>,
    /// The resolve command is killed after this many seconds.
    pub resolve_timeout_secs: Secs,
    /// Lines of a container's log (and of a systemd unit's journal) in an
    /// incident brief.
    pub brief_log_lines: usize,
    /// The most time one incident brief may take, its diagnosis included;
    /// never more than half of what is left of the cycle.
    pub brief_budget_secs: Secs,
    /// The reply model writes a first diagnosis (marked as a guess) into
    /// the brief; off, or without `[ollama]`, a summary is templated from
    /// the facts.
    pub brief_diagnosis: bool,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        EscalationConfig {
            on_call: Vec::new(),
            ack_timeout_mins: 30,
            reminder_hours: 4,
            silence_allowlist: Vec::new(),
            done_list: String::new(),
            resolve_command: Vec::new(),
            resolve_timeout_secs: Secs::new(30),
            brief_log_lines: 30,
            brief_budget_secs: Secs::new(20),
            brief_diagnosis: true,
        }
    }
}

fn username_ok(u: &str) -> bool {
    let re = Regex::new(r"^[a-z0-9][a-z0-9._-]{0,63}$").expect("static regex");
    re.is_match(u) && !matches!(u, "channel" | "all" | "here")
}

impl EscalationConfig {
    /// Checks the section without I/O; errors name the key and the bad value.
    pub(crate) fn validate(&self) -> Result<()> {
        for u in &self.on_call {
            if !username_ok(u) {
                bail!("escalation.on_call: '{u}' is not a Mattermost username (lowercase, no @, never channel/all/here)");
            }
        }
        for u in &self.silence_allowlist {
            if !username_ok(u) {
                bail!("escalation.silence_allowlist: '{u}' is not a Mattermost username (lowercase, no @)");
            }
        }
        if self.ack_timeout_mins == 0 {
            bail!("escalation.ack_timeout_mins: 0; use at least 1");
        }
        if self.reminder_hours == 0 {
            bail!("escalation.reminder_hours: 0; use at least 1");
        }
        if self.resolve_timeout_secs.is_zero() {
            bail!("escalation.resolve_timeout_secs: 0 is not a timeout; use more than 0");
        }
        if !(1..=MAX_BRIEF_LOG_LINES).contains(&self.brief_log_lines) {
            bail!(
                "escalation.brief_log_lines: {} must be between 1 and {MAX_BRIEF_LOG_LINES}",
                self.brief_log_lines
            );
        }
        if self.brief_budget_secs.is_zero() {
            bail!(
                "escalation.brief_budget_secs: 0 leaves no time to gather a brief; use more than 0"
            );
        }
        if self.done_list.trim() != self.done_list {
            bail!(
                "escalation.done_list: '{}' has leading or trailing blanks",
                self.done_list
            );
        }
        crate::tasks::mc::validate_argv_template(
            "escalation.resolve_command",
            &self.resolve_command,
            RESOLVE_PLACEHOLDERS,
        )
    }

    /// The follow-up deadline in ms.
    fn ack_timeout_ms(&self) -> i64 {
        self.ack_timeout_mins as i64 * 60_000
    }

    /// The reminder interval in ms.
    fn reminder_ms(&self) -> i64 {
        self.reminder_hours as i64 * 3_600_000
    }
}

/// How an alert was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckHow {
    /// Any emoji reaction on the alert post.
    Reaction,
    /// A reply in the alert's thread.
    Reply,
}

/// Who acknowledged, when and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The Mattermost user id.
    pub by: String,
    /// When (epoch ms, server clock).
    at_ms: i64,
    /// Reaction or reply.
    pub how: AckHow,
}

/// One incident: a service the agent could not fix, from the escalation
/// until its loop is closed. Every `…_ms`/flag marks one action done.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Incident {
    /// `service:check@YYYYMMDDTHHMMSSZ` (the start of the failure): the
    /// task's idempotency key, stable across restarts and lost state.
    pub(crate) key: String,
    /// The service.
    pub(crate) service: String,
    /// The failing check and its output when escalated.
    pub(crate) issue: String,
    /// Why the agent gave up: no fix, budget spent, fix not verified.
    pub(crate) why: String,
    /// What failed, what was tried, the last check output (plain text).
    pub(crate) details: String,
    /// When the incident was opened (epoch ms).
    pub(crate) opened_ms: i64,
    /// When the service began failing (epoch ms).
    pub(crate) failing_since_ms: i64,
    /// The MC task, once created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) task_id: Option<String>,
    /// The Planka card, once made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) card_id: Option<String>,
    /// The card URL, for the alert text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) card_url: Option<String>,
    /// The team (board) of the task and card.
    pub(crate) team: String,
    /// The alert post, once it was posted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) alert_post_id: Option<String>,
    /// The channel of the alert post.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) alert_channel_id: Option<String>,
    /// When the alert was posted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerted_ms: Option<i64>,
    /// The acknowledgement, once seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked: Option<Ack>,
    /// When the one follow-up was posted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) followed_up_ms: Option<i64>,
    /// When the last reminder was posted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reminded_ms: Option<i64>,
    /// Reminders posted so far.
    pub(crate) reminders: u32,
    /// When the service was seen healthy again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) recovered_ms: Option<i64>,
    /// It recovered while silenced (its alert thread still gets the
    /// recovery post).
    pub(crate) recovered_in_silence: bool,
    /// The recovery post is in the alert's thread.
    pub(crate) recovery_posted: bool,
    /// The card got its recovery comment.
    pub(crate) card_commented: bool,
    /// The card moved to the done list.
    pub(crate) card_moved: bool,
    /// The resolve command succeeded.
    pub(crate) mc_resolved: bool,
    /// When the incident was closed (all owed actions done or given up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) closed_ms: Option<i64>,
    /// The evidence, as gathered when it opened (refreshed on the
    /// follow-up); kept for the task, the thread and `explain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) brief: Option<brief::Brief>,
    /// The brief is in the alert's thread.
    pub(crate) brief_posted: bool,
}

impl Incident {
    /// Still failing (not yet recovered).
    fn is_open(&self) -> bool {
        self.recovered_ms.is_none()
    }
}

/// Escalation's part of the state file (the lead stores it as
/// `RuntimeState::escalation`). Bounded: open incidents are one per failing
/// service, closed ones [`KEEP_CLOSED`], silences see [`Silences`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EscalationState {
    /// Incidents not yet closed, oldest first.
    pub incidents: Vec<Incident>,
    /// Closed incidents, newest last.
    pub closed: Vec<Incident>,
    /// Silences, active and recently ended.
    pub silences: Silences,
    /// The alert channel id, with the `team/channel` it was resolved from.
    #[serde(skip_serializing_if = "Option::is_none")]
    alert_channel: Option<(String, String)>,
}

impl EscalationState {
    /// The incident with this key.
    fn get_mut(&mut self, key: &str) -> Option<&mut Incident> {
        self.incidents.iter_mut().find(|i| i.key == key)
    }

    /// The newest brief of a service: of its open incident, else of the
    /// last one closed.
    pub(crate) fn latest_brief(&self, service: &str) -> Option<(&str, &brief::Brief)> {
        self.incidents
            .iter()
            .rev()
            .chain(self.closed.iter().rev())
            .filter(|i| i.service == service)
            .find_map(|i| i.brief.as_ref().map(|b| (i.key.as_str(), b)))
    }

    /// Incidents still failing (for `status` and the intel summary).
    pub(crate) fn open(&self) -> Vec<&Incident> {
        self.incidents.iter().filter(|i| i.is_open()).collect()
    }

    /// Moves incident `key` to the closed history. Only the newest closed
    /// incident of a service keeps its brief (what `explain` shows), so
    /// the history stays small.
    fn close(&mut self, key: &str, now_ms: i64) {
        if let Some(pos) = self.incidents.iter().position(|i| i.key == key) {
            let mut inc = self.incidents.remove(pos);
            inc.closed_ms = Some(now_ms);
            for older in self.closed.iter_mut().filter(|o| o.service == inc.service) {
                older.brief = None;
            }
            self.closed.push(inc);
            let excess = self.closed.len().saturating_sub(KEEP_CLOSED);
            self.closed.drain(..excess);
        }
    }

    /// Whether a post with this `root_id` is a reply in one of the agent's
    /// alert threads (open or kept closed incidents). Such replies are
    /// acknowledgements and conversation about a known incident, read by
    /// the escalation stage; classifying them would file the same incident
    /// again as a chat INCIDENT and answer inside the alert thread.
    pub(crate) fn is_alert_thread(&self, root_id: &str) -> bool {
        !root_id.is_empty()
            && self
                .incidents
                .iter()
                .chain(self.closed.iter())
                .any(|i| i.alert_post_id.as_deref() == Some(root_id))
    }
}

/// What this cycle's escalation did, for the cumulative stats (the cycle
/// bumps each named counter, see [`IncidentCounters::pairs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct IncidentCounters {
    /// Incidents opened.
    opened: u64,
    /// Alerts acknowledged (reaction or reply seen).
    acknowledged: u64,
    /// Incidents whose service recovered.
    resolved: u64,
    /// Sum of their times to recovery (failing since → recovered), ms.
    recovery_ms_total: u64,
    /// Alert posts made.
    alerts_posted: u64,
    /// Follow-ups made.
    follow_ups: u64,
    /// Reminders made.
    reminders: u64,
    /// Recovery posts made.
    recoveries_posted: u64,
    /// Actions that failed (owed again next cycle).
    actions_failed: u64,
}

impl IncidentCounters {
    /// `(stats counter name, value)` for `Stats::bump`.
    pub(crate) fn pairs(&self) -> [(&'static str, u64); 9] {
        [
            ("incidents_opened", self.opened),
            ("incidents_acknowledged", self.acknowledged),
            ("incidents_resolved", self.resolved),
            ("incident_recovery_ms_total", self.recovery_ms_total),
            ("alerts_posted", self.alerts_posted),
            ("alert_follow_ups", self.follow_ups),
            ("alert_reminders", self.reminders),
            ("recoveries_posted", self.recoveries_posted),
            ("escalation_actions_failed", self.actions_failed),
        ]
    }
}

/// The summary of a service by name, if this cycle checked it.
fn summary_of<'a>(services: &'a [ServiceSummary], service: &str) -> Option<&'a ServiceSummary> {
    services.iter().find(|s| s.service == service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_parse_and_validate() {
        let c = EscalationConfig::default();
        c.validate().unwrap();
        assert_eq!((c.ack_timeout_mins, c.reminder_hours), (30, 4));
        let t: EscalationConfig = toml::from_str(
            "on_call = [\"alice\"]\nresolve_command = [\"mc\", \"done\", \"{task_id}\", \"--source={source}\"]\n",
        )
        .unwrap();
        t.validate().unwrap();
        assert!(toml::from_str::<EscalationConfig>("oncall = []").is_err());
    }

    #[test]
    fn validation_names_key_and_value() {
        type Edit = fn(&mut EscalationConfig);
        let cases: Vec<(Edit, &str)> = vec![
            (
                |c| c.on_call = vec!["@alice".into()],
                "escalation.on_call: '@alice'",
            ),
            (
                |c| c.on_call = vec!["channel".into()],
                "escalation.on_call: 'channel'",
            ),
            (
                |c| c.silence_allowlist = vec!["Bob Smith".into()],
                "escalation.silence_allowlist: 'Bob Smith'",
            ),
            (|c| c.ack_timeout_mins = 0, "escalation.ack_timeout_mins: 0"),
            (|c| c.reminder_hours = 0, "escalation.reminder_hours: 0"),
            (
                |c| c.resolve_command = vec!["mc".into(), "{title}".into()],
                "unknown placeholder '{title}'",
            ),
            (
                |c| c.resolve_command = vec!["{task_id}".into()],
                "must not contain a placeholder",
            ),
            (|c| c.done_list = " Done".into(), "escalation.done_list"),
            (|c| c.brief_log_lines = 0, "escalation.brief_log_lines: 0"),
            (
                |c| c.brief_log_lines = 501,
                "escalation.brief_log_lines: 501",
            ),
            (
                |c| c.brief_budget_secs = Secs::new(0),
                "escalation.brief_budget_secs: 0",
            ),
        ];
        for (edit, want) in cases {
            let mut c = EscalationConfig::default();
            edit(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }

    #[test]
    fn alert_threads_are_known_for_open_and_closed_incidents() {
        let mut st = EscalationState::default();
        for (key, post) in [("a", Some("p1")), ("b", Some("p2")), ("c", None)] {
            st.incidents.push(Incident {
                key: key.into(),
                alert_post_id: post.map(str::to_string),
                ..Default::default()
            });
        }
        st.close("b", 1);
        assert!(st.is_alert_thread("p1"));
        assert!(
            st.is_alert_thread("p2"),
            "closed incidents keep their thread"
        );
        assert!(!st.is_alert_thread("p3"));
        assert!(
            !st.is_alert_thread(""),
            "a top-level post is no thread reply"
        );
    }

    #[test]
    fn only_the_newest_closed_incident_of_a_service_keeps_its_brief() {
        let mut st = EscalationState::default();
        for (key, service) in [("w1", "web"), ("d1", "db"), ("w2", "web")] {
            st.incidents.push(Incident {
                key: key.into(),
                service: service.into(),
                brief: Some(brief::Brief {
                    at_ms: 1,
                    ..Default::default()
                }),
                ..Default::default()
            });
            st.close(key, 2);
        }
        let kept: Vec<(&str, bool)> = st
            .closed
            .iter()
            .map(|i| (i.key.as_str(), i.brief.is_some()))
            .collect();
        assert_eq!(kept, [("w1", false), ("d1", true), ("w2", true)]);
        assert_eq!(st.latest_brief("web").map(|(k, _)| k), Some("w2"));
        assert!(st.latest_brief("mail").is_none());
    }

    #[test]
    fn closed_history_is_bounded() {
        let mut st = EscalationState::default();
        for n in 0..(KEEP_CLOSED + 5) {
            st.incidents.push(Incident {
                key: format!("k{n}"),
                ..Default::default()
            });
            st.close(&format!("k{n}"), n as i64);
        }
        assert_eq!(st.closed.len(), KEEP_CLOSED);
        assert!(st.incidents.is_empty());
        assert_eq!(
            st.closed.last().unwrap().closed_ms,
            Some(KEEP_CLOSED as i64 + 4)
        );
    }
}
