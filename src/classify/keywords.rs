//! Keyword rules: the classifier that works with Ollama gone.
//!
//! Pure functions of the text and the configured extra phrases. The text is
//! folded (lowercase, common diacritics removed, apostrophes dropped so
//! "can't" and "cant" match alike) and cut into clauses at punctuation; a
//! phrase matches whole words inside one clause. Each phrase adds its weight
//! to its label once per message. A phrase preceded within three words by a
//! negation ("not urgent", "no longer down", "nije hitno") does not count for
//! its label; a negated incident or task phrase counts a little towards
//! ROUTINE instead, since "X is no longer down" is a status update.
//!
//! The highest score wins; ties go to the more serious label (an incident
//! mistaken for chatter costs more than the reverse). Nothing matched means
//! ROUTINE. Weights were tuned on `tests/fixtures/classify-devset.jsonl`.

use serde::Serialize;

use super::{ClassifyConfig, Label};

/// Weight of a phrase the operator added in `[classify]`: strong, since the
/// operator knows their team's vocabulary better than the built-in lists.
const CONFIG_WEIGHT: i32 = 3;

/// What a negated incident/task phrase adds to ROUTINE.
const NEGATED_WEIGHT: i32 = 2;

/// Words that negate a phrase starting within the next three words.
const NEGATORS: &[&str] = &[
    "not", "no", "never", "nothing", "without", "isnt", "arent", "wasnt", "werent", "dont",
    "doesnt", "didnt", "nicht", "kein", "keine", "nije", "ne", "nema", "nunca", "sin",
];

/// Words that end a negation's reach.
const SCOPE_BREAKERS: &[&str] = &[
    "but", "and", "though", "however", "aber", "und", "ali", "pero", "y",
];

/// Built-in phrases: (phrase, weight). A trailing `*` on the last word
/// matches any word with that prefix ("crash*" matches "crashed").
const INCIDENT: &[(&str, i32)] = &[
    ("down", 3),
    ("outage", 3),
    ("500*", 3),
    ("502*", 3),
    ("503*", 3),
    ("504*", 3),
    ("413", 2),
    ("crash*", 3),
    ("data loss", 3),
    ("lost", 2),
    ("urgent", 3),
    ("asap", 2),
    ("critical", 3),
    ("broken", 3),
    ("broke", 3),
    ("not loading", 3),
    ("wont load", 3),
    ("doesnt load", 3),
    ("nothing loads", 3),
    ("cant load", 3),
    ("cant log in", 3),
    ("cant login", 3),
    ("cannot log in", 3),
    ("cannot login", 3),
    ("unable to log in", 3),
    ("login fails", 3),
    ("cant connect", 3),
    ("cannot connect", 3),
    ("unable to connect", 3),
    ("cant reach", 3),
    ("connection refused", 3),
    ("refusing connections", 3),
    ("unreachable", 3),
    ("not responding", 3),
    ("stopped responding", 3),
    ("stopped working", 3),
    ("not working", 3),
    ("isnt working", 3),
    ("doesnt work", 3),
    ("does not work", 3),
    ("wont start", 3),
    ("fail*", 3),
    ("error*", 2),
    ("errors out", 3),
    ("oom", 3),
    ("out of memory", 3),
    ("unhealthy", 3),
    ("timing out", 3),
    ("timed out", 3),
    ("timeout", 2),
    ("hangs", 2),
    ("stuck", 2),
    ("blank page", 3),
    ("white page", 3),
    ("white screen", 3),
    ("no space left", 3),
    ("disk full", 3),
    ("expired", 2),
    ("slow", 2),
    ("latency", 1),
    ("firing", 2),
    ("help", 1),
    ("something is wrong", 3),
    ("not arriving", 3),
    ("not being sent", 3),
    ("restarting", 1),
    ("exited", 2),
    ("missing", 1),
    ("gone", 2),
    ("looping", 2),
    ("duplicate", 1),
    ("complaining", 2),
    ("swapping", 2),
    ("cant submit", 3),
    // German
    ("funktioniert nicht", 3),
    ("geht nicht", 3),
    ("ladt nicht", 3),
    ("nicht erreichbar", 3),
    ("schlagt fehl", 3),
    ("ausgefallen", 3),
    ("dringend", 3),
    // Serbian
    ("ne radi", 3),
    ("pao", 3),
    ("pala", 3),
    ("hitno", 3),
    ("gresk*", 2),
    // Spanish
    ("no funciona", 3),
    ("caido", 3),
    ("no carga", 3),
    ("urgente", 3),
];

const TASK: &[(&str, i32)] = &[
    ("please", 3),
    ("pls", 3),
    ("plz", 3),
    ("can you", 3),
    ("could you", 3),
    ("would you", 3),
    ("can someone", 3),
    ("could someone", 3),
    ("can anyone", 3),
    ("can we", 3),
    ("need", 3),
    ("needs", 2),
    ("todo", 3),
    ("lets", 2),
    ("would be great if", 3),
    ("when you get a chance", 3),
    ("add", 2),
    ("create", 2),
    ("set up", 2),
    ("setup", 2),
    ("configure", 2),
    ("install", 2),
    ("deploy", 2),
    ("update", 2),
    ("upgrade", 2),
    ("migrate", 2),
    ("rotate", 2),
    ("renew", 2),
    ("remove", 2),
    ("archive", 2),
    ("enable", 2),
    ("disable", 2),
    ("bump", 2),
    ("pull", 2),
    ("change", 2),
    ("increase", 2),
    ("move", 2),
    ("make", 2),
    ("give me", 3),
    ("send me", 3),
    ("grant", 2),
    ("access to", 2),
    ("reset", 2),
    ("schedule", 2),
    ("document", 2),
    ("write", 2),
    ("export", 2),
    ("clean up", 2),
    ("open a ticket", 3),
    ("look into", 2),
    ("check", 2),
    ("fix", 2),
    ("pin", 2),
    ("should", 1),
    // German
    ("bitte", 3),
    ("kannst du", 3),
    ("konntest du", 3),
    ("konnen sie", 3),
    ("aktualisieren", 2),
    // Serbian
    ("molim", 3),
    ("mozes li", 3),
    ("moze li", 3),
    ("treba", 3),
    ("dodaj", 2),
    ("napravi", 2),
    // Spanish
    ("por favor", 3),
    ("puedes", 3),
    ("podrias", 3),
    ("necesito", 3),
    ("crear", 2),
];

