//! Keyword rules: the classifier that works with Ollama gone.
//!
//! Pure functions of the text and the configured extra phrases. The text is
//! prepared like the model's ([`super::normalize`]: folded, Cyrillic in
//! Latin, apostrophes dropped so "can't" and "cant" match alike, politeness
//! at the ends cut) and cut into clauses at punctuation; a
//! phrase matches whole words inside one clause. Each phrase adds its weight
//! to its label once per message. A phrase preceded within three words by a
//! negation ("not urgent", "no longer down", "nije hitno") does not count for
//! its label; a negated incident or task phrase counts a little towards
//! ROUTINE instead, since "X is no longer down" is a status update.
//!
//! The highest score wins; ties go to the more serious label (an incident
//! mistaken for chatter costs more than the reverse). Nothing matched means
//! ROUTINE. Weights were tuned on `src/classify/data/classify-devset.jsonl`.
//!
//! The built-in phrases and word lists are in [`phrases`]; this file is the
//! matching.

mod phrases;

use serde::Serialize;

use super::fold::fold;
use super::normalize::prepare;
use super::{ClassifyConfig, Label};
use phrases::{
    BROKEN_FILLER, BROKEN_NEGATORS, FIRST_PERSON, FIRST_PERSON_ACTIONS, FUNCTION_STEMS, INCIDENT,
    NEGATORS, ROUTINE, SCOPE_BREAKERS, STATES, STATUS_CONTEXT, STATUS_NAMES, SYSTEMS, TASK,
};

/// Weight of a phrase the operator added in `[classify]`: strong, since the
/// operator knows their team's vocabulary better than the built-in lists.
const CONFIG_WEIGHT: i32 = 3;

/// What a negated incident/task phrase adds to ROUTINE.
const NEGATED_WEIGHT: i32 = 2;

/// Weight of each structural incident pattern ([`incident_patterns`]).
const PATTERN_WEIGHT: i32 = 3;

/// One phrase that matched, for `ops-agent classify` to explain itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Hit {
    /// The phrase as written in the rules or config.
    pub(crate) phrase: String,
    /// The label it speaks for.
    pub(crate) label: Label,
    /// Its weight.
    pub(crate) weight: i32,
    /// Negated: counted towards ROUTINE (incident/task) or not at all.
    pub(crate) negated: bool,
}

/// Score per label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Scores {
    /// ROUTINE score.
    pub(crate) routine: i32,
    /// TASK score.
    pub(crate) task: i32,
    /// INCIDENT score.
    pub(crate) incident: i32,
}

/// The keyword classifier's answer with its reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The label.
    pub label: Label,
    /// Scores that decided it.
    pub(crate) scores: Scores,
    /// Phrases that matched.
    pub(crate) hits: Vec<Hit>,
}

struct Phrase {
    text: String,
    words: Vec<String>,
    label: Label,
    weight: i32,
}

/// Compiled rules: the built-in phrases plus the operator's.
pub struct Rules {
    phrases: Vec<Phrase>,
}

impl Rules {
    /// Builds the rules from the built-in lists and `[classify]`'s extras.
    pub fn new(cfg: &ClassifyConfig) -> Self {
        let mut phrases = Vec::new();
        let mut push = |text: &str, label: Label, weight: i32| {
            let words = words_of(text);
            if !words.is_empty() {
                phrases.push(Phrase {
                    text: text.to_string(),
                    words,
                    label,
                    weight,
                });
            }
        };
        for (list, label) in [
            (INCIDENT, Label::Incident),
            (TASK, Label::Task),
            (ROUTINE, Label::Routine),
        ] {
            for (p, w) in list {
                push(p, label, *w);
            }
        }
        for (list, label) in [
            (&cfg.incident_phrases, Label::Incident),
            (&cfg.task_phrases, Label::Task),
            (&cfg.routine_phrases, Label::Routine),
        ] {
            for p in list {
                push(p, label, CONFIG_WEIGHT);
            }
        }
        Rules { phrases }
    }

