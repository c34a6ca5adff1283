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

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ledger::{AttemptEnd, Filed, IntentRecord, Ledger, UpdateRecord};
use super::mc::{next_step, CreateError, McBackend, McCommand, McConfig, NextStep};
use super::planka::{PlankaClient, PlankaConfig};
use super::Task;
use crate::observe::audit::{self, Event};
use crate::process::group_alive;

/// The reason of a card that waits in the outbox from an earlier failure.
pub const QUEUED: &str = "queued for retry";

/// First retry after this long; doubled per attempt.
pub const BACKOFF_BASE_MS: i64 = 60_000;
/// Retries are at least this rare (one hour).
pub const BACKOFF_CAP_MS: i64 = 3_600_000;
/// Mapping entries older than this are pruned (the ledger still knows them).
pub const MAPPING_MAX_AGE_MS: i64 = 30 * 24 * 3_600_000;
/// At most this many mapping entries are kept (newest win).
pub const MAPPING_MAX_ENTRIES: usize = 5_000;
/// At most this many outbox items; the oldest beyond it are dropped with an
/// error in the log (a Planka outage of weeks, not a normal state).
pub const OUTBOX_MAX_ITEMS: usize = 1_000;

/// Delay before attempt `attempts + 1`, given `attempts` failures so far:
/// 1 min, 2, 4, … capped at an hour. Pure.
pub fn backoff_ms(attempts: u32) -> i64 {
    let exp = attempts.saturating_sub(1).min(20);
    (BACKOFF_BASE_MS.saturating_mul(1i64 << exp)).min(BACKOFF_CAP_MS)
}

/// What the agent made for one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// MC task id.
    pub task_id: String,
    /// Planka card id, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_id: Option<String>,
    /// Planka card URL, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_url: Option<String>,
    /// When the MC task was made (epoch ms).
    pub created_at_ms: i64,
}

/// Kinds of pending work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    /// The MC task itself (escalations, which have no post to keep pending).
    CreateTask,
    /// The Planka card of an existing MC task.
    CreateCard,
}

/// One piece of work that failed and will be retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// What to do.
    pub kind: WorkKind,
    /// The task (its `source` is the key).
    pub task: Task,
    /// The MC id, for `CreateCard`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not retried before this time (epoch ms).
    pub next_attempt_ms: i64,
    /// The latest failure, for `status`.
    pub last_error: String,
    /// When the work was first queued (epoch ms).
    pub queued_at_ms: i64,
}

/// Tasks' part of the state file (the lead stores it and saves it after
/// each post). Bounded: see [`TaskState::prune`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskState {
    /// source → what was made for it.
    pub mapping: BTreeMap<String, TaskRecord>,
    /// Work to retry on later cycles.
    pub outbox: Vec<OutboxItem>,
    /// Sources whose task the MC command could not confirm (possible
    /// duplicate, or given up): `status` and `doctor` show them, newest last.
    pub uncertain: Vec<UncertainTask>,
}

/// A source whose task in MC is uncertain, for an operator to check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UncertainTask {
    /// The idempotency key (post id or incident key).
    pub source: String,
    /// The task title.
    pub title: String,
    /// Where it came from (the post's link), when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub permalink: String,
    /// The id the last attempt got, when it got one (a possible duplicate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// What is uncertain.
    pub why: String,
    /// When (epoch ms).
    pub at_ms: i64,
}

/// What a reply names instead of a task id when the MC command's task
/// could not be confirmed.
pub const UNCONFIRMED_TASK: &str = "(not confirmed in MC: an operator will check)";

/// Uncertain sources kept for `status` and `doctor`.
pub const UNCERTAIN_MAX: usize = 100;

