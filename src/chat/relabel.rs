//! Putting right what the agent did with a post whose label the team
//! corrected ([`super::corrections`] decides what is owed and in which
//! order): the task closed, filed, opened again or given its new priority,
//! its card told, and one announcement in the post's thread. Each function
//! is one step; the caller records it done, so none is repeated. A step cut
//! short by a crash runs again: its card comment (keyed by the correction)
//! and the announcement (by its prop) are looked for before being made.

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::progress::{permalink, PendingCorrection, Watched};
use super::{Book, Settings};
use crate::classify::Label;
use crate::mattermost::wire::{CreatePost, PostList};
use crate::mattermost::{Client, REPLY_PROP};
use crate::process::{command_alive, CommandError, Failure};
use crate::tasks::ledger::{AttemptEnd, IntentRecord, UpdateRecord};
use crate::tasks::mc::{next_step, Attempted, McBackend, NextStep};
use crate::tasks::outbox::{self, Missed, Targets};
use crate::tasks::{priority_for_label, PostRef, Task};

/// The prop that marks a correction's announcement in a thread, so a
/// repeated step finds it instead of posting it twice.
const CORRECTION_PROP: &str = "ops_agent_correction";

/// What names one correction (the post, the new label, when it was made):
/// the announcement's [`CORRECTION_PROP`] and the card comments' keys.
fn correction_key(id: &str, to: Label, p: &PendingCorrection) -> String {
    format!("{id}:{to}:{}", p.at_ms)
}

/// Everything the step needs from the cycle.
pub(crate) struct Ctx<'a> {
    /// The chat stage's sections.
    pub(crate) settings: &'a Settings<'a>,
    /// Mattermost.
    pub(crate) mm: &'a Client,
    /// MC and Planka.
    pub(crate) targets: Targets<'a>,
    /// The touched posts of this cycle's poll.
    pub(crate) touched: &'a [String],
    /// Now.
    pub(crate) now: DateTime<Utc>,
}

/// The thread of the post (fetched once per correction).
pub(super) async fn thread_of<'s>(
    ctx: &Ctx<'_>,
    id: &str,
    cache: &'s mut Option<PostList>,
) -> Result<&'s PostList> {
    if cache.is_none() {
        let t = ctx
            .mm
            .thread(id)
            .await
            .with_context(|| format!("reading post {id}"))?;
        *cache = Some(t);
    }
    Ok(cache.as_ref().expect("just set"))
}

pub(super) fn task_of(
    id: &str,
    w: &Watched,
    book: &mut dyn Book,
) -> Option<(String, Option<String>)> {
    let tasks = book.parts().tasks;
    match tasks.mapping.get(id) {
        Some(r) => Some((r.task_id.clone(), r.card_id.clone())),
        None => w.task_id.clone().map(|t| (t, None)),
    }
}

/// TASK/INCIDENT → ROUTINE: the task is closed (ledger, resolve command),
/// its card commented and moved to the done list.
pub(super) async fn close_task(
    ctx: &Ctx<'_>,
    id: &str,
    w: &Watched,
    p: &PendingCorrection,
    book: &mut dyn Book,
) -> Result<String> {
    let Some((task_id, card)) = task_of(id, w, book) else {
        return Ok("There was no task to close.".into());
    };
    let at = DateTime::from_timestamp_millis(p.at_ms).unwrap_or(ctx.now);
    let ledger = ctx.targets.mc.ledger();
    ledger.update(UpdateRecord {
        id: task_id.clone(),
        at,
        status: Some("closed".into()),
        label: Some(Label::Routine.as_str().into()),
        note: Some(format!("not work: relabelled ROUTINE by {}", p.by)),
        ..Default::default()
    })?;
    let esc = ctx.settings.escalation;
    let mut said = match ctx.targets.mc {
        McBackend::Ledger(_) => format!("Task {task_id} is closed."),
        McBackend::Command(..) if !esc.resolve_command.is_empty() => {
            resolve_in_mc(ctx, id, w, p, &task_id, book).await?
        }
        McBackend::Command(..) => {
            format!("Task {task_id} stays open in MC (no resolve_command is set): close it there.")
        }
    };
    if card.is_some() && ctx.targets.planka.is_some() && !esc.done_list.is_empty() {
        said.push_str(&format!(" Its card goes to '{}'.", esc.done_list));
    }
    tracing::info!(post = %id, task = %task_id, by = %p.by, "Task closed: the post was relabelled ROUTINE.");
    Ok(said)
}

/// The sub-step of [`close_task`] that records the resolve command's
/// success (in the correction's `done`, journalled before the card is
/// told), so a crash after it never runs the command again.
const RESOLVED: &str = "close_task:resolve_command";

