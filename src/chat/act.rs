//! Stages 3–4, the part of the chat stage that writes outside: a task for
//! each TASK or INCIDENT post (in MC and on the board), an answer in its
//! thread, and the answer to a silence command. Every post goes through
//! here in its global order, and every finished step is written into the
//! post's progress (and checkpointed when it wrote outside; the posts that
//! did not, together at the end of the batch's first pass) before the next
//! starts, so a retry repeats nothing and a deadline cut loses nothing.
//!
//! Replies are composed with up to `ollama.concurrency` model calls in
//! flight but posted one at a time, in the order they are ready: the LLM is
//! the slow part, the thread is not.

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::corrections;
use super::progress::{permalink, PostProgress};
use super::reply::{self, Reply, ReplyContext, ReplyKind, ReplyPath};
use super::route::Route;
use super::{Book, LastChecks, Settings, Tally};
use crate::bounded::Bounded;
use crate::budget::{within, Cut, CycleBudget};
use crate::classify::FallbackReason;
use crate::escalate::{self, silence::SilenceRequest};
use crate::mattermost::{self, Client, NewPost};
use crate::observe::audit::{self, Event};
use crate::ollama;
use crate::report::{CycleReport, Outcome};
use crate::stage::Stage;
use crate::tasks::outbox::{
    self, CardOutcome, EnsureOutcome, RetryResult, Targets, TaskState, WorkKind,
};
use crate::tasks::{PostRef, Task};

/// Everything stages 3–4 need for one post.
pub(crate) struct Act<'a> {
    /// The sections the chat stage reads.
    pub(crate) settings: &'a Settings<'a>,
    /// The cycle's deadlines.
    pub(crate) budget: &'a CycleBudget,
    /// Mattermost, for the reply.
    pub(crate) mm: &'a Client,
    /// The LLM for the reply text, if any.
    pub(crate) llm: Option<&'a ollama::Client>,
    /// The last moment a reply call may start (`None`: none fits).
    pub(crate) reply_by: Option<tokio::time::Instant>,
    /// MC and Planka.
    pub(crate) targets: Targets<'a>,
    /// The last known health results, for INCIDENT replies.
    pub(crate) last_checks: LastChecks<'a>,
    /// The cycle's clock.
    pub(crate) now: DateTime<Utc>,
}

/// What a post needs after [`file_task`].
enum Next {
    /// Nothing more: ROUTINE, or the reply is already posted.
    Done,
    /// The task is known; the reply naming it is owed.
    Reply(ReplyContext),
    /// Not this cycle: no label yet, the task failed (retried next cycle),
    /// or a dry run.
    Wait,
}

/// Stage 3 for one labelled post: the task (TASK, INCIDENT) in MC and on
/// the board, written into `progress`; the reply is the caller's next step.
async fn file_task(
    act: &Act<'_>,
    post: &NewPost,
    progress: &mut PostProgress,
    tasks: &mut TaskState,
    tally: &mut Tally,
) -> Result<Next> {
    let Some(label) = progress.label else {
        return Ok(Next::Wait);
    };
    let Some(kind) = ReplyKind::for_label(label) else {
        return Ok(Next::Done); // ROUTINE: nothing to file, nothing to say.
    };
    let cfg = act.settings;
    if progress.task_id.is_none() {
        let link = permalink(&cfg.mattermost.url, &post.team, &post.id);
        let task = Task::from_post(
            PostRef {
                post_id: &post.id,
                message: &post.message,
                author: &post.username,
                team: &post.team,
                channel: &post.channel_name,
                permalink: &link,
            },
            label.as_str(),
            cfg.owner,
            cfg.billing,
        );
        match outbox::ensure_task(&task, post.create_at, act.targets, tasks, act.now).await {
            Ok(out) => {
                count_filed(&out, &task, post, tally);
                progress.task_id = Some(out.task_ref.id);
                progress.task_url = out.task_ref.url;
            }
            Err(e) if e.downcast_ref::<outbox::Uncertain>().is_some() => {
                // The MC command may have made the task; it is not run
                // again. The author still gets an answer saying so;
                // status and doctor show the post to an operator.
                tally.task_errors.push(format!("post {}: {e:#}", post.id));
                progress.task_id = Some(outbox::UNCONFIRMED_TASK.into());
            }
            Err(e) => {
                let msg = format!("post {}: {e:#}", post.id);
                tracing::warn!("Task not created; the post stays pending: {msg}");
                tally.task_errors.push(msg);
                return Ok(Next::Wait);
            }
        }
    }
    if progress.reply_post_id.is_some() {
        return Ok(Next::Done);
    }
    Ok(Next::Reply(ReplyContext {
        kind,
        message: post.message.clone(),
        team: post.team.to_string(),
        channel: post.channel_name.to_string(),
        author: post.username.to_string(),
        task_id: progress.task_id.clone().unwrap_or_default(),
        task_url: progress.task_url.clone(),
    }))
}

