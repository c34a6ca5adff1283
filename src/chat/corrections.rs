//! Corrections by reaction: when the agent labels a post wrong, a person on
//! the allowlist reacts with the right label's emoji on the agent's reply
//! (or, for a post the agent did not answer because it took it for ROUTINE,
//! on the post itself). The correction is recorded (the post's text, the
//! right label, who, when) in the corrections file, which teaches the LLM
//! prompt and the fallback from the next cycle on, and what the agent did
//! with the post is put right, each step exactly once:
//!
//! | was → now | the task | in the thread |
//! | --- | --- | --- |
//! | TASK/INCIDENT → ROUTINE | closed in the ledger (and by `escalation.resolve_command` when MC is a command), its card commented and moved to `escalation.done_list` | "relabelled, task closed" |
//! | ROUTINE → TASK/INCIDENT | filed now (card too), or reopened if an earlier correction closed it | "relabelled, logged as …" |
//! | TASK ↔ INCIDENT | priority NORMAL ↔ HIGH in the ledger, card commented | "relabelled, priority now …" |
//!
//! Reading reactions costs few requests: the poll already brings back
//! every post changed since the cursor (a reaction moves `update_at`), so
//! a watched reply that got one is read at once; and because a reaction
//! does not make its channel active, every [`CorrectionsConfig::sweep_mins`]
//! one request reads the reactions of all posts still in the window. Both
//! are one `POST /posts/ids/reactions` for every [`BULK_MAX`] posts
//! concerned. The watched posts are read from the watch file as a stream
//! (see [`watch`]), so a window of 100,000 posts costs the sweep their
//! file offsets, not their entries.
//!
//! The steps of a correction are recorded in the post's
//! [`PendingCorrection`] as they are done, so a failure or a crash resumes
//! where it stopped; the resolve command, which cannot be asked whether it
//! already ran, is journalled like the MC command (see `relabel`). The card
//! is told last, after the announcement: Planka is optional, so while it is
//! down the ledger and the thread are put right and only the card's step
//! is owed (the stage's fallback, not a degraded cycle). What was recorded
//! stays: taking a reaction back does not undo a correction; another
//! label's emoji makes another one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::DateTime;
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::progress::{ChatState, PendingCorrection, PostProgress, Watched};
use super::relabel::{
    self, announce, change_task, close_task, describe, file_task, tell_card, thread_of,
};
use super::{watch, Book, Tally};
use crate::budget::{within, CycleBudget};
use crate::classify::corrections::{self as file, Correction};
use crate::classify::Label;
use crate::mattermost::wire::{PostList, Reaction};
use crate::mattermost::{MmErrorKind, NewPost};
use crate::report::{CycleReport, Outcome};
use crate::stage::Stage;
use crate::time::elapsed_ms;

pub(crate) use relabel::Ctx;

/// Posts whose reactions one request reads, at most.
const BULK_MAX: usize = 200;
/// Posts read one by one, at most, from a server without the bulk endpoint.
const PER_POST_MAX: usize = 20;
/// A correction whose steps keep failing is given up after this long.
const GIVE_UP_MS: i64 = 24 * 3600 * 1000;

/// `[corrections]`: who may correct a label, with which emoji, for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CorrectionsConfig {
    /// Mattermost usernames whose reactions correct a label: the agency's
    /// own people, never a client (a correction can close a task).
    allowlist: Vec<String>,
    /// Emoji names (without colons) that mean ROUTINE.
    routine_emoji: Vec<String>,
    /// Emoji names that mean TASK.
    task_emoji: Vec<String>,
    /// Emoji names that mean INCIDENT.
    incident_emoji: Vec<String>,
    /// How long after a post its label can be corrected, in hours.
    window_hours: u64,
    /// Every this many minutes, the reactions of every post in the window
    /// are read (one request), also in channels with no new post; 0: only
    /// the posts the poll brings back.
    sweep_mins: u64,
}

impl Default for CorrectionsConfig {
    fn default() -> Self {
        CorrectionsConfig {
            allowlist: vec!["john".into(), "edita".into()],
            routine_emoji: vec!["speech_balloon".into()],
            task_emoji: vec!["memo".into()],
            incident_emoji: vec!["rotating_light".into()],
            window_hours: 48,
            sweep_mins: 30,
        }
    }
}

