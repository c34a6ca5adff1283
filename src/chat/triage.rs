//! Stage 2 for the posts routed as work: a label for every post that has
//! none yet, LLM first and the fallback when the LLM is away, and for every
//! post that no model call can reach in the time left.
//!
//! The chat stage works in batches, but classification is one stage of the
//! cycle: [`Classify`] carries across the batches what must happen once
//! (the corrections file read at the first work post, the moment after
//! which no model call may start, a deadline cut that ends the labelling
//! for this cycle) and reports once, with the cycle's totals.

use std::path::Path;
use std::time::Instant;

use crate::budget::{within, Cut, CycleBudget};
use crate::classify::{self, Decision, DecisionPath, FallbackReason, Post, Triage};
use crate::mattermost::NewPost;
use crate::observe::audit::{self, Event};
use crate::ollama;
use crate::report::{CycleReport, Outcome};
use crate::stage::Stage;
use crate::time::elapsed_ms;

use super::progress::ChatState;
use super::route::Route;
use super::{Book, Settings, Tally};

/// Stage 2: ROUTINE, TASK or INCIDENT for each work post without a label,
/// batch by batch, reported once for the cycle.
pub(super) struct Classify<'a> {
    settings: &'a Settings<'a>,
    budget: &'a CycleBudget,
    /// The LLM, when one is configured.
    llm: Option<&'a ollama::Client>,
    /// A call started after this point could outlive the chat deadline.
    stop_starting: tokio::time::Instant,
    /// No call fits in the chat budget at all (a short `deadline_secs`):
    /// every post goes to the fallback at once, and the reason says so.
    no_room: bool,
    /// Made at the first work post (it reads the corrections file).
    triage: Option<Triage<'a>>,
    /// The deadline cut a batch: the rest is labelled next cycle.
    cut: Option<Cut>,
    /// Time spent classifying (ms).
    ms: u64,
}

impl<'a> Classify<'a> {
    pub(super) fn new(
        settings: &'a Settings<'a>,
        budget: &'a CycleBudget,
        llm: Option<&'a ollama::Client>,
    ) -> Classify<'a> {
        // When no call fits at all, no call starts: the fallback decides
        // right away, for want of time (not for want of an LLM).
        let stop_starting = budget.last_start_for(settings.ollama.classify_timeout_secs.get());
        Classify {
            settings,
            budget,
            llm,
            stop_starting: stop_starting.unwrap_or_else(tokio::time::Instant::now),
            no_room: llm.is_some() && stop_starting.is_none(),
            triage: None,
            cut: None,
            ms: 0,
        }
    }

    /// Labels the work posts of one batch.
    pub(super) async fn batch(
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
        let run = classify_posts(triage, &work, book.parts().chat, self.stop_starting, tally);
        self.cut = within(self.budget.chat_deadline, run).await.err();
        self.ms += elapsed_ms(t);
    }

    /// The `classify` stage outcome, with the cycle's totals.
    pub(super) fn report(self, report: &mut CycleReport, tally: &Tally) {
        if self.triage.is_none() {
            report.push(Stage::Classify, Outcome::Skipped("no new posts".into()), 0);
            return;
        }
        let llm = self.llm;
        let by_fallback = tally.by_fallback;
        let mut detail = format!("{} by llm, {by_fallback} by fallback", tally.by_llm);
        // The LLM is optional: what it could not label, the fallback did.
        // That is shown, not a degraded stage (a deadline cut still is).
        let breaker = llm.and_then(|c| c.breaker());
        // Why the LLM did not label posts, as counted: `unreachable 1, timeout 2`.
        let reasons: Vec<String> = tally
            .counters
            .iter()
            .filter_map(|(k, n)| {
                let code = k.strip_prefix("fallback_")?;
                (!code.starts_with("part_") && code != "no_llm").then(|| format!("{code} {n}"))
            })
            .collect();
        let fallback = if self.no_room {
            let timeout = self.settings.ollama.classify_timeout_secs;
            Some(format!(
                "no LLM call fits: the chat half of agent.deadline_secs has {:.1} s, \
                 less than ollama.classify_timeout_secs ({timeout})",
                self.budget.chat_time().as_secs_f64()
            ))
        } else if let Some(why) = breaker {
            Some(format!(
                "the LLM stopped for this cycle ({})",
                format!("{why:?}").to_lowercase()
            ))
        } else if !reasons.is_empty() {
            Some("the LLM did not label every post".to_string())
        } else {
            None
        }
        .map(|why| {
            format!(
                "{why}; the fallback labelled {by_fallback} post(s) ({})",
                reasons.join(", ")
            )
        });
        if let Some(why) = breaker {
            detail.push_str(&format!(
                "; LLM stopped for this cycle after a {why:?} (the fallback for the rest)"
            ));
        } else if self.no_room || tally.counters.contains_key("fallback_no_time") {
            detail.push_str("; no LLM call fitted in the time left (the fallback)");
        }
        let outcome = match self.cut {
            Some(cut) => {
                report.deadline_hit = true;
                Outcome::Degraded(format!("{detail}; {cut}, the rest next cycle"))
            }
            None => Outcome::Ok(detail),
        };
        report.push(Stage::Classify, outcome, self.ms);
        if let Some(why) = fallback {
            report.fallback(Stage::Classify, why);
        }
    }
}

