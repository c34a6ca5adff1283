//! The outbox's retries: each due item tried once per cycle, a failure
//! queued again with a longer backoff.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::card::{card_plan, make_card, Attempt};
use super::state::{backoff_ms, OutboxItem, TaskRecord, TaskState, WorkKind};
use super::{ensure_task, CardOutcome, EnsureOutcome, Targets, TaskRef};

/// One due outbox item's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryResult {
    /// What was tried.
    pub(crate) kind: WorkKind,
    /// The idempotency key.
    pub(crate) source: String,
    /// Ok: task id and card outcome; Err: the error, still queued.
    pub outcome: Result<EnsureOutcome, String>,
}

/// Which outbox items a retry takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    /// Those whose backoff has passed, and every waiting card as soon as
    /// Planka answers (the cycle's retry).
    Due,
    /// All of them now (`ops-agent tasks retry`).
    All,
}

/// Works through the outbox items that are due at `now`. Each is retried
/// once; a failure stays queued with a longer backoff. Cards wait only
/// while Planka is down: once it answers in this cycle (a card made, or one
/// unauthenticated request when only waiting cards are left), every
/// waiting card is tried too, so none waits out an hour of backoff after
/// Planka is back. Dry run lists what is due without trying.
pub async fn retry_outbox(
    t: Targets<'_>,
    state: &mut TaskState,
    now: DateTime<Utc>,
) -> Vec<RetryResult> {
    retry(t, state, now, Which::Due).await
}

/// [`retry_outbox`] for the items `which` names.
pub(crate) async fn retry(
    t: Targets<'_>,
    state: &mut TaskState,
    now: DateTime<Utc>,
    which: Which,
) -> Vec<RetryResult> {
    let now_ms = now.timestamp_millis();
    let due: Vec<OutboxItem> = state
        .outbox
        .iter()
        .filter(|i| which == Which::All || i.next_attempt_ms <= now_ms)
        .cloned()
        .collect();
    let mut results = retry_items(due, t, state, now).await;
    let waiting: Vec<OutboxItem> = state
        .outbox
        .iter()
        .filter(|i| i.kind == WorkKind::CreateCard && i.next_attempt_ms > now_ms)
        // Not a card that failed earlier in this very cycle.
        .filter(|i| i.next_attempt_ms - backoff_ms(i.attempts) < now_ms)
        .filter(|i| !results.iter().any(|r| r.source == i.task.source))
        .cloned()
        .collect();
    if !waiting.is_empty() && !t.dry_run {
        if let Some(p) = t.planka {
            if p.ping().await {
                tracing::info!(
                    cards = waiting.len(),
                    "Planka answers: the waiting cards go now."
                );
                results.extend(retry_items(waiting, t, state, now).await);
            }
        }
    }
    state.prune(now_ms);
    results
}

async fn retry_items(
    items: Vec<OutboxItem>,
    t: Targets<'_>,
    state: &mut TaskState,
    now: DateTime<Utc>,
) -> Vec<RetryResult> {
    let now_ms = now.timestamp_millis();
    let mut results = Vec::new();
    for item in items {
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
            // A retry may follow a try that made the card and timed out.
            let attempt = Attempt {
                maybe_made: true,
                carried: item.later.clone(),
            };
            make_card(
                &item.task,
                &mut record,
                planka,
                t.mc.ledger(),
                state,
                now_ms,
                attempt,
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
