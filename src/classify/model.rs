//! The statistical half of the fallback: a multinomial naive Bayes model
//! over words, word pairs and character 4-grams of the folded text.
//!
//! Why this model: keyword rules are brittle on the chat they were not
//! written for (inflected Serbian/Croatian and German, a task verb inside a
//! status report, an incident described without an error word), while a
//! model that counts which words and word pieces go with which label learns
//! those from examples. Naive Bayes learns from a few hundred examples,
//! trains in one pass (milliseconds, so it is trained in the process at
//! first use from the embedded sets instead of shipping fitted weights),
//! and its counts are additive, so the team's corrections are simply added
//! to the base counts each cycle. Logistic regression was tried on the same
//! features and did no better on the sets it was not trained on.
//!
//! Character 4-grams give unseen word forms ("restartujemo", "abgelaufen")
//! the evidence of their stems; they count a fraction of a word so that a
//! long word does not outvote the sentence. Features are hashed (FNV-1a,
//! stable across builds) so the model is a map of numbers, not of strings.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use super::data::{self, Example};
use super::normalize::prepare;
use super::Label;

/// The labelled sets the shipped model learns from, compiled into the
/// binary: the training set written for it, and the project's earlier sets
/// (see `docs/classification.md` for which set was written how, and the
/// figures of the model trained without each of them). They live under
/// `src/` because they are product data: editing one changes what the
/// agent does. Test-only data stays in `tests/fixtures/`.
pub const TRAINING_SETS: &[(&str, &str)] = &[
    (
        "src/classify/data/train.jsonl",
        include_str!("data/train.jsonl"),
    ),
    (
        "src/classify/data/classify-devset.jsonl",
        include_str!("data/classify-devset.jsonl"),
    ),
    (
        "src/classify/data/classify-holdout-2.jsonl",
        include_str!("data/classify-holdout-2.jsonl"),
    ),
    (
        "src/classify/data/classify-dev-2.jsonl",
        include_str!("data/classify-dev-2.jsonl"),
    ),
    (
        "src/classify/data/train-messy.jsonl",
        include_str!("data/train-messy.jsonl"),
    ),
];

/// Laplace smoothing: what an unseen (feature, label) pair counts.
const ALPHA: f64 = 0.1;
/// Smoothing of what corrections taught about words the training never
/// had ([`Model::add_evidence`]).
const EVIDENCE_ALPHA: f64 = 1.0;
/// Weight of one character 4-gram relative to a word.
const CHAR_WEIGHT: f32 = 0.15;
/// Length of the character n-grams.
const CHAR_N: usize = 4;

/// Index of a label in score arrays (report order).
pub(crate) fn index(label: Label) -> usize {
    match label {
        Label::Routine => 0,
        Label::Task => 1,
        Label::Incident => 2,
    }
}

/// A trained model: per feature, how often it went with each label.
#[derive(Debug, Clone, Default)]
pub struct Model {
    counts: HashMap<u64, [f32; 3]>,
    totals: [f64; 3],
    docs: [f64; 3],
    /// Distinct features of the training rows (the smoothing's vocabulary;
    /// evidence added later does not change it).
    vocabulary: usize,
    /// Counts the corrections added for features the training rows never
    /// had ([`Model::add_evidence`]).
    evidence: HashMap<u64, [f32; 3]>,
}

/// The model's view of one text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Prediction {
    /// Log-probability per label (up to a shared constant), report order.
    pub(crate) log_scores: [f64; 3],
    /// Distinct words of two characters or more in the text that the model
    /// has seen in training: 0 means it has nothing to go on (a one-letter
    /// post, politeness only, a language or script it never saw), and then
    /// its scores are only its priors, which must not decide
    /// ([`super::fallback`]).
    pub(crate) known: usize,
}

impl Prediction {
    /// The most likely label; an exact tie goes to the less serious one.
    #[cfg(test)]
    fn label(&self) -> Label {
        argmax(&self.log_scores)
    }

    /// Probabilities per label (report order), for explanations.
    pub(crate) fn probabilities(&self) -> [f64; 3] {
        probabilities(&self.log_scores)
    }
}

/// Log-scores (report order) as probabilities.
pub(crate) fn probabilities(scores: &[f64; 3]) -> [f64; 3] {
    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
    let sum: f64 = e.iter().sum();
    [e[0] / sum, e[1] / sum, e[2] / sum]
}

