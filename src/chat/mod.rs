//! The chat half of a cycle (DESIGN.md stages 1–4): read every new post,
//! decide once what each one is ([`route`]), label the work
//! ([`triage`]), file its task and answer in its thread ([`act`]), mark it
//! handled, and move the cursor only over posts that were fully handled.
//! [`run`] is the one call the cycle makes.
//!
//! Every step is idempotent and recorded in the post's [`progress`] as soon
//! as it is done, and the state is checkpointed after every post that wrote
//! outside (task, card, reply), so a cycle cut by the deadline or killed
//! halfway repeats nothing.

pub mod act;
pub mod corrections;
pub mod progress;
pub mod relabel;
pub mod reply;
pub mod route;
pub mod triage;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::bounded::Bounded;
use crate::budget::{within, Cut, CycleBudget};
use crate::classify::{self, ClassifyConfig, Triage};
use crate::escalate::{self, EscalationConfig, EscalationState};
use crate::health::{CheckResult, Checks};
use crate::mattermost::{self, MattermostConfig, MmState, NewPost, PollOutcome};
use crate::observe::audit::{self, Event};
use crate::ollama::{self, OllamaConfig};
use crate::report::{CycleReport, Outcome};
use crate::tasks::outbox::{self, Targets, TaskState};
use crate::tasks::BillingConfig;
use crate::time::elapsed_ms;

pub use corrections::CorrectionsConfig;
pub use progress::{ChatState, PostProgress};
use reply::ReplyContext;
use route::Route;

/// The config sections the chat stage reads.
pub struct Settings<'a> {
    /// `[mattermost]`.
    pub mattermost: &'a MattermostConfig,
    /// Where the Mattermost session token is cached.
    pub token_cache: &'a Path,
    /// `[ollama]`.
    pub ollama: &'a OllamaConfig,
    /// `[classify]`.
    pub classify: &'a ClassifyConfig,
    /// `[billing]`.
    pub billing: &'a BillingConfig,
    /// Owner of the tasks filed.
    pub owner: &'a str,
    /// `[escalation]` (who may silence from chat).
    pub escalation: &'a EscalationConfig,
    /// The checks (silence targets).
    pub checks: &'a Checks,
    /// How far back a first run reads (ms).
    pub first_run_lookback_ms: i64,
    /// `[corrections]`: who corrects labels by reaction, with which emoji.
    pub corrections: &'a CorrectionsConfig,
    /// The corrections file (`[paths] corrections`).
    pub corrections_file: &'a Path,
}

/// The parts of the runtime state the chat stage changes, and the way to
/// make them durable mid-stage: the cycle implements it over its state
/// file, so this room never needs the whole state's type.
pub trait Book {
    /// The chat stage's parts of the state.
    fn parts(&mut self) -> Parts<'_>;
    /// Makes what handling `post` changed durable (the cycle appends it to
    /// the state's journal).
    fn checkpoint(&mut self, post: &str, create_at: i64) -> Result<()>;
}

/// Borrowed parts of the runtime state.
pub struct Parts<'a> {
    /// The chat cursor (epoch ms, server clock); `None` on a first run.
    pub cursor: &'a mut Option<i64>,
    /// Mattermost caches and the handled-post set.
    pub mm: &'a mut MmState,
    /// Per-post progress.
    pub chat: &'a mut ChatState,
    /// Task mapping and the outbox.
    pub tasks: &'a mut TaskState,
    /// Incidents (alert threads) and silences.
    pub escalation: &'a mut EscalationState,
}

/// Counts for the report's classify, tasks and reply stages and the stats.
#[derive(Debug, Default)]
pub struct Tally {
    /// Posts labelled this cycle, per path.
    pub by_llm: u32,
    /// Posts labelled by the fallback (rules, model, corrections).
    pub by_fallback: u32,
    /// Tasks created this cycle.
    pub tasks_created: u32,
    /// Tasks that already existed (retry after a crash).
    pub tasks_existing: u32,
    /// MC failures (the post stays pending).
    pub task_errors: Vec<String>,
    /// Planka failures (the card waits in the outbox).
    pub card_errors: Vec<String>,
    /// Replies posted this cycle.
    pub replies: u32,
    /// Reply failures (the post stays pending).
    pub reply_errors: Vec<String>,
    /// Posts fully handled this cycle.
    pub posts_handled: u64,
    /// Dry run: what would have been done.
    pub would: Vec<String>,
    /// Named counters for the cumulative stats (classification paths and
    /// labels, handled posts, tasks, replies).
    pub counters: BTreeMap<String, u64>,
}

