//! The figures of `ops-agent eval`: how the classifier did on labelled
//! posts. Pure: the command classifies, this module counts, so the
//! arithmetic is table-tested on its own.

use std::collections::BTreeMap;

use serde::Serialize;

use super::model::index;
use super::{Decision, DecisionPath, Label};

/// Misses listed in the text rendering, at most.
const MAX_MISSES_SHOWN: usize = 30;

/// One labelled post and what the classifier made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The post.
    pub text: String,
    /// The right label.
    pub expected: Label,
    /// What the classifier said, by which path, how fast.
    pub decision: Decision,
}

/// Precision and recall of one label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelFigures {
    /// The label.
    pub label: Label,
    /// Posts that have it.
    support: usize,
    /// Posts the classifier gave it.
    predicted: usize,
    /// Of the posts given it, the share that have it (`None`: none given).
    precision: Option<f64>,
    /// Of the posts that have it, the share given it (`None`: none have it).
    pub recall: Option<f64>,
}

/// Time per post.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
struct Latency {
    /// Mean, ms.
    mean_ms: f64,
    /// Median, ms.
    p50_ms: u64,
    /// 95th percentile, ms.
    p95_ms: u64,
    /// Slowest, ms.
    max_ms: u64,
}

/// A post the classifier got wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Miss {
    /// The right label.
    expected: Label,
    /// What it said.
    got: Label,
    /// By which path (`llm`, `fallback/<why>`).
    path: String,
    /// The post (first 120 characters, on one line).
    text: String,
}

/// Everything `ops-agent eval` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Posts evaluated.
    pub(crate) rows: usize,
    /// Posts labelled right.
    pub(crate) correct: usize,
    /// `correct / rows` (0 when there are no rows).
    pub accuracy: f64,
    /// Per label, in report order.
    pub labels: Vec<LabelFigures>,
    /// `confusion[expected][got]`, labels in report order.
    confusion: [[usize; 3]; 3],
    /// Posts per decision path: `llm`, or `fallback/<why the LLM was not used>`.
    pub(crate) paths: BTreeMap<String, usize>,
    /// Accuracy per path.
    path_accuracy: BTreeMap<String, f64>,
    /// Posts the fallback labelled, per part that decided (`rules`,
    /// `model`, `correction`).
    parts: BTreeMap<String, usize>,
    /// Accuracy per part.
    part_accuracy: BTreeMap<String, f64>,
    /// Time per post.
    latency: Latency,
    /// The misses, in input order.
    misses: Vec<Miss>,
}

/// The path's name in reports: `llm`, or `fallback/<reason code>`.
fn path_name(path: &DecisionPath) -> String {
    match path {
        DecisionPath::Llm { .. } => "llm".into(),
        DecisionPath::Fallback { reason, .. } => format!("fallback/{}", reason.code()),
    }
}

/// Posts and the share labelled right, per name.
#[derive(Default)]
struct Counts {
    n: BTreeMap<String, usize>,
    right: BTreeMap<String, usize>,
}

impl Counts {
    fn add(&mut self, name: String, right: bool) {
        if right {
            *self.right.entry(name.clone()).or_default() += 1;
        }
        *self.n.entry(name).or_default() += 1;
    }