/// The newest corrections, which teach this cycle's classification; an
/// unreadable file teaches nothing (and says why).
fn load_corrections(path: &Path) -> Vec<classify::corrections::Correction> {
    match classify::corrections::load_recent(path, classify::corrections::LOAD_MAX) {
        Ok((list, skipped)) => {
            if skipped > 0 {
                tracing::warn!(file = %path.display(), skipped, "Skipped unreadable lines of the corrections file.");
            }
            list
        }
        Err(e) => {
            tracing::warn!("Corrections not read, classifying without them: {e:#}");
            Vec::new()
        }
    }
}

/// Labels every post of `posts` without a label in `chat`, starting no
/// model call after `stop_starting`.
async fn classify_posts(
    triage: &Triage<'_>,
    posts: &[&NewPost],
    chat: &mut ChatState,
    stop_starting: tokio::time::Instant,
    tally: &mut Tally,
) {
    let todo: Vec<(usize, Post)> = posts
        .iter()
        .enumerate()
        .filter(|(_, p)| chat.progress.get(&p.id).is_none_or(|g| g.label.is_none()))
        .map(|(i, p)| {
            let post = Post {
                text: &p.message,
                team: &p.team,
            };
            (i, post)
        })
        .collect();
    let batch = triage.classify_many(todo, stop_starting).await;
    // No model call can start any more: the fallback decides the rest
    // now, rather than leaving them for a cycle that may be as short.
    let late = batch.pending.into_iter().map(|i| {
        let decision = triage.fallback_decision(&posts[i].message, FallbackReason::NoTime);
        (i, decision)
    });
    for (i, decision) in batch.done.into_iter().chain(late) {
        let post = posts[i];
        record_decision(&post.id, &decision, tally);
        audit_decision(post, &decision);
        let entry = chat.progress.entry(post.id.clone()).or_default();
        entry.label = Some(decision.label);
        entry.create_at = post.create_at;
    }
}

/// The decision in the audit trail, with who posted what where.
fn audit_decision(post: &NewPost, d: &Decision) {
    let (path, model, fallback, part) = match &d.path {
        DecisionPath::Llm { model } => ("llm", Some(model.to_string()), None, None),
        DecisionPath::Fallback { reason, part } => (
            "fallback",
            None,
            Some(reason.code().to_string()),
            Some(part.as_str().to_string()),
        ),
    };
    audit::record(Event::PostClassified {
        post: post.id.clone(),
        team: post.team.to_string(),
        channel: post.channel_name.to_string(),
        author: post.username.to_string(),
        excerpt: audit::excerpt(&post.message),
        label: d.label.as_str().into(),
        path: path.into(),
        model,
        fallback,
        part,
        why: Some(d.explain()),
    });
}

/// One log line per decision, and the counters the cumulative stats keep.
fn record_decision(id: &str, d: &Decision, tally: &mut Tally) {
    match &d.path {
        DecisionPath::Llm { model } => {
            tally.by_llm += 1;
            tally.bump("classified_llm");
            tracing::info!(post = id, label = d.label.as_str(), path = "llm", model = %model, ms = d.elapsed_ms, "Post classified.");
        }
        DecisionPath::Fallback { reason, part } => {
            tally.by_fallback += 1;
            tally.bump("classified_fallback");
            tally.bump(&format!("fallback_{}", reason.code()));
            tally.bump(&format!("fallback_part_{}", part.as_str()));
            tracing::info!(
                post = id,
                label = d.label.as_str(),
                path = "fallback",
                part = part.as_str(),
                why = reason.code(),
                ms = d.elapsed_ms,
                "Post classified."
            );
        }
    }
    tally.bump(&format!("label_{}", d.label.as_str().to_ascii_lowercase()));
}