impl CorrectionsConfig {
    /// Checks the section without I/O; errors name the key and the value.
    pub(crate) fn validate(&self) -> Result<()> {
        let user = Regex::new(r"^[a-z0-9][a-z0-9._-]{0,63}$").expect("static regex");
        for u in &self.allowlist {
            if !user.is_match(u) {
                bail!(
                    "corrections.allowlist: '{u}' is not a Mattermost username (lowercase, no @)"
                );
            }
        }
        let emoji = Regex::new(r"^[a-z0-9_+-]{1,64}$").expect("static regex");
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (key, list) in self.emoji_lists() {
            for e in list {
                if !emoji.is_match(e) {
                    bail!("corrections.{key}: '{e}' is not an emoji name (like \"memo\", without colons)");
                }
                if let Some(other) = seen.insert(e.as_str(), key) {
                    bail!("corrections.{key}: '{e}' is also in corrections.{other}");
                }
            }
        }
        if !(1..=720).contains(&self.window_hours) {
            bail!(
                "corrections.window_hours: {} must be between 1 and 720",
                self.window_hours
            );
        }
        if self.sweep_mins > 1440 {
            bail!(
                "corrections.sweep_mins: {} must be at most 1440 (0 turns the sweep off)",
                self.sweep_mins
            );
        }
        Ok(())
    }

    fn emoji_lists(&self) -> [(&'static str, &Vec<String>); 3] {
        [
            ("routine_emoji", &self.routine_emoji),
            ("task_emoji", &self.task_emoji),
            ("incident_emoji", &self.incident_emoji),
        ]
    }

    /// The label an emoji stands for.
    fn label_of(&self, emoji: &str) -> Option<Label> {
        let e = emoji.trim_matches(':');
        [
            (&self.routine_emoji, Label::Routine),
            (&self.task_emoji, Label::Task),
            (&self.incident_emoji, Label::Incident),
        ]
        .into_iter()
        .find(|(list, _)| list.iter().any(|x| x == e))
        .map(|(_, l)| l)
    }

    fn window_ms(&self) -> i64 {
        self.window_hours as i64 * 3_600_000
    }
}

/// Starts watching a post the chat stage has just handled.
pub(crate) fn watch(chat: &mut ChatState, post: &NewPost, progress: &PostProgress) {
    let Some(label) = progress.label else {
        return;
    };
    chat.watch.insert(
        post.id.clone(),
        Watched {
            create_at: post.create_at,
            team: post.team.clone(),
            channel_id: post.channel_id.clone(),
            channel_name: post.channel_name.clone(),
            author: post.username.clone(),
            label: Some(label),
            reply_id: progress.reply_post_id.clone(),
            task_id: progress.task_id.clone(),
            pending: None,
            in_file: false,
        },
    );
}

/// Drops the state's watch entries out of the window (a pending correction
/// stays until it is carried out or given up).
///
/// The window, not a count, bounds the watch: every post whose label can
/// still be corrected is watched, however many came in it (a count would
/// silently stop reading the reactions on the oldest posts of a busy
/// window). What keeps that from costing memory is where the entries live:
/// in the watch file ([`watch`]), read as a stream; the state holds only
/// the few it overrides.
pub(crate) fn prune(chat: &mut ChatState, window_ms: i64, now_ms: i64) {
    chat.watch
        .retain(|_, w| w.pending.is_some() || w.create_at > now_ms - window_ms);
}

/// The label the team gives a post by its reactions: the latest reaction
/// with a label's emoji by someone on the allowlist (`allowed`: user id →
/// username), with who and when. Pure.
fn verdict(
    reactions: &[Reaction],
    allowed: &BTreeMap<String, String>,
    cfg: &CorrectionsConfig,
) -> Option<(Label, String, i64)> {
    reactions
        .iter()
        .filter_map(|r| {
            let label = cfg.label_of(&r.emoji_name)?;
            let by = allowed.get(&r.user_id)?;
            Some((label, by.clone(), r.create_at))
        })
        .max_by_key(|(_, _, at)| *at)
}

/// One step of carrying out a correction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Append it to the corrections file.
    Record,
    /// Close the task (and its card): it was not work.
    CloseTask,
    /// File the task now (and its card).
    FileTask,
    /// Open again a task an earlier correction closed, at the new priority.
    ReopenTask,
    /// Change the task's priority.
    Reprioritize,
    /// Say in the thread what changed.
    Announce,
    /// Tell the task's card (a comment; to ROUTINE, the move to the done
    /// list), last: the one step that needs Planka.
    TellCard,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Record => "record",
            Step::CloseTask => "close_task",
            Step::FileTask => "file_task",
            Step::ReopenTask => "reopen_task",
            Step::Reprioritize => "reprioritize",
            Step::Announce => "announce",
            Step::TellCard => "tell_card",
        }
    }
}