/// The MC command will not be run again for a source whose earlier
/// attempts may each have made its task; an operator checks MC. Callers
/// branch on it: the post is done, without a task.
#[derive(Debug)]
pub struct Uncertain {
    /// The source.
    pub source: String,
    /// Why.
    pub why: String,
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

/// A pending item as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PendingView {
    /// `create_task` or `create_card`.
    pub kind: WorkKind,
    /// The idempotency key.
    pub source: String,
    /// The task title.
    pub title: String,
    /// Failed attempts.
    pub attempts: u32,
    /// Seconds until the next try (0 = due now).
    pub next_attempt_in_secs: i64,
    /// The latest failure.
    pub last_error: String,
}

impl TaskState {
    /// Records an uncertain source (once per source and reason).
    pub fn note_uncertain(&mut self, task: &Task, task_id: Option<&str>, why: &str, now_ms: i64) {
        self.uncertain.retain(|u| u.source != task.source);
        self.uncertain.push(UncertainTask {
            source: task.source.clone(),
            title: task.title.clone(),
            permalink: task.permalink.clone(),
            task_id: task_id.map(str::to_string),
            why: why.to_string(),
            at_ms: now_ms,
        });
        let excess = self.uncertain.len().saturating_sub(UNCERTAIN_MAX);
        self.uncertain.drain(..excess);
    }

    /// Queues `kind` work for `task` after a failure (or bumps the item
    /// already queued for the same source and kind).
    pub fn enqueue(
        &mut self,
        kind: WorkKind,
        task: &Task,
        task_id: Option<&str>,
        error: &anyhow::Error,
        now_ms: i64,
    ) {
        let last_error = format!("{error:#}");
        if let Some(item) = self
            .outbox
            .iter_mut()
            .find(|i| i.kind == kind && i.task.source == task.source)
        {
            item.attempts += 1;
            item.next_attempt_ms = now_ms + backoff_ms(item.attempts);
            item.last_error = last_error;
            if task_id.is_some() {
                item.task_id = task_id.map(str::to_string);
            }
            return;
        }
        self.outbox.push(OutboxItem {
            kind,
            task: task.clone(),
            task_id: task_id.map(str::to_string),
            attempts: 1,
            next_attempt_ms: now_ms + backoff_ms(1),
            last_error,
            queued_at_ms: now_ms,
        });
    }

    /// Whether work of `kind` is queued for `source`.
    pub fn is_pending(&self, kind: WorkKind, source: &str) -> bool {
        self.outbox
            .iter()
            .any(|i| i.kind == kind && i.task.source == source)
    }

    /// Keeps the state bounded: old mapping entries go (the ledger still has
    /// them), never ones with pending work; an overlong outbox loses its oldest.
    pub fn prune(&mut self, now_ms: i64) {
        let pending: Vec<String> = self.outbox.iter().map(|i| i.task.source.clone()).collect();
        self.mapping
            .retain(|k, r| now_ms - r.created_at_ms <= MAPPING_MAX_AGE_MS || pending.contains(k));
        if self.mapping.len() > MAPPING_MAX_ENTRIES {
            let mut ages: Vec<(i64, String)> = self
                .mapping
                .iter()
                .map(|(k, r)| (r.created_at_ms, k.clone()))
                .collect();
            ages.sort();
            let excess = self.mapping.len() - MAPPING_MAX_ENTRIES;
            for (_, k) in ages
                .into_iter()
                .filter(|(_, k)| !pending.contains(k))
                .take(excess)
            {
                self.mapping.remove(&k);
            }
        }
        if self.outbox.len() > OUTBOX_MAX_ITEMS {
            self.outbox.sort_by_key(|i| i.queued_at_ms);
            let excess = self.outbox.len() - OUTBOX_MAX_ITEMS;
            for dropped in self.outbox.drain(..excess) {
                tracing::error!(source = %dropped.task.source, kind = ?dropped.kind, "Dropped a task outbox item: the outbox is full.");
            }
        }
    }

