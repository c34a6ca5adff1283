//! Stage 2 for the posts routed as work: a label for every post that has
//! none yet, LLM first and the fallback when the LLM is away, and for every
//! post that no model call can reach in the time left.

use crate::classify::{Decision, DecisionPath, FallbackReason, Triage};
use crate::mattermost::NewPost;
use crate::observe::audit::{self, Event};

use super::progress::ChatState;
use super::Tally;

/// Labels every post of `posts` without a label in `chat`, starting no
/// model call after `stop_starting`.
pub async fn classify_posts(
    triage: &Triage<'_>,
    posts: &[&NewPost],
    chat: &mut ChatState,
    stop_starting: tokio::time::Instant,
    tally: &mut Tally,
) {
    let todo: Vec<(usize, &str)> = posts
        .iter()
        .enumerate()
        .filter(|(_, p)| chat.progress.get(&p.id).is_none_or(|g| g.label.is_none()))
        .map(|(i, p)| (i, p.message.as_str()))
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
