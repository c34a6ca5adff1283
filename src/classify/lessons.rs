//! What the team's corrections teach the fallback, and how much.
//!
//! A correction is first a **memory**: the same post, or nearly the same
//! (its words once prepared, [`super::normalize`], overlap by at least
//! [`MEMORY_SIMILARITY`] and differ by no negation), gets the corrected
//! label on every path, the LLM's included (`Triage::classify` asks the
//! memory before the LLM). A person said so about this very text.
//!
//! For every other post a correction is **evidence**, bounded so that it
//! cannot swamp what the model learnt from a few thousand rows:
//! - it teaches only the words the model never saw (a client's jargon, a
//!   script or a typo the training lacked; `Model::add_evidence`): the
//!   words the model knows keep what the training taught, so one correction
//!   of a pasted log cannot make "could not write to file" chatter, and
//!   corrections never move the share of a label (they are the agent's
//!   mistakes, not a sample of the chat). A taught word counts at most
//!   ln 2 in log-odds per correction ([`COUNT_WEIGHT`], smoothed), and all
//!   corrections of one label together weigh at most [`MASS_CAP`] of that
//!   label's training rows;
//! - a post that resembles a correction (word overlap at least
//!   [`NEAR_SIMILARITY`]) leans towards its label by up to [`NEAR_BONUS`]
//!   in log-odds, and all of them together by at most [`NEAR_MAX`]: enough
//!   to tip a close call, never to overrule a confident model;
//! - a correction that contradicts earlier similar ones (same words,
//!   another label) counts `1 / (1 + n)` for `n` of them: the team
//!   disagreeing with itself is weak evidence.
//!
//! Measured with the halving protocol of `ops-agent eval --halves`
//! (docs/classification.md): a team correcting the wrong answers of one
//! half of a labelled set must not make the other half worse.
//!
//! Similar corrections are found through an index of their words with a
//! prefix filter (a text at least `t` similar to another shares one of its
//! rarest `|words| - ceil(t·|words|) + 1` words), so looking a post up does
//! not read every correction, and `ops-agent eval` over 10,000 corrections
//! is linear in practice.

use std::collections::{HashMap, HashSet};

use super::corrections::Correction;
use super::model::{index, text_key, words};
use super::Label;

/// Word overlap from which a correction is remembered for a post.
pub(crate) const MEMORY_SIMILARITY: f64 = 0.8;
/// Fewest distinct words for a near (not exact) memory: below that, one
/// word is a fifth of the post.
const MEMORY_MIN_WORDS: usize = 4;
/// What a correction adds to the model's counts, in training rows.
pub(crate) const COUNT_WEIGHT: f32 = 1.0;
/// All corrections of a label weigh at most this share of the label's
/// training rows in the model's counts.
pub(crate) const MASS_CAP: f64 = 0.05;
/// Word overlap from which a correction is evidence for a post.
pub(crate) const NEAR_SIMILARITY: f64 = 0.5;
/// Log-odds one fully similar correction adds to its label.
pub(crate) const NEAR_BONUS: f64 = 1.0;
/// Log-odds all similar corrections add to one label, at most.
pub(crate) const NEAR_MAX: f64 = 1.5;

/// Words that turn a post into its opposite: two texts that differ by one
/// of them are not "nearly the same".
const NEGATIONS: &[&str] = &[
    "not", "no", "never", "isnt", "arent", "wasnt", "dont", "doesnt", "didnt", "cant", "wont",
    "nicht", "kein", "keine", "nie", "nije", "ne", "nema", "nisu", "nunca", "sin", "nada",
];

/// One correction as the fallback uses it.
#[derive(Debug, Clone)]
struct Lesson {
    label: Label,
    /// Its distinct words of two characters or more, sorted.
    words: Vec<String>,
    post_id: String,
    /// 1, or less when it contradicts earlier similar corrections.
    weight: f64,
}

/// A memory: the corrected label of the same, or nearly the same, text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Recall {
    /// The corrected label.
    pub(crate) label: Label,
    /// The corrected post.
    pub(crate) post_id: String,
    /// Word overlap with the post (1: the same words).
    pub(crate) similarity: f64,
}

/// The corrections, indexed for memory and evidence.
#[derive(Debug, Default)]
pub(crate) struct Lessons {
    lessons: Vec<Lesson>,
    /// Prepared text → the corrections of exactly that text, oldest first.
    exact: HashMap<String, Vec<usize>>,
    /// Word → the corrections that have it.
    postings: HashMap<String, Vec<usize>>,
}

/// Distinct words of two characters or more, sorted.
fn word_set(text: &str) -> Vec<String> {
    let mut w: Vec<String> = words(text)
        .into_iter()
        .filter(|w| w.chars().count() >= 2)
        .collect();
    w.sort();
    w.dedup();
    w
}