/// The tally and the log of one task that [`file_task`] ensured: filed
/// now, found from an earlier try, or (dry run) what would have been filed;
/// and its card.
fn count_filed(out: &EnsureOutcome, task: &Task, post: &NewPost, tally: &mut Tally) {
    if out.dry_run {
        tally.would.push(format!(
            "create {} {} task for post {} ({}): {:?}",
            task.priority.as_str(),
            task.tag.as_str(),
            post.id,
            task.label,
            task.title
        ));
    } else if out.created_now {
        tally.tasks_created += 1;
        tracing::info!(post = %post.id, task = %out.task_ref.id, tag = task.tag.as_str(), priority = task.priority.as_str(), "Task created.");
    } else {
        tally.tasks_existing += 1;
    }
    if matches!(out.card, CardOutcome::Created { .. }) {
        tally.bump("cards_created");
    }
    if let CardOutcome::Pending { reason } = &out.card {
        if reason != outbox::QUEUED {
            tally
                .card_errors
                .push(format!("post {}: card: {reason}", post.id));
        }
    }
}

/// The reply text: the LLM's when a call can still finish inside the chat
/// deadline, else the template; INCIDENT replies get the health note.
async fn compose(act: &Act<'_>, post: &NewPost, ctx: ReplyContext) -> Reply {
    let in_time = act
        .reply_by
        .is_some_and(|by| tokio::time::Instant::now() <= by);
    let mut reply = match act.llm {
        Some(_) if !in_time => reply::templated(&ctx, FallbackReason::NoTime),
        llm => reply::compose(llm, &ctx).await,
    };
    if ctx.kind == ReplyKind::Incident {
        if let Some(note) = reply::health_note(
            &post.message,
            act.last_checks.results,
            act.last_checks.at_ms,
        ) {
            reply.text = format!("{}\n\n{note}", reply.text);
        }
    }
    reply
}