/// The label with the highest score; an exact tie goes to the less serious.
pub(crate) fn argmax(scores: &[f64; 3]) -> Label {
    let mut best = 0;
    for i in 1..3 {
        if scores[i] > scores[best] {
            best = i;
        }
    }
    Label::ALL[best]
}

impl Model {
    /// Trains on `(text, label, weight)` examples.
    pub fn train<'a>(examples: impl IntoIterator<Item = (&'a str, Label, f32)>) -> Model {
        let mut m = Model::default();
        for (text, label, weight) in examples {
            m.add(text, label, weight);
        }
        m
    }

    /// Adds one training row.
    fn add(&mut self, text: &str, label: Label, weight: f32) {
        let k = index(label);
        self.docs[k] += weight as f64;
        for (f, v) in features(&words(text)) {
            let c = self.counts.entry(f).or_insert_with(|| {
                self.vocabulary += 1;
                [0.0; 3]
            });
            c[k] += v * weight;
            self.totals[k] += (v * weight) as f64;
        }
    }

    /// Adds what a correction says about the words the model has never
    /// seen: their counts for its label, and nothing else. Not the words it
    /// knows (what a few thousand rows taught it stands: one correction of
    /// a pasted log must not make "could not write to file" chatter), not
    /// the label's share of the posts (the prior), nor its total of words,
    /// nor the vocabulary: corrections are the agent's mistakes, not a
    /// sample of the chat, so they must not move the label of a post that
    /// shares no new word with them. A client's jargon, a script or a typo
    /// the training never had is what they teach.
    pub(crate) fn add_evidence(&mut self, text: &str, label: Label, weight: f32) {
        let k = index(label);
        for (f, x) in features(&words(text)) {
            if !self.counts.contains_key(&f) {
                self.evidence.entry(f).or_insert([0.0; 3])[k] += x * weight;
            }
        }
    }

    /// Distinct features seen in training.
    #[cfg(test)]
    fn vocabulary(&self) -> usize {
        self.counts.len()
    }

    /// Training rows per label (report order), corrections included at
    /// their weight.
    pub(crate) fn rows(&self) -> [f64; 3] {
        self.docs
    }

    /// Scores `text`; features never seen in training are ignored.
    #[cfg(test)]
    pub(crate) fn predict(&self, text: &str) -> Prediction {
        self.predict_without(text, None)
    }

    /// Scores `text` as if the evidence `minus` (a text, its label and the
    /// weight it was added with by [`Model::add_evidence`]) had never been
    /// added: `ops-agent eval` scores each correction without it, from one
    /// model, instead of training one model per correction.
    pub(crate) fn predict_without(
        &self,
        text: &str,
        minus: Option<(&str, Label, f32)>,
    ) -> Prediction {
        let docs = self.docs;
        let totals = self.totals;
        let mut removed: HashMap<u64, f32> = HashMap::new();
        let mut removed_from = 0;
        if let Some((t, label, weight)) = minus {
            removed_from = index(label);
            for (f, v) in features(&words(t)) {
                removed.insert(f, v * weight);
            }
        }
        // A feature of the training rows, or one only corrections taught.
        enum Seen {
            Trained([f32; 3]),
            Taught([f32; 3]),
        }
        let count = |f: &u64| -> Option<Seen> {
            if let Some(c) = self.counts.get(f) {
                return Some(Seen::Trained(*c));
            }
            let mut c = *self.evidence.get(f)?;
            if let Some(r) = removed.get(f) {
                c[removed_from] = (c[removed_from] - r).max(0.0);
                if c.iter().sum::<f32>() <= 1e-6 {
                    return None;
                }
            }
            Some(Seen::Taught(c))
        };
        let all: f64 = docs.iter().sum();
        let v = self.vocabulary.max(1) as f64;
        let mut s = [0.0f64; 3];
        for (k, score) in s.iter_mut().enumerate() {
            *score = if all > 0.0 {
                ((docs[k] + 1.0) / (all + 3.0)).ln()
            } else {
                0.0
            };
        }
        let words = words(text);
        let known = words
            .iter()
            .filter(|w| w.chars().count() >= 2)
            .collect::<HashSet<_>>()
            .into_iter()
            .filter(|w| count(&hash(&[b"w", w.as_bytes()])).is_some())
            .count();
        for (f, w) in features(&words) {
            match count(&f) {
                None => {}
                Some(Seen::Trained(c)) => {
                    for (k, score) in s.iter_mut().enumerate() {
                        let p = (c[k] as f64 + ALPHA) / (totals[k] + ALPHA * v);
                        *score += w as f64 * p.ln();
                    }
                }
                // What corrections taught: each label's count against the
                // mean, smoothed by EVIDENCE_ALPHA, so one correction's word
                // counts ln 2 (at weight 1), not the tenfold of an unseen
                // training feature.
                Some(Seen::Taught(e)) => {
                    let mean = e.iter().map(|x| *x as f64).sum::<f64>() / 3.0;
                    for (k, score) in s.iter_mut().enumerate() {
                        *score += w as f64
                            * ((e[k] as f64 + EVIDENCE_ALPHA) / (mean + EVIDENCE_ALPHA)).ln();
                    }
                }
            }
        }
        Prediction {
            log_scores: s,
            known,
        }
    }
}

