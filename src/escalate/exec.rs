//! Performs the planner's actions: the escalation task (through the tasks
//! path), alert/follow-up/reminder/recovery posts, the Planka card comment
//! and move, and the MC resolve command. Each action marks the incident
//! only after it succeeded; a failure is logged, counted and simply owed
//! again next cycle (see [`super::plan`]).
//!
//! Posts are idempotent across a crash between posting and saving state:
//! every incident post carries the props [`INCIDENT_PROP`] (the key) and
//! [`EVENT_PROP`] (`alert`, `follow_up`, `reminder-N`, `recovery`), and an
//! agent post with the same pair is looked for before posting again. The
//! card's recovery comment is keyed by the incident the same way
//! ([`crate::tasks::planka::PlankaClient::add_comment`]).
//!
//! Acknowledgements are read here too, before planning: any reaction on the
//! alert post by someone other than the agent, or a reply in its thread by
//! a person, acknowledges the incident.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::brief::{self, render, Brief, Sources, Subject};
use super::plan::{plan, Action, PlanConfig};
use super::silence::{self, ChatAnswer, SilenceRequest};
use super::{Ack, AckHow, EscalationConfig, EscalationState, Incident, IncidentCounters};
use crate::fix::ServiceSummary;
use crate::health::Checks;
use crate::mattermost::wire::CreatePost;
use crate::mattermost::{reply_in_thread, Client, MmErrorKind, NewPost};
use crate::observe::audit::{self, Event};
use crate::paths::expand_tilde;
use crate::process::run_argv;
use crate::report::Outcome;
use crate::tasks::mc::substitute_with;
use crate::tasks::outbox::{
    ensure_task, CardOutcome, Missed, Targets, TaskState, Uncertain, WorkKind,
};
use crate::tasks::planka::{Commented, Moved};
use crate::tasks::Task;
use crate::time::human_ms;

/// Post prop holding the incident key on every incident post.
const INCIDENT_PROP: &str = "ops_agent_incident";
/// Post prop naming which incident post it is.
const EVENT_PROP: &str = "ops_agent_event";
/// How many recent channel posts are searched for an alert already made.
const ALERT_LOOKBACK_POSTS: u32 = 60;

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
        observe_acks(mm, state, &mut out).await;
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

/// Marks alerts acknowledged: a reaction by anyone but the agent, else a
/// reply in the thread by a person (not the agent, a bot or a webhook).
async fn observe_acks(mm: &Client, state: &mut EscalationState, out: &mut EscalateOutcome) {
    let waiting: Vec<(String, String)> = state
        .incidents
        .iter()
        .filter(|i| i.is_open() && i.acked.is_none())
        .filter_map(|i| i.alert_post_id.clone().map(|p| (i.key.clone(), p)))
        .collect();
    if waiting.is_empty() {
        return;
    }
    let own = match mm.own_id().await {
        Ok(id) => id,
        Err(e) => {
            out.errors.push(format!("acknowledgements not read: {e:#}"));
            return;
        }
    };
    for (key, post_id) in waiting {
        match find_ack(mm, &post_id, &own).await {
            Ok(Some(ack)) => {
                tracing::info!(incident = %key, by = %ack.by, how = ?ack.how, "Alert acknowledged.");
                audit::record(Event::Acknowledged {
                    incident: key.clone(),
                    service: service_of(state, &key),
                    check: audit::incident_check(&key),
                    by: ack.by.clone(),
                    how: match ack.how {
                        AckHow::Reaction => "reaction",
                        AckHow::Reply => "reply",
                    }
                    .into(),
                });
                out.counters.acknowledged += 1;
                if let Some(inc) = state.get_mut(&key) {
                    inc.acked = Some(ack);
                }
            }
            Ok(None) => {}
            Err(e) => out
                .errors
                .push(format!("{key}: acknowledgement not read: {e:#}")),
        }
    }
}

async fn find_ack(mm: &Client, post_id: &str, own: &str) -> Result<Option<Ack>> {
    let reactions = mm.reactions(post_id).await?;
    if let Some(r) = reactions
        .iter()
        .filter(|r| r.user_id != own)
        .min_by_key(|r| r.create_at)
    {
        return Ok(Some(Ack {
            by: r.user_id.clone(),
            at_ms: r.create_at,
            how: AckHow::Reaction,
        }));
    }
    let thread = mm.thread(post_id).await?;
    Ok(thread
        .posts
        .values()
        .filter(|p| p.root_id == post_id && p.user_id != own && p.delete_at == 0)
        .filter(|p| !p.prop_flag("from_bot") && !p.prop_flag("from_webhook"))
        .filter(|p| !p.kind.starts_with("system_"))
        .min_by_key(|p| p.create_at)
        .map(|p| Ack {
            by: p.user_id.clone(),
            at_ms: p.create_at,
            how: AckHow::Reply,
        }))
}