/// Stage 4 for one post: the reply in its thread, written into `progress`.
/// True when the post is fully handled.
async fn post_reply(
    act: &Act<'_>,
    post: &NewPost,
    reply: Reply,
    progress: &mut PostProgress,
    tally: &mut Tally,
) -> Result<bool> {
    let path = match &reply.path {
        ReplyPath::Llm { .. } => "llm",
        ReplyPath::Template { .. } => "template",
    };
    if act.targets.dry_run {
        tally.would.push(format!(
            "reply in thread of post {} ({path}): {:?}",
            post.id, reply.text
        ));
        return Ok(false);
    }
    let cfg = act.settings;
    match mattermost::reply_in_thread(
        act.mm,
        post,
        &reply.text,
        &post.id,
        cfg.mattermost.max_reply_chars,
    )
    .await
    {
        Ok(r) => {
            // A reply found in the thread was sent by an earlier try that
            // never learnt it went through (the deadline or a kill cut it
            // after the server took it), so nobody counted it: it counts
            // now, once, as this post's progress records it from here on.
            tally.replies += 1;
            if !r.already_existed {
                if let ReplyPath::Template { reason } = &reply.path {
                    if *reason != FallbackReason::NoLlm {
                        tally.replies_templated += 1;
                        tally
                            .template_reason
                            .get_or_insert_with(|| reason.to_string());
                    }
                }
            }
            tracing::info!(post = %post.id, reply = %r.post_id, path, existed = r.already_existed, "Replied in thread.");
            audit::record(Event::ReplyPosted {
                post: post.id.clone(),
                reply: r.post_id.clone(),
                path: path.into(),
                created: !r.already_existed,
            });
            progress.reply_post_id = Some(r.post_id);
            Ok(true)
        }
        Err(e) => {
            let msg = format!("post {}: {e:#}", post.id);
            tracing::warn!("Reply not posted; the post stays pending: {msg}");
            audit::record(Event::PostPending {
                post: post.id.clone(),
                why: audit::detail(&format!("reply not posted: {e:#}")),
            });
            tally.reply_errors.push(msg);
            Ok(false)
        }
    }
}

/// Stages 3–4 for one batch: every post by its route, in order, and for
/// work posts the task first (checkpointed post by post); then the replies
/// owed. A deadline cut stops here (false: no later batch starts); what is
/// left keeps its progress for the next cycle.
pub(super) async fn stage(
    act: &Act<'_>,
    posts: &[NewPost],
    routes: Vec<Route>,
    book: &mut dyn Book,
    report: &mut CycleReport,
    tally: &mut Tally,
) -> Result<bool> {
    let mut owed = Vec::new();
    let mut quiet = Vec::new();
    for (post, route) in posts.iter().zip(routes) {
        match handle(act, post, route, book, report, tally).await? {
            Handled::GoOn => {}
            Handled::Quiet => quiet.push((post.id.as_str(), post.create_at)),
            Handled::Owed(ctx) => owed.push((post, ctx)),
            Handled::Stop => {
                book.checkpoint_many(&quiet)?;
                return Ok(false);
            }
        }
    }
    book.checkpoint_many(&quiet)?;
    reply_owed(act, owed, book, report, tally).await
}