impl Tally {
    /// Adds one to a named counter.
    pub fn bump(&mut self, name: &str) {
        *self.counters.entry(name.to_string()).or_default() += 1;
    }
}

/// What the chat stage leaves to the rest of the cycle.
pub struct ChatRun {
    /// Mattermost, for the escalation stage; `None` without credentials.
    /// Kept when Mattermost is down: an alert post is then owed, not
    /// skipped.
    pub client: Option<mattermost::Client>,
    /// The counts.
    pub tally: Tally,
}

/// Posts routed, classified and acted on together, in their global order:
/// a cycle doing each stage over all of 10,000 new posts held every post's
/// route, label and owed reply at once, megabytes of peak memory. Each
/// batch ends before the next starts, so a cycle with fewer posts works
/// exactly as one pass.
const BATCH: usize = 500;

/// Runs the chat half: poll, then route, classify, file and reply batch by
/// batch, then cursor.
/// Stage outcomes go into `report` (`mattermost`, `classify`, `tasks`,
/// `reply`). An error means the state could not be saved mid-stage: the
/// cycle must stop rather than repeat work.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    settings: &Settings<'_>,
    budget: &CycleBudget,
    targets: Targets<'_>,
    last_checks: &[CheckResult],
    last_checks_ms: i64,
    book: &mut dyn Book,
    report: &mut CycleReport,
    now: DateTime<Utc>,
) -> Result<ChatRun> {
    let mut tally = Tally::default();
    let (since_ms, client, poll) = poll_stage(settings, budget, book, report, now).await;
    let posts: &[NewPost] = poll.as_ref().map_or(&[], |p| p.posts.as_slice());
    let me = book.parts().mm.me.as_ref().map(|m| m.username.clone());
    let llm = (!posts.is_empty())
        .then(|| {
            ollama::Client::from_config(settings.ollama)
                .map_err(|e| {
                    tracing::warn!("LLM not usable, the fallback and templates only: {e:#}")
                })
                .ok()
        })
        .flatten();
    let mut classify = Classify::new(settings, budget, llm.as_ref());
    let act = match (&client, &poll) {
        (Some(client), Some(_)) => Some(act::Act {
            settings,
            mm: client,
            llm: llm.as_ref(),
            reply_by: budget.last_start_for(settings.ollama.reply_timeout_secs.get()),
            targets,
            last_checks,
            last_checks_ms,
        }),
        _ => None,
    };
    let mut batches = posts.chunks(BATCH);
    let first = batches.next().unwrap_or_default();
    let routes = route_batch(first, me.as_deref(), book);
    classify.batch(first, &routes, book, &mut tally).await;
    let t = Instant::now();
    let retried = within(
        budget.chat_deadline,
        outbox::retry_outbox(targets, book.parts().tasks, now),
    )
    .await
    .unwrap_or_default();
    for r in &retried {
        if let Ok(o) = &r.outcome {
            if matches!(o.card, outbox::CardOutcome::Created { .. }) {
                tally.bump("cards_created");
            }
        }
    }
    let mut go_on = true;
    if let Some(act) = &act {
        go_on = act_stage(act, first, routes, budget, book, report, now, &mut tally).await?;
    }
    // The later batches' classification is the classify stage's time, not
    // the tasks stage's.
    let mut later_classify_ms = 0;
    for batch in batches {
        if !go_on {
            break;
        }
        let routes = route_batch(batch, me.as_deref(), book);
        let c = Instant::now();
        classify.batch(batch, &routes, book, &mut tally).await;
        later_classify_ms += elapsed_ms(c);
        if let Some(act) = &act {
            go_on = act_stage(act, batch, routes, budget, book, report, now, &mut tally).await?;
        }
    }
    classify.report(report, &tally);
    if let (Some(client), Some(poll)) = (&client, &poll) {
        corrections_stage(
            settings, budget, client, targets, poll, book, report, now, &mut tally,
        )
        .await;
    }
    for line in &tally.would {
        tracing::info!("[dry-run] would {line}");
    }
    let retry_errors: Vec<String> = retried
        .iter()
        .filter_map(|r| {
            r.outcome
                .as_ref()
                .err()
                .map(|e| format!("{}: {e}", r.source))
        })
        .collect();
    report_acting(
        report,
        &tally,
        posts.is_empty(),
        retried.len(),
        &retry_errors,
        book,
        elapsed_ms(t).saturating_sub(later_classify_ms),
    );
    let made = client.as_ref().map(|c| c.posts_made()).unwrap_or_default();
    move_cursor(
        settings,
        book,
        since_ms,
        client.is_some(),
        poll.as_ref(),
        &made,
        now,
    );
    Ok(ChatRun { client, tally })
}

