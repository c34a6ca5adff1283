//! The Planka card of a task: whether one is owed, and one try at making
//! it (a failure queues it for [`retry_outbox`](super::retry_outbox)).
//!
//! A card that waited in the outbox is made as its task is now: what
//! happened meanwhile ([`CardLater`]: a correction, a recovery) decides its
//! list (the done list once the task closed), its label and priority came
//! with the queued task, and the events it missed become one comment.

use anyhow::Result;
use chrono::DateTime;

use super::state::{CardLater, TaskRecord, TaskState, WorkKind};
use super::{CardOutcome, Targets, QUEUED};
use crate::observe::audit::{self, Event};
use crate::tasks::ledger::{Ledger, UpdateRecord};
use crate::tasks::planka::{CardRef, NewCard, PlankaClient};
use crate::tasks::Task;

/// The card of a task [`ensure_task`](super::ensure_task) has just found or
/// made: the one recorded, else one made now, unless this is a dry run or
/// the card already waits in the outbox.
pub(super) async fn ensure_card(
    task: &Task,
    record: &mut TaskRecord,
    created_now: bool,
    t: Targets<'_>,
    state: &mut TaskState,
    now_ms: i64,
    carried: Option<CardLater>,
) -> CardOutcome {
    match (&record.card_id, &record.card_url) {
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
                // A task made in this call has no card yet; a task found
                // (a retry, a crash) may have one its record lacks.
                let try_ = Attempt {
                    maybe_made: !created_now,
                    carried,
                };
                make_card(task, record, planka, t.mc.ledger(), state, now_ms, try_).await
            }
            other => other,
        },
    }
}

/// Whether the task gets a card: Planka on, with a board for its team.
pub(super) fn card_plan(task: &Task, planka: Option<&PlankaClient>) -> CardOutcome {
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

/// One try at a card: whether an earlier try may have made it, and what
/// a queued task's card missed (carried over from its queued task).
#[derive(Debug, Default)]
pub(super) struct Attempt {
    pub(super) maybe_made: bool,
    pub(super) carried: Option<CardLater>,
}

/// Makes the card as the task is now and tells it what it missed.
async fn make_as_now(
    task: &Task,
    task_id: &str,
    planka: &PlankaClient,
    later: Option<&CardLater>,
    maybe_made: bool,
) -> Result<CardRef> {
    let closed = later.is_some_and(|l| l.closed);
    let done = planka.done_list();
    let list = (closed && !done.is_empty()).then_some(done);
    let card = planka
        .create(task, task_id, NewCard { maybe_made, list })
        .await?;
    if let (true, Some(done)) = (card.existed, list) {
        // Made before the task closed, by a try that crashed: move it now.
        planka.move_card(&card.card_id, &task.team, done).await?;
    }
    if let Some((key, text)) = later.and_then(CardLater::comment) {
        planka.add_comment(&card.card_id, &key, &text).await?;
    }
    Ok(card)
}

/// Tries the card once; success is recorded in the mapping and the ledger,
/// failure queues it (with what it missed).
pub(super) async fn make_card(
    task: &Task,
    record: &mut TaskRecord,
    planka: &PlankaClient,
    ledger: &Ledger,
    state: &mut TaskState,
    now_ms: i64,
    attempt: Attempt,
) -> CardOutcome {
    let later = attempt.carried.or_else(|| state.later_for(&task.source));
    let made = make_as_now(
        task,
        &record.task_id,
        planka,
        later.as_ref(),
        attempt.maybe_made,
    )
    .await;
    match made {
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
            // Info: the cycle's one warning names the Planka outage.
            tracing::info!(source = %task.source, id = %record.task_id, error = %format!("{e:#}"), "Planka card not made; will retry.");
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
            if let Some(item) = state
                .outbox
                .iter_mut()
                .find(|i| i.kind == WorkKind::CreateCard && i.task.source == task.source)
            {
                if item.later.is_none() {
                    item.later = later;
                }
            }
            CardOutcome::Pending {
                reason: format!("{e:#}"),
            }
        }
    }
}
