//! The fallback that decides when the LLM cannot: the keyword rules and the
//! statistical model together, plus what the team taught by correcting.
//!
//! Which part decides ([`FallbackPart`], recorded with every decision), in
//! order ([`combine`], pure and table-tested):
//! 1. `correction`: a post the team already corrected (same text once
//!    folded) gets the corrected label: it was said by a person about this
//!    very text;
//! 2. `rules`: a phrase the operator added in `[classify]` makes the rules
//!    decide: it is a rule they wrote for their team's words;
//! 3. `model`: otherwise the model decides, with the rules as a prior: the label the
//!    rules chose counts [`RULES_BONUS`] in log-odds when they matched
//!    something, and ROUTINE counts [`SILENT_RULES_BONUS`] when they matched
//!    nothing (no keyword at all is weak evidence of chatter).
//!
//! Measured (docs/classification.md): the model alone generalises far
//! better than the rules to chat they were not written for; the small
//! prior keeps what the rules get right on the chat they were fitted to.
//! The model is trained at the first post that needs it, so a cycle whose
//! LLM answers every post never pays for it.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::data::Example;
use super::keywords::{Rules, Verdict};
use super::model::{self, Model, Prediction};
use super::{ClassifyConfig, Label};

/// Log-odds added to the rules' label when they matched a phrase.
const RULES_BONUS: f64 = 1.0;
/// Log-odds added to ROUTINE when the rules matched nothing.
const SILENT_RULES_BONUS: f64 = 1.0;
/// How many ordinary examples one correction is worth to the model.
const CORRECTION_WEIGHT: f32 = 3.0;

/// Which part of the fallback decided: the name the audit trail, the stats
/// and the metrics give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackPart {
    /// The rules: an operator phrase from `[classify]` matched.
    Rules,
    /// The model, with the rules as a prior.
    Model,
    /// A recorded correction of this very text.
    Correction,
}

impl FallbackPart {
    /// The stable name in the audit trail, stats counters and metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FallbackPart::Rules => "rules",
            FallbackPart::Model => "model",
            FallbackPart::Correction => "correction",
        }
    }
}

/// The fallback's answer with its reasons, for `ops-agent classify`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FallbackVerdict {
    /// The label.
    pub label: Label,
    /// Which part decided.
    pub part: FallbackPart,
    /// The rules' own view.
    pub(crate) rules: Verdict,
    /// The model's probabilities (ROUTINE, TASK, INCIDENT).
    pub(crate) model: [f64; 3],
}

/// Pure decision from the parts (see the module doc for the order).
fn combine(
    corrected: Option<Label>,
    operator_phrase: bool,
    rules: &Verdict,
    model: &Prediction,
) -> (Label, FallbackPart) {
    if let Some(label) = corrected {
        return (label, FallbackPart::Correction);
    }
    if operator_phrase {
        return (rules.label, FallbackPart::Rules);
    }
    let mut s = model.log_scores;
    if rules.hits.is_empty() {
        s[model::index(Label::Routine)] += SILENT_RULES_BONUS;
    } else {
        s[model::index(rules.label)] += RULES_BONUS;
    }
    (model::argmax(&s), FallbackPart::Model)
}

/// The rules, the model (trained on first use) and the corrections; built
/// once per cycle and shared by every post of it.
pub struct Fallback {
    rules: Rules,
    operator: Vec<(String, Label)>,
    corrections: Vec<Example>,
    by_text: HashMap<String, Label>,
    model: OnceLock<Model>,
}

impl Fallback {
    /// The fallback for `cfg`, taught by `corrections` (oldest first: a
    /// later correction of the same text wins).
    pub(crate) fn new(cfg: &ClassifyConfig, corrections: &[Example]) -> Fallback {
        let mut operator = Vec::new();
        for (list, label) in [
            (&cfg.incident_phrases, Label::Incident),
            (&cfg.task_phrases, Label::Task),
            (&cfg.routine_phrases, Label::Routine),
        ] {
            operator.extend(list.iter().map(|p| (p.clone(), label)));
        }
        let by_text = corrections
            .iter()
            .map(|c| (model::text_key(&c.text), c.label))
            .collect();
        Fallback {
            rules: Rules::new(cfg),
            operator,
            corrections: corrections.to_vec(),
            by_text,
            model: OnceLock::new(),
        }
    }

    /// The fallback with a model trained elsewhere (to measure a model
    /// trained without the set it is evaluated on).
    pub fn with_model(cfg: &ClassifyConfig, model: Model) -> Fallback {
        let fb = Fallback::new(cfg, &[]);
        let _ = fb.model.set(model);
        fb
    }