/// Stage 1: every new post of the configured teams since the cursor.
async fn poll_stage(
    settings: &Settings<'_>,
    budget: &CycleBudget,
    book: &mut dyn Book,
    report: &mut CycleReport,
    now: DateTime<Utc>,
) -> (i64, Option<mattermost::Client>, Option<PollOutcome>) {
    let t = Instant::now();
    let now_ms = now.timestamp_millis();
    let cfg = settings.mattermost;
    let parts = book.parts();
    let since_ms = mattermost::poll_since(
        *parts.cursor,
        cfg.overlap_secs.as_millis() as i64,
        now_ms,
        settings.first_run_lookback_ms,
    );
    let client = match mattermost::Client::from_config(cfg, settings.token_cache) {
        Ok(c) => c,
        Err(e) => {
            report.push("mattermost", credential_outcome(cfg, &e), elapsed_ms(t));
            return (since_ms, None, None);
        }
    };
    let poll = mattermost::poll(
        &client,
        cfg,
        parts.mm,
        since_ms,
        now_ms,
        budget.chat_deadline,
    );
    match within(budget.chat_deadline, poll).await {
        Ok(Ok(outcome)) => {
            audit_skips(&outcome, since_ms);
            report
                .counts
                .insert("mm_requests".into(), outcome.requests.into());
            report
                .counts
                .insert("posts_new".into(), outcome.posts.len() as u64);
            let detail = format!(
                "{} new, {} skipped, {} requests",
                outcome.posts.len(),
                outcome.skipped.total(),
                outcome.requests
            );
            let result = if outcome.teams_failed.is_empty() {
                Outcome::Ok(detail)
            } else {
                let failed: Vec<String> = outcome
                    .teams_failed
                    .iter()
                    .map(|(t, why)| format!("{t}: {why}"))
                    .collect();
                tracing::warn!(
                    "Teams not polled fully (retried next cycle): {}",
                    failed.join("; ")
                );
                Outcome::Degraded(format!("{detail}; {}", failed.join("; ")))
            };
            report.push("mattermost", result, elapsed_ms(t));
            (since_ms, Some(client), Some(outcome))
        }
        Ok(Err(e)) => {
            tracing::warn!("Mattermost unusable, chat skipped this cycle: {e}");
            report
                .counts
                .insert("mm_requests".into(), client.requests().into());
            report.push(
                "mattermost",
                Outcome::Degraded(e.to_string()),
                elapsed_ms(t),
            );
            (since_ms, Some(client), None)
        }
        Err(cut) => {
            report.deadline_hit = true;
            report.push(
                "mattermost",
                Outcome::Skipped(cut.to_string()),
                elapsed_ms(t),
            );
            (since_ms, Some(client), None)
        }
    }
}

/// The posts a rule skipped, each once: the poll re-reads the overlap
/// before the cursor every cycle, so a skip the trail already holds from
/// an earlier cycle (written after `since_ms`, less a minute for clock
/// skew) is not recorded again.
fn audit_skips(outcome: &PollOutcome, since_ms: i64) {
    if outcome.skipped_posts.is_empty() {
        return;
    }
    let seen = audit::recent_values("post_skipped", "post", since_ms - 60_000);
    for s in &outcome.skipped_posts {
        if !seen.contains(&s.id) {
            audit::record(Event::PostSkipped {
                post: s.id.clone(),
                channel: s.channel_id.clone(),
                author: s.user_id.clone(),
                reason: s.reason.into(),
            });
        }
    }
}