    fn accuracy(&self) -> BTreeMap<String, f64> {
        self.n
            .iter()
            .map(|(k, n)| {
                let right = self.right.get(k).copied().unwrap_or(0);
                (k.clone(), right as f64 / *n as f64)
            })
            .collect()
    }
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// Counts the figures of `outcomes`. Pure.
pub fn evaluate(outcomes: &[Outcome]) -> Report {
    let mut confusion = [[0usize; 3]; 3];
    let mut paths = Counts::default();
    let mut parts = Counts::default();
    let mut misses = Vec::new();
    for o in outcomes {
        let got = o.decision.label;
        let right = got == o.expected;
        confusion[index(o.expected)][index(got)] += 1;
        let path = path_name(&o.decision.path);
        paths.add(path.clone(), right);
        if let DecisionPath::Fallback { part, .. } = &o.decision.path {
            parts.add(part.as_str().to_string(), right);
        }
        if !right {
            misses.push(Miss {
                expected: o.expected,
                got,
                path,
                text: crate::ollama::excerpt(&o.text, 120),
            });
        }
    }
    let correct: usize = (0..3).map(|i| confusion[i][i]).sum();
    let labels = Label::ALL
        .iter()
        .map(|&l| {
            let i = index(l);
            let support: usize = confusion[i].iter().sum();
            let predicted: usize = (0..3).map(|e| confusion[e][i]).sum();
            LabelFigures {
                label: l,
                support,
                predicted,
                precision: ratio(confusion[i][i], predicted),
                recall: ratio(confusion[i][i], support),
            }
        })
        .collect();
    Report {
        rows: outcomes.len(),
        correct,
        accuracy: ratio(correct, outcomes.len()).unwrap_or(0.0),
        labels,
        confusion,
        path_accuracy: paths.accuracy(),
        paths: paths.n,
        part_accuracy: parts.accuracy(),
        parts: parts.n,
        latency: latency(outcomes),
        misses,
    }
}

fn latency(outcomes: &[Outcome]) -> Latency {
    let mut ms: Vec<u64> = outcomes.iter().map(|o| o.decision.elapsed_ms).collect();
    if ms.is_empty() {
        return Latency::default();
    }
    ms.sort_unstable();
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Latency {
        mean_ms: ms.iter().sum::<u64>() as f64 / ms.len() as f64,
        p50_ms: at(0.5),
        p95_ms: at(0.95),
        max_ms: *ms.last().expect("not empty"),
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.1} %", v * 100.0))
}

impl Report {
    /// The human rendering: accuracy, per-label figures, the confusion
    /// matrix, paths, latency and the first misses.
    pub fn render_text(&self) -> String {
        let mut out = format!(
            "accuracy: {}/{} = {}\n\n",
            self.correct,
            self.rows,
            pct(Some(self.accuracy))
        );
        out.push_str(&format!(
            "{:<9} {:>9} {:>9} {:>8} {:>10}\n",
            "label", "precision", "recall", "support", "predicted"
        ));
        for l in &self.labels {
            out.push_str(&format!(
                "{:<9} {:>9} {:>9} {:>8} {:>10}\n",
                l.label.as_str(),
                pct(l.precision),
                pct(l.recall),
                l.support,
                l.predicted
            ));
        }
        out.push_str("\nconfusion (rows: expected, columns: got)\n");
        out.push_str(&format!(
            "{:<9} {:>8} {:>8} {:>8}\n",
            "", "ROUTINE", "TASK", "INCIDENT"
        ));
        for (i, l) in Label::ALL.iter().enumerate() {
            let r = self.confusion[i];
            out.push_str(&format!(
                "{:<9} {:>8} {:>8} {:>8}\n",
                l.as_str(),
                r[0],
                r[1],
                r[2]
            ));
        }
        out.push_str("\npaths\n");
        for (p, n) in &self.paths {
            let acc = self.path_accuracy.get(p).copied();
            out.push_str(&format!("  {p:<24} {n:>5}  accuracy {}\n", pct(acc)));
        }
        if !self.parts.is_empty() {
            out.push_str("\nfallback, by the part that decided\n");
            for (p, n) in &self.parts {
                let acc = self.part_accuracy.get(p).copied();
                out.push_str(&format!("  {p:<24} {n:>5}  accuracy {}\n", pct(acc)));
            }
        }
        let l = &self.latency;
        out.push_str(&format!(
            "\nlatency: mean {:.0} ms, p50 {} ms, p95 {} ms, max {} ms\n",
            l.mean_ms, l.p50_ms, l.p95_ms, l.max_ms
        ));
        if !self.misses.is_empty() {
            out.push_str(&format!("\nmisses ({}):\n", self.misses.len()));
            for m in self.misses.iter().take(MAX_MISSES_SHOWN) {
                out.push_str(&format!(
                    "  want {:<8} got {:<8} [{}] {:?}\n",
                    m.expected.as_str(),
                    m.got.as_str(),
                    m.path,
                    m.text
                ));
            }
            if self.misses.len() > MAX_MISSES_SHOWN {
                out.push_str(&format!(
                    "  … {} more (--json lists them all)\n",
                    self.misses.len() - MAX_MISSES_SHOWN
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{FallbackPart, FallbackReason};
    use Label::*;

    fn o(expected: Label, got: Label, llm: bool, ms: u64) -> Outcome {
        Outcome {
            text: format!("{expected} as {got}"),
            expected,
            decision: Decision {
                label: got,
                path: if llm {
                    DecisionPath::Llm { model: "m".into() }
                } else {
                    DecisionPath::Fallback {
                        reason: FallbackReason::Timeout,
                        part: FallbackPart::Model,
                    }
                },
                elapsed_ms: ms,
            },
        }
    }

    #[test]
    fn figures_table() {
        let outcomes = vec![
            o(Routine, Routine, true, 10),
            o(Routine, Task, true, 20),
            o(Task, Task, true, 30),
            o(Task, Task, false, 1),
            o(Incident, Incident, false, 2),
            o(Incident, Routine, true, 40),
        ];
        let r = evaluate(&outcomes);
        assert_eq!((r.rows, r.correct), (6, 4));
        assert!((r.accuracy - 4.0 / 6.0).abs() < 1e-9);
        assert_eq!(r.confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 1]]);
        let f = |l: Label| r.labels.iter().find(|x| x.label == l).unwrap().clone();
        assert_eq!(
            (f(Routine).precision, f(Routine).recall),
            (Some(0.5), Some(0.5))
        );
        assert_eq!((f(Task).support, f(Task).predicted), (2, 3));
        assert!((f(Task).precision.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(f(Task).recall, Some(1.0));
        assert_eq!(
            (f(Incident).precision, f(Incident).recall),
            (Some(1.0), Some(0.5))
        );
        assert_eq!(r.paths["llm"], 4);
        assert_eq!(r.paths["fallback/timeout"], 2);
        assert_eq!(r.path_accuracy["llm"], 0.5);
        assert_eq!(r.path_accuracy["fallback/timeout"], 1.0);
        assert_eq!((r.latency.p50_ms, r.latency.max_ms), (20, 40));
        assert!((r.latency.mean_ms - 103.0 / 6.0).abs() < 1e-9);
        assert_eq!(r.misses.len(), 2);
        assert_eq!((r.misses[0].expected, r.misses[0].got), (Routine, Task));
        let text = r.render_text();
        assert!(text.starts_with("accuracy: 4/6 = 66.7 %"), "{text}");
        assert!(
            text.contains("INCIDENT         1        0        1"),
            "{text}"
        );
        assert!(text.contains("fallback/timeout"), "{text}");
    }

    #[test]
    fn fallback_parts_are_counted_with_their_accuracy() {
        let by = |expected: Label, got: Label, part: FallbackPart| Outcome {
            text: String::new(),
            expected,
            decision: Decision {
                label: got,
                path: DecisionPath::Fallback {
                    reason: FallbackReason::NoLlm,
                    part,
                },
                elapsed_ms: 0,
            },
        };
        let r = evaluate(&[
            by(Task, Task, FallbackPart::Model),
            by(Task, Routine, FallbackPart::Model),
            by(Incident, Incident, FallbackPart::Rules),
            o(Task, Task, true, 1),
        ]);
        assert_eq!(r.paths["fallback/no_llm"], 3);
        let parts: Vec<(&str, usize, f64)> = r
            .parts
            .iter()
            .map(|(k, n)| (k.as_str(), *n, r.part_accuracy[k]))
            .collect();
        assert_eq!(parts, [("model", 2, 0.5), ("rules", 1, 1.0)]);
        let text = r.render_text();
        assert!(
            text.contains("fallback, by the part that decided\n  model "),
            "{text}"
        );
        assert!(evaluate(&[o(Task, Task, true, 1)]).parts.is_empty());
    }

    #[test]
    fn nothing_to_evaluate_is_not_a_division_by_zero() {
        let r = evaluate(&[]);
        assert_eq!((r.rows, r.accuracy), (0, 0.0));
        assert!(r
            .labels
            .iter()
            .all(|l| l.precision.is_none() && l.recall.is_none()));
        assert_eq!(r.latency, Latency::default());
        let only_tasks = evaluate(&[o(Task, Task, true, 5)]);
        let routine = &only_tasks.labels[0];
        assert_eq!((routine.precision, routine.recall), (None, None));
    }
}