fn incident<'a>(state: &'a mut EscalationState, key: &str) -> Result<&'a mut Incident> {
    state
        .get_mut(key)
        .ok_or_else(|| anyhow!("incident {key} is not in state"))
}

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
            tracing::warn!(incident = %incident.key, service = %incident.service, "Escalating: {}.", incident.why);
            let mut incident = (**incident).clone();
            // Check reasons quote outside text (a healthcheck's output, an
            // endpoint's error): scrubbed once here for every post and task.
            incident.details = crate::scrub::text(&incident.details).into_owned();
            incident.issue = crate::scrub::text(&incident.issue).into_owned();
            incident.brief = gather_brief(ctx, &incident, services, state, now_ms).await;
            let why = incident.why.clone();
            state.incidents.push(incident);
            counters.opened += 1;
            Ok(format!("opened: {why}"))
        }
        Action::CreateTask { key } => {
            let Some(targets) = ctx.targets else {
                bail!("MC is not usable this cycle");
            };
            if tasks.is_pending(WorkKind::CreateTask, key) {
                return Ok("task queued in the task outbox".into());
            }
            let team = ctx.team();
            let inc = incident(state, key)?;
            let task = escalation_task(inc, ctx.owner, &team);
            match ensure_task(&task, inc.opened_ms, targets, tasks, now).await {
                Ok(o) => {
                    inc.task_id = Some(o.task_ref.id.clone());
                    inc.team = team;
                    if let CardOutcome::Created { card_id, url }
                    | CardOutcome::Exists { card_id, url } = o.card
                    {
                        inc.card_id = Some(card_id);
                        inc.card_url = Some(url);
                    }
                    Ok(format!("task {}", o.task_ref.id))
                }
                Err(e) if e.downcast_ref::<Uncertain>().is_some() => {
                    // No task will be made; the alert goes out without one.
                    inc.task_id = Some("(uncertain: check MC)".into());
                    inc.team = team;
                    Ok(format!("{e:#}"))
                }
                Err(e) => {
                    tasks.enqueue(WorkKind::CreateTask, &task, None, &e, now_ms);
                    Err(e.context("escalation task queued in the outbox"))
                }
            }
        }
        Action::PostAlert { key } => {
            let mm = ctx.mm.context("Mattermost is not configured")?;
            let channel_id = alert_channel_id(ctx, mm, state).await?;
            let inc = incident(state, key)?;
            let text = alert_text(inc);
            let (id, found_at) =
                match post_once(mm, &channel_id, None, key, "alert", &text, ctx.max_chars).await {
                    Ok(found_or_new) => found_or_new,
                    Err(e) => {
                        if is_not_found(&e) {
                            state.alert_channel = None;
                        }
                        return Err(e);
                    }
                };
            let inc = incident(state, key)?;
            inc.alert_post_id = Some(id.clone());
            inc.alert_channel_id = Some(channel_id);
            // The post's own time: an alert found again after a lost save
            // keeps its age, so the follow-up clock does not start over.
            inc.alerted_ms = Some(found_at.unwrap_or(now_ms));
            counters.alerts_posted += 1;
            Ok(format!("alert posted ({id})"))
        }
        Action::PostBrief { key } => {
            let inc = incident(state, key)?;
            let Some(b) = &inc.brief else {
                inc.brief_posted = true;
                return Ok("no brief was gathered".into());
            };
            let text = render::markdown(b, key, render::CHAT_CAP.min(ctx.max_chars));
            let id = thread_post(ctx, state, key, "brief", &text).await?;
            incident(state, key)?.brief_posted = true;
            Ok(format!("brief posted in the thread ({id})"))
        }
        Action::FollowUp { key } => {
            let mentions: Vec<String> = ctx.cfg.on_call.iter().map(|u| format!("@{u}")).collect();
            // The evidence as it is now, for whoever is woken up.
            let current = incident(state, key)?.clone();
            let refreshed = gather_brief(ctx, &current, services, state, now_ms).await;
            let inc = incident(state, key)?;
            if let Some(b) = refreshed {
                inc.brief = Some(b);
            }
            let mut text = format!(
                "{}: nobody has acknowledged this alert for {}. **{}** is still failing ({}). Please react to the alert or reply here.",
                mentions.join(" "),
                human_ms(now_ms - inc.alerted_ms.unwrap_or(now_ms)),
                inc.service,
                inc.issue
            );
            if let Some(b) = &inc.brief {
                let room = ctx.max_chars.saturating_sub(text.len() + 40);
                text.push_str("\n\nThe brief, gathered again now:\n\n");
                text.push_str(&render::markdown(b, key, render::CHAT_CAP.min(room)));
            }
            thread_post(ctx, state, key, "follow_up", &text).await?;
            incident(state, key)?.followed_up_ms = Some(now_ms);
            counters.follow_ups += 1;
            Ok("follow-up posted".into())
        }
        Action::Remind { key } => {
            let inc = incident(state, key)?;
            let n = inc.reminders + 1;
            let text = format!(
                "Reminder: **{}** has been failing for {} and this alert is not acknowledged ({}).",
                inc.service,
                human_ms(now_ms - inc.failing_since_ms),
                inc.issue
            );
            thread_post(ctx, state, key, &format!("reminder-{n}"), &text).await?;
            let inc = incident(state, key)?;
            inc.reminded_ms = Some(now_ms);
            inc.reminders = n;
            counters.reminders += 1;
            Ok(format!("reminder {n} posted"))
        }
        Action::MarkRecovered { key, in_silence } => {
            let inc = incident(state, key)?;
            inc.recovered_ms = Some(now_ms);
            inc.recovered_in_silence = *in_silence;
            let ttr = (now_ms - inc.failing_since_ms).max(0);
            counters.resolved += 1;
            counters.recovery_ms_total += ttr as u64;
            if inc.card_id.is_none() {
                // The card still waits in the outbox (Planka was down, or
                // is the incident): it is made closed, with this note.
                let told = tasks.card_missed(
                    key,
                    Missed {
                        key: &format!("recovery {key}"),
                        text: &recovery_note(inc, now_ms),
                        closed: Some(true),
                        priority: None,
                        label: None,
                    },
                );
                if told {
                    inc.card_commented = true;
                    inc.card_moved = true;
                }
            }
            Ok(format!(
                "recovered after {}{}",
                human_ms(ttr),
                if *in_silence {
                    " (during a silence)"
                } else {
                    ""
                }
            ))
        }
        Action::PostRecovery { key } => {
            let inc = incident(state, key)?;
            let text = format!(
                ":white_check_mark: **{}** has recovered after {} (at {}).{}",
                inc.service,
                human_ms(inc.recovered_ms.unwrap_or(now_ms) - inc.failing_since_ms),
                crate::time::rfc3339_ms(inc.recovered_ms.unwrap_or(now_ms)),
                inc.task_id
                    .as_deref()
                    .map(|t| if ctx.closes_tasks() {
                        format!(" Task {t} is being closed.")
                    } else {
                        format!(" Task {t} stays open in MC (no resolve_command is set).")
                    })
                    .unwrap_or_default()
            );
            thread_post(ctx, state, key, "recovery", &text).await?;
            incident(state, key)?.recovery_posted = true;
            counters.recoveries_posted += 1;
            Ok("recovery posted".into())
        }
        Action::AnnounceLate { key } => {
            let mm = ctx.mm.context("Mattermost is not configured")?;
            let channel_id = alert_channel_id(ctx, mm, state).await?;
            let inc = incident(state, key)?;
            let recovered = inc.recovered_ms.unwrap_or(now_ms);
            let text = format!(
                ":information_source: While this channel could not be reached, **{}** failed at {} \
                 and recovered at {} after {} (`{}`): {}{}",
                inc.service,
                crate::time::rfc3339_ms(inc.failing_since_ms),
                crate::time::rfc3339_ms(recovered),
                human_ms(recovered - inc.failing_since_ms),
                inc.key,
                inc.issue,
                inc.task_id
                    .as_deref()
                    .map(|t| format!(" Task {t}."))
                    .unwrap_or_default()
            );
            let (id, found_at) =
                post_once(mm, &channel_id, None, key, "late", &text, ctx.max_chars).await?;
            let inc = incident(state, key)?;
            inc.alert_post_id = Some(id.clone());
            inc.alert_channel_id = Some(channel_id);
            inc.alerted_ms = Some(found_at.unwrap_or(now_ms));
            inc.recovery_posted = true;
            counters.alerts_posted += 1;
            Ok(format!("announced late ({id})"))
        }
        Action::CommentCard { key } => {
            let planka = ctx
                .targets
                .and_then(|t| t.planka)
                .context("Planka is not usable this cycle")?;
            let inc = incident(state, key)?;
            let card = inc.card_id.clone().context("the incident has no card")?;
            let text = recovery_note(inc, now_ms);
            let how = planka
                .add_comment(&card, &format!("recovery {}", inc.key), &text)
                .await?;
            let inc = incident(state, key)?;
            inc.card_commented = true;
            Ok(match how {
                Commented::Posted => format!("card {card} commented"),
                Commented::Found => format!("card {card} already had the recovery comment"),
                Commented::Gone => {
                    inc.card_moved = true;
                    card_gone(key, &card)
                }
            })
        }
        Action::MoveCardDone { key } => {
            let planka = ctx
                .targets
                .and_then(|t| t.planka)
                .context("Planka is not usable this cycle")?;
            let inc = incident(state, key)?;
            let card = inc.card_id.clone().context("the incident has no card")?;
            if inc.card_moved {
                // The comment step found the card gone this cycle.
                return Ok(format!("card {card} is gone: nothing to move"));
            }
            let team = if inc.team.is_empty() {
                ctx.team()
            } else {
                inc.team.clone()
            };
            let moved = planka.move_card(&card, &team, &ctx.cfg.done_list).await?;
            incident(state, key)?.card_moved = true;
            Ok(match moved {
                Moved::Moved => format!("card {card} moved to '{}'", ctx.cfg.done_list),
                Moved::Gone => card_gone(key, &card),
            })
        }
        Action::ResolveMc { key } => {
            let inc = incident(state, key)?;
            let task_id = inc.task_id.clone().context("the incident has no task")?;
            if let Some(crate::tasks::mc::McBackend::Ledger(ledger)) = ctx.targets.map(|t| t.mc) {
                ledger.update(crate::tasks::ledger::UpdateRecord {
                    id: task_id.clone(),
                    at: chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default(),
                    status: Some("resolved".into()),
                    ..Default::default()
                })?;
                if ctx.cfg.resolve_command.is_empty() {
                    incident(state, key)?.mc_resolved = true;
                    return Ok(format!("task {task_id} resolved in the ledger"));
                }
            }
            let argv = resolve_argv(&ctx.cfg.resolve_command, &task_id, key);
            run_argv(
                &argv,
                ctx.cfg.resolve_timeout_secs.get(),
                ctx.pass_env,
                "resolve command",
            )
            .await?;
            incident(state, key)?.mc_resolved = true;
            Ok(format!("task {task_id} resolved in MC"))
        }
        Action::Close { key, gave_up } => {
            if *gave_up {
                tracing::warn!(incident = %key, "Closing the incident with closing steps still failing after a day.");
            }
            state.close(key, now_ms);
            Ok("closed".into())
        }
    }
}

