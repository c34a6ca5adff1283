//! `ops-agent classify "TEXT" [--no-llm] [--json]`: the runbook's "test
//! classification manually" as one command. This module produces the data
//! and its text rendering; the CLI only parses arguments and prints.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::fallback::{Because, FallbackPart, FallbackVerdict};
use super::{corrections, keywords, ClassifyConfig, DecisionPath, Label, Post, Triage};
use crate::ollama::{self, OllamaConfig};

/// What `ops-agent classify` reports (and prints as JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClassifyReport {
    /// The label that the cycle would use.
    label: Label,
    /// Model or fallback, and why.
    path: DecisionPath,
    /// Time taken, model call included.
    elapsed_ms: u64,
    /// Which part decided and the figures that decided: the sentence the
    /// audit trail and `ops-agent eval` show too.
    explanation: String,
    /// What the fallback's keyword rules alone say, with the phrases that
    /// matched, so an operator can see what the fallback leans on and tune
    /// `[classify]` phrases.
    rules: keywords::Verdict,
    /// What the fallback says (the label when the LLM is away), which part
    /// decided and its figures.
    fallback: FallbackSummary,
}

/// The fallback's view, without repeating the rules.
#[derive(Debug, Clone, Serialize)]
struct FallbackSummary {
    /// Its label.
    label: Label,
    /// Which part decided: the rules (an operator phrase), the model, or
    /// a correction.
    part: FallbackPart,
    /// The figures that decided.
    because: Because,
}

/// Classifies `post` exactly as the cycle would (same client, same rules,
/// same corrections); `no_llm` skips the model. Errors only when the
/// Ollama client cannot be built (e.g. `ollama.api_key_env` names an unset
/// variable).
pub(crate) async fn run(
    ollama_cfg: &OllamaConfig,
    classify_cfg: &ClassifyConfig,
    corrections_file: &Path,
    post: Post<'_>,
    no_llm: bool,
) -> Result<ClassifyReport> {
    let client = if no_llm {
        None
    } else {
        Some(ollama::Client::from_config(ollama_cfg)?)
    };
    let taught = match corrections::load_recent(corrections_file, corrections::LOAD_MAX) {
        Ok((list, _)) => list,
        Err(e) => {
            tracing::warn!("Corrections not read, classifying without them: {e:#}");
            Vec::new()
        }
    };
    let triage = Triage::new(client.as_ref(), classify_cfg, taught);
    let decision = triage.classify(post).await;
    let FallbackVerdict {
        label: fb_label,
        part,
        rules,
        because,
    } = triage.fallback_verdict(post.text);
    Ok(ClassifyReport {
        label: decision.label,
        explanation: decision.explain(),
        path: decision.path,
        elapsed_ms: decision.elapsed_ms,
        rules,
        fallback: FallbackSummary {
            label: fb_label,
            part,
            because,
        },
    })
}

impl ClassifyReport {
    /// Human rendering: the decision and why, e.g. `INCIDENT by the model:
    /// incident 81 %, … (3 ms)`, the fallback's own view when the LLM
    /// decided, and what the rules matched.
    pub(crate) fn render_text(&self) -> String {
        let mut out = format!("{}  ({} ms)\n", self.explanation, self.elapsed_ms);
        if let DecisionPath::Llm { .. } = self.path {
            let f = &self.fallback;
            out.push_str(&format!(
                "without the LLM: {} by {}\n",
                f.label,
                f.because.render(f.label)
            ));
        }
        let s = &self.rules.scores;
        out.push_str(&format!(
            "rules: {} (incident {}, task {}, routine {})",
            self.rules.label, s.incident, s.task, s.routine
        ));
        let hits: Vec<String> = self
            .rules
            .hits
            .iter()
            .map(|h| {
                let neg = if h.negated { " negated" } else { "" };
                format!("\"{}\" {} +{}{neg}", h.phrase, h.label, h.weight)
            })
            .collect();
        if !hits.is_empty() {
            out.push_str(&format!("\n  matched: {}", hits.join(", ")));
        }
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::FallbackReason;

    #[tokio::test]
    async fn no_llm_report_renders_and_serializes() {
        let r = run(
            &OllamaConfig::default(),
            &ClassifyConfig::default(),
            Path::new("/nonexistent/corrections.jsonl"),
            Post::anywhere("planka is not urgent but down"),
            true,
        )
        .await
        .unwrap();
        assert_eq!(r.label, Label::Incident);
        assert_eq!(
            r.path,
            DecisionPath::Fallback {
                reason: FallbackReason::NoLlm,
                part: FallbackPart::Model,
            }
        );
        let text = r.render_text();
        assert!(
            text.starts_with("INCIDENT by the model: incident "),
            "{text}"
        );
        // The figures shown are the ones that decided: INCIDENT leads them.
        let first = text.lines().next().unwrap();
        let odds = first.split(": ").nth(1).unwrap();
        assert!(odds.starts_with("incident "), "{first}");
        assert!(text.contains("\"urgent\" INCIDENT +3 negated"), "{text}");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["label"], "INCIDENT");
        assert_eq!(v["path"]["reason"]["why"], "no_llm");
        assert!(v["rules"]["hits"].is_array());
        assert_eq!(v["path"]["part"], "model");
        assert_eq!(v["fallback"]["part"], "model");
        assert_eq!(v["fallback"]["because"]["part"], "model");
        assert_eq!(v["explanation"], first.rsplit_once("  (").unwrap().0);
    }
}
