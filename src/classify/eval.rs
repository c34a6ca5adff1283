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
    /// Its language, when the labelled file says (`lang`).
    pub lang: Option<String>,
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
    /// Who decided and with what figures (as `ops-agent classify` says).
    why: String,
    /// The post (first 120 characters, on one line).
    text: String,
}

/// The figures of the posts of one language.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct LanguageFigures {
    /// Posts in the language.
    rows: usize,
    /// Posts labelled right.
    correct: usize,
    /// `correct / rows`.
    accuracy: f64,
    /// Recall per label (ROUTINE, TASK, INCIDENT; `None`: no such post).
    recall: [Option<f64>; 3],
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
    /// Per language (`lang` of the labelled file), when the file says.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    languages: BTreeMap<String, LanguageFigures>,
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
    let mut by_lang: BTreeMap<String, [[usize; 3]; 3]> = BTreeMap::new();
    for o in outcomes {
        let got = o.decision.label;
        let right = got == o.expected;
        confusion[index(o.expected)][index(got)] += 1;
        if let Some(lang) = &o.lang {
            by_lang.entry(lang.clone()).or_default()[index(o.expected)][index(got)] += 1;
        }
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
                why: o.decision.explain(),
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
        languages: by_lang
            .into_iter()
            .map(|(lang, m)| {
                let rows: usize = m.iter().flatten().sum();
                let correct: usize = (0..3).map(|i| m[i][i]).sum();
                let recall = [0, 1, 2].map(|i| ratio(m[i][i], m[i].iter().sum()));
                let figures = LanguageFigures {
                    rows,
                    correct,
                    accuracy: ratio(correct, rows).unwrap_or(0.0),
                    recall,
                };
                (lang, figures)
            })
            .collect(),
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
        if !self.languages.is_empty() {
            out.push_str(&format!(
                "\n{:<11} {:>9} {:>8} {:>9} {:>9} {:>9}\n",
                "by language", "right", "accuracy", "ROUTINE", "TASK", "INCIDENT"
            ));
            for (lang, f) in &self.languages {
                out.push_str(&format!(
                    "  {lang:<9} {:>4}/{:<4} {:>8} {:>9} {:>9} {:>9}\n",
                    f.correct,
                    f.rows,
                    pct(Some(f.accuracy)),
                    pct(f.recall[0]),
                    pct(f.recall[1]),
                    pct(f.recall[2])
                ));
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
                    "  want {:<8} got {:<8} [{}] {:?}\n    {}\n",
                    m.expected.as_str(),
                    m.got.as_str(),
                    m.path,
                    m.text,
                    m.why
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

/// One split of the halving protocol: the team corrects the fallback's
/// wrong answers on half A; how does half B fare?
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Halving {
    /// The split's seed.
    pub(crate) seed: u64,
    /// Corrections recorded (the wrong answers on half A).
    pub(crate) corrections: usize,
    /// Posts of half B.
    pub(crate) scored: usize,
    /// Accuracy on half B without, then with the corrections.
    pub(crate) before: f64,
    /// See `before`.
    pub(crate) after: f64,
    /// Recall per label (ROUTINE, TASK, INCIDENT) on half B, without and
    /// with the corrections.
    pub(crate) recall_before: [Option<f64>; 3],
    /// See `recall_before`.
    pub(crate) recall_after: [Option<f64>; 3],
}

/// The halving protocol over several seeds, and whether corrections
/// helped: the mean change must not be negative and no seed may lose more
/// than [`MAX_SEED_LOSS`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Halvings {
    /// Every split.
    pub(crate) seeds: Vec<Halving>,
    /// Mean change of accuracy on half B, in points.
    pub(crate) mean_change_points: f64,
    /// The worst seed's change, in points.
    pub(crate) worst_change_points: f64,
    /// Mean change of recall per label, in points.
    pub(crate) mean_recall_change_points: [f64; 3],
    /// Splits better, the same, worse.
    pub(crate) better: usize,
    /// See `better`.
    pub(crate) same: usize,
    /// See `better`.
    pub(crate) worse: usize,
    /// Whether the corrections never hurt (mean ≥ 0, no seed below
    /// −[`MAX_SEED_LOSS`] points).
    pub(crate) passes: bool,
}

/// The most one split may lose, in points, for the protocol to pass.
pub(crate) const MAX_SEED_LOSS: f64 = 1.0;

/// splitmix64: the split of seed `s` is the same on every machine and
/// build, with no dependency for it.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The halves of `n` rows for `seed`: (A, B), each in input order.
pub(crate) fn split(n: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = seed;
    for i in (1..n).rev() {
        let j = (splitmix(&mut state) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut a = order[..n / 2].to_vec();
    let mut b = order[n / 2..].to_vec();
    a.sort_unstable();
    b.sort_unstable();
    (a, b)
}

/// Runs the protocol: for each seed `1..=seeds`, the rows are halved, the
/// fallback without corrections labels them (`plain`), its wrong answers
/// on half A become corrections, and `taught(corrections)` labels half B
/// again. `expected` are the right labels.
pub(crate) fn halvings(
    expected: &[Label],
    plain: &[Label],
    seeds: u64,
    mut taught: impl FnMut(&[usize], &[usize]) -> Vec<Label>,
) -> Halvings {
    let mut out = Vec::new();
    for seed in 1..=seeds {
        let (a, b) = split(expected.len(), seed);
        let wrong: Vec<usize> = a
            .iter()
            .copied()
            .filter(|&i| plain[i] != expected[i])
            .collect();
        let after = taught(&wrong, &b);
        let figures = |got: &mut dyn Iterator<Item = Label>| {
            let mut m = [[0usize; 3]; 3];
            for (&i, g) in b.iter().zip(got) {
                m[index(expected[i])][index(g)] += 1;
            }
            let right: usize = (0..3).map(|k| m[k][k]).sum();
            let recall = [0, 1, 2].map(|k| ratio(m[k][k], m[k].iter().sum()));
            (ratio(right, b.len()).unwrap_or(0.0), recall)
        };
        let (before, recall_before) = figures(&mut b.iter().map(|&i| plain[i]));
        let (after, recall_after) = figures(&mut after.into_iter());
        out.push(Halving {
            seed,
            corrections: wrong.len(),
            scored: b.len(),
            before,
            after,
            recall_before,
            recall_after,
        });
    }
    let n = out.len().max(1) as f64;
    let change = |h: &Halving| (h.after - h.before) * 100.0;
    let mean = out.iter().map(change).sum::<f64>() / n;
    let worst = out.iter().map(change).fold(f64::INFINITY, f64::min);
    let recall = [0, 1, 2].map(|k| {
        out.iter()
            .map(|h| (h.recall_after[k].unwrap_or(0.0) - h.recall_before[k].unwrap_or(0.0)) * 100.0)
            .sum::<f64>()
            / n
    });
    let better = out.iter().filter(|h| h.after > h.before).count();
    let worse = out.iter().filter(|h| h.after < h.before).count();
    Halvings {
        mean_change_points: mean,
        worst_change_points: if out.is_empty() { 0.0 } else { worst },
        mean_recall_change_points: recall,
        better,
        worse,
        same: out.len() - better - worse,
        passes: mean >= 0.0 && (out.is_empty() || worst >= -MAX_SEED_LOSS),
        seeds: out,
    }
}

impl Halvings {
    /// The human rendering: one line per split, then the summary.
    pub(crate) fn render_text(&self) -> String {
        let mut out = format!(
            "{:>4} {:>11} {:>8} {:>8} {:>8} {:>8}  recall R/T/I after\n",
            "seed", "corrections", "scored", "before", "after", "change"
        );
        for h in &self.seeds {
            out.push_str(&format!(
                "{:>4} {:>11} {:>8} {:>8} {:>8} {:>+7.1}  {} / {} / {}\n",
                h.seed,
                h.corrections,
                h.scored,
                pct(Some(h.before)),
                pct(Some(h.after)),
                (h.after - h.before) * 100.0,
                pct(h.recall_after[0]),
                pct(h.recall_after[1]),
                pct(h.recall_after[2]),
            ));
        }
        let r = self.mean_recall_change_points;
        out.push_str(&format!(
            "\nmean change {:+.2} points (recall ROUTINE {:+.2}, TASK {:+.2}, INCIDENT {:+.2}), worst seed {:+.2}; \
             better {}, same {}, worse {}: {}\n",
            self.mean_change_points,
            r[0],
            r[1],
            r[2],
            self.worst_change_points,
            self.better,
            self.same,
            self.worse,
            if self.passes {
                "corrections did not hurt"
            } else {
                "CORRECTIONS HURT (mean below 0 or a seed below -1 point)"
            }
        ));
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
            lang: None,
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
                because: None,
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
            lang: None,
            decision: Decision {
                label: got,
                path: DecisionPath::Fallback {
                    reason: FallbackReason::NoLlm,
                    part,
                },
                elapsed_ms: 0,
                because: None,
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
    fn figures_per_language() {
        let mut a = o(Task, Task, false, 1);
        a.lang = Some("sr-cyrl".into());
        let mut b = o(Incident, Routine, false, 1);
        b.lang = Some("sr-cyrl".into());
        let r = evaluate(&[a, b, o(Task, Task, false, 1)]);
        let f = &r.languages["sr-cyrl"];
        assert_eq!((f.rows, f.correct, f.accuracy), (2, 1, 0.5));
        assert_eq!(f.recall, [None, Some(1.0), Some(0.0)]);
        assert_eq!(r.languages.len(), 1, "a row without lang is in no language");
        assert!(r.render_text().contains("sr-cyrl"));
    }

    #[test]
    fn halves_split_alike_on_every_run_and_count_the_change() {
        let (a, b) = split(10, 7);
        assert_eq!((a.len(), b.len()), (5, 5));
        assert_eq!(split(10, 7), (a.clone(), b.clone()));
        assert_ne!(split(10, 8).0, a);
        let mut all: Vec<usize> = a.iter().chain(&b).copied().collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        // Six posts, the plain fallback wrong on two; "taught" fixes every
        // post of half B that a correction's label names, and breaks one.
        let expected = [Routine, Task, Incident, Routine, Task, Incident];
        let plain = [Routine, Routine, Incident, Task, Task, Incident];
        let h = halvings(&expected, &plain, 4, |wrong, half_b| {
            let taught: Vec<Label> = wrong.iter().map(|&i| expected[i]).collect();
            half_b
                .iter()
                .map(|&i| {
                    if taught.contains(&expected[i]) {
                        expected[i]
                    } else {
                        plain[i]
                    }
                })
                .collect()
        });
        assert_eq!(h.seeds.len(), 4);
        for s in &h.seeds {
            assert!(s.after >= s.before, "{s:?}");
            assert_eq!(s.scored, 3);
        }
        assert!(h.passes && h.mean_change_points >= 0.0 && h.worse == 0);
        // A taught fallback that gets everything wrong fails the protocol.
        let h = halvings(&expected, &plain, 2, |_, half_b| {
            half_b.iter().map(|_| Label::Task).collect()
        });
        assert!(!h.passes);
        assert!(
            h.render_text().contains("CORRECTIONS HURT"),
            "{}",
            h.render_text()
        );
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