/// The recovery note of an incident's card.
fn recovery_note(inc: &Incident, now_ms: i64) -> String {
    format!(
        "Recovered at {} after {} (incident {}).",
        crate::time::rfc3339_ms(inc.recovered_ms.unwrap_or(now_ms)),
        human_ms(inc.recovered_ms.unwrap_or(now_ms) - inc.failing_since_ms),
        inc.key
    )
}

/// A card the agent made is gone from Planka (someone deleted it): noted
/// once, in the audit trail and the stage's report, and left alone; the
/// incident's closing steps go on without it.
fn card_gone(key: &str, card: &str) -> String {
    tracing::warn!(incident = %key, card = %card, "The incident's Planka card is gone (deleted); left alone.");
    audit::record(Event::CardGone {
        source: key.to_string(),
        card: card.to_string(),
    });
    format!("card {card} is gone from Planka (deleted): left alone")
}

/// The escalation task: HIGH, INTERNAL (our own work whatever the alert
/// channel's team), source = the incident key, on the board of `team`
/// (`planka.incident_team`, else the alert channel's team). Its
/// description (which the card carries too) is the details and the brief,
/// at most [`render::TASK_CAP`] bytes in all.
fn escalation_task(inc: &Incident, owner: &str, team: &str) -> Task {
    let summary = format!("{} failing: {}", inc.service, inc.why);
    let team = (!team.is_empty()).then_some(team);
    let details = match &inc.brief {
        Some(b) => {
            // Room for the details, the separator and Task's own footer.
            let room = render::TASK_CAP.saturating_sub(inc.details.len() + 160);
            format!(
                "{}\n\n{}",
                inc.details.trim_end(),
                render::markdown(b, &inc.key, room)
            )
        }
        None => inc.details.clone(),
    };
    Task::escalation(&inc.key, &summary, &details, owner, team)
}

