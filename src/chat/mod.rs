//! The chat half of a cycle (stages 1–4, see "One cycle" in
//! docs/architecture.md): read every new post (`poll`), decide once what
//! each one is ([`route`]), label the work ([`triage`]), file its task and
//! answer in its thread ([`act`]), put right the labels the team corrected
//! ([`corrections`]), and move the cursor only over posts that were fully
//! handled. [`run`] is the one call the cycle makes.
//!
//! This file keeps only what the parts must agree on: the order of the
//! steps (batches of posts as the poll hands them over, so memory stays
//! flat in a burst), the [`Book`] through which they all see the state, and the
//! [`Tally`] they all count into. Every step is idempotent and recorded in
//! the post's [`progress`] as soon as it is done, and the state is
//! checkpointed after every post that wrote outside (task, card, reply),
//! so a cycle cut by the deadline or killed halfway repeats nothing; the
//! posts of a batch that wrote nothing are checkpointed together, one sync
//! for all, so their corrections watch entries go to the watch file as the
//! cycle goes ([`watch`]) rather than wait for its end in memory.

mod act;
mod corrections;
mod poll;
pub(crate) mod progress;
mod relabel;
pub mod reply;
mod route;
mod triage;
pub(crate) mod watch;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::budget::CycleBudget;
use crate::classify::ClassifyConfig;
use crate::escalate::{EscalationConfig, EscalationState};
use crate::health::{CheckResult, Checks};
use crate::mattermost::{self, MattermostConfig, MmState, NewPost};
use crate::ollama::{self, OllamaConfig};
use crate::report::CycleReport;
use crate::tasks::outbox::{Targets, TaskState};
use crate::tasks::BillingConfig;
use crate::time::elapsed_ms;

pub(crate) use corrections::CorrectionsConfig;
pub(crate) use progress::{ChatState, PostProgress};
use route::Route;

/// The config sections the chat stage reads.
pub(crate) struct Settings<'a> {
    /// `[mattermost]`.
    pub(crate) mattermost: &'a MattermostConfig,
    /// Where the Mattermost session token is cached.
    pub(crate) token_cache: &'a Path,
    /// `[ollama]`.
    pub(crate) ollama: &'a OllamaConfig,
    /// `[classify]`.
    pub(crate) classify: &'a ClassifyConfig,
    /// `[billing]`.
    pub(crate) billing: &'a BillingConfig,
    /// Owner of the tasks filed.
    pub(crate) owner: &'a str,
    /// `[escalation]` (who may silence from chat).
    pub(crate) escalation: &'a EscalationConfig,
    /// The checks (silence targets).
    pub(crate) checks: &'a Checks,
    /// How far back a first run reads (ms).
    pub(crate) first_run_lookback_ms: i64,
    /// `[corrections]`: who corrects labels by reaction, with which emoji.
    pub(crate) corrections: &'a CorrectionsConfig,
    /// The corrections file (`[paths] corrections`).
    pub(crate) corrections_file: &'a Path,
    /// The corrections watch (`<state>.watch`, see [`watch`]).
    pub(crate) watch_file: &'a Path,
}

/// The health results of the last cycle, which an INCIDENT reply quotes
/// when the post names a checked service.
#[derive(Clone, Copy)]
pub(crate) struct LastChecks<'a> {
    /// The results.
    pub(crate) results: &'a [CheckResult],
    /// When they were taken (epoch ms).
    pub(crate) at_ms: i64,
}

/// The parts of the runtime state the chat stage changes, and the way to
/// make them durable mid-stage: the cycle implements it over its state
/// file, so this room never needs the whole state's type.
pub(crate) trait Book {
    /// The chat stage's parts of the state.
    fn parts(&mut self) -> Parts<'_>;
    /// Makes what handling `post` changed durable (the cycle appends it to
    /// the state's journal).
    fn checkpoint(&mut self, post: &str, create_at: i64) -> Result<()>;
    /// [`Book::checkpoint`] for several posts at once, with one sync: the
    /// posts of a batch that wrote nothing outside (ROUTINE), so their
    /// watch entries need not wait in memory for the cycle's end.
    fn checkpoint_many(&mut self, posts: &[(&str, i64)]) -> Result<()>;
}

/// Borrowed parts of the runtime state.
pub(crate) struct Parts<'a> {
    /// The chat cursor (epoch ms, server clock); `None` on a first run.
    pub(crate) cursor: &'a mut Option<i64>,
    /// Mattermost caches and the handled-post set.
    pub(crate) mm: &'a mut MmState,
    /// Per-post progress.
    pub(crate) chat: &'a mut ChatState,
    /// Task mapping and the outbox.
    pub(crate) tasks: &'a mut TaskState,
    /// Incidents (alert threads) and silences.
    pub(crate) escalation: &'a mut EscalationState,
}

