//! Stages 3–4 for one labelled post: the task (TASK, INCIDENT) in MC and
//! on the board, then the reply in its thread naming the task. Each
//! finished step is written into the post's progress before the next
//! starts, so a retry repeats nothing.

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::progress::PostProgress;
use super::reply::{self, Reply, ReplyContext, ReplyKind, ReplyPath};
use super::{Settings, Tally};
use crate::classify::FallbackReason;
use crate::health::CheckResult;
use crate::mattermost::{self, Client, NewPost};
use crate::observe::audit::{self, Event};
use crate::ollama;
use crate::tasks::outbox::{self, CardOutcome, Targets, TaskState};
use crate::tasks::{PostRef, Task};

/// The link to a post, for task descriptions.
pub fn permalink(base_url: &str, team: &str, post_id: &str) -> String {
    format!("{}/{team}/pl/{post_id}", base_url.trim_end_matches('/'))
}

/// Everything stages 3–4 need for one post.
pub struct Act<'a> {
    /// The sections the chat stage reads.
    pub settings: &'a Settings<'a>,
    /// Mattermost, for the reply.
    pub mm: &'a Client,
    /// The LLM for the reply text, if any.
    pub llm: Option<&'a ollama::Client>,
    /// The last moment a reply call may start (`None`: none fits).
    pub reply_by: Option<tokio::time::Instant>,
    /// MC and Planka.
    pub targets: Targets<'a>,
    /// The last known health results, for INCIDENT replies.
    pub last_checks: &'a [CheckResult],
    /// When those results were taken (epoch ms).
    pub last_checks_ms: i64,
}

/// What a post needs after [`file_task`].
pub enum Next {
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
pub async fn file_task(
    act: &Act<'_>,
    post: &NewPost,
    progress: &mut PostProgress,
    tasks: &mut TaskState,
    now: DateTime<Utc>,
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
        match outbox::ensure_task(&task, post.create_at, act.targets, tasks, now).await {
            Ok(out) => {
                if out.dry_run {
                    tally.would.push(format!(
                        "create {} {} task for post {} ({}): {:?}",
                        task.priority.as_str(),
                        task.tag.as_str(),
                        post.id,
                        label.as_str(),
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

/// The reply text: the LLM's when a call can still finish inside the chat
/// deadline, else the template; INCIDENT replies get the health note.
pub async fn compose(act: &Act<'_>, post: &NewPost, ctx: ReplyContext) -> Reply {
    let in_time = act
        .reply_by
        .is_some_and(|by| tokio::time::Instant::now() <= by);
    let mut reply = match act.llm {
        Some(_) if !in_time => reply::templated(&ctx, FallbackReason::NoTime),
        llm => reply::compose(llm, &ctx).await,
    };
    if ctx.kind == ReplyKind::Incident {
        if let Some(note) = reply::health_note(&post.message, act.last_checks, act.last_checks_ms) {
            reply.text = format!("{}\n\n{note}", reply.text);
        }
    }
    reply
}

/// Stage 4 for one post: the reply in its thread, written into `progress`.
/// True when the post is fully handled.
pub async fn post_reply(
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
            if !r.already_existed {
                tally.replies += 1;
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
