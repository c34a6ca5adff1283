//! Closing steps of a recovered incident: marking it recovered, the
//! card's recovery comment and move to the done list, and resolving its
//! task in MC (the ledger, or the operator's resolve command). The card's
//! recovery comment is keyed by the incident, so a retry after a crash
//! finds it ([`crate::tasks::planka::PlankaClient::add_comment`]).

use anyhow::{Context, Result};

use super::{incident, Ctx};
use crate::escalate::{EscalationState, Incident, IncidentCounters};
use crate::observe::audit::{self, Event};
use crate::paths::expand_tilde;
use crate::process::run_argv;
use crate::tasks::mc::substitute_with;
use crate::tasks::outbox::{Missed, TaskState};
use crate::tasks::planka::{Commented, Moved, PlankaClient};
use crate::time::human_ms;

/// Marks the incident recovered; a card still owed by the outbox is told
/// to be made closed, with the recovery note.
pub(super) fn mark_recovered(
    key: &str,
    in_silence: bool,
    state: &mut EscalationState,
    tasks: &mut TaskState,
    now_ms: i64,
    counters: &mut IncidentCounters,
) -> Result<String> {
    let inc = incident(state, key)?;
    inc.recovered_ms = Some(now_ms);
    inc.recovered_in_silence = in_silence;
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
        if in_silence {
            " (during a silence)"
        } else {
            ""
        }
    ))
}

/// Comments the recovery on the incident's card.
pub(super) async fn comment_card(
    ctx: &Ctx<'_>,
    key: &str,
    state: &mut EscalationState,
    now_ms: i64,
) -> Result<String> {
    let (planka, card) = planka_and_card(ctx, state, key)?;
    let inc = incident(state, key)?;
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

/// Planka this cycle and the incident's card, for the card's steps.
fn planka_and_card<'a>(
    ctx: &Ctx<'a>,
    state: &mut EscalationState,
    key: &str,
) -> Result<(&'a PlankaClient, String)> {
    let planka = ctx
        .targets
        .and_then(|t| t.planka)
        .context("Planka is not usable this cycle")?;
    let card = incident(state, key)?
        .card_id
        .clone()
        .context("the incident has no card")?;
    Ok((planka, card))
}

/// Moves the incident's card to the done list.
pub(super) async fn move_card_done(
    ctx: &Ctx<'_>,
    key: &str,
    state: &mut EscalationState,
) -> Result<String> {
    let (planka, card) = planka_and_card(ctx, state, key)?;
    let inc = incident(state, key)?;
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

/// Resolves the incident's task: in the ledger, and by the resolve command
/// when one is set.
pub(super) async fn resolve_mc(
    ctx: &Ctx<'_>,
    key: &str,
    state: &mut EscalationState,
    now_ms: i64,
) -> Result<String> {
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

/// The recovery note of an incident's card.
pub(super) fn recovery_note(inc: &Incident, now_ms: i64) -> String {
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