/// Gathers the brief of `inc` (when the cycle gave the sources) and
/// records in the audit trail what it holds.
async fn gather_brief(
    ctx: &Ctx<'_>,
    inc: &Incident,
    services: &[ServiceSummary],
    state: &EscalationState,
    now_ms: i64,
) -> Option<Brief> {
    let src = ctx.brief.as_ref()?;
    let subject = Subject {
        incident: inc,
        summary: super::summary_of(services, &inc.service),
        state,
        checks: ctx.checks,
    };
    let b = brief::gather(src, ctx.cfg, &subject, now_ms).await;
    let gathered = render::gathered(&b);
    tracing::info!(incident = %inc.key, ms = b.took_ms, "Incident brief gathered: {gathered}");
    audit::record(Event::BriefGathered {
        incident: inc.key.clone(),
        service: inc.service.clone(),
        check: audit::incident_check(&inc.key),
        gathered,
        ms: b.took_ms,
    });
    Some(b)
}

/// The resolve argv: `~` expanded, `{task_id}` and `{source}` substituted.
pub(crate) fn resolve_argv(template: &[String], task_id: &str, source: &str) -> Vec<String> {
    template
        .iter()
        .map(|t| {
            substitute_with(&expand_tilde(t).to_string_lossy(), |name| match name {
                "task_id" => Some(task_id),
                "source" => Some(source),
                _ => None,
            })
        })
        .collect()
}

