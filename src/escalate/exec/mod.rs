//! Performs the planner's actions (see [`super::plan`]): each action marks
//! the incident only after it succeeded; a failure is logged, counted and
//! simply owed again next cycle. This file keeps the stage's order, its
//! book and the dispatch; the actions live by what they touch: [`open`]
//! (the incident and its task), [`posts`] (chat, idempotent by post props),
//! [`close`] (recovery, the card, MC), and [`acks`] reads the
//! acknowledgements before planning. [`chat_silence`] answers a silence
//! asked for in chat, for the chat stage.

mod acks;
mod chat_silence;
mod close;
mod open;
mod posts;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::brief::Sources;
use super::plan::{plan, Action, PlanConfig};
use super::{EscalationConfig, EscalationState, Incident, IncidentCounters};
use crate::fix::ServiceSummary;
use crate::health::Checks;
use crate::mattermost::Client;
use crate::observe::audit::{self, Event};
use crate::report::Outcome;
use crate::tasks::outbox::{Targets, TaskState};

pub use chat_silence::{answer_silence_post, SilenceRules};
pub(crate) use close::resolve_argv;

/// What the executor needs; borrowed from the cycle.
pub struct Ctx<'a> {
    /// `[escalation]`.
    pub cfg: &'a EscalationConfig,
    /// The configured checks (silence targets, service names).
    pub checks: &'a Checks,
    /// Mattermost, when configured (None: tasks and cards only).
    pub mm: Option<&'a Client>,
    /// `mattermost.alert_channel` (`team/channel`; empty: no alerts).
    pub alert_channel: &'a str,
    /// `mattermost.max_reply_chars`: the cap of every post.
    pub max_chars: usize,
    /// Team name → id, the poller's cache (`MmState::teams`).
    pub team_ids: &'a BTreeMap<String, String>,
    /// MC and Planka (None: MC unusable this cycle; tasks are owed).
    pub targets: Option<Targets<'a>>,
    /// `agent.owner`, the task owner.
    pub owner: &'a str,
    /// Environment passed to the resolve command (`mc.pass_env`).
    pub pass_env: &'a [String],
    /// Say what would be done; do nothing.
    pub dry_run: bool,
    /// What an incident brief is gathered from (None: incidents carry no
    /// brief).
    pub brief: Option<Sources<'a>>,
}

impl Ctx<'_> {
    /// MC is the built-in ledger, which the agent closes itself.
    fn ledger_mc(&self) -> bool {
        self.targets
            .is_some_and(|t| matches!(t.mc, crate::tasks::mc::McBackend::Ledger(_)))
    }

    /// A recovered incident's task gets closed (by the ledger or the
    /// resolve command), so the recovery post may say so.
    fn closes_tasks(&self) -> bool {
        self.ledger_mc() || !self.cfg.resolve_command.is_empty()
    }

    fn alert_target(&self) -> Option<(&str, &str)> {
        self.alert_channel
            .split_once('/')
            .filter(|(t, c)| !t.is_empty() && !c.is_empty())
    }

    /// The team of incident tasks and cards: `planka.incident_team` when
    /// set, else the alert channel's team (none: no card).
    fn team(&self) -> String {
        self.targets
            .and_then(|t| t.planka)
            .and_then(|p| p.incident_team())
            .map(str::to_string)
            .or_else(|| self.alert_target().map(|(t, _)| t.to_string()))
            .unwrap_or_default()
    }
}

/// What the stage did, for the report, the log and the stats.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EscalateOutcome {
    /// Counters for the cumulative stats.
    pub(crate) counters: IncidentCounters,
    /// One line per action performed (or, in a dry run, that would be).
    pub performed: Vec<String>,
    /// One line per failure (the action is owed again next cycle).
    pub errors: Vec<String>,
    /// The failures of the card's steps (Planka is optional: the alert and
    /// the task went ahead; the step is owed again next cycle).
    pub(crate) card_errors: Vec<String>,
    /// Incidents still failing after this cycle.
    pub(crate) open: usize,
}

impl EscalateOutcome {
    /// The stage outcome: degraded when something failed.
    pub(crate) fn outcome(&self) -> Outcome {
        let detail = format!(
            "{} open, {} opened, {} alerts, {} recovered, {} actions",
            self.open,
            self.counters.opened,
            self.counters.alerts_posted,
            self.counters.resolved,
            self.performed.len()
        );
        let mut shown = self.errors.clone();
        shown.extend(self.card_errors.iter().cloned());
        if shown.is_empty() {
            Outcome::Ok(detail)
        } else if self.errors.is_empty() {
            Outcome::Ok(format!("{detail}; {}", shown.join("; ")))
        } else {
            Outcome::Degraded(format!("{detail}; {}", shown.join("; ")))
        }
    }

    /// The stage's fallback, when only the card's steps failed: shown, not
    /// a degraded stage.
    pub(crate) fn fallback(&self) -> Option<String> {
        let first = self.card_errors.first()?;
        Some(format!(
            "{} card step(s) owed to the next cycle (Planka: {first}); the alerts and tasks went ahead",
            self.card_errors.len()
        ))
    }
}

