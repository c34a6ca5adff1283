//! Opening an incident: its brief gathered and scrubbed details, then its
//! escalation task (and card) through the task outbox.

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};

use super::{incident, Ctx};
use crate::escalate::brief::{self, render, Brief, Subject};
use crate::escalate::{EscalationState, Incident, IncidentCounters};
use crate::fix::ServiceSummary;
use crate::observe::audit::{self, Event};
use crate::tasks::outbox::{ensure_task, CardOutcome, TaskState, Uncertain, WorkKind};
use crate::tasks::Task;

/// Opens the incident the plan made: details scrubbed once here for every
/// post and task, the brief gathered.
pub(super) async fn open(
    ctx: &Ctx<'_>,
    incident: &Incident,
    services: &[ServiceSummary],
    state: &mut EscalationState,
    now_ms: i64,
    counters: &mut IncidentCounters,
) -> Result<String> {
    tracing::warn!(incident = %incident.key, service = %incident.service, "Escalating: {}.", incident.why);
    let mut incident = incident.clone();
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

/// Files the incident's escalation task (and card); a failure queues it in
/// the task outbox, an uncertain answer from MC lets the alert go without it.
pub(super) async fn create_task(
    ctx: &Ctx<'_>,
    key: &str,
    state: &mut EscalationState,
    tasks: &mut TaskState,
    now: DateTime<Utc>,
) -> Result<String> {
    let now_ms = now.timestamp_millis();
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
            if let CardOutcome::Created { card_id, url } | CardOutcome::Exists { card_id, url } =
                o.card
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

/// The escalation task: HIGH, INTERNAL (our own work whatever the alert
/// channel's team), source = the incident key, on the board of `team`
/// (`planka.incident_team`, else the alert channel's team). Its
/// description (which the card carries too) is the details and the brief,
/// at most [`render::TASK_CAP`] bytes in all.
pub(super) fn escalation_task(inc: &Incident, owner: &str, team: &str) -> Task {
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
pub(super) async fn gather_brief(
    ctx: &Ctx<'_>,
    inc: &Incident,
    services: &[ServiceSummary],
    state: &EscalationState,
    now_ms: i64,
) -> Option<Brief> {
    let src = ctx.brief.as_ref()?;
    let subject = Subject {
        incident: inc,
        summary: crate::escalate::summary_of(services, &inc.service),
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