    /// Classifies `text`.
    /// The text is read as the fallback reads it ([`prepare`]): without
    /// struck or quoted text and without the politeness at its ends.
    pub fn classify(&self, text: &str) -> Verdict {
        let clauses = clauses_of(&prepare(text));
        let mut scores = Scores::default();
        let mut hits = Vec::new();
        for p in &self.phrases {
            let mut found: Option<bool> = None; // Some(negated)
            let action =
                p.label == Label::Incident && FIRST_PERSON_ACTIONS.contains(&p.text.as_str());
            for clause in &clauses {
                for start in matches(clause, &p.words) {
                    if action && is_first_person(&clause[..start]) {
                        continue;
                    }
                    let negated = is_negated(&clause[..start]);
                    // A plain match beats a negated one elsewhere in the text.
                    found = Some(found.unwrap_or(true) && negated);
                }
            }
            let Some(negated) = found else { continue };
            match (p.label, negated) {
                (Label::Incident, false) => scores.incident += p.weight,
                (Label::Task, false) => scores.task += p.weight,
                (Label::Routine, false) => scores.routine += p.weight,
                (Label::Incident | Label::Task, true) => scores.routine += NEGATED_WEIGHT,
                (Label::Routine, true) => {}
            }
            hits.push(Hit {
                phrase: p.text.clone(),
                label: p.label,
                weight: p.weight,
                negated,
            });
        }
        for pattern in incident_patterns(&clauses) {
            scores.incident += PATTERN_WEIGHT;
            hits.push(Hit {
                phrase: pattern.to_string(),
                label: Label::Incident,
                weight: PATTERN_WEIGHT,
                negated: false,
            });
        }
        let label = if scores.incident > 0
            && scores.incident >= scores.task
            && scores.incident >= scores.routine
        {
            Label::Incident
        } else if scores.task > 0 && scores.task >= scores.routine {
            Label::Task
        } else {
            Label::Routine
        };
        Verdict {
            label,
            scores,
            hits,
        }
    }
}

/// Structural incident patterns found in the clauses, each named once:
/// an HTTP error status in context, a negated service function ("isn't
/// syncing", "didn't come back"), "keeps <verb>ing", and a named system
/// followed by a broken state.
fn incident_patterns(clauses: &[Vec<String>]) -> Vec<&'static str> {
    let mut found = Vec::new();
    let mut add = |name: &'static str| {
        if !found.contains(&name) {
            found.push(name);
        }
    };
    let states: Vec<Vec<String>> = STATES.iter().map(|s| words_of(s)).collect();
    for clause in clauses {
        for (i, w) in clause.iter().enumerate() {
            let before = &clause[..i];
            if is_http_error(w)
                && (before
                    .iter()
                    .rev()
                    .take(3)
                    .any(|b| STATUS_CONTEXT.contains(&b.as_str()))
                    || clause
                        .get(i + 1)
                        .is_some_and(|n| STATUS_NAMES.contains(&n.as_str())))
            {
                add("<HTTP 4xx/5xx status>");
            }
            if BROKEN_NEGATORS.contains(&w.as_str())
                && !(w == "longer" && before.last().map(String::as_str) != Some("no"))
                && !is_first_person(before)
            {
                let mut rest = clause[i + 1..]
                    .iter()
                    .skip_while(|r| BROKEN_FILLER.contains(&r.as_str()));
                if let Some(verb) = rest.next() {
                    let back = matches!(verb.as_str(), "come" | "came" | "coming")
                        && rest.next().map(String::as_str) == Some("back");
                    if back || FUNCTION_STEMS.iter().any(|s| verb.starts_with(s)) {
                        add("<negated service function>");
                    }
                }
            }
            if matches!(w.as_str(), "keeps" | "kept" | "keep")
                && clause
                    .get(i + 1)
                    .is_some_and(|n| n.len() > 5 && n.ends_with("ing"))
                && !is_first_person(before)
            {
                add("<keeps ...ing>");
            }
            if SYSTEMS.iter().any(|s| word_matches(s, w)) {
                let after = &clause[i + 1..];
                if states.iter().any(|st| {
                    matches(after, st)
                        .into_iter()
                        .any(|k| !is_negated(&after[..k]))
                }) {
                    add("<named system in a broken state>");
                }
            }
        }
    }
    found
}