/// The chat stage's outcome when no client could be built: the config
/// names teams, so chat is wanted and a missing or unreadable token is a
/// degradation an operator must see (a scheduled job without the token
/// would otherwise report `cycle ok` forever); without teams in a file it
/// is an option left unconfigured.
fn credential_outcome(cfg: &MattermostConfig, e: &anyhow::Error) -> Outcome {
    if cfg.required {
        tracing::warn!(
            "Mattermost is configured but has no usable credentials, chat skipped: {e:#}"
        );
        Outcome::Degraded(format!("no usable credentials: {e:#}"))
    } else {
        Outcome::Skipped(format!("not configured: {e:#}"))
    }
}

/// Every post's route, decided once before anything happens to it.
fn route_batch(posts: &[NewPost], me: Option<&str>, book: &mut dyn Book) -> Vec<Route> {
    let p = book.parts();
    posts
        .iter()
        .map(|post| route::route(post, me, p.escalation))
        .collect()
}

/// Stage 2: ROUTINE, TASK or INCIDENT for each work post without a label,
/// batch by batch, reported once for the cycle.
struct Classify<'a> {
    settings: &'a Settings<'a>,
    budget: &'a CycleBudget,
    /// The LLM, when a call can still fit in the chat budget at all.
    llm: Option<&'a ollama::Client>,
    /// A call started after this point could outlive the chat deadline.
    stop_starting: tokio::time::Instant,
    /// Made at the first work post (it reads the corrections file).
    triage: Option<Triage<'a>>,
    /// The deadline cut a batch: the rest is labelled next cycle.
    cut: Option<Cut>,
    /// Time spent classifying (ms).
    ms: u64,
}

impl<'a> Classify<'a> {
    fn new(
        settings: &'a Settings<'a>,
        budget: &'a CycleBudget,
        llm: Option<&'a ollama::Client>,
    ) -> Classify<'a> {
        // When no call fits at all, the fallback decides right away.
        let stop_starting = budget.last_start_for(settings.ollama.classify_timeout_secs.get());
        Classify {
            settings,
            budget,
            llm: llm.filter(|_| stop_starting.is_some()),
            stop_starting: stop_starting.unwrap_or(budget.chat_deadline),
            triage: None,
            cut: None,
            ms: 0,
        }
    }

    /// Labels the work posts of one batch.
    async fn batch(
        &mut self,
        posts: &[NewPost],
        routes: &[Route],
        book: &mut dyn Book,
        tally: &mut Tally,
    ) {
        if self.cut.is_some() {
            return;
        }
        let t = Instant::now();
        let work: Vec<&NewPost> = posts
            .iter()
            .zip(routes)
            .filter(|(_, r)| r.is_work())
            .map(|(p, _)| p)
            .collect();
        if work.is_empty() {
            return;
        }
        let (llm, settings) = (self.llm, self.settings);
        let triage = self.triage.get_or_insert_with(|| {
            Triage::new(
                llm,
                settings.classify,
                load_corrections(settings.corrections_file),
            )
        });
        let run =
            triage::classify_posts(triage, &work, book.parts().chat, self.stop_starting, tally);
        self.cut = within(self.budget.chat_deadline, run).await.err();
        self.ms += elapsed_ms(t);
    }

    /// The `classify` stage outcome, with the cycle's totals.
    fn report(self, report: &mut CycleReport, tally: &Tally) {
        if self.triage.is_none() {
            report.push("classify", Outcome::Skipped("no new posts".into()), 0);
            return;
        }
        let llm = self.llm;
        let mut detail = format!("{} by llm, {} by fallback", tally.by_llm, tally.by_fallback);
        if let Some(why) = llm.and_then(|c| c.breaker()) {
            detail.push_str(&format!(
                "; LLM stopped for this cycle after a {why:?} (the fallback for the rest)"
            ));
        }
        let no_time = tally.counters.contains_key("fallback_no_time");
        if no_time {
            detail.push_str("; no LLM call fitted in the time left (the fallback)");
        }
        let outcome = match self.cut {
            Some(cut) => {
                report.deadline_hit = true;
                Outcome::Degraded(format!("{detail}; {cut}, the rest next cycle"))
            }
            None if no_time || llm.is_some_and(|c| c.breaker().is_some()) => {
                Outcome::Degraded(detail)
            }
            None => Outcome::Ok(detail),
        };
        report.push("classify", outcome, self.ms);
    }
}