/// Counts for the report's classify, tasks and reply stages and the stats.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Posts labelled this cycle, per path.
    by_llm: u32,
    /// Posts labelled by the fallback (rules, model, corrections).
    by_fallback: u32,
    /// Tasks created this cycle.
    pub(crate) tasks_created: u32,
    /// Tasks that already existed (retry after a crash).
    tasks_existing: u32,
    /// MC failures (the post stays pending).
    pub(crate) task_errors: Vec<String>,
    /// Planka failures (the card waits in the outbox).
    pub(crate) card_errors: Vec<String>,
    /// Replies posted this cycle, and those an earlier try sent without
    /// learning it (found in the thread now): each reply counts once.
    pub(crate) replies: u32,
    /// Reply failures (the post stays pending).
    pub(crate) reply_errors: Vec<String>,
    /// Replies written by the template because the LLM could not help
    /// (down, no time): the fallback of an optional dependency.
    pub(crate) replies_templated: u32,
    /// Why the first of those was templated.
    pub(crate) template_reason: Option<String>,
    /// Posts fully handled this cycle.
    pub(crate) posts_handled: u64,
    /// Dry run: what would have been done.
    would: Vec<String>,
    /// Named counters for the cumulative stats (classification paths and
    /// labels, handled posts, tasks, replies).
    pub(crate) counters: BTreeMap<String, u64>,
}

impl Tally {
    /// Adds one to a named counter.
    fn bump(&mut self, name: &str) {
        *self.counters.entry(name.to_string()).or_default() += 1;
    }
}

/// What the chat stage leaves to the rest of the cycle.
pub(crate) struct ChatRun {
    /// Mattermost, for the escalation stage; `None` without credentials.
    /// Kept when Mattermost is down: an alert post is then owed, not
    /// skipped.
    pub(crate) client: Option<mattermost::Client>,
    /// The counts.
    pub(crate) tally: Tally,
}

/// Runs the chat half: the poll, then batch by batch as the poll hands
/// them over (each channel's posts oldest first, one `since` answer or one
/// page at a time, so memory holds a batch, never the backlog): route,
/// classify, file and reply; then the corrections, then the cursor.
/// Stage outcomes go into `report` (`mattermost`, `classify`, `tasks`,
/// `reply`, `corrections`). An error means the state could not be saved
/// mid-stage: the cycle must stop rather than repeat work.
pub(crate) async fn run(
    settings: &Settings<'_>,
    budget: &CycleBudget,
    targets: Targets<'_>,
    last_checks: LastChecks<'_>,
    book: &mut dyn Book,
    report: &mut CycleReport,
    now: DateTime<Utc>,
) -> Result<ChatRun> {
    let mut tally = Tally::default();
    let (client, mut polled) = poll::stage(settings, budget, book, report, now).await;
    let mut batch = polled.next_batch(client.as_ref(), book).await;
    let me = book.parts().mm.me.as_ref().map(|m| m.username.clone());
    let llm = batch.as_ref().and_then(|_| llm_client(settings));
    let mut classify = triage::Classify::new(settings, budget, llm.as_ref());
    let act = client.as_ref().map(|mm| act::Act {
        settings,
        budget,
        mm,
        llm: llm.as_ref(),
        reply_by: budget.last_start_for(settings.ollama.reply_timeout_secs.get()),
        targets,
        last_checks,
        now,
    });
    let t = Instant::now();
    let read_before = polled.read_ms();
    // Classification and reading are their stages' time, not the tasks
    // stage's.
    let mut classify_ms = 0;
    while let Some(posts) = batch.take() {
        let routes = route_batch(&posts, me.as_deref(), book);
        let c = Instant::now();
        classify.batch(&posts, &routes, book, &mut tally).await;
        classify_ms += elapsed_ms(c);
        let go_on = match &act {
            Some(act) => act::stage(act, &posts, routes, book, report, &mut tally).await?,
            None => true,
        };
        drop(posts);
        // The mapping keeps its newest entries as tasks are filed, not a
        // cycle's worth of them until the end.
        book.parts().tasks.prune_if_over(now.timestamp_millis());
        if !go_on {
            polled.stop();
            break;
        }
        batch = polled.next_batch(client.as_ref(), book).await;
    }
    polled.finish(book, report);
    classify.report(report, &tally);
    if let (Some(mm), Some(poll)) = (&client, polled.outcome()) {
        let ctx = corrections::Ctx {
            settings,
            mm,
            targets,
            touched: &poll.touched,
            now,
        };
        corrections::stage(&ctx, budget, book, report, &mut tally).await;
    }
    // Optional work after the answers: the tasks and cards earlier cycles
    // left in the outbox (a hung Planka must not hold up a reply).
    let retried = act::retry_outbox(targets, budget, book, now, &mut tally).await;
    for line in &tally.would {
        tracing::info!("[dry-run] would {line}");
    }
    let reading_ms = polled.read_ms().saturating_sub(read_before);
    let acting_ms = elapsed_ms(t).saturating_sub(classify_ms + reading_ms);
    let no_posts = !polled.any_posts();
    act::report_acting(report, &tally, no_posts, &retried, book, acting_ms);
    poll::move_cursor(settings, book, client.as_ref(), &polled, now);
    Ok(ChatRun { client, tally })
}

/// The LLM for this cycle's labels and replies; without one, the fallback
/// labels and the templates answer.
fn llm_client(settings: &Settings<'_>) -> Option<ollama::Client> {
    ollama::Client::from_config(settings.ollama)
        .map_err(|e| tracing::warn!("LLM not usable, the fallback and templates only: {e:#}"))
        .ok()
}

/// Every post's route, decided once before anything happens to it.
fn route_batch(posts: &[NewPost], me: Option<&str>, book: &mut dyn Book) -> Vec<Route> {
    let p = book.parts();
    posts
        .iter()
        .map(|post| route::route(post, me, p.escalation))
        .collect()
}