    /// The outbox as `status` shows it.
    pub fn pending(&self, now_ms: i64) -> Vec<PendingView> {
        self.outbox
            .iter()
            .map(|i| PendingView {
                kind: i.kind,
                source: i.task.source.clone(),
                title: i.task.title.clone(),
                attempts: i.attempts,
                next_attempt_in_secs: ((i.next_attempt_ms - now_ms).max(0)) / 1000,
                last_error: i.last_error.clone(),
            })
            .collect()
    }
}

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
pub struct Trackers {
    /// MC: the external command or the built-in ledger.
    pub mc: McBackend,
    /// Planka, when configured and usable.
    pub planka: Option<PlankaClient>,
}

impl Trackers {
    /// Builds both. Fails only on what config validation already rules out
    /// (a bad id regex), so a failure means the cycle cannot run at all; a
    /// Planka that cannot be set up only makes cards wait in the outbox.
    pub fn new(
        mc: &McConfig,
        ledger: &Path,
        planka: &PlankaConfig,
        planka_token_cache: &Path,
    ) -> Result<Trackers> {
        let mc = McBackend::from_config(mc, ledger.to_path_buf())?;
        let planka = if planka.enabled() {
            PlankaClient::new(planka, Some(planka_token_cache.to_path_buf()))
                .map_err(|e| tracing::warn!("Planka not usable, cards wait in the outbox: {e:#}"))
                .ok()
        } else {
            None
        };
        Ok(Trackers { mc, planka })
    }