/// Jaccard overlap of two sorted word sets.
fn overlap(a: &[String], b: &[String]) -> f64 {
    let (mut i, mut j, mut both) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - both;
    if union == 0 {
        0.0
    } else {
        both as f64 / union as f64
    }
}

/// Whether the words two sets do not share include a negation.
fn differ_by_negation(a: &[String], b: &[String]) -> bool {
    let a: HashSet<&str> = a.iter().map(String::as_str).collect();
    let b: HashSet<&str> = b.iter().map(String::as_str).collect();
    a.symmetric_difference(&b).any(|w| NEGATIONS.contains(w))
}

impl Lessons {
    /// The lessons of `corrections` (oldest first).
    pub(crate) fn new(corrections: &[Correction]) -> Lessons {
        let mut out = Lessons::default();
        for (i, c) in corrections.iter().enumerate() {
            let words = word_set(&c.text);
            let key = text_key(&c.text);
            if !key.is_empty() {
                out.exact.entry(key).or_default().push(i);
            }
            // Earlier similar corrections with another label.
            let against = out
                .similar(&words, NEAR_SIMILARITY, None)
                .into_iter()
                .filter(|(j, _)| out.lessons[*j].label != c.label)
                .count();
            for w in &words {
                out.postings.entry(w.clone()).or_default().push(i);
            }
            out.lessons.push(Lesson {
                label: c.label,
                words,
                post_id: c.post_id.clone(),
                weight: 1.0 / (1.0 + against as f64),
            });
        }
        out
    }