/// The rows of [`TRAINING_SETS`], in order.
fn training_rows() -> Vec<Example> {
    TRAINING_SETS
        .iter()
        .flat_map(|(_, text)| data::parse_lines(text).0)
        .collect()
}

/// The model trained on [`TRAINING_SETS`], once per process.
pub(crate) fn base() -> &'static Model {
    static BASE: OnceLock<Model> = OnceLock::new();
    BASE.get_or_init(|| {
        let rows = training_rows();
        Model::train(rows.iter().map(|r| (r.text.as_str(), r.label, 1.0)))
    })
}

/// Whether the shipped model was trained on `text` (compared by
/// [`text_key`]; a text without words, such as one emoji, by itself), so
/// that `ops-agent eval` can say when its figure is no hold-out: a model
/// scores the rows it learnt from far better than new chat.
pub(crate) fn is_trained_on(text: &str) -> bool {
    // A post of politeness only ("morning all") has no words as the
    // fallback reads it: then its folded words as written, and for a post
    // without any (one emoji), the text itself.
    fn key(text: &str) -> String {
        let k = text_key(text);
        if !k.is_empty() {
            return k;
        }
        let folded = super::fold::fold(text);
        let written: Vec<&str> = folded
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        if written.is_empty() {
            text.trim().to_string()
        } else {
            written.join(" ")
        }
    }
    static KEYS: OnceLock<HashSet<String>> = OnceLock::new();
    KEYS.get_or_init(|| training_rows().iter().map(|r| key(&r.text)).collect())
        .contains(&key(text))
}

/// A text as the fallback matches it against known texts (corrections,
/// training rows): its folded words, single spaces, so case, accents and
/// punctuation do not make a copy look new.
pub(crate) fn text_key(text: &str) -> String {
    words(text).join(" ")
}