/// Stages 3–4: every post by its route, in order, and for work posts the
/// task first (checkpointed post by post); then the replies owed, composed
/// with up to `ollama.concurrency` model calls in flight, each posted and
/// checkpointed as soon as its text is ready. A deadline cut stops here
/// (false: no later batch starts); what is left keeps its progress for the
/// next cycle.
#[allow(clippy::too_many_arguments)]
async fn act_stage(
    act: &act::Act<'_>,
    posts: &[NewPost],
    routes: Vec<Route>,
    budget: &CycleBudget,
    book: &mut dyn Book,
    report: &mut CycleReport,
    now: DateTime<Utc>,
    tally: &mut Tally,
) -> Result<bool> {
    let mut owed = Vec::new();
    for (post, route) in posts.iter().zip(routes) {
        match handle(act, post, route, budget, book, report, now, tally).await? {
            Handled::GoOn => {}
            Handled::Owed(ctx) => owed.push((post, ctx)),
            Handled::Stop => return Ok(false),
        }
    }
    let mut queue = owed.into_iter();
    let mut composing = Bounded::new(act.llm.map_or(1, |c| c.config().concurrency));
    loop {
        while composing.has_room() {
            let Some((post, ctx)) = queue.next() else {
                break;
            };
            composing.push(async move { (post, act::compose(act, post, ctx).await) });
        }
        let (post, reply) = match within(budget.chat_deadline, composing.next()).await {
            Ok(Some(ready)) => ready,
            Ok(None) => return Ok(true),
            Err(cut) => {
                report.deadline_hit = true;
                tracing::warn!("Replies left for next cycle: {cut}");
                return Ok(false);
            }
        };
        let Some(mut progress) = book.parts().chat.progress.get(&post.id).cloned() else {
            continue;
        };
        // The model calls in flight keep running while this reply is posted.
        let step = composing.drive(act::post_reply(act, post, reply, &mut progress, tally));
        let result = within(budget.chat_deadline, step).await;
        let go_on = settle(
            post,
            progress,
            result,
            act.targets.dry_run,
            book,
            report,
            tally,
        );
        book.checkpoint(&post.id, post.create_at)?;
        if !go_on {
            return Ok(false);
        }
    }
}

/// What became of one post in the first pass of [`act_stage`].
enum Handled {
    /// Done with it for now; next post.
    GoOn,
    /// Its task is filed; its reply is owed.
    Owed(ReplyContext),
    /// The deadline cut the stage.
    Stop,
}

/// The first pass for one post, by its route; checkpoints every post that
/// wrote outside.
#[allow(clippy::too_many_arguments)]
async fn handle(
    act: &act::Act<'_>,
    post: &NewPost,
    route: Route,
    budget: &CycleBudget,
    book: &mut dyn Book,
    report: &mut CycleReport,
    now: DateTime<Utc>,
    tally: &mut Tally,
) -> Result<Handled> {
    let dry_run = act.targets.dry_run;
    match route {
        Route::Silence(request) => {
            audit_route(post, "silence_command");
            if answer_silence(act, post, request, book, now).await {
                tally.posts_handled += 1;
                book.checkpoint(&post.id, post.create_at)?;
            }
            Ok(Handled::GoOn)
        }
        Route::AlertAck => {
            audit_route(post, "alert_ack");
            // An acknowledgement, read by the escalation stage from the thread.
            if !dry_run {
                mattermost::mark_handled(book.parts().mm, &post.id, post.create_at);
                tally.posts_handled += 1;
            }
            Ok(Handled::GoOn)
        }
        Route::Work => {
            let Some(mut progress) = book.parts().chat.progress.get(&post.id).cloned() else {
                return Ok(Handled::GoOn); // not classified yet
            };
            let wrote_outside = progress.label.is_some_and(|l| l.is_actionable());
            let step = act::file_task(act, post, &mut progress, book.parts().tasks, now, tally);
            let (result, owed) = match within(budget.chat_deadline, step).await {
                Ok(Ok(act::Next::Reply(ctx))) => (Ok(Ok(false)), Some(ctx)),
                Ok(Ok(next)) => (Ok(Ok(matches!(next, act::Next::Done))), None),
                Ok(Err(e)) => (Ok(Err(e)), None),
                Err(cut) => (Err(cut), None),
            };
            let go_on = settle(post, progress, result, dry_run, book, report, tally);
            // ROUTINE posts wrote nothing outside and are saved with the
            // rest at the end.
            if wrote_outside {
                book.checkpoint(&post.id, post.create_at)?;
            }
            Ok(match (go_on, owed) {
                (false, _) => Handled::Stop,
                (true, Some(ctx)) => Handled::Owed(ctx),
                (true, None) => Handled::GoOn,
            })
        }
    }
}