    /// Where tasks go this cycle.
    pub fn targets(&self, dry_run: bool) -> Targets<'_> {
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
                    card: card_plan(task, t.planka),
                    dry_run: true,
                });
            }
            None => match create_in_mc(task, not_before_ms, t.mc, state, now).await {
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
    if !t.dry_run {
        state.mapping.insert(task.source.clone(), record.clone());
        state
            .outbox
            .retain(|i| !(i.kind == WorkKind::CreateTask && i.task.source == task.source));
    }
    let card = match (&record.card_id, &record.card_url) {
        (Some(id), Some(url)) => CardOutcome::Exists {
            card_id: id.clone(),
            url: url.clone(),
        },
        _ => match card_plan(task, t.planka) {
            CardOutcome::WouldCreate if t.dry_run => CardOutcome::WouldCreate,
            CardOutcome::WouldCreate
                if !created_now && state.is_pending(WorkKind::CreateCard, &task.source) =>
            {
                // Already queued with its own backoff; retry_outbox owns it.
                CardOutcome::Pending {
                    reason: QUEUED.into(),
                }
            }
            CardOutcome::WouldCreate => {
                let planka = t.planka.expect("card_plan said Planka is on");
                make_card(task, &mut record, planka, ledger, state, now_ms).await
            }
            other => other,
        },
    };
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

fn card_plan(task: &Task, planka: Option<&PlankaClient>) -> CardOutcome {
    match planka {
        None => CardOutcome::Disabled {
            reason: "Planka is not configured".into(),
        },
        Some(p) if !p.has_board(&task.team) => CardOutcome::Disabled {
            reason: format!("no Planka board configured for team '{}'", task.team),
        },
        Some(_) => CardOutcome::WouldCreate,
    }
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
    let step = next_step(
        &history.attempts,
        cmd.has_find(),
        now_ms,
        timeout_ms,
        group_alive,
    );
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

async fn create_in_mc(
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

/// Tries the card once; success is recorded in the mapping and the ledger,
/// failure queues it.
async fn make_card(
    task: &Task,
    record: &mut TaskRecord,
    planka: &PlankaClient,
    ledger: &super::ledger::Ledger,
    state: &mut TaskState,
    now_ms: i64,
) -> CardOutcome {
    match planka.create_card(task, &record.task_id).await {
        Ok(card) => {
            record.card_id = Some(card.card_id.clone());
            record.card_url = Some(card.card_url.clone());
            state.mapping.insert(task.source.clone(), record.clone());
            state
                .outbox
                .retain(|i| !(i.kind == WorkKind::CreateCard && i.task.source == task.source));
            let update = UpdateRecord {
                id: record.task_id.clone(),
                at: DateTime::from_timestamp_millis(now_ms).unwrap_or_default(),
                card_id: Some(card.card_id.clone()),
                card_url: Some(card.card_url.clone()),
                ..Default::default()
            };
            if let Err(e) = ledger.update(update) {
                tracing::warn!(id = %record.task_id, error = %format!("{e:#}"), "Card made but not journalled in the ledger.");
            }
            tracing::info!(source = %task.source, id = %record.task_id, card = %card.card_url, "Planka card ready.");
            if !card.existed {
                audit::record(Event::CardCreated {
                    source: task.source.clone(),
                    task: record.task_id.clone(),
                    card: card.card_id.clone(),
                });
            }
            if card.existed {
                CardOutcome::Exists {
                    card_id: card.card_id,
                    url: card.card_url,
                }
            } else {
                CardOutcome::Created {
                    card_id: card.card_id,
                    url: card.card_url,
                }
            }
        }
        Err(e) => {
            tracing::warn!(source = %task.source, id = %record.task_id, error = %format!("{e:#}"), "Planka card not made; will retry.");
            audit::record(Event::CardFailed {
                source: task.source.clone(),
                error: audit::detail(&format!("{e:#}")),
            });
            state.enqueue(
                WorkKind::CreateCard,
                task,
                Some(&record.task_id),
                &e,
                now_ms,
            );
            CardOutcome::Pending {
                reason: format!("{e:#}"),
            }
        }
    }
}

/// One due outbox item's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryResult {
    /// What was tried.
    pub kind: WorkKind,
    /// The idempotency key.
    pub source: String,
    /// Ok: task id and card outcome; Err: the error, still queued.
    pub outcome: Result<EnsureOutcome, String>,
}

/// Works through the outbox items that are due at `now`. Each is retried
/// once; a failure stays queued with a longer backoff. Dry run lists what
/// is due without trying.
pub async fn retry_outbox(
    t: Targets<'_>,
    state: &mut TaskState,
    now: DateTime<Utc>,
) -> Vec<RetryResult> {
    let now_ms = now.timestamp_millis();
    let due: Vec<OutboxItem> = state
        .outbox
        .iter()
        .filter(|i| i.next_attempt_ms <= now_ms)
        .cloned()
        .collect();
    let mut results = Vec::new();
    for item in due {
        let source = item.task.source.clone();
        if t.dry_run {
            results.push(RetryResult {
                kind: item.kind,
                source,
                outcome: Err("dry run: would retry".into()),
            });
            continue;
        }
        let outcome = match item.kind {
            // The task cannot predate the first time it was queued.
            WorkKind::CreateTask => {
                match ensure_task(&item.task, item.queued_at_ms, t, state, now).await {
                    Ok(o) => Ok(o),
                    Err(e) => {
                        state.enqueue(WorkKind::CreateTask, &item.task, None, &e, now_ms);
                        Err(format!("{e:#}"))
                    }
                }
            }
            WorkKind::CreateCard => retry_card(&item, t, state, now_ms).await,
        };
        results.push(RetryResult {
            kind: item.kind,
            source,
            outcome,
        });
    }
    state.prune(now_ms);
    results
}

async fn retry_card(
    item: &OutboxItem,
    t: Targets<'_>,
    state: &mut TaskState,
    now_ms: i64,
) -> Result<EnsureOutcome, String> {
    let source = &item.task.source;
    let mut record = match state.mapping.get(source) {
        Some(r) => r.clone(),
        None => match item.task_id.clone() {
            Some(id) => TaskRecord {
                task_id: id,
                card_id: None,
                card_url: None,
                created_at_ms: item.queued_at_ms,
            },
            None => {
                state
                    .outbox
                    .retain(|i| !(i.kind == WorkKind::CreateCard && &i.task.source == source));
                return Err("no MC task recorded for this card; dropped".into());
            }
        },
    };
    let card = match (
        &record.card_id,
        &record.card_url,
        card_plan(&item.task, t.planka),
    ) {
        (Some(id), Some(url), _) => CardOutcome::Exists {
            card_id: id.clone(),
            url: url.clone(),
        },
        (_, _, CardOutcome::WouldCreate) => {
            let planka = t.planka.expect("card_plan said Planka is on");
            make_card(
                &item.task,
                &mut record,
                planka,
                t.mc.ledger(),
                state,
                now_ms,
            )
            .await
        }
        (_, _, other) => other,
    };
    match &card {
        CardOutcome::Pending { reason } => Err(reason.clone()),
        _ => {
            // Done, or no longer possible (Planka switched off): not pending.
            state
                .outbox
                .retain(|i| !(i.kind == WorkKind::CreateCard && &i.task.source == source));
            Ok(EnsureOutcome {
                task_ref: TaskRef {
                    id: record.task_id.clone(),
                    url: record.card_url.clone(),
                },
                created_now: false,
                card,
                dry_run: false,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::{Priority, Tag};

    fn task(source: &str) -> Task {
        Task {
            title: "t".into(),
            description: "d".into(),
            owner: "ops".into(),
            tag: Tag::Internal,
            priority: Priority::Normal,
            source: source.into(),
            label: "TASK".into(),
            team: "basic".into(),
            channel: "c".into(),
            author: "a".into(),
            permalink: "p".into(),
        }
    }

    #[test]
    fn backoff_table() {
        for (attempts, want) in [
            (0, 60_000),
            (1, 60_000),
            (2, 120_000),
            (3, 240_000),
            (7, 3_600_000),
            (60, 3_600_000),
        ] {
            assert_eq!(backoff_ms(attempts), want, "{attempts}");
        }
    }

    #[test]
    fn enqueue_bumps_instead_of_duplicating() {
        let mut s = TaskState::default();
        let e = anyhow::anyhow!("down");
        s.enqueue(WorkKind::CreateCard, &task("a"), Some("OPS-1"), &e, 1_000);
        s.enqueue(WorkKind::CreateCard, &task("a"), Some("OPS-1"), &e, 2_000);
        assert_eq!(s.outbox.len(), 1);
        assert_eq!(s.outbox[0].attempts, 2);
        assert_eq!(s.outbox[0].next_attempt_ms, 2_000 + 120_000);
        assert!(s.is_pending(WorkKind::CreateCard, "a"));
        assert!(!s.is_pending(WorkKind::CreateTask, "a"));
        let v = s.pending(2_000);
        assert_eq!((v[0].attempts, v[0].next_attempt_in_secs), (2, 120));
    }

    #[test]
    fn prune_keeps_recent_and_pending() {
        let mut s = TaskState::default();
        let rec = |ms| TaskRecord {
            task_id: "x".into(),
            card_id: None,
            card_url: None,
            created_at_ms: ms,
        };
        let now = MAPPING_MAX_AGE_MS * 2;
        s.mapping.insert("old".into(), rec(0));
        s.mapping.insert("old-pending".into(), rec(0));
        s.mapping.insert("new".into(), rec(now));
        s.enqueue(
            WorkKind::CreateCard,
            &task("old-pending"),
            Some("x"),
            &anyhow::anyhow!("e"),
            now,
        );
        s.prune(now);
        assert_eq!(
            s.mapping.keys().cloned().collect::<Vec<_>>(),
            vec!["new", "old-pending"]
        );
    }

    #[test]
    fn old_state_json_still_loads() {
        let s: TaskState = serde_json::from_str("{}").unwrap();
        assert_eq!(s, TaskState::default());
        let s: TaskState =
            serde_json::from_str(r#"{"mapping":{"p":{"task_id":"OPS-1","created_at_ms":5}}}"#)
                .unwrap();
        assert_eq!(s.mapping["p"].task_id, "OPS-1");
    }
}
