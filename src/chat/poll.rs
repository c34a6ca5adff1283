//! Reading the chat and moving the cursor, kept together because they are
//! one promise: the poll reads from where the cursor says (less the
//! overlap), and the cursor moves only over posts this poll brought back
//! and the cycle fully handled, so a post cut by the deadline or a crash is
//! read again rather than lost. The posts come batch by batch
//! ([`Polled::next_batch`]): the chat stage handles one before the next is
//! read. A missing token, a team that failed or a poll cut by the deadline
//! each become the `mattermost` stage's outcome here, and the rest of the
//! chat stage sees posts or none.

use std::time::Instant;

use chrono::{DateTime, Utc};

use super::{Book, Settings};
use crate::budget::{within, CycleBudget};
use crate::mattermost::{self, MattermostConfig, NewPost, PollOutcome, Reader};
use crate::report::{CycleReport, Outcome};
use crate::stage::Stage;
use crate::time::elapsed_ms;

/// What the poll leaves to the rest of the chat stage.
pub(super) struct Polled {
    /// Where this poll started reading (epoch ms, server clock).
    pub(super) since_ms: i64,
    /// The reads; `None` when Mattermost was unusable or the deadline cut
    /// the listings.
    reader: Option<Reader>,
    /// The `mattermost` stage's entry in the report, to be completed.
    stage_at: Option<usize>,
    /// Time spent before the reads (listings, caches).
    start_ms: u64,
}

/// Stage 1: the teams' listings; the posts follow batch by batch.
/// Mattermost comes back with it (`None` without credentials).
pub(super) async fn stage(
    settings: &Settings<'_>,
    budget: &CycleBudget,
    book: &mut dyn Book,
    report: &mut CycleReport,
    now: DateTime<Utc>,
) -> (Option<mattermost::Client>, Polled) {
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
    mattermost::note_cut_over(parts.mm, *parts.cursor);
    let since_ms = mattermost::CutOver::floor(parts.mm.cut_over.as_ref(), since_ms);
    let client = match mattermost::Client::from_config(cfg, settings.token_cache) {
        Ok(c) => c,
        Err(e) => {
            report.push(
                Stage::Mattermost,
                credential_outcome(cfg, &e),
                elapsed_ms(t),
            );
            let polled = Polled {
                since_ms,
                reader: None,
                stage_at: None,
                start_ms: 0,
            };
            return (None, polled);
        }
    };
    let start = mattermost::start(
        &client,
        cfg,
        parts.mm,
        since_ms,
        now_ms,
        budget.chat_deadline,
    );
    let (result, reader) = match within(budget.chat_deadline, start).await {
        Ok(Ok(reader)) => (Outcome::Ok(String::new()), Some(reader)),
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
    let start_ms = elapsed_ms(t);
    report.push(Stage::Mattermost, result, start_ms);
    let polled = Polled {
        since_ms,
        stage_at: reader.as_ref().map(|_| report.stages.len() - 1),
        reader,
        start_ms,
    };
    (Some(client), polled)
}

impl Polled {
    /// The next batch of new posts, once the one before is handled.
    pub(super) async fn next_batch(
        &mut self,
        client: Option<&mattermost::Client>,
        book: &mut dyn Book,
    ) -> Option<Vec<NewPost>> {
        let (Some(client), Some(reader)) = (client, &mut self.reader) else {
            return None;
        };
        reader.next_batch(client, book.parts().mm).await
    }

    /// No more batches this cycle (the deadline cut the handling).
    pub(super) fn stop(&mut self) {
        if let Some(r) = &mut self.reader {
            r.stop();
        }
    }

    /// Time spent reading, for the stages that ran in between.
    pub(super) fn read_ms(&self) -> u64 {
        self.reader.as_ref().map_or(0, |r| r.ms)
    }

    /// Whether any post was handed over.
    pub(super) fn any_posts(&self) -> bool {
        self.reader
            .as_ref()
            .is_some_and(|r| r.outcome.posts_new > 0)
    }

    /// The figures of the reads, once [`Polled::finish`] ran.
    pub(super) fn outcome(&self) -> Option<&PollOutcome> {
        self.reader.as_ref().map(|r| &r.outcome)
    }

    /// Settles the last batch and completes the `mattermost` stage.
    pub(super) fn finish(&mut self, book: &mut dyn Book, report: &mut CycleReport) {
        let Some(reader) = &mut self.reader else {
            return;
        };
        let mm = book.parts().mm;
        reader.finish(mm);
        let backlogs: Vec<String> = mm.behind.iter().map(|b| b.line()).collect();
        let outcome = read_outcome(&reader.outcome, &backlogs, report);
        if let Some(i) = self.stage_at {
            report.stages[i].outcome = outcome;
            report.stages[i].ms = self.start_ms + reader.ms;
        }
    }
}

/// The `mattermost` stage outcome of a poll that answered, and its counts:
/// degraded when a team could not be read fully (it is read again next
/// cycle) or the deadline stopped the reads.
fn read_outcome(outcome: &PollOutcome, backlogs: &[String], report: &mut CycleReport) -> Outcome {
    report
        .counts
        .insert("mm_requests".into(), outcome.requests.into());
    report.counts.insert("posts_new".into(), outcome.posts_new);
    report
        .counts
        .insert("channels_behind".into(), backlogs.len() as u64);
    let mut detail = format!(
        "{} new, {} skipped, {} requests",
        outcome.posts_new,
        outcome.skipped.total(),
        outcome.requests
    );
    for b in backlogs {
        detail.push_str(&format!("; {b}"));
    }
    if outcome.deadline_hit {
        report.deadline_hit = true;
        detail.push_str("; the deadline stopped the reads, the rest next cycle");
    }
    if outcome.teams_failed.is_empty() && !outcome.deadline_hit {
        return Outcome::Ok(detail);
    }
    let failed: Vec<String> = outcome
        .teams_failed
        .iter()
        .map(|(t, why)| format!("{t}: {why}"))
        .collect();
    if !failed.is_empty() {
        tracing::warn!(
            "Teams not polled fully (retried next cycle): {}",
            failed.join("; ")
        );
        detail.push_str(&format!("; {}", failed.join("; ")));
    }
    Outcome::Degraded(detail)
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
    client: Option<&mattermost::Client>,
    polled: &Polled,
    now: DateTime<Utc>,
) {
    let made = client.map(|c| c.posts_made()).unwrap_or_default();
    let now_ms = now.timestamp_millis();
    let p = book.parts();
    match (client.is_some(), polled.outcome()) {
        (_, Some(outcome)) => {
            let next = mattermost::next_cursor(*p.cursor, polled.since_ms, outcome);
            let overlap_ms = settings.mattermost.overlap_secs.as_millis() as i64;
            p.mm.quiet = mattermost::next_quiet(&outcome.listed, &made, next - overlap_ms);
            mattermost::prune_handled(p.mm, next, overlap_ms);
            mattermost::retire_cut_over(p.mm, next - overlap_ms);
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