/// What correcting `from` to `to` takes, in order; `has_task`: a task was
/// already made for the post. Pure.
fn plan(from: Label, to: Label, has_task: bool) -> Vec<Step> {
    use Label::*;
    let task_step = match (from, to) {
        _ if from == to => return Vec::new(),
        (Task | Incident, Routine) => Step::CloseTask,
        (Routine, _) if has_task => Step::ReopenTask,
        (Routine, _) => Step::FileTask,
        _ => Step::Reprioritize,
    };
    let mut steps = vec![Step::Record, task_step, Step::Announce];
    if task_step != Step::FileTask {
        // A task filed now gets its card through the outbox, as it is.
        steps.push(Step::TellCard);
    }
    steps
}

/// What the step did this cycle, for the report and the log.
#[derive(Debug, Default)]
struct CorrectionsRun {
    /// Posts whose reactions were read.
    checked: usize,
    /// Requests made to read reactions and resolve the allowlist.
    requests: u32,
    /// Corrections carried out completely this cycle.
    applied: Vec<String>,
    /// Failures (the step is tried again next cycle).
    errors: Vec<String>,
    /// Failures of the card's step alone (Planka is optional: the rest of
    /// the correction is done; the card is told next cycle).
    card_errors: Vec<String>,
}

/// Marks an error of [`Step::TellCard`], so the stage can tell a card owed
/// to the next cycle from a correction that is not done.
#[derive(Debug)]
struct CardStepFailed;

impl std::fmt::Display for CardStepFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("telling the card")
    }
}

