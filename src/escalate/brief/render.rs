//! The brief, said for each place it goes. Pure.
//!
//! Only the agent's own words and config names (checks, containers,
//! units) are written as markdown; every line of evidence, every note and
//! the diagnosis are inside code fences (`text::fenced`), so a log line
//! can neither format, link nor mention. A rendering that would pass its
//! cap sheds lines first (the oldest of a log, the last of anything
//! else, from the longest piece), then is cut with its fence closed.

use super::{Brief, Diagnosis, Piece};
use crate::text::fenced;
use crate::time::rfc3339_ms;

/// The whole brief in the alert's thread (bytes).
pub(crate) const CHAT_CAP: usize = 3 * 1024;
/// The task's description and the card, details included (bytes).
pub(crate) const TASK_CAP: usize = 8 * 1024;
/// Lines of evidence the alert itself quotes.
const TELLING_LINES: usize = 3;

/// Words that make a log line worth reading first, with their weight.
const TELLING_WORDS: &[(&str, u32)] = &[
    ("panic", 3),
    ("fatal", 3),
    ("traceback", 3),
    ("out of memory", 3),
    ("oomkilled: yes", 3),
    ("segfault", 3),
    ("error", 2),
    ("exception", 2),
    ("killed", 2),
    ("refused", 2),
    ("denied", 2),
    ("cannot", 2),
    ("can't", 2),
    ("failed", 2),
    ("failure", 2),
    ("crash", 2),
    ("abort", 2),
    ("timed out", 2),
    ("timeout", 1),
    ("unavailable", 1),
    ("no such", 1),
    ("not found", 1),
    ("warn", 1),
    ("exit", 1),
];

/// The `n` most telling of `lines`, in their order: the heaviest error
/// words first, the latest line among equals; the last lines when none
/// says anything alarming.
pub(crate) fn most_telling(lines: &[String], n: usize) -> Vec<String> {
    let score = |l: &str| {
        let l = l.to_ascii_lowercase();
        TELLING_WORDS
            .iter()
            .filter(|(w, _)| l.contains(w))
            .map(|(_, s)| *s)
            .max()
            .unwrap_or(0)
    };
    let mut ranked: Vec<(u32, usize)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (score(l), i))
        .collect();
    ranked.sort_by(|a, b| b.cmp(a));
    let mut picked: Vec<usize> = ranked.into_iter().take(n).map(|(_, i)| i).collect();
    picked.sort_unstable();
    picked.into_iter().map(|i| lines[i].clone()).collect()
}

/// What the alert itself carries: the diagnosis and the three most
/// telling lines; the full brief follows in the thread.
pub(crate) fn alert_part(brief: &Brief) -> String {
    let mut out = diagnosis_block(&brief.diagnosis);
    let telling = telling_lines(brief);
    if !telling.is_empty() {
        out.push_str("\n**Most telling lines:**\n");
        out.push_str(&fenced(&telling.join("\n")));
        out.push('\n');
    }
    out.push_str("The full incident brief is in this thread.\n");
    out
}

/// The state line of the first piece that has one, then the most
/// telling lines of the logs, journals and bodies.
fn telling_lines(brief: &Brief) -> Vec<String> {
    let mut out: Vec<String> = brief
        .pieces
        .iter()
        .find(|p| {
            matches!(p.kind.as_str(), "container" | "endpoint" | "unit" | "job")
                && !p.lines.is_empty()
        })
        .map(|p| p.lines[0].clone())
        .into_iter()
        .collect();
    let streams: Vec<String> = brief
        .pieces
        .iter()
        .filter(|p| matches!(p.kind.as_str(), "log" | "journal" | "body"))
        .flat_map(|p| p.lines.iter().cloned())
        .collect();
    out.extend(most_telling(&streams, TELLING_LINES - out.len()));
    if out.len() < TELLING_LINES {
        let rest: Vec<String> = brief
            .pieces
            .iter()
            .filter(|p| p.kind != "record")
            .flat_map(|p| p.lines.iter().skip(1).cloned())
            .collect();
        let room = TELLING_LINES - out.len();
        out.extend(rest.into_iter().take(room));
    }
    out
}

fn diagnosis_block(d: &Diagnosis) -> String {
    match &d.model {
        Some(model) => format!(
            "**First diagnosis: a guess by the model {model}, not a fact.** Check it against the evidence.\n{}\n",
            fenced(&d.text)
        ),
        None => {
            let why = d
                .no_model
                .as_deref()
                .map(|w| format!("\n(no model's guess: {w})"))
                .unwrap_or_default();
            format!(
                "**Summary from the facts** (templated by the agent, not a diagnosis):\n{}\n",
                fenced(&format!("{}{why}", d.text))
            )
        }
    }
}

