//! `ops-agent classify "TEXT" [--no-llm] [--json]`: the runbook's "test
//! classification manually" as one command. This module produces the data
//! and its text rendering; the CLI only parses arguments and prints.

use anyhow::Result;
use serde::Serialize;

use super::{keywords, ClassifyConfig, Decision, DecisionPath, Label};
use crate::ollama::{self, OllamaConfig};

/// What `ops-agent classify` reports (and prints as JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct ClassifyReport {
    /// The label that the cycle would use.
    pub label: Label,
    /// Model or keywords, and why.
    pub path: DecisionPath,
    /// Time taken, model call included.
    pub elapsed_ms: u64,
    /// What the keyword rules alone say, with the phrases that matched, so
    /// an operator can see what the fallback would do and tune
    /// `[classify]` phrases.
    pub keywords: keywords::Verdict,
}

/// Classifies `text` exactly as the cycle would (same client, same rules);
/// `no_llm` skips the model. Errors only when the Ollama client cannot be
/// built (e.g. `ollama.api_key_env` names an unset variable).
pub async fn run(
    ollama_cfg: &OllamaConfig,
    classify_cfg: &ClassifyConfig,
    text: &str,
    no_llm: bool,
) -> Result<ClassifyReport> {
    let client = if no_llm {
        None
    } else {
        Some(ollama::Client::from_config(ollama_cfg)?)
    };
    let Decision {
        label,
        path,
        elapsed_ms,
    } = super::classify(client.as_ref(), classify_cfg, text).await;
    Ok(ClassifyReport {
        label,
        path,
        elapsed_ms,
        keywords: keywords::classify(text, classify_cfg),
    })
}

impl ClassifyReport {
    /// Human rendering, e.g.
    /// `INCIDENT  (llm llama3.1:8b, 412 ms)` followed by the keyword view.
    pub fn render_text(&self) -> String {
        let how = match &self.path {
            DecisionPath::Llm { model } => format!("llm {model}"),
            DecisionPath::Keywords { reason } => format!("keywords; {reason}"),
        };
        let mut out = format!("{}  ({how}, {} ms)\n", self.label, self.elapsed_ms);
        let s = &self.keywords.scores;
        out.push_str(&format!(
            "keywords: {} (incident {}, task {}, routine {})",
            self.keywords.label, s.incident, s.task, s.routine
        ));
        let hits: Vec<String> = self
            .keywords
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
            "planka is not urgent but down",
            true,
        )
        .await
        .unwrap();
        assert_eq!(r.label, Label::Incident);
        assert_eq!(
            r.path,
            DecisionPath::Keywords {
                reason: FallbackReason::NoLlm
            }
        );
        let text = r.render_text();
        assert!(
            text.starts_with("INCIDENT  (keywords; no LLM configured, "),
            "{text}"
        );
        assert!(text.contains("\"urgent\" INCIDENT +3 negated"), "{text}");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["label"], "INCIDENT");
        assert_eq!(v["path"]["reason"]["why"], "no_llm");
        assert!(v["keywords"]["hits"].is_array());
    }
}
