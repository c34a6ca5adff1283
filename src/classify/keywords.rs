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

/// Incident phrases that describe something the writer did when the
/// subject is "I"/"we" ("I stopped nginx for the upgrade"), not a failure.
const FIRST_PERSON_ACTIONS: &[&str] = &["stopped", "rejected", "refused", "dropping", "backing up"];

/// Words in the two before an action phrase that make the writer its subject.
const FIRST_PERSON: &[&str] = &["i", "we", "im", "ive", "weve", "id", "wed", "ill"];

/// Weight of the structural incident patterns below.
const PATTERN_WEIGHT: i32 = 3;

/// Words before a 4xx/5xx number that make it an HTTP status ("returns
/// 404", "fails with 413", "error 500") rather than a count or a port.
const STATUS_CONTEXT: &[&str] = &[
    "return",
    "returns",
    "returned",
    "returning",
    "get",
    "gets",
    "getting",
    "got",
    "throw",
    "throws",
    "threw",
    "throwing",
    "give",
    "gives",
    "giving",
    "gave",
    "show",
    "shows",
    "showing",
    "with",
    "http",
    "status",
    "code",
    "error",
    "errors",
    "fehler",
    "greska",
    "gresku",
    "greske",
    "answers",
    "responds",
    "serves",
    "serving",
    "hitting",
    "seeing",
];

/// Words after a 4xx/5xx number that name an HTTP status.
const STATUS_NAMES: &[&str] = &[
    "bad",
    "not",
    "forbidden",
    "unauthorized",
    "internal",
    "gateway",
    "service",
    "too",
    "request",
    "payload",
    "entity",
    "errors",
    "error",
    "everywhere",
];

/// Negators that, right before a verb of a service's normal function,
/// report that the function is broken ("isn't syncing", "didn't come back",
/// "won't start"). "dont" is left out: "don't update yet" is an instruction.
const BROKEN_NEGATORS: &[&str] = &[
    "not", "isnt", "arent", "wasnt", "werent", "doesnt", "didnt", "wont", "cant", "cannot",
    "never", "longer", "couldnt", "aint", "hasnt", "havent",
];

/// Filler allowed between such a negator and the verb ("not even loading").
const BROKEN_FILLER: &[&str] = &[
    "be", "being", "get", "getting", "even", "really", "properly", "been",
];

/// Stems of verbs for what a service normally does.
const FUNCTION_STEMS: &[&str] = &[
    "sync",
    "send",
    "load",
    "work",
    "respond",
    "start",
    "connect",
    "sav",
    "resolv",
    "arriv",
    "deliver",
    "render",
    "upload",
    "download",
    "boot",
    "reach",
    "answer",
    "process",
    "accept",
    "run",
    "post",
    "receiv",
    "authenticat",
    "updat",
    "refresh",
    "show",
    "open",
    "reply",
];

/// Names of systems an ops team runs: a clause naming one of these and a
/// broken state (`STATES`) reports an incident.
const SYSTEMS: &[&str] = &[
    "mattermost",
    "mm",
    "planka",
    "postgres*",
    "pg",
    "db",
    "database*",
    "nginx",
    "traefik",
    "ollama",
    "docker",
    "container*",
    "api",
    "site",
    "server*",
    "host*",
    "box",
    "queue*",
    "bridge",
    "webhook*",
    "cert*",
    "disk*",
    "proxy",
    "dns",
    "vpn",
    "smtp",
    "mail*",
    "replica*",
    "backup*",
    "board*",
    "channel*",
    "app",
    "service*",
    "bot",
    "worker*",
    "cron*",
    "login",
    "sso",
    "registry",
    "redis",
    "volume*",
    "network",
    "wifi",
    "model",
    "gpu",
    "mac",
    "prod",
    "staging",
    "website",
    "page",
    "ssl",
    "tls",
    "portal",
    "endpoint*",
    "notifications",
];

/// Broken states that count only next to a named system (`SYSTEMS`)
/// earlier in the same clause: "planka is acting up", "the queue is dead".
const STATES: &[&str] = &[
    "dead",
    "died",
    "dying",
    "hung",
    "frozen",
    "freezes",
    "freezing",
    "wrong",
    "weird",
    "acting up",
    "misbehaving",
    "spinning",
    "spins",
    "sluggish",
    "offline",
    "unavailable",
    "corrupt*",
    "deleted",
    "empty",
    "by itself",
    "instead of",
    "wiped",
    "dropped",
    "full",
    "restarted itself",
    "rebooted itself",
    "on fire",
    "borked",
    "hosed",
    "flapping",
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
    ("connection reset", 3),
    ("reset by peer", 3),
    ("permission denied", 3),
    ("access denied", 3),
    ("rejected", 2),
    ("refused", 2),
    ("throws", 2),
    ("throwing", 2),
    ("lag", 2),
    ("lagging", 2),
    ("laggy", 2),
    ("backing up", 2),
    ("piling up", 2),
    ("out of sync", 3),
    ("stopped", 2),
    ("keeps crash*", 3),
    ("keeps fail*", 3),
    ("crashloop*", 3),
    ("restart loop", 3),
    ("is empty", 2),
    ("are empty", 2),
    ("its empty", 2),
    ("empty page", 2),
    ("empty response", 2),
    ("default page", 3),
    ("welcome to nginx", 3),
    ("disappeared", 2),
    ("vanished", 2),
    ("degraded", 3),
    ("flaky", 2),
    ("dropping", 2),
    ("anyone else seeing", 2),
    ("anyone else getting", 2),
    ("anyone else having", 2),
    ("is it just me", 2),
    ("still down", 3),
    ("no responde", 3),
    ("no contesta", 3),
    // German
    ("funktioniert nicht", 3),
    ("geht nicht", 3),
    ("ladt nicht", 3),
    ("nicht erreichbar", 3),
    ("schlagt fehl", 3),
    ("ausgefallen", 3),
    ("dringend", 3),
    ("fehler", 2),
    ("fehlermeld*", 2),
    ("kaputt", 3),
    ("lauft nicht", 3),
    ("reagiert nicht", 3),
    ("absturz*", 3),
    ("abgesturzt", 3),
    ("sturzt ab", 3),
    ("keine verbindung", 3),
    ("hangt", 2),
    // Serbian
    ("ne radi", 3),
    ("pao", 3),
    ("pala", 3),
    ("hitno", 3),
    ("gresk*", 2),
    ("ne odgovara", 3),
    ("ne ucitava", 3),
    ("nedostup*", 3),
    ("puk*", 2),
    // Spanish
    ("no funciona", 3),
    ("caido", 3),
    ("no carga", 3),
    ("urgente", 3),
    ("no anda", 3),
    ("se cayo", 3),
    ("fallando", 3),
    ("falla", 2),
    ("fallo", 2),
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
    ("quick update", 3),
    ("status update", 3),
    ("finished", 2),
    ("completed", 2),
    ("smoothly", 3),
    ("went fine", 3),
    ("went well", 3),
    ("no downtime", 3),
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

/// Classifies `text` with the built-in rules plus `cfg`'s phrases.
pub fn classify(text: &str, cfg: &ClassifyConfig) -> Verdict {
    Rules::new(cfg).classify(text)
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

/// Lowercase, diacritics folded, apostrophes removed.
pub(crate) fn fold(text: &str) -> String {
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