/// The words of a text as the fallback reads it ([`prepare`]: folded,
/// Cyrillic in Latin, without struck or quoted text and without the
/// politeness at its ends), split at anything that is not a letter or digit.
pub(crate) fn words(text: &str) -> Vec<String> {
    prepare(text)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The features of a text with their weights, each once (presence, not
/// frequency: a pasted log repeating "error" forty times is one error).
fn features(w: &[String]) -> HashMap<u64, f32> {
    let mut out: HashMap<u64, f32> = HashMap::new();
    let mut put = |key: u64, v: f32| {
        let e = out.entry(key).or_insert(0.0);
        *e = e.max(v);
    };
    for x in w {
        put(hash(&[b"w", x.as_bytes()]), 1.0);
        let padded: Vec<char> = format!(" {x} ").chars().collect();
        if padded.len() >= CHAR_N {
            for g in padded.windows(CHAR_N) {
                let g: String = g.iter().collect();
                put(hash(&[b"c", g.as_bytes()]), CHAR_WEIGHT);
            }
        }
    }
    let start = "<s>".to_string();
    let end = "</s>".to_string();
    let seq: Vec<&String> = std::iter::once(&start)
        .chain(w.iter())
        .chain(std::iter::once(&end))
        .collect();
    for pair in seq.windows(2) {
        put(
            hash(&[b"b", pair[0].as_bytes(), b"_", pair[1].as_bytes()]),
            1.0,
        );
    }
    out
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike std's hasher.
fn hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_from_examples_and_corrections_teach_only_new_words() {
        let mut m = Model::train([
            ("the site is down", Label::Incident, 1.0),
            ("planka is down again", Label::Incident, 1.0),
            ("please add me to the board", Label::Task, 1.0),
            ("please renew the cert", Label::Task, 1.0),
            ("lunch at noon?", Label::Routine, 1.0),
            ("the deploy went fine", Label::Routine, 1.0),
        ]);
        assert_eq!(m.predict("mattermost is down").label(), Label::Incident);
        assert_eq!(m.predict("please add Ana").label(), Label::Task);
        assert_eq!(m.predict("lunch?").label(), Label::Routine);
        // Nothing known (politeness only, or unknown words): no evidence.
        for text in ["thanks!", "zzz"] {
            assert_eq!(m.predict(text).known, 0, "{text}");
        }
        // A correction teaches the words the model never saw ...
        assert_eq!(m.predict("kvaka stoji opet").known, 0);
        m.add_evidence("kvaka stoji", Label::Incident, 1.0);
        let p = m.predict("kvaka stoji opet");
        assert_eq!((p.known, p.label()), (2, Label::Incident));
        // ... and not the ones it knows, nor the share of each label.
        let before = m.predict("the site is down");
        m.add_evidence("the site is down, as every monday", Label::Routine, 3.0);
        let after = m.predict("the site is down");
        assert_eq!(after.label(), Label::Incident);
        let lunch = m.predict("lunch at noon?");
        m.add_evidence("zzz qqq", Label::Task, 50.0);
        let again = m.predict("lunch at noon?");
        for k in 0..3 {
            assert!((again.log_scores[k] - lunch.log_scores[k]).abs() < 1e-9);
        }
        assert!((before.log_scores[2] - after.log_scores[2]).abs() < 1e-9);
        // Left out, a correction's evidence is as if never added.
        let without = m.predict_without(
            "kvaka stoji opet",
            Some(("kvaka stoji", Label::Incident, 1.0)),
        );
        assert_eq!(without.known, 0);
    }

    #[test]
    fn features_are_presence_and_word_pieces() {
        let f = features(&words("Error error ERROR"));
        let whole = f.values().filter(|v| **v == 1.0).count();
        // "error" once, and the pairs <s>_error, error_error, error_</s>.
        assert_eq!(whole, 4);
        // " error " has four 4-grams.
        assert_eq!(f.values().filter(|v| **v == CHAR_WEIGHT).count(), 4);
        // Inflected forms share pieces of their stem.
        let a = features(&words("restartujemo"));
        let b = features(&words("restartovati"));
        assert!(a.keys().filter(|k| b.contains_key(k)).count() >= 4);
        assert!(features(&words("")).len() == 1, "only <s>_</s>");
    }

    #[test]
    fn hashing_is_stable() {
        assert_eq!(hash(&[b"w", b"down"]), hash(&[b"w", b"down"]));
        assert_ne!(hash(&[b"w", b"down"]), hash(&[b"c", b"down"]));
        assert_ne!(hash(&[b"ab", b"c"]), hash(&[b"a", b"bc"]));
    }

    #[test]
    fn the_embedded_sets_parse_completely() {
        for (name, text) in TRAINING_SETS {
            let (rows, bad) = data::parse_lines(text);
            assert!(bad.is_empty(), "{name}: {bad:?}");
            assert!(rows.len() >= 60, "{name}");
        }
        assert!(base().vocabulary() > 1000);
    }

    #[test]
    fn every_file_of_the_data_directory_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/classify/data");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                format!(
                    "src/classify/data/{}",
                    e.unwrap().file_name().to_string_lossy()
                )
            })
            .collect();
        files.sort();
        let mut embedded: Vec<String> = TRAINING_SETS.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(files, embedded);
    }

    #[test]
    fn training_rows_are_recognised_by_their_folded_words() {
        let (rows, _) = data::parse_lines(TRAINING_SETS[1].1);
        assert!(is_trained_on(&rows[0].text));
        assert!(is_trained_on(&format!(
            "  {}!! ",
            rows[0].text.to_uppercase()
        )));
        assert!(!is_trained_on(
            "zzz a post no training set has ever held, surely"
        ));
        // No words: the text itself, not the empty key every emoji has.
        assert!(is_trained_on("👍"));
        assert!(!is_trained_on("🦀"));
        // Politeness only: compared by its words as written.
        assert!(is_trained_on("Morning all!!"));
        assert!(!is_trained_on("morning everyone, all"));
    }
}