/// The replies owed, composed with up to `ollama.concurrency` model calls
/// in flight, each posted and checkpointed as soon as its text is ready.
/// False when the deadline cut them.
async fn reply_owed(
    act: &Act<'_>,
    owed: Vec<(&NewPost, ReplyContext)>,
    book: &mut dyn Book,
    report: &mut CycleReport,
    tally: &mut Tally,
) -> Result<bool> {
    let budget = act.budget;
    let mut queue = owed.into_iter();
    let mut composing = Bounded::new(act.llm.map_or(1, |c| c.config().concurrency));
    loop {
        while composing.has_room() {
            let Some((post, ctx)) = queue.next() else {
                break;
            };
            composing.push(async move { (post, compose(act, post, ctx).await) });
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
        let step = composing.drive(post_reply(act, post, reply, &mut progress, tally));
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

/// What became of one post in the first pass of [`stage`].
enum Handled {
    /// Done with it for now; next post.
    GoOn,
    /// Done with it for now, without writing outside: checkpointed with
    /// the rest of the batch.
    Quiet,
    /// Its task is filed; its reply is owed.
    Owed(ReplyContext),
    /// The deadline cut the stage.
    Stop,
}

/// The first pass for one post, by its route; checkpoints every post that
/// wrote outside.
async fn handle(
    act: &Act<'_>,
    post: &NewPost,
    route: Route,
    book: &mut dyn Book,
    report: &mut CycleReport,
    tally: &mut Tally,
) -> Result<Handled> {
    let dry_run = act.targets.dry_run;
    match route {
        Route::Silence(request) => {
            audit_route(post, "silence_command");
            if answer_silence(act, post, request, book).await {
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
            let step = file_task(act, post, &mut progress, book.parts().tasks, tally);
            let (result, owed) = match within(act.budget.chat_deadline, step).await {
                Ok(Ok(Next::Reply(ctx))) => (Ok(Ok(false)), Some(ctx)),
                Ok(Ok(next)) => (Ok(Ok(matches!(next, Next::Done))), None),
                Ok(Err(e)) => (Ok(Err(e)), None),
                Err(cut) => (Err(cut), None),
            };
            let go_on = settle(post, progress, result, dry_run, book, report, tally);
            // ROUTINE posts wrote nothing outside: checkpointed together,
            // one sync for the batch.
            if wrote_outside {
                book.checkpoint(&post.id, post.create_at)?;
            }
            Ok(match (go_on, owed) {
                (false, _) => Handled::Stop,
                (true, Some(ctx)) => Handled::Owed(ctx),
                (true, None) if !wrote_outside => Handled::Quiet,
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

/// A post that is not work, in the audit trail.
fn audit_route(post: &NewPost, route: &str) {
    audit::record(Event::PostRouted {
        post: post.id.clone(),
        author: post.username.to_string(),
        route: route.into(),
        excerpt: audit::excerpt(&post.message),
    });
}

/// Answers a silence command (created, refused or not understood) in its
/// thread; true when done (the post is then handled).
async fn answer_silence(
    act: &Act<'_>,
    post: &NewPost,
    request: Result<SilenceRequest, String>,
    book: &mut dyn Book,
) -> bool {
    if act.targets.dry_run {
        tracing::info!(post = %post.id, "[dry-run] would answer a silence command");
        return false;
    }
    let s = act.settings;
    let parts = book.parts();
    let rules = escalate::SilenceRules {
        cfg: s.escalation,
        checks: s.checks,
        max_chars: s.mattermost.max_reply_chars,
    };
    let answered = escalate::answer_silence_post(
        act.mm,
        post,
        request,
        rules,
        parts.escalation,
        act.now.timestamp_millis(),
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

/// The tasks and cards an earlier cycle left in the outbox, retried once
/// per cycle whether or not Mattermost answers (they no longer need it).
pub(super) async fn retry_outbox(
    targets: Targets<'_>,
    budget: &CycleBudget,
    book: &mut dyn Book,
    now: DateTime<Utc>,
    tally: &mut Tally,
) -> Vec<RetryResult> {
    let retried = within(
        budget.chat_deadline,
        outbox::retry_outbox(targets, book.parts().tasks, now),
    )
    .await
    .unwrap_or_default();
    for r in &retried {
        if let Ok(o) = &r.outcome {
            if matches!(o.card, CardOutcome::Created { .. }) {
                tally.bump("cards_created");
            }
        }
    }
    retried
}

/// Errors of the form `<subject>: <reason>`, each reason said once: a
/// Planka outage is one line for 30 queued cards, naming how many and the
/// first few. Pure, table-tested.
fn collapse(errors: &[String]) -> Vec<String> {
    let mut by_reason: Vec<(&str, Vec<&str>)> = Vec::new();
    for e in errors {
        let (subject, reason) = match e.strip_prefix("post ") {
            Some(rest) => match rest.split_once(": ") {
                Some((id, reason)) => (&e[..5 + id.len()], reason),
                None => ("", e.as_str()),
            },
            None => e.split_once(": ").unwrap_or(("", e.as_str())),
        };
        match by_reason.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, subjects)) => subjects.push(subject),
            None => by_reason.push((reason, vec![subject])),
        }
    }
    by_reason
        .into_iter()
        .map(|(reason, subjects)| match subjects.as_slice() {
            [""] => reason.to_string(),
            [one] => format!("{one}: {reason}"),
            many => {
                let shown: Vec<&str> = many.iter().take(3).copied().collect();
                let more = many.len().saturating_sub(3);
                format!(
                    "{reason} ({} times: {}{})",
                    many.len(),
                    shown.join(", "),
                    if more > 0 {
                        format!(", {more} more")
                    } else {
                        String::new()
                    }
                )
            }
        })
        .collect()
}

/// The `tasks` and `reply` stage outcomes, and the stats counters.
pub(super) fn report_acting(
    report: &mut CycleReport,
    tally: &Tally,
    no_posts: bool,
    retried: &[RetryResult],
    book: &mut dyn Book,
    ms: u64,
) {
    let outbox_left = book.parts().tasks.outbox.len();
    let idle = no_posts && retried.is_empty() && outbox_left == 0;
    let detail = format!(
        "{} created, {} existing, {} outbox retried, {} queued",
        tally.tasks_created,
        tally.tasks_existing,
        retried.len(),
        outbox_left
    );
    // MC is required: a task not filed degrades the stage. Planka is
    // optional: a card not made waits in the outbox while the task and the
    // reply go ahead, which is shown as the stage's fallback, not degraded.
    let card_retry = |r: &&RetryResult| r.kind == WorkKind::CreateCard;
    let task_errors: Vec<String> = tally
        .task_errors
        .iter()
        .cloned()
        .chain(retried.iter().filter(|r| !card_retry(r)).filter_map(|r| {
            r.outcome
                .as_ref()
                .err()
                .map(|e| format!("{}: {e}", r.source))
        }))
        .collect();
    let card_errors: Vec<String> = tally
        .card_errors
        .iter()
        .cloned()
        .chain(retried.iter().filter(card_retry).filter_map(|r| {
            r.outcome
                .as_ref()
                .err()
                .map(|e| format!("{}: card: {e}", r.source))
        }))
        .collect();
    let mut shown = task_errors.clone();
    shown.extend(card_errors.iter().cloned());
    let tasks = if idle {
        Outcome::Skipped("nothing to file".into())
    } else if task_errors.is_empty() {
        if !card_errors.is_empty() {
            Outcome::Ok(format!("{detail}; {}", collapse(&shown).join("; ")))
        } else {
            Outcome::Ok(detail)
        }
    } else {
        Outcome::Degraded(format!("{detail}; {}", collapse(&shown).join("; ")))
    };
    if !card_errors.is_empty() {
        report.fallback(
            Stage::Tasks,
            format!(
                "{} card(s) not made, waiting in the outbox (Planka: {}); their tasks are filed",
                card_errors.len(),
                card_errors[0]
            ),
        );
    }
    let detail = format!("{} posted", tally.replies);
    let reply = if no_posts {
        Outcome::Skipped("no new posts".into())
    } else if tally.reply_errors.is_empty() {
        Outcome::Ok(detail)
    } else {
        Outcome::Degraded(format!("{detail}; {}", tally.reply_errors.join("; ")))
    };
    report.push(Stage::Tasks, tasks, ms);
    report.push(Stage::Reply, reply, 0);
    if tally.replies_templated > 0 {
        report.fallback(
            Stage::Reply,
            format!(
                "{} reply(ies) from the template: {}",
                tally.replies_templated,
                tally
                    .template_reason
                    .as_deref()
                    .unwrap_or("the LLM could not help")
            ),
        );
    }
    report
        .counts
        .insert("posts_handled".into(), tally.posts_handled);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_reason_is_said_once() {
        let e = |s: &str| s.to_string();
        let errors = [
            e("post a: card: Planka refused the login"),
            e("post b: card: Planka refused the login"),
            e("inc:web@1: card: Planka refused the login"),
            e("post c: MC failed"),
            e("post d: card: Planka refused the login"),
            e("post e: card: Planka refused the login"),
        ];
        assert_eq!(
            collapse(&errors),
            [
                "card: Planka refused the login (5 times: post a, post b, inc:web@1, 2 more)",
                "post c: MC failed",
            ]
        );
        assert_eq!(collapse(&[e("odd")]), ["odd"]);
    }
}
