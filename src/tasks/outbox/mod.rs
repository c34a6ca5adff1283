//! Nothing lost, nothing twice: the path every task takes to MC and Planka.
//!
//! [`ensure_task`] is idempotent per `source` (post id or incident key):
//!
//! 1. The stored mapping ([`TaskState::mapping`]) and then the ledger
//!    (`find_by_source`) are checked first, so a retried post, a re-run
//!    escalation or a run after a crash finds the task it already made.
//! 2. MC must succeed, or an error is returned and nothing is recorded: the
//!    caller keeps the post pending and the next cycle tries again.
//! 3. The mapping is recorded the moment MC succeeds, and the ledger journals
//!    it on disk right away (for an external command too), so a crash before
//!    the state file is saved still finds it through `find_by_source`.
//! 4. Planka is optional: when it fails, the card goes into the outbox and
//!    [`retry_outbox`] makes it on a later cycle, with exponential backoff.
//!    The card itself carries a source marker, so a crash between creating
//!    the card and recording it does not make a second card either.
//!
//! **Residual window, stated honestly.** With an external MC command, a crash
//! (power loss, SIGKILL) after the command created the task but before its
//! id reached the ledger (one `write` later) cannot be seen by us; the next
//! run calls the command again with the same `{source}`, so an MC that
//! dedupes by source (e.g. `mc.js create --source {source}`) stays exact,
//! and one that does not may get a second task. With the built-in ledger
//! there is no such window: the ledger append is the creation.
//!
//! This file: [`ensure_task`], its outcome, and [`Trackers`]. `state.rs`:
//! the outbox's part of the state file; `mc_task.rs`: the MC task, once;
//! `card.rs`: the Planka card; `retry.rs`: [`retry_outbox`].

mod card;
mod mc_task;
mod retry;
mod state;

use std::path::Path;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ledger::Filed;
use super::mc::{McBackend, McConfig};
use super::planka::{PlankaClient, PlankaConfig};
use super::Task;
use crate::observe::audit::{self, Event};

pub(crate) use mc_task::Uncertain;
pub use retry::retry_outbox;
pub(crate) use retry::RetryResult;
pub(crate) use retry::{retry, Which};
pub(crate) use state::{
    Missed, OutboxItem, PendingView, TaskRecord, UncertainTask, UNCONFIRMED_TASK,
};
pub use state::{TaskState, WorkKind};

/// The reason of a card that waits in the outbox from an earlier failure.
pub(crate) const QUEUED: &str = "queued for retry";

/// Reference to the task made (or found) for a source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRef {
    /// MC id (`OPS-7`, `MC-123`).
    pub id: String,
    /// The card URL when there is one (MC itself has no URL we know).
    pub url: Option<String>,
}

/// What happened to the card.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "card", rename_all = "snake_case")]
pub enum CardOutcome {
    /// Made now.
    Created {
        /// Card id.
        card_id: String,
        /// Card URL.
        url: String,
    },
    /// Already there (recorded, or found on the board by its marker).
    Exists {
        /// Card id.
        card_id: String,
        /// Card URL.
        url: String,
    },
    /// Could not be made now; queued for a later cycle.
    Pending {
        /// Why.
        reason: String,
    },
    /// No card for this task (Planka off, or no board for the team).
    Disabled {
        /// Why.
        reason: String,
    },
    /// Dry run: a card would be made.
    WouldCreate,
}

/// Result of [`ensure_task`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnsureOutcome {
    /// The task.
    pub task_ref: TaskRef,
    /// True when MC made the task in this call (false: it existed).
    pub created_now: bool,
    /// The card.
    pub card: CardOutcome,
    /// True when nothing was written (dry run).
    pub dry_run: bool,
}

/// MC and Planka, built once per cycle and shared by the chat and
/// escalation stages.
pub(crate) struct Trackers {
    /// MC: the external command or the built-in ledger.
    mc: McBackend,
    /// Planka, when configured and usable.
    planka: Option<PlankaClient>,
}