/// Records how a step of one post ended: fully handled (progress dropped,
/// the post marked handled), not yet (progress kept for a later step or
/// cycle), or cut by the deadline (false: stop).
fn settle(
    post: &NewPost,
    progress: PostProgress,
    result: Result<Result<bool>, Cut>,
    dry_run: bool,
    book: &mut dyn Book,
    report: &mut CycleReport,
    tally: &mut Tally,
) -> bool {
    let parts = book.parts();
    match result {
        Ok(Ok(true)) if !dry_run => {
            parts.chat.progress.remove(&post.id);
            corrections::watch(parts.chat, post, &progress);
            mattermost::mark_handled(parts.mm, &post.id, post.create_at);
            tally.posts_handled += 1;
            true
        }
        Ok(Ok(_)) => {
            parts.chat.progress.insert(post.id.clone(), progress);
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(post = %post.id, "Post not handled, retried next cycle: {e:#}");
            parts.chat.progress.insert(post.id.clone(), progress);
            true
        }
        Err(cut) => {
            report.deadline_hit = true;
            tracing::warn!(post = %post.id, "Post left for next cycle: {cut}");
            audit::record(Event::PostPending {
                post: post.id.clone(),
                why: cut.to_string(),
            });
            parts.chat.progress.insert(post.id.clone(), progress);
            false
        }
    }
}

/// The newest corrections, as the examples that teach this cycle's
/// classification; an unreadable file teaches nothing (and says why).
fn load_corrections(path: &Path) -> Vec<classify::Example> {
    match classify::corrections::load_recent(path, classify::corrections::LOAD_MAX) {
        Ok((list, skipped)) => {
            if skipped > 0 {
                tracing::warn!(file = %path.display(), skipped, "Skipped unreadable lines of the corrections file.");
            }
            classify::corrections::examples(&list)
        }
        Err(e) => {
            tracing::warn!("Corrections not read, classifying without them: {e:#}");
            Vec::new()
        }
    }
}

/// A post that is not work, in the audit trail.
fn audit_route(post: &NewPost, route: &str) {
    audit::record(Event::PostRouted {
        post: post.id.clone(),
        author: post.username.to_string(),
        route: route.into(),
        excerpt: audit::excerpt(&post.message),
    });
}

/// Labels the team corrected by reaction: recorded, and the tasks put
/// right (see [`corrections`]). Reported only when there was something to
/// look at.
#[allow(clippy::too_many_arguments)]
async fn corrections_stage(
    settings: &Settings<'_>,
    budget: &CycleBudget,
    client: &mattermost::Client,
    targets: Targets<'_>,
    poll: &PollOutcome,
    book: &mut dyn Book,
    report: &mut CycleReport,
    now: DateTime<Utc>,
    tally: &mut Tally,
) {
    let t = Instant::now();
    let ctx = corrections::Ctx {
        settings,
        mm: client,
        targets,
        touched: &poll.touched,
        now,
    };
    let outcome = match within(budget.chat_deadline, corrections::run(&ctx, book, tally)).await {
        Ok(None) => return,
        Ok(Some(run)) => {
            let detail = format!(
                "{} read, {} applied, {} requests",
                run.checked,
                run.applied.len(),
                run.requests
            );
            for line in &run.applied {
                tracing::info!("Correction carried out: {line}");
            }
            if run.errors.is_empty() {
                Outcome::Ok(detail)
            } else {
                Outcome::Degraded(format!("{detail}; {}", run.errors.join("; ")))
            }
        }
        Err(cut) => {
            report.deadline_hit = true;
            Outcome::Skipped(format!("{cut}, the rest next cycle"))
        }
    };
    report.push("corrections", outcome, elapsed_ms(t));
}