/// Where the escalation stage keeps its state, and how it makes it durable.
///
/// An incident is keyed by the time it opened, so a crash between opening
/// it and saving would open a second one with a new key next cycle (a
/// second task, a second alert). The stage checkpoints after every action,
/// before the next side effect; the cycle saves the state file.
pub trait Book {
    /// The incidents and the task mapping.
    fn parts(&mut self) -> (&mut EscalationState, &mut TaskState);
    /// Makes the parts durable.
    fn checkpoint(&mut self) -> Result<()>;
}

/// The escalation stage: records what silences saw, adopts task and card
/// ids the outbox made meanwhile, reads acknowledgements, plans, performs
/// (checkpointing the book after each action; a checkpoint that fails stops
/// the actions, which are owed next cycle). `silenced` is the same set the
/// fix stage was gated with.
pub async fn run(
    ctx: &Ctx<'_>,
    services: &[ServiceSummary],
    silenced: &BTreeSet<String>,
    book: &mut dyn Book,
    now: DateTime<Utc>,
) -> EscalateOutcome {
    let now_ms = now.timestamp_millis();
    let mut out = EscalateOutcome::default();
    let (state, tasks) = book.parts();
    state.silences.observe(ctx.checks, services, now_ms);
    adopt_task_ids(state, tasks);
    if let Some(mm) = ctx.mm {
        acks::observe_acks(mm, state, &mut out).await;
    }
    let alerting = ctx.mm.is_some() && ctx.alert_target().is_some();
    let pcfg = PlanConfig::new(ctx.cfg, alerting, ctx.ledger_mc());
    let actions = plan(services, state, silenced, now_ms, &pcfg);
    let mut failed: BTreeSet<String> = BTreeSet::new();
    for action in actions {
        let key = action.key().to_string();
        if ctx.dry_run {
            out.performed
                .push(format!("[dry-run] would {} for {key}", action.name()));
            continue;
        }
        if matches!(action, Action::Close { .. } | Action::PostBrief { .. })
            && failed.contains(&key)
        {
            continue;
        }
        let (state, tasks) = book.parts();
        let result = perform(ctx, &action, services, state, tasks, now, &mut out.counters).await;
        let service = service_of(state, &key);
        match result {
            Ok(line) => {
                tracing::info!(incident = %key, action = action.name(), "{line}");
                audit::record(Event::Escalation {
                    incident: key.clone(),
                    service,
                    check: audit::incident_check(&key),
                    step: step_name(&action).into(),
                    detail: audit::detail(&line),
                });
                out.performed.push(format!("{key}: {line}"));
            }
            Err(e) => {
                let line = format!("{key}: {} failed: {e:#}", action.name());
                tracing::warn!(incident = %key, action = action.name(), "Escalation step failed, retried next cycle: {e:#}");
                audit::record(Event::EscalationFailed {
                    incident: key.clone(),
                    service,
                    check: audit::incident_check(&key),
                    step: action.name().into(),
                    error: audit::detail(&format!("{e:#}")),
                });
                out.counters.actions_failed += 1;
                if matches!(
                    action,
                    Action::CommentCard { .. } | Action::MoveCardDone { .. }
                ) {
                    out.card_errors.push(line);
                } else {
                    out.errors.push(line);
                }
                failed.insert(key.clone());
            }
        }
        if let Err(e) = book.checkpoint() {
            let line = format!("{key}: state not saved, no further action this cycle: {e:#}");
            tracing::error!(incident = %key, "{line}");
            out.errors.push(line);
            break;
        }
    }
    out.open = book.parts().0.open().len();
    out
}

/// The audit trail's word for a step done.
fn step_name(action: &Action) -> &'static str {
    match action {
        Action::Open { .. } => "opened",
        Action::CreateTask { .. } => "task",
        Action::PostAlert { .. } => "alert_posted",
        Action::PostBrief { .. } => "brief_posted",
        Action::FollowUp { .. } => "follow_up",
        Action::Remind { .. } => "reminder",
        Action::MarkRecovered { .. } => "recovered",
        Action::PostRecovery { .. } => "recovery_posted",
        Action::AnnounceLate { .. } => "announced_late",
        Action::CommentCard { .. } => "card_commented",
        Action::MoveCardDone { .. } => "card_moved",
        Action::ResolveMc { .. } => "task_resolved",
        Action::Close { .. } => "closed",
    }
}

/// The service of incident `key` (open or just closed).
fn service_of(state: &EscalationState, key: &str) -> String {
    state
        .incidents
        .iter()
        .chain(state.closed.iter().rev())
        .find(|i| i.key == key)
        .map(|i| i.service.clone())
        .unwrap_or_else(|| key.split(':').next().unwrap_or(key).to_string())
}