/// The alert: what failed, what was tried, the last check output, and
/// from the brief the first diagnosis and the most telling lines.
fn alert_text(inc: &Incident) -> String {
    let mut text = format!(
        ":rotating_light: **Incident: {} is failing** (`{}`)\n\n{}",
        inc.service, inc.key, inc.details
    );
    match (&inc.task_id, &inc.card_url) {
        (Some(t), Some(url)) => text.push_str(&format!("\nTask: {t} ({url})\n")),
        (Some(t), None) => text.push_str(&format!("\nTask: {t}\n")),
        _ => text.push_str("\nTask: being created.\n"),
    }
    if let Some(b) = &inc.brief {
        text.push('\n');
        text.push_str(&render::alert_part(b));
    }
    text.push_str("\nReact to this post or reply in its thread to acknowledge.");
    text
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<crate::mattermost::MmError>()
            .is_some_and(|m| m.kind == MmErrorKind::NotFound)
    })
}

/// The alert channel id: cached in state for the configured `team/channel`,
/// else resolved (team id from the poller's cache, else by name).
async fn alert_channel_id(
    ctx: &Ctx<'_>,
    mm: &Client,
    state: &mut EscalationState,
) -> Result<String> {
    if let Some((spec, id)) = &state.alert_channel {
        if spec == ctx.alert_channel {
            return Ok(id.clone());
        }
    }
    let (team, channel) = ctx.alert_target().with_context(|| {
        format!(
            "mattermost.alert_channel '{}' is not team/channel",
            ctx.alert_channel
        )
    })?;
    let team_id = match ctx.team_ids.get(team) {
        Some(id) => id.clone(),
        None => {
            mm.team_by_name(team)
                .await
                .with_context(|| format!("resolving the alert team '{team}'"))?
                .id
        }
    };
    let ch = match mm.channel_by_name(&team_id, channel).await {
        Err(e) if e.kind == MmErrorKind::NotFound && ctx.team_ids.contains_key(team) => {
            // The cached team id may be stale: resolve the team by name once.
            let team_id = mm.team_by_name(team).await?.id;
            mm.channel_by_name(&team_id, channel).await?
        }
        r => r.with_context(|| format!("resolving the alert channel '{}'", ctx.alert_channel))?,
    };
    state.alert_channel = Some((ctx.alert_channel.to_string(), ch.id.clone()));
    Ok(ch.id)
}