/// A piece as it is shown, with how many lines it has shed.
struct Shown<'a> {
    piece: &'a Piece,
    lines: std::collections::VecDeque<&'a str>,
    dropped: usize,
}

impl Shown<'_> {
    fn render(&self) -> String {
        let mut body: Vec<String> = Vec::with_capacity(self.lines.len() + 2);
        let dropped = match (self.dropped, self.piece.keeps_the_end()) {
            (0, _) => None,
            (n, true) => Some(format!("({n} earlier lines left out)")),
            (n, false) => Some(format!("({n} more lines left out)")),
        };
        if self.piece.keeps_the_end() {
            body.extend(dropped.clone());
        }
        body.extend(self.lines.iter().map(|l| l.to_string()));
        if !self.piece.keeps_the_end() {
            body.extend(dropped);
        }
        if let Some(n) = &self.piece.note {
            body.push(format!("({n})"));
        }
        if body.is_empty() {
            body.push("(nothing)".into());
        }
        format!("**{}**\n{}\n\n", self.piece.title, fenced(&body.join("\n")))
    }

    fn shed(&mut self) {
        if self.piece.keeps_the_end() {
            self.lines.pop_front();
        } else {
            self.lines.pop_back();
        }
        self.dropped += 1;
    }
}

/// The whole brief as markdown, at most `cap` bytes: for the alert's
/// thread ([`CHAT_CAP`]) and, after the details, the task and the card
/// ([`TASK_CAP`]).
pub(crate) fn markdown(brief: &Brief, key: &str, cap: usize) -> String {
    let head = format!(
        "**Incident brief** for {key}, gathered {} in {} ms\n\n{}\n",
        rfc3339_ms(brief.at_ms),
        brief.took_ms,
        diagnosis_block(&brief.diagnosis)
    );
    let mut shown: Vec<Shown> = brief
        .pieces
        .iter()
        .map(|p| Shown {
            piece: p,
            lines: p.lines.iter().map(String::as_str).collect(),
            dropped: 0,
        })
        .collect();
    let total =
        |shown: &[Shown]| head.len() + shown.iter().map(|s| s.render().len()).sum::<usize>();
    while total(&shown) > cap {
        let Some(longest) = shown
            .iter_mut()
            .filter(|s| s.lines.len() > 1)
            .max_by_key(|s| s.lines.iter().map(|l| l.len()).sum::<usize>())
        else {
            break;
        };
        longest.shed();
    }
    let mut out = head;
    for s in &shown {
        out.push_str(&s.render());
    }
    cut(out.trim_end(), cap)
}

