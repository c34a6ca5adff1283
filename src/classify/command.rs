//! `ops-agent classify "TEXT" [--no-llm] [--json]`: the runbook's "test
//! classification manually" as one command. This module produces the data
//! and its text rendering; the CLI only parses arguments and prints.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::fallback::{FallbackPart, FallbackVerdict};
use super::{corrections, keywords, ClassifyConfig, Decision, DecisionPath, Label, Triage};
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
    /// What the fallback's keyword rules alone say, with the phrases that
    /// matched, so an operator can see what the fallback leans on and tune
    /// `[classify]` phrases.
    rules: keywords::Verdict,
    /// What the fallback says, which part decided, and the model's
    /// probabilities.
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
    /// The model's probability per label.
    model: ModelProbabilities,
}

/// Probabilities per label.
#[derive(Debug, Clone, Serialize)]
struct ModelProbabilities {
    /// ROUTINE.
    routine: f64,
    /// TASK.
    task: f64,
    /// INCIDENT.
    incident: f64,
}

/// Classifies `text` exactly as the cycle would (same client, same rules,
/// same corrections); `no_llm` skips the model. Errors only when the
/// Ollama client cannot be built (e.g. `ollama.api_key_env` names an unset
/// variable).
pub(crate) async fn run(
    ollama_cfg: &OllamaConfig,
    classify_cfg: &ClassifyConfig,
    corrections_file: &Path,
    text: &str,
    no_llm: bool,
) -> Result<ClassifyReport> {
    let client = if no_llm {
        None
    } else {
        Some(ollama::Client::from_config(ollama_cfg)?)
    };
    let taught = match corrections::load_recent(corrections_file, corrections::LOAD_MAX) {
        Ok((list, _)) => corrections::examples(&list),
        Err(e) => {
            tracing::warn!("Corrections not read, classifying without them: {e:#}");
            Vec::new()
        }
    };
    let triage = Triage::new(client.as_ref(), classify_cfg, taught);
    let Decision {
        label,
        path,
        elapsed_ms,
    } = triage.classify(text).await;
    let FallbackVerdict {
        label: fb_label,
        part,
        rules,
        model,
    } = triage.fallback_verdict(text);
    Ok(ClassifyReport {
        label,
        path,
        elapsed_ms,
        rules,
        fallback: FallbackSummary {
            label: fb_label,
            part,
            model: ModelProbabilities {
                routine: model[0],
                task: model[1],
                incident: model[2],
            },
        },
    })
}

impl ClassifyReport {
    /// Human rendering, e.g.
    /// `INCIDENT  (llm llama3.1:8b, 412 ms)` followed by the fallback's view.
    pub(crate) fn render_text(&self) -> String {
        let how = match &self.path {
            DecisionPath::Llm { model } => format!("llm {model}"),
            DecisionPath::Fallback { reason, part } => {
                format!("fallback, {}; {reason}", part.as_str())
            }
        };
        let mut out = format!("{}  ({how}, {} ms)\n", self.label, self.elapsed_ms);
        let f = &self.fallback;
        let who = match f.part {
            FallbackPart::Correction => "a recorded correction of this text",
            FallbackPart::Rules => "the rules: an operator phrase from [classify]",
            FallbackPart::Model => "the model, the rules as a prior",
        };
        out.push_str(&format!(
            "fallback: {} by {who} (model: routine {:.0} %, task {:.0} %, incident {:.0} %)\n",
            f.label,
            f.model.routine * 100.0,
            f.model.task * 100.0,
            f.model.incident * 100.0
        ));
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
            "planka is not urgent but down",
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
            text.starts_with("INCIDENT  (fallback, model; no LLM configured, "),
            "{text}"
        );
        assert!(text.contains("\"urgent\" INCIDENT +3 negated"), "{text}");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["label"], "INCIDENT");
        assert_eq!(v["path"]["reason"]["why"], "no_llm");
        assert!(v["rules"]["hits"].is_array());
        assert_eq!(v["path"]["part"], "model");
        assert_eq!(v["fallback"]["part"], "model");
    }
}