impl Trackers {
    /// Builds both. Fails only on what config validation already rules out
    /// (a bad id regex), so a failure means the cycle cannot run at all; a
    /// Planka that cannot be set up only makes cards wait in the outbox.
    pub(crate) fn new(
        mc: &McConfig,
        ledger: &Path,
        planka: &PlankaConfig,
        planka_token_cache: &Path,
        done_list: &str,
    ) -> Result<Trackers> {
        let mc = McBackend::from_config(mc, ledger.to_path_buf())?;
        let planka = if planka.enabled() {
            PlankaClient::new(planka, Some(planka_token_cache.to_path_buf()))
                .map(|p| p.with_done_list(done_list))
                .map_err(|e| tracing::warn!("Planka not usable, cards wait in the outbox: {e:#}"))
                .ok()
        } else {
            None
        };
        Ok(Trackers { mc, planka })
    }

    /// Where tasks go this cycle.
    pub(crate) fn targets(&self, dry_run: bool) -> Targets<'_> {
        Targets {
            mc: &self.mc,
            planka: self.planka.as_ref(),
            dry_run,
        }
    }
}

/// Where tasks go, shared by [`ensure_task`] and [`retry_outbox`].
#[derive(Debug, Clone, Copy)]
pub struct Targets<'a> {
    /// MC (command or ledger).
    pub mc: &'a McBackend,
    /// Planka, when enabled.
    pub planka: Option<&'a PlankaClient>,
    /// Report what would be done without writing anything.
    pub dry_run: bool,
}

/// What the outbox records of a task the ledger knows.
fn record_from_ledger(t: &Filed) -> TaskRecord {
    TaskRecord {
        task_id: t.id.clone(),
        card_id: t.card_id.clone(),
        card_url: t.card_url.clone(),
        created_at_ms: t.created_at.timestamp_millis(),
    }
}

/// Makes sure `task` exists exactly once in MC and, where configured, as
/// one card in Planka. Returns an error only when MC failed, in which case
/// nothing was recorded and the caller must retry later (keep the post
/// pending, or [`TaskState::enqueue`] a `CreateTask` for an escalation).
/// The caller saves `state` right after.
pub async fn ensure_task(
    task: &Task,
    not_before_ms: i64,
    t: Targets<'_>,
    state: &mut TaskState,
    now: DateTime<Utc>,
) -> Result<EnsureOutcome> {
    let now_ms = now.timestamp_millis();
    let ledger = t.mc.ledger();
    let (mut record, created_now) = match state.mapping.get(&task.source) {
        Some(r) => (r.clone(), false),
        None => match ledger.find_by_source(&task.source, not_before_ms)? {
            Some(found) => {
                tracing::info!(source = %task.source, id = %found.id, "Task already in the ledger; not creating it again.");
                audit_task(task, &found.id, false);
                (record_from_ledger(&found), false)
            }
            None if t.dry_run => {
                return Ok(EnsureOutcome {
                    task_ref: TaskRef {
                        id: "(dry run)".into(),
                        url: None,
                    },
                    created_now: true,
                    card: card::card_plan(task, t.planka),
                    dry_run: true,
                });
            }
            None => match mc_task::create_in_mc(task, not_before_ms, t.mc, state, now).await {
                Ok(r) => {
                    audit_task(task, &r.task_id, true);
                    (r, true)
                }
                Err(e) => {
                    audit::record(Event::TaskFailed {
                        source: task.source.clone(),
                        error: audit::detail(&format!("{e:#}")),
                    });
                    return Err(e);
                }
            },
        },
    };
    // What the card missed while the task itself waited (an incident that
    // recovered while MC was down) goes on to the card.
    let carried = state
        .outbox
        .iter()
        .find(|i| i.kind == WorkKind::CreateTask && i.task.source == task.source)
        .and_then(|i| i.later.clone());
    if !t.dry_run {
        state.mapping.insert(task.source.clone(), record.clone());
        state
            .outbox
            .retain(|i| !(i.kind == WorkKind::CreateTask && i.task.source == task.source));
    }
    let card = card::ensure_card(task, &mut record, created_now, t, state, now_ms, carried).await;
    Ok(EnsureOutcome {
        task_ref: TaskRef {
            id: record.task_id.clone(),
            url: record.card_url.clone(),
        },
        created_now,
        card,
        dry_run: t.dry_run,
    })
}

/// Records in the audit trail that `task` exists as `id`: made now, or found.
fn audit_task(task: &Task, id: &str, created: bool) {
    audit::record(Event::TaskCreated {
        source: task.source.clone(),
        task: id.to_string(),
        tag: task.tag.as_str().into(),
        priority: task.priority.as_str().into(),
        team: task.team.clone(),
        created,
    });
}