/// Closes the task in MC with `escalation.resolve_command`, at most once
/// more than needed: like the MC command's create, each attempt is
/// journalled in the ledger (synced) before it runs, with its process
/// group once it runs and how it ended; its success is journalled in the
/// state. A later cycle waits while an attempt still runs; after one whose
/// outcome is unknown (the agent killed, a timeout) it runs the command
/// once more and says so, after two it runs it no more: there is no way to
/// ask MC whether the task is closed.
async fn resolve_in_mc(
    ctx: &Ctx<'_>,
    id: &str,
    w: &Watched,
    p: &PendingCorrection,
    task_id: &str,
    book: &mut dyn Book,
) -> Result<String> {
    let McBackend::Command(cmd, journal) = ctx.targets.mc else {
        bail!("the resolve command runs only when MC is a command");
    };
    let closed = format!("Task {task_id} is closed in MC.");
    if p.done.iter().any(|d| d == RESOLVED) {
        return Ok(closed);
    }
    let esc = ctx.settings.escalation;
    let source = format!("resolve:{}", correction_key(id, Label::Routine, p));
    let history = journal.history(&source, p.at_ms)?;
    let timeout = esc.resolve_timeout_secs.get();
    let who = Attempted {
        command: "resolve command",
        work: "closed the task",
        can_ask: false,
        no_ask: "MC cannot be asked",
    };
    let now_ms = ctx.now.timestamp_millis();
    let step = next_step(
        &history.attempts,
        who,
        now_ms,
        timeout.as_millis() as i64,
        command_alive,
    );
    let (attempt, extra) = match step {
        NextStep::Create { attempt, extra } => (attempt, extra),
        NextStep::Wait(why) => bail!("task {task_id} not closed in MC yet: {why}"),
        // Without a lookup (`can_ask` is false) only a give-up is left.
        other => {
            let why = match other {
                NextStep::GiveUp(why) => why,
                _ => "there is no lookup for the resolve command".to_string(),
            };
            tracing::warn!(post = %id, task = %task_id, "Not running the resolve command again: {why}; check in MC that the task is closed.");
            return Ok(format!(
                "Task {task_id} may still be open in MC: the resolve command was interrupted \
                 twice and is not run again; check it there."
            ));
        }
    };
    let record = |pgid: Option<u32>, outcome: Option<AttemptEnd>| IntentRecord {
        source: source.clone(),
        attempt,
        at: ctx.now,
        pgid,
        outcome,
    };
    journal
        .intent(record(None, None))
        .context("recording the resolve attempt before running the command")?;
    let argv = crate::escalate::exec::resolve_argv(&esc.resolve_command, task_id, id);
    let ran = crate::process::run_argv_watched(
        &argv,
        timeout,
        cmd.pass_env(),
        "resolve command",
        |pgid| {
            if let Err(e) = journal.intent(record(Some(pgid), None)) {
                tracing::warn!(error = %format!("{e:#}"), "Could not record the resolve command's process group.");
            }
        },
    )
    .await;
    if let Err(e) = ran {
        let end = match e.downcast_ref::<CommandError>().map(|c| c.failure) {
            Some(Failure::TimedOut) => AttemptEnd::Unknown,
            _ => AttemptEnd::Failed,
        };
        if let Err(w) = journal.intent(record(None, Some(end))) {
            tracing::warn!(error = %format!("{w:#}"), "Could not record how the resolve attempt ended.");
        }
        return Err(e);
    }
    if let Some(pending) = book
        .parts()
        .chat
        .watch
        .get_mut(id)
        .and_then(|x| x.pending.as_mut())
    {
        pending.done.push(RESOLVED.to_string());
    }
    book.checkpoint(id, w.create_at)?;
    if extra {
        tracing::warn!(post = %id, task = %task_id, "The resolve command ran a second time: an earlier run was interrupted and may have closed the task already.");
        return Ok(format!(
            "{closed} (The resolve command ran twice: an earlier run was interrupted.)"
        ));
    }
    Ok(closed)
}

/// TASK ↔ INCIDENT, or a task opened again (ROUTINE → TASK/INCIDENT after
/// an earlier correction closed it): the priority follows the label.
pub(super) async fn change_task(
    ctx: &Ctx<'_>,
    id: &str,
    w: &Watched,
    p: &PendingCorrection,
    to: Label,
    reopen: bool,
    book: &mut dyn Book,
) -> Result<String> {
    let (task_id, _) = task_of(id, w, book).context("the task is not known")?;
    let priority = priority_for_label(to.as_str());
    let at = DateTime::from_timestamp_millis(p.at_ms).unwrap_or(ctx.now);
    ctx.targets.mc.ledger().update(UpdateRecord {
        id: task_id.clone(),
        at,
        status: reopen.then(|| "open".to_string()),
        priority: Some(priority),
        label: Some(to.as_str().into()),
        note: Some(format!("relabelled {to} by {}", p.by)),
        ..Default::default()
    })?;
    let mc_note = match ctx.targets.mc {
        McBackend::Ledger(_) => String::new(),
        McBackend::Command(..) => " (in the agent's ledger; change it in MC too)".into(),
    };
    Ok(if reopen {
        format!(
            "Task {task_id} is open again, {} priority{mc_note}.",
            priority.as_str()
        )
    } else {
        format!(
            "Task {task_id} is now {} priority{mc_note}.",
            priority.as_str()
        )
    })
}

