//! Accuracy of the fallback on hand-labelled chat posts, and of the keyword
//! rules alone. The labels are what a careful person on the team would say,
//! not what the classifier says. The sets are in `src/classify/data/`: the
//! shipped model is trained on them.
//!
//! * `classify-devset.jsonl` (208 rows): the rules were tuned on it.
//! * `classify-holdout-2.jsonl` (60 rows): written before the rules were
//!   last changed; the rules' honest estimate.
//! * `classify-dev-2.jsonl` (240 rows, EN/SR-HR/DE/ES, the classes of
//!   misses of issue 15): written with the model's training set, before
//!   any tuning; the fallback was tuned while looking at it.
//! * `train-messy.jsonl` (586 rows, EN/SR Latin and Cyrillic/HR/DE/ES, the
//!   classes of misses of issue 23: polite outages, resolved or
//!   hypothetical trouble, urgent questions, terse imperatives, noise):
//!   written for the model; the others barely cover its classes, so its
//!   figure without it is the lowest.
//!
//! The shipped model learns from all of them (see `model::TRAINING_SETS`),
//! so each is measured here on a model trained *without* it: the training
//! set plus the other two. `tests/fixtures/classify-holdout-3.jsonl` is
//! never read by a test: it is measured by hand, at the end, with
//! `ops-agent eval`.

use ops_agent::classify::data::{parse_lines, Example};
use ops_agent::classify::eval::{evaluate, Outcome, Report};
use ops_agent::classify::model::{Model, TRAINING_SETS};
use ops_agent::classify::{
    keywords, ClassifyConfig, Decision, DecisionPath, Fallback, FallbackPart, FallbackReason,
};

fn rows(name: &str) -> Vec<Example> {
    let (_, text) = TRAINING_SETS
        .iter()
        .find(|(n, _)| n.ends_with(name))
        .unwrap_or_else(|| panic!("{name} is not a training set"));
    let (rows, bad) = parse_lines(text);
    assert!(bad.is_empty(), "{name}: {bad:?}");
    rows
}

fn outcome(r: &Example, label: ops_agent::classify::Label, part: FallbackPart) -> Outcome {
    Outcome {
        text: r.text.clone(),
        expected: r.label,
        lang: None,
        decision: Decision {
            label,
            path: DecisionPath::Fallback {
                reason: FallbackReason::NoLlm,
                part,
            },
            elapsed_ms: 0,
            because: None,
        },
    }
}

fn show(name: &str, what: &str, r: &Report) -> f64 {
    println!("{name}, {what}:\n{}", r.render_text());
    r.accuracy
}

/// The keyword rules alone on `name`.
fn rules_on(name: &str) -> Report {
    let rules = keywords::Rules::new(&ClassifyConfig::default());
    let outcomes: Vec<Outcome> = rows(name)
        .iter()
        .map(|r| outcome(r, rules.classify(&r.text).label, FallbackPart::Rules))
        .collect();
    evaluate(&outcomes)
}

/// The fallback on `name`, its model trained on every set but `name`.
fn fallback_without(name: &str) -> Report {
    let training: Vec<Example> = TRAINING_SETS
        .iter()
        .filter(|(n, _)| !n.ends_with(name))
        .flat_map(|(_, text)| parse_lines(text).0)
        .collect();
    let model = Model::train(training.iter().map(|r| (r.text.as_str(), r.label, 1.0)));
    let fb = Fallback::with_model(&ClassifyConfig::default(), model);
    let outcomes: Vec<Outcome> = rows(name)
        .iter()
        .map(|r| {
            let v = fb.classify(&r.text);
            outcome(r, v.label, v.part)
        })
        .collect();
    evaluate(&outcomes)
}

#[test]
fn keyword_rules_reach_85_percent_on_the_dev_set() {
    let acc = show("dev set", "rules", &rules_on("classify-devset.jsonl"));
    assert!(acc >= 0.85, "accuracy {:.1} % is below 85 %", acc * 100.0);
}

#[test]
fn keyword_rules_on_the_holdout_set() {
    // A floor, not a target: measured once, with the rules final, 54/60.
    let acc = show("hold-out 2", "rules", &rules_on("classify-holdout-2.jsonl"));
    assert!(
        acc >= 0.85,
        "hold-out accuracy {:.1} % is below 85 %",
        acc * 100.0
    );
}

/// Floors a few points under what was measured when the model was
/// settled (devset 95.7 %, hold-out 2 95.0 %, dev 2 93.8 %, train-messy
/// 82.8 %), per set and per label: a change that makes the fallback
/// generalise worse fails here.
#[test]
fn the_fallback_trained_without_a_set_holds_on_it() {
    for (name, floor, label_floor) in [
        ("classify-devset.jsonl", 0.90, 0.80),
        ("classify-holdout-2.jsonl", 0.88, 0.80),
        ("classify-dev-2.jsonl", 0.88, 0.80),
        ("train-messy.jsonl", 0.78, 0.75),
    ] {
        let r = fallback_without(name);
        let acc = show(name, "fallback trained without it", &r);
        assert!(
            acc >= floor,
            "{name}: {:.1} % is below {:.0} %",
            acc * 100.0,
            floor * 100.0
        );
        for l in &r.labels {
            let recall = l.recall.unwrap_or(1.0);
            assert!(
                recall >= label_floor,
                "{name}: {} recall {:.1} %",
                l.label,
                recall * 100.0
            );
        }
    }
}