/// Task and card ids the task outbox made since (a `CreateTask` queued while
/// MC was down, a card made on a later cycle).
fn adopt_task_ids(state: &mut EscalationState, tasks: &TaskState) {
    for inc in &mut state.incidents {
        if let Some(r) = tasks.mapping.get(&inc.key) {
            inc.task_id.get_or_insert_with(|| r.task_id.clone());
            if inc.card_id.is_none() {
                inc.card_id = r.card_id.clone();
                inc.card_url = r.card_url.clone();
            }
        }
    }
}

fn incident<'a>(state: &'a mut EscalationState, key: &str) -> Result<&'a mut Incident> {
    state
        .get_mut(key)
        .ok_or_else(|| anyhow!("incident {key} is not in state"))
}

/// One action: its effect, and the line that says what was done.
async fn perform(
    ctx: &Ctx<'_>,
    action: &Action,
    services: &[ServiceSummary],
    state: &mut EscalationState,
    tasks: &mut TaskState,
    now: DateTime<Utc>,
    counters: &mut IncidentCounters,
) -> Result<String> {
    let now_ms = now.timestamp_millis();
    match action {
        Action::Open { incident } => {
            open::open(ctx, incident, services, state, now_ms, counters).await
        }
        Action::CreateTask { key } => open::create_task(ctx, key, state, tasks, now).await,
        Action::PostAlert { key } => posts::alert(ctx, key, state, now_ms, counters).await,
        Action::PostBrief { key } => posts::brief(ctx, key, state).await,
        Action::FollowUp { key } => {
            posts::follow_up(ctx, key, services, state, now_ms, counters).await
        }
        Action::Remind { key } => posts::remind(ctx, key, state, now_ms, counters).await,
        Action::MarkRecovered { key, in_silence } => {
            close::mark_recovered(key, *in_silence, state, tasks, now_ms, counters)
        }
        Action::PostRecovery { key } => posts::recovery(ctx, key, state, now_ms, counters).await,
        Action::AnnounceLate { key } => {
            posts::announce_late(ctx, key, state, now_ms, counters).await
        }
        Action::CommentCard { key } => close::comment_card(ctx, key, state, now_ms).await,
        Action::MoveCardDone { key } => close::move_card_done(ctx, key, state).await,
        Action::ResolveMc { key } => close::resolve_mc(ctx, key, state, now_ms).await,
        Action::Close { key, gave_up } => {
            if *gave_up {
                tracing::warn!(incident = %key, "Closing the incident with closing steps still failing after a day.");
            }
            state.close(key, now_ms);
            Ok("closed".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::close::resolve_argv;
    use super::open::escalation_task;
    use super::posts::alert_text;
    use crate::escalate::brief::{self, render};
    use crate::escalate::Incident;

    #[test]
    fn resolve_argv_substitutes_literally() {
        let t = vec![
            "mc".to_string(),
            "done".into(),
            "{task_id}".into(),
            "--note=source {source} {other}".into(),
        ];
        assert_eq!(
            resolve_argv(&t, "OPS-7", "web:web@20240101T000000Z"),
            [
                "mc",
                "done",
                "OPS-7",
                "--note=source web:web@20240101T000000Z {other}"
            ]
        );
    }

    #[test]
    fn escalation_task_is_high_internal_keyed_by_incident() {
        let inc = Incident {
            key: "web:web@20240101T000000Z".into(),
            service: "web".into(),
            why: "no fix is configured".into(),
            details: "web is critical".into(),
            ..Default::default()
        };
        let t = escalation_task(&inc, "ops", "wizard");
        assert!(!t.description.contains("Incident brief"));
        assert_eq!(t.tag, crate::tasks::Tag::Internal);
        assert_eq!(t.priority, crate::tasks::Priority::High);
        assert_eq!(t.source, inc.key);
        assert_eq!(t.team, "wizard");
        assert!(alert_text(&inc).contains("Task: being created"));
    }

    #[test]
    fn the_task_and_the_alert_carry_the_brief_within_their_caps() {
        let log: Vec<String> = (0..400)
            .map(|i| format!("{i:03} a long and chatty log line that goes on and on and on"))
            .collect();
        let inc = Incident {
            key: "web:web@20240101T000000Z".into(),
            service: "web".into(),
            why: "the fix did not verify".into(),
            details: "web is critical\n".repeat(40),
            brief: Some(brief::Brief {
                pieces: vec![brief::Piece {
                    kind: "log".into(),
                    title: "log of web".into(),
                    lines: log,
                    note: None,
                }],
                diagnosis: brief::Diagnosis {
                    text: "Likely the disk.".into(),
                    model: Some("m".into()),
                    no_model: None,
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = escalation_task(&inc, "ops", "wizard");
        assert!(
            t.description.len() <= render::TASK_CAP,
            "{}",
            t.description.len()
        );
        assert!(
            t.description.starts_with("web is critical"),
            "details first"
        );
        assert!(t.description.contains("399 a long"), "the newest log line");
        assert!(
            t.description.contains("Escalated by ops-agent"),
            "the footer stays"
        );
        let alert = alert_text(&inc);
        assert!(
            alert.contains("a guess by the model m") && alert.contains("399 a long"),
            "{alert}"
        );
        assert!(alert.ends_with("React to this post or reply in its thread to acknowledge."));
    }
}