/// "404", "500s", "5xx": an HTTP client or server error status.
fn is_http_error(w: &str) -> bool {
    let w = w.strip_suffix('s').unwrap_or(w);
    let b = w.as_bytes();
    b.len() == 3
        && matches!(b[0], b'4' | b'5')
        && ((b[1].is_ascii_digit() && b[2].is_ascii_digit()) || &b[1..] == b"xx")
}

/// Whether the writer is the subject of what follows: "I", "we" among the
/// last two words.
fn is_first_person(before: &[String]) -> bool {
    before
        .iter()
        .rev()
        .take(2)
        .any(|w| FIRST_PERSON.contains(&w.as_str()))
}

/// Whether one of the last three words before a match negates it; a
/// conjunction ends the negation's reach ("not urgent but down").
fn is_negated(before: &[String]) -> bool {
    for w in before.iter().rev().take(3) {
        if SCOPE_BREAKERS.contains(&w.as_str()) {
            return false;
        }
        if NEGATORS.contains(&w.as_str()) {
            return true;
        }
    }
    false
}

/// Start indices where `phrase` occurs as whole words in `clause`.
fn matches(clause: &[String], phrase: &[String]) -> Vec<usize> {
    if phrase.is_empty() || clause.len() < phrase.len() {
        return Vec::new();
    }
    (0..=clause.len() - phrase.len())
        .filter(|&i| {
            phrase
                .iter()
                .zip(&clause[i..])
                .all(|(p, w)| word_matches(p, w))
        })
        .collect()
}

/// One pattern word against one text word. A trailing `*` matches any
/// letters after the prefix, but not digits: "fail*" matches "failed", not
/// "fail2ban"; "500*" matches "500s", not "5000".
fn word_matches(pattern: &str, word: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => word
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.chars().all(char::is_alphabetic)),
        None => pattern == word,
    }
}

/// Clause boundaries: negation and phrases do not reach across these.
fn is_clause_break(c: char) -> bool {
    matches!(
        c,
        '.' | '!' | '?' | ';' | ',' | ':' | '\n' | '(' | ')' | '¿' | '¡'
    )
}

