//! The chat half of a cycle: what happens to each new post between the
//! poll and the cursor. Stages 2–4 of DESIGN.md, kept out of `cycle.rs` so
//! that file stays the list of stages.
//!
//! Every step is idempotent and its result is recorded in [`ChatState`] as
//! soon as it is done, so a cycle cut by the deadline or killed halfway
//! repeats nothing next time: the label is kept (no second opinion), the
//! task is found by its source post id, and the reply is found in the thread
//! by its `ops_agent_reply_to` prop.

use std::collections::BTreeMap;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::classify::{self, ClassifyConfig, Decision, DecisionPath, Label};
use crate::config::Config;
use crate::health::{CheckResult, Status};
use crate::mattermost::{self, Client, NewPost};
use crate::ollama;
use crate::reply::{self, ReplyContext, ReplyKind, ReplyPath};
use crate::state::Stats;
use crate::tasks::outbox::{self, Targets, TaskState};
use crate::tasks::{PostRef, Task};

/// How far each post got; kept until the post is fully handled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PostProgress {
    /// The label, once decided (never re-asked).
    pub label: Option<Label>,
    /// The task made for it (TASK and INCIDENT).
    pub task_id: Option<String>,
    /// The task's link (its Planka card) when there is one.
    pub task_url: Option<String>,
    /// The reply post, once posted.
    pub reply_post_id: Option<String>,
    /// The post's create_at, so stale entries can be pruned.
    pub create_at: i64,
}

/// Chat progress in the state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChatState {
    /// Post id → progress, for posts handed over but not yet fully handled.
    pub progress: BTreeMap<String, PostProgress>,
}

/// Counts for the report's classify, tasks and reply stages.
#[derive(Debug, Default)]
pub struct Tally {
    /// Posts labelled this cycle, per path.
    pub by_llm: u32,
    /// Posts labelled by the keyword rules.
    pub by_keywords: u32,
    /// Posts left for the next cycle before classification.
    pub unclassified: u32,
    /// Tasks created this cycle.
    pub tasks_created: u32,
    /// Tasks that already existed (retry after a crash).
    pub tasks_existing: u32,
    /// MC failures (the post stays pending).
    pub task_errors: Vec<String>,
    /// Replies posted this cycle.
    pub replies: u32,
    /// Reply failures (the post stays pending).
    pub reply_errors: Vec<String>,
    /// Dry run: what would have been done.
    pub would: Vec<String>,
}

/// The link to a post, for task descriptions.
pub fn permalink(base_url: &str, team: &str, post_id: &str) -> String {
    format!("{}/{team}/pl/{post_id}", base_url.trim_end_matches('/'))
}

/// Stage 2: labels every post that has none yet, LLM first, keywords when
/// the LLM is away. Posts not reached before `deadline` keep no label and
/// are classified next cycle.
pub async fn classify_posts(
    llm: Option<&ollama::Client>,
    cfg: &ClassifyConfig,
    posts: &[NewPost],
    chat: &mut ChatState,
    stats: &mut Stats,
    deadline: tokio::time::Instant,
    tally: &mut Tally,
) {
    let todo: Vec<(String, String)> = posts
        .iter()
        .filter(|p| chat.progress.get(&p.id).is_none_or(|g| g.label.is_none()))
        .map(|p| (p.id.clone(), p.message.clone()))
        .collect();
    let batch = classify::classify_many(llm, cfg, todo, deadline).await;
    for (id, decision) in batch.done {
        record_decision(&id, &decision, stats, tally);
        let create_at = posts.iter().find(|p| p.id == id).map_or(0, |p| p.create_at);
        let entry = chat.progress.entry(id).or_default();
        entry.label = Some(decision.label);
        entry.create_at = create_at;
    }
    tally.unclassified = batch.pending.len() as u32;
}

fn record_decision(id: &str, d: &Decision, stats: &mut Stats, tally: &mut Tally) {
    match &d.path {
        DecisionPath::Llm { model } => {
            tally.by_llm += 1;
            stats.bump("classified_llm", 1);
            tracing::info!(post = id, label = d.label.as_str(), path = "llm", model = %model, ms = d.elapsed_ms, "Post classified.");
        }
        DecisionPath::Keywords { reason } => {
            tally.by_keywords += 1;
            stats.bump("classified_keywords", 1);
            stats.bump(&format!("fallback_{}", reason.code()), 1);
            tracing::info!(
                post = id,
                label = d.label.as_str(),
                path = "keywords",
                why = reason.code(),
                ms = d.elapsed_ms,
                "Post classified."
            );
        }
    }
    stats.bump(
        &format!("label_{}", d.label.as_str().to_ascii_lowercase()),
        1,
    );
}