const ROUTINE: &[(&str, i32)] = &[
    ("thanks", 3),
    ("thank you", 3),
    ("thx", 3),
    ("ty", 3),
    ("danke", 3),
    ("hvala", 3),
    ("gracias", 3),
    ("works now", 3),
    ("working again", 3),
    ("back up", 3),
    ("is back", 3),
    ("resolved", 3),
    ("false alarm", 3),
    ("all good", 3),
    ("all green", 3),
    ("fine now", 3),
    ("is fine", 3),
    ("no action needed", 4),
    ("fyi", 3),
    ("just so you know", 3),
    ("heads up", 1),
    ("good morning", 3),
    ("good night", 3),
    ("dobro jutro", 3),
    ("buenos dias", 3),
    ("lol", 3),
    ("nice", 2),
    ("great", 1),
    ("happy birthday", 3),
    ("reminder", 3),
    ("done", 2),
    ("already done", 3),
    ("merged", 2),
    ("passed", 2),
    ("postmortem", 3),
    ("post incident", 3),
    ("was me", 3),
    ("expected", 2),
    ("no worries", 3),
    ("sounds good", 3),
    ("ack", 3),
    ("ok", 3),
    ("hat funktioniert", 4),
    ("sve radi", 4),
    ("ya funciona", 4),
    ("running smoothly", 3),
    ("fixed", 2),
    ("just curious", 3),
    ("plenty of room", 3),
    ("tested", 2),
];

/// One phrase that matched, for `ops-agent classify` to explain itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hit {
    /// The phrase as written in the rules or config.
    pub phrase: String,
    /// The label it speaks for.
    pub label: Label,
    /// Its weight.
    pub weight: i32,
    /// Negated: counted towards ROUTINE (incident/task) or not at all.
    pub negated: bool,
}

/// Score per label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Scores {
    /// ROUTINE score.
    pub routine: i32,
    /// TASK score.
    pub task: i32,
    /// INCIDENT score.
    pub incident: i32,
}

/// The keyword classifier's answer with its reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The label.
    pub label: Label,
    /// Scores that decided it.
    pub scores: Scores,
    /// Phrases that matched.
    pub hits: Vec<Hit>,
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
    pub fn classify(&self, text: &str) -> Verdict {
        let clauses = clauses_of(text);
        let mut scores = Scores::default();
        let mut hits = Vec::new();
        for p in &self.phrases {
            let mut found: Option<bool> = None; // Some(negated)
            for clause in &clauses {
                for start in matches(clause, &p.words) {
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

/// Classifies `text` with the built-in rules plus `cfg`'s phrases.
pub fn classify(text: &str, cfg: &ClassifyConfig) -> Verdict {
    Rules::new(cfg).classify(text)
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
                .all(|(p, w)| match p.strip_suffix('*') {
                    Some(prefix) => w.starts_with(prefix),
                    None => p == w,
                })
        })
        .collect()
}

/// Lowercase, diacritics folded, apostrophes removed.
fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        match c {
            '\'' | '’' | '`' | '´' => {}
            'ä' | 'á' | 'à' | 'â' | 'ã' | 'å' => out.push('a'),
            'ö' | 'ó' | 'ò' | 'ô' | 'õ' | 'ø' => out.push('o'),
            'ü' | 'ú' | 'ù' | 'û' => out.push('u'),
            'é' | 'è' | 'ê' | 'ë' => out.push('e'),
            'í' | 'ì' | 'î' | 'ï' => out.push('i'),
            'ñ' => out.push('n'),
            'ç' | 'č' | 'ć' => out.push('c'),
            'š' => out.push('s'),
            'ž' => out.push('z'),
            'đ' => out.push_str("dj"),
            'ß' => out.push_str("ss"),
            c => out.push(c),
        }
    }
    out
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
            incident_phrases: vec!["kaputt".into()],
            task_phrases: vec!["ticket for".into()],
            routine_phrases: vec!["standup notes".into()],
        };
        assert_eq!(classify("alles kaputt", &cfg).label, Label::Incident);
        assert_eq!(classify("Ticket for the new vpn", &cfg).label, Label::Task);
        assert_eq!(
            classify("standup notes: deploy went ok", &cfg).label,
            Label::Routine
        );
        assert_eq!(
            classify("alles kaputt", &ClassifyConfig::default()).label,
            Label::Routine
        );
    }

    #[test]
    fn ties_prefer_the_more_serious_label() {
        // "please" (task 3) vs "urgent" (incident 3)
        assert_eq!(label("urgent please"), Label::Incident);
        // "thanks" (routine 3) vs "please" (task 3)
        assert_eq!(label("please, thanks"), Label::Task);
    }
}
