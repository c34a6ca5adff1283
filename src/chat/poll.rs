//! Reading the chat and moving the cursor, kept together because they are
//! one promise: the poll reads from where the cursor says (less the
//! overlap), and the cursor moves only over posts this poll brought back
//! and the cycle fully handled, so a post cut by the deadline or a crash is
//! read again rather than lost. A missing token, a team that failed or a
//! poll cut by the deadline each become the `mattermost` stage's outcome
//! here, and the rest of the chat stage sees posts or none.

use std::time::Instant;

use chrono::{DateTime, Utc};

use super::{Book, Settings};
use crate::budget::{within, CycleBudget};
use crate::mattermost::{self, MattermostConfig, PollOutcome};
use crate::observe::audit::{self, Event};
use crate::report::{CycleReport, Outcome};
use crate::stage::Stage;
use crate::time::elapsed_ms;

/// What the poll leaves to the rest of the chat stage.
pub(super) struct Polled {
    /// Where this poll started reading (epoch ms, server clock).
    pub(super) since_ms: i64,
    /// Mattermost; `None` without credentials.
    pub(super) client: Option<mattermost::Client>,
    /// The new posts; `None` when Mattermost was unusable or the deadline
    /// cut the poll.
    pub(super) outcome: Option<PollOutcome>,
}

/// Stage 1: every new post of the configured teams since the cursor.
pub(super) async fn stage(
    settings: &Settings<'_>,
    budget: &CycleBudget,
    book: &mut dyn Book,
    report: &mut CycleReport,
    now: DateTime<Utc>,
) -> Polled {
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
            report.push(
                Stage::Mattermost,
                credential_outcome(cfg, &e),
                elapsed_ms(t),
            );
            return Polled {
                since_ms,
                client: None,
                outcome: None,
            };
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
    let (result, outcome) = match within(budget.chat_deadline, poll).await {
        Ok(Ok(outcome)) => {
            audit_skips(&outcome, since_ms);
            (read_outcome(&outcome, report), Some(outcome))
        }
        Ok(Err(e)) => {
            tracing::warn!("Mattermost unusable, chat skipped this cycle: {e}");
            report
                .counts
                .insert("mm_requests".into(), client.requests().into());
            (Outcome::Degraded(e.to_string()), None)
        }
        Err(cut) => {
            report.deadline_hit = true;
            (Outcome::Skipped(cut.to_string()), None)
        }
    };
    report.push(Stage::Mattermost, result, elapsed_ms(t));
    Polled {
        since_ms,
        client: Some(client),
        outcome,
    }
}

/// The `mattermost` stage outcome of a poll that answered, and its counts:
/// degraded when a team could not be read fully (it is read again next
/// cycle).
fn read_outcome(outcome: &PollOutcome, report: &mut CycleReport) -> Outcome {
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
    if outcome.teams_failed.is_empty() {
        return Outcome::Ok(detail);
    }
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

/// Moves the cursor only over posts that were fully handled, prunes what
/// no later poll can bring back, and marks the channels that only the
/// agent's own posts of this cycle changed as quiet.
pub(super) fn move_cursor(
    settings: &Settings<'_>,
    book: &mut dyn Book,
    polled: &Polled,
    now: DateTime<Utc>,
) {
    let made = polled
        .client
        .as_ref()
        .map(|c| c.posts_made())
        .unwrap_or_default();
    let now_ms = now.timestamp_millis();
    let p = book.parts();
    match (polled.client.is_some(), &polled.outcome) {
        (_, Some(outcome)) => {
            let next = mattermost::next_cursor(*p.cursor, polled.since_ms, outcome, p.mm);
            let overlap_ms = settings.mattermost.overlap_secs.as_millis() as i64;
            let pending = outcome
                .posts
                .iter()
                .filter(|post| !p.mm.handled.contains_key(&post.id))
                .map(|post| post.channel_id.to_string())
                .collect();
            p.mm.quiet =
                mattermost::next_quiet(&outcome.listed, &made, &pending, next - overlap_ms);
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