async fn thread_post(
    ctx: &Ctx<'_>,
    state: &mut EscalationState,
    key: &str,
    event: &str,
    text: &str,
) -> Result<String> {
    let mm = ctx.mm.context("Mattermost is not configured")?;
    let inc = incident(state, key)?;
    let root = inc.alert_post_id.clone().context("no alert post")?;
    let channel = match inc.alert_channel_id.clone() {
        Some(c) => c,
        None => alert_channel_id(ctx, mm, state).await?,
    };
    let (id, _) = post_once(mm, &channel, Some(&root), key, event, text, ctx.max_chars).await?;
    Ok(id)
}

/// Posts `text` (made safe: no mass mentions, capped) unless the agent's
/// post for this incident and event is already there. Returns the post's
/// id, and its `create_at` when it was found rather than made (a save lost
/// after posting), so the caller can keep the original time.
async fn post_once(
    mm: &Client,
    channel_id: &str,
    root: Option<&str>,
    key: &str,
    event: &str,
    text: &str,
    max_chars: usize,
) -> Result<(String, Option<i64>)> {
    let own = mm.own_id().await?;
    let existing = match root {
        Some(r) => mm.thread(r).await?,
        None => mm.posts_page(channel_id, 0, ALERT_LOOKBACK_POSTS).await?,
    };
    if let Some(p) = existing.posts.values().find(|p| {
        p.user_id == own
            && p.delete_at == 0
            && p.prop_str(INCIDENT_PROP) == Some(key)
            && p.prop_str(EVENT_PROP) == Some(event)
    }) {
        return Ok((p.id.clone(), Some(p.create_at)));
    }
    let mut props = Map::new();
    props.insert(INCIDENT_PROP.into(), Value::String(key.to_string()));
    props.insert(EVENT_PROP.into(), Value::String(event.to_string()));
    let post = mm
        .create_post(&CreatePost {
            channel_id: channel_id.to_string(),
            message: crate::text::for_chat(text, max_chars),
            root_id: root.unwrap_or_default().to_string(),
            props,
        })
        .await
        .with_context(|| format!("posting the {event} of incident {key}"))?;
    Ok((post.id, None))
}

/// What a chat silence command is judged by, and the cap of its answer:
/// the chat stage's settings, as the escalation room reads them.
#[derive(Clone, Copy)]
pub struct SilenceRules<'a> {
    /// `[escalation]`: who may silence (`silence_allowlist`).
    pub cfg: &'a EscalationConfig,
    /// The configured checks: what can be silenced.
    pub checks: &'a Checks,
    /// `mattermost.max_reply_chars`: the answer's cap.
    pub max_chars: usize,
}

/// Answers the chat silence command of one polled post (parsed once, by
/// the chat stage's router): the silence is made (allowed users only, once
/// per post) and the answer is posted in the thread; the caller then marks
/// the post handled without classifying it. An error (the reply failed)
/// leaves the post pending; the retry makes no second silence.
pub async fn answer_silence_post(
    mm: &Client,
    post: &NewPost,
    request: Result<SilenceRequest, String>,
    rules: SilenceRules<'_>,
    state: &mut EscalationState,
    now_ms: i64,
) -> Result<ChatAnswer> {
    let answer = silence::answer_chat(
        request,
        &post.username,
        &post.id,
        &rules.cfg.silence_allowlist,
        &rules.checks.services(),
        &mut state.silences,
        now_ms,
    );
    match &answer {
        ChatAnswer::Created(s) => {
            tracing::warn!(target = %s.target, by = %s.by, until = %crate::time::rfc3339_ms(s.until_ms), "Silence created from chat: {}", s.reason);
            silence::audit_created(s);
        }
        ChatAnswer::Refused => {
            tracing::info!(user = %post.username, post = %post.id, "Silence request refused: not on the allowlist.");
            audit::record(Event::SilenceRefused {
                post: post.id.clone(),
                by: post.username.to_string(),
                why: "not on escalation.silence_allowlist".into(),
            });
        }
        ChatAnswer::Invalid(why) => {
            tracing::info!(post = %post.id, "Silence request not understood: {why}");
            audit::record(Event::SilenceRefused {
                post: post.id.clone(),
                by: post.username.to_string(),
                why: audit::detail(&format!("not understood: {why}")),
            });
        }
    }
    reply_in_thread(
        mm,
        post,
        &answer.reply_text(&post.username, now_ms),
        &post.id,
        rules.max_chars,
    )
    .await?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

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