fn words_of(text: &str) -> Vec<String> {
    fold(text)
        .split(|c: char| !(c.is_alphanumeric() || c == '*'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn clauses_of(text: &str) -> Vec<Vec<String>> {
    fold(text)
        .split(is_clause_break)
        .map(|c| {
            c.split(|ch: char| !ch.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|c| !c.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Classifies `text` with the built-in rules plus `cfg`'s phrases.
    fn classify(text: &str, cfg: &ClassifyConfig) -> Verdict {
        Rules::new(cfg).classify(text)
    }

    fn label(text: &str) -> Label {
        classify(text, &ClassifyConfig::default()).label
    }

    #[test]
    fn basic_labels() {
        let table = [
            ("Mattermost is DOWN!!!", Label::Incident),
            ("getting 502 from planka", Label::Incident),
            ("502s everywhere", Label::Incident),
            ("I can't log in", Label::Incident),
            ("i cant log in", Label::Incident),
            ("ollama crashed", Label::Incident),
            ("Please add Ana to the wizard team", Label::Task),
            ("could you deploy the fix?", Label::Task),
            ("thanks!", Label::Routine),
            ("good morning", Label::Routine),
            ("", Label::Routine),
            ("🙂", Label::Routine),
        ];
        for (text, want) in table {
            assert_eq!(label(text), want, "{text:?}");
        }
    }

    #[test]
    fn negation() {
        let table = [
            ("this is not urgent", Label::Routine),
            ("mattermost is no longer down", Label::Routine),
            ("planka isn't down, my wifi was", Label::Routine),
            ("nije hitno", Label::Routine),
            ("not urgent, but mattermost is down", Label::Incident),
            ("not urgent but planka is down", Label::Incident),
            ("no need to deploy today", Label::Routine),
        ];
        for (text, want) in table {
            assert_eq!(label(text), want, "{text:?}");
        }
        let v = classify("not urgent", &ClassifyConfig::default());
        assert!(v.hits.iter().any(|h| h.phrase == "urgent" && h.negated));
        assert_eq!(v.scores.incident, 0);
    }

    #[test]
    fn negation_does_not_cross_clauses() {
        // "no" ends its clause; "down" starts a new one.
        assert_eq!(label("no. the site is down"), Label::Incident);
    }

    #[test]
    fn case_punctuation_and_diacritics_insensitive() {
        assert_eq!(
            label("D-O-W-N"),
            Label::Routine,
            "hyphenated letters are not the word"
        );
        assert_eq!(label("CAN YOU... add me?"), Label::Task);
        assert_eq!(label("Kannst du bitte"), Label::Task);
        assert_eq!(label("Könntest du das aktualisieren"), Label::Task);
        assert_eq!(label("Die Seite lädt nicht"), Label::Incident);
        assert_eq!(label("možeš li"), Label::Task);
        assert_eq!(label("está caído"), Label::Incident);
    }

    #[test]
    fn prefix_and_whole_word_matching() {
        assert_eq!(label("the job failed"), Label::Incident);
        assert_eq!(
            label("I updated the readme"),
            Label::Routine,
            "past tense is a status"
        );
        assert_eq!(
            label("download finished"),
            Label::Routine,
            "'down' is a whole word"
        );
    }

    #[test]
    fn config_phrases_count_strongly() {
        let cfg = ClassifyConfig {
            incident_phrases: vec!["im eimer".into()],
            task_phrases: vec!["ticket for".into()],
            routine_phrases: vec!["standup notes".into()],
        };
        assert_eq!(classify("alles im eimer", &cfg).label, Label::Incident);
        assert_eq!(classify("Ticket for the new vpn", &cfg).label, Label::Task);
        assert_eq!(
            classify("standup notes: deploy went ok", &cfg).label,
            Label::Routine
        );
        assert_eq!(
            classify("alles im eimer", &ClassifyConfig::default()).label,
            Label::Routine
        );
    }

    #[test]
    fn structural_incident_patterns() {
        let table = [
            // HTTP status in context, not a count or a port.
            ("the wiki returns 404 on every page", Label::Incident),
            ("getting 429 from the registry", Label::Incident),
            ("5xx everywhere on the proxy", Label::Incident),
            ("we have 404 open tickets lol", Label::Routine),
            ("planka listens on port 5000 now, fyi", Label::Routine),
            // A negated service function.
            ("the bridge isn't syncing", Label::Incident),
            ("gitea didn't come back after the reboot", Label::Incident),
            ("alerts are no longer being delivered", Label::Incident),
            ("I didn't update the readme yet", Label::Routine),
            (
                "don't update the runner before friday, thanks",
                Label::Routine,
            ),
            // Repetition of a failure.
            ("the worker keeps dying", Label::Incident),
            // A named system in a broken state.
            ("the redis box is acting up", Label::Incident),
            ("the planka board is empty", Label::Incident),
            ("the planka board is not empty", Label::Routine),
            ("I'll be offline tomorrow", Label::Routine),
        ];
        for (text, want) in table {
            assert_eq!(label(text), want, "{text:?}");
        }
    }

    #[test]
    fn first_person_actions_are_not_failures() {
        assert_eq!(label("the sync job stopped at 3am"), Label::Incident);
        assert_eq!(label("I stopped nginx for a minute"), Label::Routine);
        assert_eq!(label("we just stopped the old runner"), Label::Routine);
        assert_eq!(label("smtp auth rejected"), Label::Incident);
    }

    #[test]
    fn prefixes_do_not_swallow_digits() {
        assert_eq!(label("install fail2ban on the public host"), Label::Task);
        assert_eq!(label("the job failed"), Label::Incident);
        assert_eq!(label("500s on the api"), Label::Incident);
    }

    #[test]
    fn ties_prefer_the_more_serious_label() {
        // "please" (task 3) vs "urgent" (incident 3)
        assert_eq!(label("urgent please"), Label::Incident);
        // "thanks" (routine 3) vs "please" (task 3)
        assert_eq!(label("please, thanks"), Label::Task);
    }
}
