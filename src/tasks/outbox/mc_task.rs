//! The MC task, made exactly once: the built-in ledger creates it in one
//! append; the external command runs only after its attempt is journalled,
//! and not again while an earlier attempt may have made the task.

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};

use super::record_from_ledger;
use super::state::{TaskRecord, TaskState};
use crate::process::command_alive;
use crate::tasks::ledger::{AttemptEnd, IntentRecord, Ledger};
use crate::tasks::mc::{next_step, Attempted, CreateError, McBackend, McCommand, NextStep, CREATE};
use crate::tasks::Task;

/// The MC command will not be run again for a source whose earlier
/// attempts may each have made its task; an operator checks MC. Callers
/// branch on it: the post is done, without a task.
#[derive(Debug)]
pub(crate) struct Uncertain {
    /// The source.
    source: String,
    /// Why.
    why: String,
}

impl std::fmt::Display for Uncertain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "task for {} left to an operator: {}",
            self.source, self.why
        )
    }
}

impl std::error::Error for Uncertain {}

/// Creates the task in MC: in the ledger, or through the command (then
/// journalled in the ledger).
pub(super) async fn create_in_mc(
    task: &Task,
    not_before_ms: i64,
    mc: &McBackend,
    state: &mut TaskState,
    now: DateTime<Utc>,
) -> Result<TaskRecord> {
    let lt = match mc {
        McBackend::Ledger(l) => l
            .create(task, None, now)
            .context("creating the task in the built-in ledger")?,
        McBackend::Command(cmd, l) => {
            let (id, extra) = run_mc_command(task, not_before_ms, cmd, l, state, now).await?;
            // The journal line closes the crash window; MC already has the
            // task, so failing to journal is logged, not an MC failure.
            let lt = match l.create(task, Some(&id), now) {
                Ok(lt) => lt,
                Err(e) => {
                    tracing::error!(source = %task.source, id = %id, error = %format!("{e:#}"), "MC task created but not journalled in the ledger.");
                    return Ok(TaskRecord {
                        task_id: id,
                        card_id: None,
                        card_url: None,
                        created_at_ms: now.timestamp_millis(),
                    });
                }
            };
            if extra {
                let why = "an earlier attempt of the MC command ended without telling whether it \
                           made the task; this one made another: check MC for a duplicate";
                tracing::warn!(source = %task.source, id = %lt.id, "{why}");
                state.note_uncertain(task, Some(&lt.id), why, now.timestamp_millis());
            }
            lt
        }
    };
    tracing::info!(source = %task.source, id = %lt.id, tag = %task.tag, priority = %task.priority, backend = mc.kind(), "Created task.");
    Ok(record_from_ledger(&lt.filed()))
}

/// Exactly once with an external command: every attempt is written to the
/// ledger (and synced) before the command runs, with its process group
/// once it runs, and with how it ended when it ended without an id. Before
/// a second attempt whose first may have made the task, `[mc] find` is
/// asked; without it, one extra attempt is made (and shown as uncertain),
/// then none. Returns the id and whether it is a possible duplicate.
async fn run_mc_command(
    task: &Task,
    not_before_ms: i64,
    cmd: &McCommand,
    ledger: &Ledger,
    state: &mut TaskState,
    now: DateTime<Utc>,
) -> Result<(String, bool)> {
    let history = ledger.history(&task.source, not_before_ms)?;
    let now_ms = now.timestamp_millis();
    let timeout_ms = cmd.timeout().as_millis() as i64;
    let who = Attempted {
        can_ask: cmd.has_find(),
        ..CREATE
    };
    let step = next_step(&history.attempts, who, now_ms, timeout_ms, command_alive);
    let (attempt, extra) = match step {
        NextStep::Create { attempt, extra } => (attempt, extra),
        NextStep::Wait(why) => bail!("MC task for {} not created yet: {why}", task.source),
        NextStep::GiveUp(why) => {
            tracing::error!(source = %task.source, "Not running the MC command again: {why}; check MC for this task.");
            state.note_uncertain(task, None, &why, now_ms);
            return Err(anyhow::Error::new(Uncertain {
                source: task.source.clone(),
                why,
            }));
        }
        NextStep::Find => match cmd.find(task).await? {
            Some(id) => {
                tracing::info!(source = %task.source, id = %id, "MC already has this task (found by [mc] find); not creating it again.");
                return Ok((id, false));
            }
            None => (history.attempts.last().map_or(1, |a| a.attempt + 1), false),
        },
    };
    let record = |pgid: Option<u32>, outcome: Option<AttemptEnd>| IntentRecord {
        source: task.source.clone(),
        attempt,
        at: now,
        pgid,
        outcome,
    };
    ledger
        .intent(record(None, None))
        .context("recording the MC attempt before running the command")?;
    let created = cmd
        .create(task, |pgid| {
            if let Err(e) = ledger.intent(record(Some(pgid), None)) {
                tracing::warn!(error = %format!("{e:#}"), "Could not record the MC command's process group.");
            }
        })
        .await;
    match created {
        Ok(id) => Ok((id, extra)),
        Err(e) => {
            let end = match &e {
                CreateError::Failed(_) => AttemptEnd::Failed,
                CreateError::Unknown(_) => AttemptEnd::Unknown,
            };
            if let Err(w) = ledger.intent(record(None, Some(end))) {
                tracing::warn!(error = %format!("{w:#}"), "Could not record how the MC attempt ended.");
            }
            Err(e.into_error())
        }
    }
}