/// At most `cap` bytes, cut on a character boundary, an open fence closed.
fn cut(text: &str, cap: usize) -> String {
    if text.len() <= cap {
        return text.to_string();
    }
    const MARK: &str = "\n(brief cut here)";
    const CLOSE: &str = "\n```";
    let mut end = cap.saturating_sub(MARK.len() + CLOSE.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = text[..end].to_string();
    if out.matches("```").count() % 2 == 1 {
        out.push_str(CLOSE);
    }
    out.push_str(MARK);
    out
}

/// The brief for the model: plain lines under each title.
pub(crate) fn prompt(pieces: &[Piece]) -> String {
    let mut out = String::new();
    for p in pieces {
        out.push_str(&format!("## {}\n", p.title));
        for l in &p.lines {
            out.push_str(l);
            out.push('\n');
        }
        if let Some(n) = &p.note {
            out.push_str(&format!("({n})\n"));
        }
    }
    out
}

/// The brief for a terminal (`ops-agent explain`): plain text, indented.
pub(crate) fn text(brief: &Brief, key: &str) -> String {
    let d = &brief.diagnosis;
    let mut out = format!(
        "latest incident brief ({key}, gathered {} in {} ms)\n",
        rfc3339_ms(brief.at_ms),
        brief.took_ms
    );
    match &d.model {
        Some(m) => out.push_str(&format!(
            "  first diagnosis (a guess by the model {m}, not a fact): {}\n",
            d.text
        )),
        None => out.push_str(&format!(
            "  summary from the facts (no model's guess{}): {}\n",
            d.no_model
                .as_deref()
                .map(|w| format!(": {w}"))
                .unwrap_or_default(),
            d.text
        )),
    }
    for p in &brief.pieces {
        out.push_str(&format!("  {}:\n", p.title));
        for l in &p.lines {
            out.push_str(&format!("    {l}\n"));
        }
        if let Some(n) = &p.note {
            out.push_str(&format!("    ({n})\n"));
        }
    }
    out
}

/// What was gathered, for the audit trail: each piece's kind and size and
/// why it is incomplete, and who wrote the diagnosis; never the lines.
pub(crate) fn gathered(brief: &Brief) -> String {
    let pieces: Vec<String> = brief
        .pieces
        .iter()
        .map(|p| {
            let size = match p.lines.len() {
                1 => "1 line".to_string(),
                n => format!("{n} lines"),
            };
            match &p.note {
                Some(n) => format!("{} {size} ({})", p.kind, crate::text::cap(n, 60)),
                None => format!("{} {size}", p.kind),
            }
        })
        .collect();
    let by = match &brief.diagnosis.model {
        Some(m) => format!("a guess by {m}"),
        None => "templated".to_string(),
    };
    format!("{}; diagnosis: {by}", pieces.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(kind: &str, title: &str, lines: &[&str]) -> Piece {
        Piece {
            kind: kind.into(),
            title: title.into(),
            lines: lines.iter().map(|l| l.to_string()).collect(),
            note: None,
        }
    }

    fn brief(log_lines: usize) -> Brief {
        let log: Vec<String> = (0..log_lines)
            .map(|i| format!("{i:03} worker tick, all fine, nothing to see on this line at all"))
            .collect();
        let mut log_piece = piece("log", "log of web", &[]);
        log_piece.lines = log;
        log_piece.lines[log_lines / 2] = "ERROR cannot open /data/queue.db".into();
        Brief {
            at_ms: 1_700_000_000_000,
            took_ms: 12,
            pieces: vec![
                piece(
                    "container",
                    "container web",
                    &[
                        "state: exited, exit code 3, OOMKilled: no",
                        "restart count: 2",
                    ],
                ),
                log_piece,
                piece("record", "the agent's record", &["failing since x"]),
            ],
            diagnosis: Diagnosis {
                text: "Likely the queue file is missing.".into(),
                model: Some("qwen2.5-coder:32b".into()),
                no_model: None,
            },
        }
    }

    #[test]
    fn telling_lines_prefer_errors_then_the_latest() {
        let lines: Vec<String> = ["start", "ERROR x", "tick", "panic: y", "tick 2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(most_telling(&lines, 2), ["ERROR x", "panic: y"]);
        let calm: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(most_telling(&calm, 2), ["b", "c"]);
        let a = alert_part(&brief(30));
        assert!(
            a.contains("a guess by the model qwen2.5-coder:32b, not a fact"),
            "{a}"
        );
        assert!(
            a.contains("state: exited, exit code 3") && a.contains("ERROR cannot open"),
            "{a}"
        );
    }

    #[test]
    fn the_rendering_keeps_its_cap_and_sheds_the_oldest_log_lines_first() {
        for (lines, cap) in [(30, CHAT_CAP), (300, CHAT_CAP), (300, TASK_CAP), (5, 600)] {
            let md = markdown(&brief(lines), "web:web@x", cap);
            assert!(md.len() <= cap, "{lines} lines, cap {cap}: {}", md.len());
            assert_eq!(md.matches("```").count() % 2, 0, "{md}");
        }
        let md = markdown(&brief(300), "web:web@x", CHAT_CAP);
        assert!(md.contains("earlier lines left out"), "{md}");
        assert!(
            md.contains("299 worker tick"),
            "the newest line stays: {md}"
        );
        assert!(!md.contains("000 worker tick"), "the oldest goes: {md}");
        assert!(
            md.contains("restart count: 2") && md.contains("failing since x"),
            "{md}"
        );
        let whole = markdown(&brief(10), "web:web@x", TASK_CAP);
        assert!(
            !whole.contains("left out") && whole.contains("000 worker tick"),
            "{whole}"
        );
    }

    #[test]
    fn a_templated_summary_says_it_is_no_diagnosis() {
        let mut b = brief(3);
        b.diagnosis = Diagnosis {
            text: "The container web is exited.".into(),
            model: None,
            no_model: Some("the model could not be asked: connection refused".into()),
        };
        let md = markdown(&b, "k", CHAT_CAP);
        assert!(md.contains("**Summary from the facts** (templated"), "{md}");
        assert!(md.contains("connection refused"), "{md}");
        assert!(!md.contains("guess by"), "{md}");
        assert!(
            gathered(&b).ends_with("diagnosis: templated"),
            "{}",
            gathered(&b)
        );
        assert!(text(&b, "k").contains("summary from the facts"));
    }
}