/// Everything stages 3–4 need for one post.
pub struct Act<'a> {
    /// The config.
    pub config: &'a Config,
    /// Mattermost, for the reply.
    pub mm: &'a Client,
    /// The LLM for the reply text, if any.
    pub llm: Option<&'a ollama::Client>,
    /// MC and Planka.
    pub targets: Targets<'a>,
    /// The last known health results, for INCIDENT replies.
    pub last_checks: &'a [CheckResult],
    /// When those results were taken (epoch ms).
    pub last_checks_ms: i64,
}

/// Stages 3–4 for one labelled post: the task (TASK, INCIDENT), then the
/// reply naming it. Returns true when the post is fully handled. Each
/// finished step is written into `progress` before the next starts; the
/// caller saves state after every post.
pub async fn act_on_post(
    act: &Act<'_>,
    post: &NewPost,
    progress: &mut PostProgress,
    tasks: &mut TaskState,
    now: DateTime<Utc>,
    tally: &mut Tally,
) -> Result<bool> {
    let Some(label) = progress.label else {
        return Ok(false);
    };
    let Some(kind) = ReplyKind::for_label(label) else {
        return Ok(true); // ROUTINE: nothing to file, nothing to say.
    };
    let cfg = act.config;
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
            &cfg.agent.owner,
            &cfg.billing,
        );
        match outbox::ensure_task(&task, act.targets, tasks, now).await {
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
                progress.task_id = Some(out.task_ref.id);
                progress.task_url = out.task_ref.url;
            }
            Err(e) => {
                let msg = format!("post {}: {e:#}", post.id);
                tracing::warn!("Task not created; the post stays pending: {msg}");
                tally.task_errors.push(msg);
                return Ok(false);
            }
        }
    }
    if progress.reply_post_id.is_some() {
        return Ok(true);
    }
    let ctx = ReplyContext {
        kind,
        message: post.message.clone(),
        team: post.team.clone(),
        channel: post.channel_name.clone(),
        author: post.username.clone(),
        task_id: progress.task_id.clone().unwrap_or_default(),
        task_url: progress.task_url.clone(),
    };
    let mut reply = reply::compose(act.llm, &ctx).await;
    if kind == ReplyKind::Incident {
        if let Some(note) = health_note(&post.message, act.last_checks, act.last_checks_ms) {
            reply.text = format!("{}\n\n{note}", reply.text);
        }
    }
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
            progress.reply_post_id = Some(r.post_id);
            Ok(true)
        }
        Err(e) => {
            let msg = format!("post {}: {e:#}", post.id);
            tracing::warn!("Reply not posted; the post stays pending: {msg}");
            tally.reply_errors.push(msg);
            Ok(false)
        }
    }
}

/// For an INCIDENT reply: the last known health of the services the message
/// names (by service or check name, as a whole word, any case), e.g.
/// "Health at 12:05 UTC: planka critical (container exited)". `None` when
/// the message names no checked service.
pub fn health_note(message: &str, checks: &[CheckResult], at_ms: i64) -> Option<String> {
    let words: Vec<String> = message
        .to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    let named = |name: &str| words.iter().any(|w| w == &name.to_lowercase());
    let mut lines: Vec<String> = Vec::new();
    for c in checks
        .iter()
        .filter(|c| named(&c.service) || named(&c.name))
    {
        let line = if c.status == Status::Ok {
            format!("{} ok", c.name)
        } else {
            format!("{} {} ({})", c.name, c.status.as_str(), c.reason)
        };
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    if lines.is_empty() {
        return None;
    }
    let at = chrono::DateTime::from_timestamp_millis(at_ms)
        .map(|t| t.format("%H:%M UTC").to_string())
        .unwrap_or_default();
    Some(format!("Health at {at}: {}", lines.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::CheckKind;

    fn result(name: &str, status: Status, reason: &str) -> CheckResult {
        CheckResult {
            name: name.into(),
            kind: CheckKind::Docker,
            service: name.into(),
            status,
            reason: reason.into(),
            latency_ms: 1,
            starting: false,
            reprobed: false,
            blocked_by: None,
            container: None,
        }
    }

    #[test]
    fn health_note_names_only_the_services_in_the_message() {
        let checks = [
            result("planka", Status::Critical, "container exited (code 1)"),
            result("mattermost", Status::Ok, "running"),
            result("ollama", Status::Critical, "not running"),
        ];
        let note = health_note("Planka is down again, and Mattermost?", &checks, 0).unwrap();
        assert_eq!(
            note,
            "Health at 00:00 UTC: planka critical (container exited (code 1)); mattermost ok"
        );
        assert_eq!(health_note("the site is down", &checks, 0), None);
        assert_eq!(
            health_note("plankaX broke", &checks, 0),
            None,
            "whole words only"
        );
    }
}