/// Answers a silence command (created, refused or not understood) in its
/// thread; true when done (the post is then handled).
async fn answer_silence(
    act: &act::Act<'_>,
    post: &NewPost,
    request: Result<escalate::silence::SilenceRequest, String>,
    book: &mut dyn Book,
    now: DateTime<Utc>,
) -> bool {
    if act.targets.dry_run {
        tracing::info!(post = %post.id, "[dry-run] would answer a silence command");
        return false;
    }
    let s = act.settings;
    let parts = book.parts();
    let answered = escalate::answer_silence_post(
        act.mm,
        post,
        request,
        s.escalation,
        s.checks,
        parts.escalation,
        s.mattermost.max_reply_chars,
        now.timestamp_millis(),
    )
    .await;
    match answered {
        Ok(_) => {
            mattermost::mark_handled(parts.mm, &post.id, post.create_at);
            true
        }
        Err(e) => {
            tracing::warn!(post = %post.id, "Silence command not answered, retried next cycle: {e:#}");
            false
        }
    }
}

/// The `tasks` and `reply` stage outcomes, and the stats counters.
fn report_acting(
    report: &mut CycleReport,
    tally: &Tally,
    no_posts: bool,
    retried: usize,
    retry_errors: &[String],
    book: &mut dyn Book,
    ms: u64,
) {
    let outbox_left = book.parts().tasks.outbox.len();
    let idle = no_posts && retried == 0 && outbox_left == 0;
    let detail = format!(
        "{} created, {} existing, {} outbox retried, {} queued",
        tally.tasks_created, tally.tasks_existing, retried, outbox_left
    );
    let errors: Vec<&String> = tally
        .task_errors
        .iter()
        .chain(&tally.card_errors)
        .chain(retry_errors)
        .collect();
    let tasks = if idle {
        Outcome::Skipped("nothing to file".into())
    } else if errors.is_empty() {
        Outcome::Ok(detail)
    } else {
        let errors: Vec<&str> = errors.iter().map(|e| e.as_str()).collect();
        Outcome::Degraded(format!("{detail}; {}", errors.join("; ")))
    };
    let detail = format!("{} posted", tally.replies);
    let reply = if no_posts {
        Outcome::Skipped("no new posts".into())
    } else if tally.reply_errors.is_empty() {
        Outcome::Ok(detail)
    } else {
        Outcome::Degraded(format!("{detail}; {}", tally.reply_errors.join("; ")))
    };
    report.push("tasks", tasks, ms);
    report.push("reply", reply, 0);
    report
        .counts
        .insert("posts_handled".into(), tally.posts_handled);
}

/// Moves the cursor only over posts that were fully handled, prunes what
/// no later poll can bring back, and marks the channels that only the
/// agent's own posts (`made`) changed as quiet.
fn move_cursor(
    settings: &Settings<'_>,
    book: &mut dyn Book,
    since_ms: i64,
    has_client: bool,
    poll: Option<&PollOutcome>,
    made: &[(String, i64)],
    now: DateTime<Utc>,
) {
    let now_ms = now.timestamp_millis();
    let p = book.parts();
    match (has_client, poll) {
        (_, Some(outcome)) => {
            let next = mattermost::next_cursor(*p.cursor, since_ms, outcome, p.mm);
            let overlap_ms = settings.mattermost.overlap_secs.as_millis() as i64;
            let pending = outcome
                .posts
                .iter()
                .filter(|post| !p.mm.handled.contains_key(&post.id))
                .map(|post| post.channel_id.to_string())
                .collect();
            p.mm.quiet = mattermost::next_quiet(&outcome.listed, made, &pending, next - overlap_ms);
            mattermost::prune_handled(p.mm, next, overlap_ms, now_ms);
            p.chat.forget_stale(now_ms);
            *p.cursor = Some(next);
        }
        // No credentials: nothing to read, and nothing before now is unhandled.
        (false, None) => *p.cursor = Some(now_ms),
        (true, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_credentials_degrade_only_when_chat_is_required() {
        let e = anyhow::anyhow!("environment variable OPS_AGENT_MM_TOKEN is not set")
            .context("mattermost.token_env");
        for (required, word) in [(false, "skipped"), (true, "degraded")] {
            let cfg = MattermostConfig {
                required,
                ..MattermostConfig::default()
            };
            let o = credential_outcome(&cfg, &e);
            assert_eq!(o.word(), word, "required={required}");
            assert!(
                o.detail().contains("OPS_AGENT_MM_TOKEN is not set"),
                "{o:?}"
            );
        }
    }
}