/// The card's part of a correction, after the ledger and the thread are
/// right (Planka is optional: while it is down the rest of the correction
/// is done and announced, and this step alone is owed): a comment keyed by
/// the correction, and to ROUTINE the move to the done list. A card still
/// waiting in the outbox is told there instead, and is made that way.
pub(super) async fn tell_card(
    ctx: &Ctx<'_>,
    id: &str,
    w: &Watched,
    p: &PendingCorrection,
    to: Label,
    reopen: bool,
    book: &mut dyn Book,
) -> Result<()> {
    let Some((_, card)) = task_of(id, w, book) else {
        return Ok(());
    };
    let priority = priority_for_label(to.as_str());
    let (key, note) = if to == Label::Routine {
        (
            format!("close {}", correction_key(id, to, p)),
            format!("Not a task: relabelled ROUTINE by {}.", p.by),
        )
    } else {
        (
            format!("relabel {}", correction_key(id, to, p)),
            format!(
                "Relabelled {to} by {}: priority {}{}.",
                p.by,
                priority.as_str(),
                if reopen { ", open again" } else { "" }
            ),
        )
    };
    if let (Some(card), Some(planka)) = (card, ctx.targets.planka) {
        planka.add_comment(&card, &key, &note).await?;
        let done_list = &ctx.settings.escalation.done_list;
        if to == Label::Routine && !done_list.is_empty() {
            planka.move_card(&card, &w.team, done_list).await?;
        }
    } else {
        let missed = Missed {
            key: &key,
            text: &note,
            closed: if to == Label::Routine {
                Some(true)
            } else {
                reopen.then_some(false)
            },
            priority: (to != Label::Routine).then_some(priority),
            label: Some(to.as_str()),
        };
        book.parts().tasks.card_missed(id, missed);
    }
    Ok(())
}

/// ROUTINE → TASK/INCIDENT: the task (and card) is filed now, exactly once
/// like any other (the outbox keys it by the post).
pub(super) async fn file_task(
    ctx: &Ctx<'_>,
    id: &str,
    w: &Watched,
    to: Label,
    source: &mut Option<PostList>,
    book: &mut dyn Book,
) -> Result<String> {
    let thread = thread_of(ctx, id, source).await?;
    let post = thread.posts.get(id).context("the post is gone")?;
    let s = ctx.settings;
    let link = permalink(&s.mattermost.url, &w.team, id);
    let task = Task::from_post(
        PostRef {
            post_id: id,
            message: &post.message,
            author: &w.author,
            team: &w.team,
            channel: &w.channel_name,
            permalink: &link,
        },
        to.as_str(),
        s.owner,
        s.billing,
    );
    let out = outbox::ensure_task(&task, w.create_at, ctx.targets, book.parts().tasks, ctx.now)
        .await
        .map_err(|e| anyhow!("filing the task: {e:#}"))?;
    let r = out.task_ref;
    tracing::info!(post = %id, task = %r.id, label = %to, "Task filed: the post was relabelled.");
    Ok(match r.url {
        Some(url) => format!("Logged as {to} {} ({url}).", r.id),
        None => format!("Logged as {to} {}.", r.id),
    })
}

/// What to say when the task step was done in an earlier cycle.
pub(super) fn describe(id: &str, to: Label, book: &mut dyn Book) -> String {
    let task = book
        .parts()
        .tasks
        .mapping
        .get(id)
        .map(|r| r.task_id.clone());
    match (to, task) {
        (Label::Routine, Some(t)) => format!("Task {t} is closed."),
        (_, Some(t)) => format!(
            "Task {t} is {} priority.",
            priority_for_label(to.as_str()).as_str()
        ),
        (_, None) => String::new(),
    }
}

/// Posts the announcement in the post's thread, once: an earlier one with
/// the same correction prop is found instead. Returns its id.
pub(super) async fn announce(
    ctx: &Ctx<'_>,
    id: &str,
    w: &Watched,
    p: &PendingCorrection,
    to: Label,
    text: &str,
) -> Result<String> {
    let key = correction_key(id, to, p);
    let own = ctx.mm.own_id().await?;
    let thread = ctx.mm.thread(id).await.context("reading the thread")?;
    if let Some(earlier) = thread.posts.values().find(|x| {
        x.user_id == own && x.delete_at == 0 && x.prop_str(CORRECTION_PROP) == Some(key.as_str())
    }) {
        return Ok(earlier.id.clone());
    }
    let root = thread
        .posts
        .get(id)
        .map(|x| {
            if x.root_id.is_empty() {
                x.id.clone()
            } else {
                x.root_id.clone()
            }
        })
        .unwrap_or_else(|| id.to_string());
    let mut props = Map::new();
    props.insert(REPLY_PROP.into(), Value::String(id.to_string()));
    props.insert(CORRECTION_PROP.into(), Value::String(key));
    let created = ctx
        .mm
        .create_post(&CreatePost {
            channel_id: w.channel_id.to_string(),
            message: crate::text::for_chat(text, ctx.settings.mattermost.max_reply_chars),
            root_id: root,
            props,
        })
        .await
        .context("announcing the correction")?;
    Ok(created.id)
}