/// The `corrections` stage: labels the team corrected by reaction,
/// recorded, and the tasks put right. Reported only when there was
/// something to look at.
pub(super) async fn stage(
    ctx: &Ctx<'_>,
    budget: &CycleBudget,
    book: &mut dyn Book,
    report: &mut CycleReport,
    tally: &mut Tally,
) {
    let t = Instant::now();
    let outcome = match within(budget.chat_deadline, run(ctx, book, tally)).await {
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
            if let Some(first) = run.card_errors.first() {
                report.fallback(
                    Stage::Corrections,
                    format!(
                        "{} correction card step(s) owed to the next cycle ({first}); the ledger and the threads are right",
                        run.card_errors.len()
                    ),
                );
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
    report.push(Stage::Corrections, outcome, elapsed_ms(t));
}

/// Runs the step: finds new corrections and carries out pending ones.
/// `None` when there was nothing to look at (no stage reported).
async fn run(ctx: &Ctx<'_>, book: &mut dyn Book, tally: &mut Tally) -> Option<CorrectionsRun> {
    let cfg = ctx.settings.corrections;
    let file = ctx.settings.watch_file;
    let now_ms = ctx.now.timestamp_millis();
    let mut out = CorrectionsRun::default();
    let chat = book.parts().chat;
    prune(chat, cfg.window_ms(), now_ms);
    if !ctx.targets.dry_run {
        match watch::compact_if_due(chat, file, cfg.window_ms(), now_ms) {
            Ok(Some(c)) => {
                tracing::info!(kept = c.kept, dropped = c.dropped, file = %file.display(), "Corrections watch compacted.")
            }
            Ok(None) => {}
            Err(e) => out.errors.push(format!("{e:#}")),
        }
    }
    if chat.watch.is_empty() && watch::is_empty(file) {
        return None;
    }
    // The sweep's clock starts with the first post watched: reading the
    // reactions of posts answered a moment ago would find none.
    let swept = *chat.corrections_swept_ms.get_or_insert(now_ms);
    let sweep = cfg.sweep_mins > 0 && now_ms - swept >= cfg.sweep_mins as i64 * 60_000;
    let touched: BTreeSet<&str> = ctx.touched.iter().map(String::as_str).collect();
    let chosen = |id: &str, w: &Watched| sweep || touched.contains(w.target(id));
    let hot: Vec<(String, Watched)> = chat
        .watch
        .iter()
        .filter(|(id, w)| chosen(id, w))
        .map(|(id, w)| (id.clone(), w.clone()))
        .collect();
    let cold = if sweep || !touched.is_empty() {
        let cutoff = now_ms - cfg.window_ms();
        watch::Scan::of(file, chat, cutoff, chosen).unwrap_or_else(|e| {
            out.errors.push(format!("reading the watch: {e:#}"));
            watch::Scan::empty()
        })
    } else {
        watch::Scan::empty()
    };
    if cold.unreadable > 0 {
        tracing::warn!(file = %file.display(), lines = cold.unreadable, "Skipped unreadable lines of the corrections watch (a write cut by a crash).");
    }
    let pending_before = chat.watch.values().any(|w| w.pending.is_some());
    if hot.is_empty() && cold.len() == 0 && !pending_before && out.errors.is_empty() {
        return None;
    }
    if !hot.is_empty() || cold.len() > 0 {
        let requests_before = ctx.mm.requests();
        let mut allowed = None;
        let mut found = 0;
        // The state's entries, then the file's, read in pieces of one
        // request each.
        let mut entries = hot.into_iter().map(Ok).chain(cold.entries());
        let mut read = Ok(());
        loop {
            let piece: Result<Vec<(String, Watched)>> = entries.by_ref().take(BULK_MAX).collect();
            let step = match piece {
                Ok(to_read) if to_read.is_empty() => break,
                Ok(to_read) => find_new(ctx, &to_read, &mut allowed, book)
                    .await
                    .map(|n| (n, to_read.len())),
                Err(e) => Err(e),
            };
            match step {
                Ok((n, checked)) => {
                    found += n;
                    out.checked += checked;
                }
                Err(e) => {
                    read = Err(e);
                    break;
                }
            }
        }
        match read {
            Ok(()) => {
                if found > 0 {
                    tracing::info!(corrections = found, "Label corrections seen in reactions.");
                }
                if sweep {
                    book.parts().chat.corrections_swept_ms = Some(now_ms);
                }
            }
            Err(e) => out.errors.push(format!("reading reactions: {e:#}")),
        }
        out.requests = ctx.mm.requests().saturating_sub(requests_before);
    }
    let pending: Vec<(String, i64)> = book
        .parts()
        .chat
        .watch
        .iter()
        .filter(|(_, w)| w.pending.is_some())
        .map(|(id, w)| (id.clone(), w.create_at))
        .collect();
    // A correction just found is durable before any of its steps runs.
    for (id, create_at) in &pending {
        if let Err(e) = book.checkpoint(id, *create_at) {
            out.errors.push(format!("saving state: {e:#}"));
        }
    }
    for (id, _) in pending {
        if ctx.targets.dry_run {
            if let Some(w) = book.parts().chat.watch.get(&id) {
                let to = w.pending.as_ref().and_then(|p| p.to);
                tally
                    .would
                    .push(format!("correct post {id} from {:?} to {:?}", w.label, to));
            }
            continue;
        }
        match carry_out(ctx, &id, book, tally).await {
            Ok(Some(line)) => out.applied.push(line),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(post = %id, "Correction not carried out yet, retried next cycle: {e:#}");
                if e.downcast_ref::<CardStepFailed>().is_some() {
                    out.card_errors.push(format!("post {id}: {e:#}"));
                } else {
                    out.errors.push(format!("post {id}: {e:#}"));
                }
                give_up_if_stale(book.parts().chat, &id, now_ms);
            }
        }
        let create_at = book.parts().chat.watch.get(&id).map_or(0, |w| w.create_at);
        if let Err(e) = book.checkpoint(&id, create_at) {
            out.errors.push(format!("saving state: {e:#}"));
        }
    }
    Some(out)
}

fn give_up_if_stale(chat: &mut ChatState, id: &str, now_ms: i64) {
    if let Some(w) = chat.watch.get_mut(id) {
        if w.pending
            .as_ref()
            .is_some_and(|p| now_ms - p.at_ms > GIVE_UP_MS)
        {
            tracing::error!(post = %id, "Giving up a correction whose steps failed for a day; see the log for why.");
            w.pending = None;
        }
    }
}

/// Reads the reactions of `to_read` (watched posts, at most [`BULK_MAX`])
/// and turns a label the team gives that differs from the post's into a
/// pending correction, kept in the state from then on. `allowed` caches
/// the allowlist's user ids across the pieces of one cycle. Returns how
/// many were found.
async fn find_new(
    ctx: &Ctx<'_>,
    to_read: &[(String, Watched)],
    allowed: &mut Option<BTreeMap<String, String>>,
    book: &mut dyn Book,
) -> Result<usize> {
    let cfg = ctx.settings.corrections;
    let mut reactions: BTreeMap<String, Vec<Reaction>> = BTreeMap::new();
    let targets: Vec<String> = to_read
        .iter()
        .map(|(id, w)| w.target(id).to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for chunk in targets.chunks(BULK_MAX) {
        match ctx.mm.reactions_of(chunk).await {
            Ok(map) => reactions.extend(map),
            // A server older than 5.8 has no bulk endpoint: one request per
            // post, for the few the poll brought back.
            Err(e)
                if matches!(
                    e.kind,
                    MmErrorKind::NotFound | MmErrorKind::Status(405 | 501)
                ) =>
            {
                for id in chunk.iter().take(PER_POST_MAX) {
                    reactions.insert(id.clone(), ctx.mm.reactions(id).await?);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Only reactions with a label's emoji matter; the allowlist is looked
    // up (one request) only when there is one.
    let labelled = reactions
        .values()
        .flatten()
        .any(|r| cfg.label_of(&r.emoji_name).is_some());
    if !labelled {
        return Ok(0);
    }
    if allowed.is_none() {
        *allowed = Some(
            ctx.mm
                .users_by_usernames(&cfg.allowlist)
                .await?
                .into_iter()
                .filter(|u| u.delete_at == 0)
                .map(|u| (u.id, u.username))
                .collect(),
        );
    }
    let allowed = allowed.as_ref().expect("just looked up");
    let mut found = 0;
    let chat = book.parts().chat;
    for (post, read) in to_read {
        let Some(list) = reactions.get(read.target(post)) else {
            continue;
        };
        let Some((label, by, at)) = verdict(list, allowed, cfg) else {
            continue;
        };
        // The state's copy, when it has one, is the newer.
        let w = chat.watch.get(post).unwrap_or(read);
        let current = w.pending.as_ref().and_then(|p| p.to).or(w.label);
        if current == Some(label) {
            continue;
        }
        if w.pending.is_some() {
            // Another label while the first is carried out: after it.
            continue;
        }
        tracing::info!(post = %post, from = ?w.label, to = %label, by = %by, "Label corrected by reaction.");
        let w = chat
            .watch
            .entry(post.clone())
            .or_insert_with(|| read.clone());
        w.pending = Some(Box::new(PendingCorrection {
            to: Some(label),
            by,
            at_ms: at,
            done: Vec::new(),
        }));
        found += 1;
    }
    Ok(found)
}

/// Carries out the pending correction of `id` as far as it goes; the line
/// for the log when it is complete.
async fn carry_out(
    ctx: &Ctx<'_>,
    id: &str,
    book: &mut dyn Book,
    tally: &mut Tally,
) -> Result<Option<String>> {
    let w = book
        .parts()
        .chat
        .watch
        .get(id)
        .cloned()
        .context("not watched")?;
    let p = w.pending.clone().context("nothing pending")?;
    let to = p.to.context("a correction without a label")?;
    let from = w.label.unwrap_or(Label::Routine);
    let has_task = w.task_id.is_some() || book.parts().tasks.mapping.contains_key(id);
    let steps = plan(from, to, has_task);
    let mut source: Option<PostList> = None;
    let mut said = String::new();
    for step in steps {
        if p.done.iter().any(|d| d == step.name()) {
            continue;
        }
        match step {
            Step::Record => {
                let thread = thread_of(ctx, id, &mut source).await?;
                let post = thread.posts.get(id).context("the post is gone")?;
                let c = Correction {
                    text: post.message.clone(),
                    label: to,
                    was: from,
                    post_id: id.to_string(),
                    team: w.team.to_string(),
                    by: p.by.clone(),
                    at: DateTime::from_timestamp_millis(p.at_ms).unwrap_or(ctx.now),
                };
                file::append(ctx.settings.corrections_file, &c)?;
                tally.bump("corrections_recorded");
            }
            Step::CloseTask => {
                said = close_task(ctx, id, &w, &p, book).await?;
                tally.bump("corrections_tasks_closed");
            }
            Step::ReopenTask | Step::Reprioritize => {
                said = change_task(ctx, id, &w, &p, to, step == Step::ReopenTask, book).await?
            }
            Step::FileTask => {
                said = file_task(ctx, id, &w, to, &mut source, book).await?;
            }
            Step::Announce => {
                if said.is_empty() {
                    said = describe(id, to, book);
                }
                let text = format!("Relabelled {} (was {}) by {}. {said}", to, from, p.by);
                let reply = announce(ctx, id, &w, &p, to, &text).await?;
                let chat = book.parts().chat;
                if let Some(e) = chat.watch.get_mut(id) {
                    // The announcement is where the next correction goes.
                    e.reply_id = Some(reply);
                }
            }
            Step::TellCard => {
                let reopen = from == Label::Routine;
                tell_card(ctx, id, &w, &p, to, reopen, book)
                    .await
                    .context(CardStepFailed)?;
            }
        }
        mark_done(book.parts().chat, id, step);
        // Each step done is durable before the next: a crash repeats none.
        book.checkpoint(id, w.create_at)?;
    }
    let task_id = book
        .parts()
        .tasks
        .mapping
        .get(id)
        .map(|r| r.task_id.clone())
        .or(w.task_id);
    let e = book.parts().chat.watch.get_mut(id).context("not watched")?;
    e.label = Some(to);
    e.pending = None;
    e.task_id = task_id;
    tally.bump("corrections_applied");
    Ok(Some(format!("post {id}: {from} → {to} by {}", p.by)))
}

fn mark_done(chat: &mut ChatState, id: &str, step: Step) {
    if let Some(p) = chat.watch.get_mut(id).and_then(|w| w.pending.as_mut()) {
        if !p.done.iter().any(|d| d == step.name()) {
            p.done.push(step.name().to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_table() {
        use Label::*;
        use Step::*;
        let table: Vec<(Label, Label, bool, Vec<Step>)> = vec![
            (Task, Task, true, vec![]),
            (Routine, Routine, false, vec![]),
            (
                Task,
                Routine,
                true,
                vec![Record, CloseTask, Announce, TellCard],
            ),
            (
                Incident,
                Routine,
                true,
                vec![Record, CloseTask, Announce, TellCard],
            ),
            (Routine, Task, false, vec![Record, FileTask, Announce]),
            (Routine, Incident, false, vec![Record, FileTask, Announce]),
            (
                Routine,
                Task,
                true,
                vec![Record, ReopenTask, Announce, TellCard],
            ),
            (
                Task,
                Incident,
                true,
                vec![Record, Reprioritize, Announce, TellCard],
            ),
            (
                Incident,
                Task,
                true,
                vec![Record, Reprioritize, Announce, TellCard],
            ),
        ];
        for (from, to, has_task, want) in table {
            assert_eq!(
                plan(from, to, has_task),
                want,
                "{from} -> {to} ({has_task})"
            );
        }
    }

    #[test]
    fn verdict_table() {
        let cfg = CorrectionsConfig::default();
        let allowed: BTreeMap<String, String> = [("u-john".to_string(), "john".to_string())].into();
        let r = |user: &str, emoji: &str, at: i64| Reaction {
            user_id: user.into(),
            post_id: "p".into(),
            emoji_name: emoji.into(),
            create_at: at,
        };
        type Row = (&'static str, Vec<Reaction>, Option<(Label, String, i64)>);
        let table: Vec<Row> = vec![
            ("nothing", vec![], None),
            ("an ordinary emoji", vec![r("u-john", "+1", 5)], None),
            ("not on the allowlist", vec![r("u-client", "memo", 5)], None),
            (
                "a label emoji from the allowlist",
                vec![r("u-john", "memo", 5)],
                Some((Label::Task, "john".into(), 5)),
            ),
            (
                "the latest label wins",
                vec![
                    r("u-john", "speech_balloon", 9),
                    r("u-john", "rotating_light", 7),
                    r("u-client", "memo", 12),
                ],
                Some((Label::Routine, "john".into(), 9)),
            ),
        ];
        for (name, reactions, want) in table {
            assert_eq!(verdict(&reactions, &allowed, &cfg), want, "{name}");
        }
    }

    #[test]
    fn config_validation() {
        CorrectionsConfig::default().validate().unwrap();
        type Edit = Box<dyn Fn(&mut CorrectionsConfig)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|c| c.allowlist = vec!["@john".into()]),
                "corrections.allowlist: '@john'",
            ),
            (
                Box::new(|c| c.task_emoji = vec![":memo:".into()]),
                "corrections.task_emoji: ':memo:'",
            ),
            (
                Box::new(|c| c.incident_emoji = vec!["memo".into()]),
                "corrections.incident_emoji: 'memo' is also in corrections.task_emoji",
            ),
            (
                Box::new(|c| c.window_hours = 0),
                "corrections.window_hours: 0",
            ),
            (
                Box::new(|c| c.sweep_mins = 5000),
                "corrections.sweep_mins: 5000",
            ),
        ];
        for (edit, want) in cases {
            let mut c = CorrectionsConfig::default();
            edit(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
        assert_eq!(
            CorrectionsConfig::default().label_of(":memo:"),
            Some(Label::Task)
        );
    }

    #[test]
    fn the_watch_is_pruned_to_the_window_but_keeps_pending_work() {
        let mut chat = ChatState::default();
        let w = |at: i64, pending: bool| Watched {
            create_at: at,
            pending: pending.then(Box::<PendingCorrection>::default),
            ..Default::default()
        };
        chat.watch.insert("old".into(), w(0, false));
        chat.watch.insert("old-pending".into(), w(0, true));
        chat.watch.insert("new".into(), w(90, false));
        prune(&mut chat, 50, 100);
        let kept: Vec<&str> = chat.watch.keys().map(String::as_str).collect();
        assert_eq!(kept, ["new", "old-pending"]);
    }

    #[test]
    fn every_post_of_the_window_is_watched_however_many() {
        // 5,000 posts, one a second: all inside a 48-hour window. The
        // oldest's reactions must still be read (a count of 2,000 dropped
        // it while it could still be corrected).
        let mut chat = ChatState::default();
        let post = |i: i64| NewPost {
            id: format!("p{i:05}"),
            create_at: 1_000_000 + i * 1000,
            ..Default::default()
        };
        let progress = PostProgress {
            label: Some(Label::Routine),
            ..Default::default()
        };
        for i in 0..5000 {
            watch(&mut chat, &post(i), &progress);
        }
        let now = 1_000_000 + 5000 * 1000;
        prune(&mut chat, 48 * 3_600_000, now);
        assert_eq!(chat.watch.len(), 5000);
        assert!(chat.watch.contains_key("p00000"));
        // Out of the window, it goes.
        prune(&mut chat, 48 * 3_600_000, 1_000_000 + 48 * 3_600_000 + 500);
        assert_eq!(chat.watch.len(), 4999);
        assert!(!chat.watch.contains_key("p00000"));
    }
}