    /// The corrections at least `min` similar to `words` (but `except`),
    /// with their similarity.
    fn similar(&self, words: &[String], min: f64, except: Option<usize>) -> Vec<(usize, f64)> {
        if words.is_empty() || self.lessons.is_empty() {
            return Vec::new();
        }
        let mut rare: Vec<(&String, usize)> = words
            .iter()
            .map(|w| (w, self.postings.get(w).map_or(0, Vec::len)))
            .collect();
        rare.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)));
        let need = (min * words.len() as f64 - 1e-9).ceil() as usize;
        let prefix = (words.len() + 1).saturating_sub(need.max(1));
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (w, _) in rare.iter().take(prefix.max(1)) {
            for &i in self.postings.get(*w).map_or(&[][..], Vec::as_slice) {
                if Some(i) == except || !seen.insert(i) {
                    continue;
                }
                let s = overlap(words, &self.lessons[i].words);
                if s >= min {
                    out.push((i, s));
                }
            }
        }
        out
    }

    /// The memory for `text`: the newest correction of the same prepared
    /// text, else the most similar near-same one (newest among equals).
    /// `except`: a correction to leave out (eval scores each without it).
    pub(crate) fn recall(&self, text: &str, except: Option<usize>) -> Option<Recall> {
        let key = text_key(text);
        let exact = self
            .exact
            .get(&key)
            .and_then(|list| list.iter().rev().find(|i| Some(**i) != except));
        if let Some(&i) = exact.filter(|_| !key.is_empty()) {
            return Some(self.recalled(i, 1.0));
        }
        let words = word_set(text);
        if words.len() < MEMORY_MIN_WORDS {
            return None;
        }
        self.similar(&words, MEMORY_SIMILARITY, except)
            .into_iter()
            .filter(|(i, _)| {
                let l = &self.lessons[*i].words;
                l.len() >= MEMORY_MIN_WORDS && !differ_by_negation(&words, l)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
            .map(|(i, s)| self.recalled(i, s))
    }

    fn recalled(&self, i: usize, similarity: f64) -> Recall {
        Recall {
            label: self.lessons[i].label,
            post_id: self.lessons[i].post_id.clone(),
            similarity,
        }
    }

    /// Log-odds per label (report order) from the corrections similar to
    /// `text`, each label's at most [`NEAR_MAX`].
    pub(crate) fn nearby(&self, text: &str, except: Option<usize>) -> [f64; 3] {
        let mut lean = [0.0; 3];
        for (i, s) in self.similar(&word_set(text), NEAR_SIMILARITY, except) {
            let l = &self.lessons[i];
            lean[index(l.label)] += NEAR_BONUS * s * l.weight;
        }
        lean.map(|x| x.min(NEAR_MAX))
    }

    /// What each correction adds to the model's counts (in training rows):
    /// [`COUNT_WEIGHT`] times its weight, scaled down so that a label's
    /// corrections weigh at most [`MASS_CAP`] of `rows[label]`.
    pub(crate) fn count_weights(&self, rows: [f64; 3]) -> Vec<f32> {
        let mut mass = [0.0f64; 3];
        for l in &self.lessons {
            mass[index(l.label)] += COUNT_WEIGHT as f64 * l.weight;
        }
        let scale: Vec<f64> = (0..3)
            .map(|k| {
                let cap = MASS_CAP * rows[k];
                if mass[k] > cap {
                    cap / mass[k]
                } else {
                    1.0
                }
            })
            .collect();
        self.lessons
            .iter()
            .map(|l| (COUNT_WEIGHT as f64 * l.weight * scale[index(l.label)]) as f32)
            .collect()
    }
}

/// A correction for tests: team `wizard`, by john.
#[cfg(test)]
pub(crate) fn correction(post: &str, label: Label, text: &str) -> Correction {
    Correction {
        text: text.into(),
        label,
        was: Label::Task,
        post_id: post.into(),
        team: "wizard".into(),
        by: "john".into(),
        at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_or_nearly_the_same_text_is_remembered() {
        let l = Lessons::new(&[
            correction(
                "p1",
                Label::Routine,
                "the wizard shop is slow today, as every monday",
            ),
            correction("p2", Label::Incident, "Сајт за резервације не ради"),
            correction("p3", Label::Task, "deploy it"),
        ]);
        let table: [(&str, Option<(&str, Label)>); 8] = [
            // The same words once prepared.
            (
                "Good morning! The wizard shop is SLOW today, as every Monday. Thanks",
                Some(("p1", Label::Routine)),
            ),
            ("sajt za rezervacije ne radi", Some(("p2", Label::Incident))),
            ("deploy it!", Some(("p3", Label::Task))),
            // Nearly the same.
            (
                "the wizard shop is slow again today, as every monday",
                Some(("p1", Label::Routine)),
            ),
            // Not the same: a negation, too few words, another post.
            ("the wizard shop is not slow today, as every monday", None),
            ("deploy it now", None),
            ("the riad shop is down", None),
            ("", None),
        ];
        for (text, want) in table {
            let got = l.recall(text, None).map(|r| (r.post_id, r.label));
            assert_eq!(got, want.map(|(p, l)| (p.to_string(), l)), "{text:?}");
        }
        // Left out, it is not remembered.
        assert!(l.recall("deploy it", Some(2)).is_none());
    }

    #[test]
    fn the_newest_correction_of_a_text_wins() {
        let l = Lessons::new(&[
            correction("p1", Label::Task, "the backup report"),
            correction("p2", Label::Routine, "The backup report!"),
        ]);
        let r = l.recall("the backup report", None).unwrap();
        assert_eq!(
            (r.post_id.as_str(), r.label, r.similarity),
            ("p2", Label::Routine, 1.0)
        );
        assert_eq!(
            l.recall("the backup report", Some(1)).unwrap().post_id,
            "p1"
        );
    }

    #[test]
    fn evidence_is_bounded_and_contradictions_count_less() {
        // 37 status notes marked TASK weigh at most MASS_CAP of the rows.
        let notes: Vec<Correction> = (0..37)
            .map(|i| {
                correction(
                    &format!("p{i}"),
                    Label::Task,
                    &format!("status: build {i} went fine"),
                )
            })
            .collect();
        let l = Lessons::new(&notes);
        let w = l.count_weights([300.0, 300.0, 300.0]);
        let total: f32 = w.iter().sum();
        assert!((total as f64 - MASS_CAP * 300.0).abs() < 1e-3, "{total}");
        // Similar posts lean towards them, but never by more than NEAR_MAX.
        let lean = l.nearby("status: build 99 went fine", None);
        assert_eq!(lean[index(Label::Task)], NEAR_MAX);
        assert_eq!((lean[0], lean[2]), (0.0, 0.0));
        assert_eq!(l.nearby("the riad shop is down", None), [0.0; 3]);
        // A correction against two earlier similar ones counts a third.
        let l = Lessons::new(&[
            correction("a", Label::Incident, "the planka board is empty again"),
            correction("b", Label::Incident, "the planka board is empty"),
            correction("c", Label::Routine, "the planka board is empty, fine"),
        ]);
        let w = l.count_weights([1e6; 3]);
        assert_eq!(w[0], COUNT_WEIGHT);
        assert!((w[2] - COUNT_WEIGHT / 3.0).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn the_index_finds_what_a_full_scan_finds() {
        let texts = [
            "the site is down",
            "the site is slow",
            "planka is down again",
            "please add ana to the board",
            "the site is down again today",
            "backup failed on app-01",
        ];
        let list: Vec<Correction> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| correction(&i.to_string(), Label::Incident, t))
            .collect();
        let l = Lessons::new(&list);
        for q in [
            "the site is down",
            "site down again",
            "ana board",
            "backup failed",
        ] {
            let words = word_set(q);
            for min in [0.3, 0.5, 0.8] {
                let mut got: Vec<usize> = l
                    .similar(&words, min, None)
                    .into_iter()
                    .map(|x| x.0)
                    .collect();
                got.sort();
                let want: Vec<usize> = (0..texts.len())
                    .filter(|&i| overlap(&words, &l.lessons[i].words) >= min)
                    .collect();
                assert_eq!(got, want, "{q:?} at {min}");
            }
        }
    }
}