    /// The model: the base counts plus the corrections. Without
    /// corrections it is the base itself: a copy would add its 0.8 MB to
    /// the cycle's peak memory for nothing.
    fn model(&self) -> &Model {
        if let Some(m) = self.model.get() {
            return m;
        }
        if self.corrections.is_empty() {
            return model::base();
        }
        self.model.get_or_init(|| {
            let mut m = model::base().clone();
            for c in &self.corrections {
                m.add(&c.text, c.label, CORRECTION_WEIGHT);
            }
            m
        })
    }

    /// Labels `text`.
    pub fn classify(&self, text: &str) -> FallbackVerdict {
        let rules = self.rules.classify(text);
        let operator_phrase = rules.hits.iter().any(|h| {
            !h.negated
                && self
                    .operator
                    .iter()
                    .any(|(p, l)| *l == h.label && *p == h.phrase)
        });
        let prediction = self.model().predict(text);
        let corrected = self.by_text.get(&model::text_key(text)).copied();
        let (label, part) = combine(corrected, operator_phrase, &rules, &prediction);
        FallbackVerdict {
            label,
            part,
            rules,
            model: prediction.probabilities(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::keywords::{Hit, Scores};

    fn verdict(label: Label, hits: usize) -> Verdict {
        Verdict {
            label,
            scores: Scores::default(),
            hits: (0..hits)
                .map(|_| Hit {
                    phrase: "x".into(),
                    label,
                    weight: 3,
                    negated: false,
                })
                .collect(),
        }
    }

    fn model(r: f64, t: f64, i: f64) -> Prediction {
        Prediction {
            log_scores: [r, t, i],
            known: 3,
        }
    }

    #[test]
    fn combine_table() {
        use FallbackPart::*;
        use Label::*;
        type Row = (
            &'static str,
            Option<Label>,
            bool,
            Verdict,
            Prediction,
            (Label, FallbackPart),
        );
        let table: Vec<Row> = vec![
            (
                "the model decides",
                None,
                false,
                verdict(Task, 1),
                model(-1.0, -9.0, -9.0),
                (Routine, Model),
            ),
            (
                "the rules break a near tie",
                None,
                false,
                verdict(Incident, 1),
                model(-1.0, -9.0, -1.5),
                (Incident, Model),
            ),
            (
                "but not a clear one",
                None,
                false,
                verdict(Incident, 1),
                model(-1.0, -9.0, -2.5),
                (Routine, Model),
            ),
            (
                "silent rules lean to ROUTINE",
                None,
                false,
                verdict(Routine, 0),
                model(-5.0, -9.0, -4.5),
                (Routine, Model),
            ),
            (
                "a confident model overrules them",
                None,
                false,
                verdict(Routine, 0),
                model(-5.0, -9.0, -3.0),
                (Incident, Model),
            ),
            (
                "an exact tie goes to the least serious",
                None,
                false,
                verdict(Task, 1),
                model(-2.0, -3.0, -2.0),
                (Routine, Model),
            ),
            (
                "an operator phrase: the rules decide",
                None,
                true,
                verdict(Incident, 1),
                model(-1.0, -9.0, -9.0),
                (Incident, Rules),
            ),
            (
                "a correction wins over everything",
                Some(Routine),
                true,
                verdict(Incident, 2),
                model(-9.0, -9.0, -1.0),
                (Routine, Correction),
            ),
        ];
        for (name, corrected, op, rules, pred, want) in table {
            assert_eq!(combine(corrected, op, &rules, &pred), want, "{name}");
        }
    }

    #[test]
    fn corrections_and_operator_phrases_reach_the_decision() {
        let cfg = ClassifyConfig {
            incident_phrases: vec!["im eimer".into()],
            ..Default::default()
        };
        let fb = Fallback::new(
            &cfg,
            &[Example {
                text: "Deploy of the riad hotfix: DONE".into(),
                label: Label::Routine,
            }],
        );
        let v = fb.classify("deploy of the  riad HOTFIX — done!");
        assert_eq!(
            (v.label, v.part),
            (Label::Routine, FallbackPart::Correction)
        );
        let v = fb.classify("alles im Eimer");
        assert_eq!((v.label, v.part), (Label::Incident, FallbackPart::Rules));
        let v = fb.classify("the wizard site takes ages to load right now");
        assert_eq!((v.label, v.part), (Label::Incident, FallbackPart::Model));
        let sum: f64 = v.model.iter().sum();
        assert!((sum - 1.0).abs() < 1e-9);
    }
}
