//! The incident brief: the evidence the on-call person would otherwise log
//! in for (`docker logs`, `docker inspect`, `df`, `top`, the journal),
//! gathered once when an incident opens and again for its follow-up, so
//! the alert itself says whether to get up.
//!
//! * [`gather`] (this file): what is gathered per check kind, all pieces at
//!   once, bounded in time: the brief gets at most
//!   `escalation.brief_budget_secs` and at most half of what is left of the
//!   cycle, so the task and the alert still go out in time. A piece that
//!   cannot be had by then says so; a log stream that hangs keeps the lines
//!   read until then.
//! * [`pieces`]: one builder per kind of evidence (container, log, engine,
//!   endpoint, volumes, processes, unit and journal, launchd job), over the
//!   health room's evidence functions.
//! * [`record`]: the agent's own record (streaks and recent results, the
//!   fixes tried, related incidents, silences that applied).
//! * [`diagnosis`]: a first diagnosis by the reply model, marked as a
//!   guess, or a summary templated from the facts.
//! * [`render`]: the brief for the alert (short), its thread and the task
//!   and card (full, capped), the audit trail and `explain`.
//!
//! Safety: every piece of outside text (a log line, a body, an error, a
//! process name, a silence's reason) passes `scrub::text` and loses its
//! control characters when it is gathered, before it is stored, rendered
//! or shown to the model; rendering puts it in code fences
//! (`text::fenced`). The brief goes only where escalation posts: the alert
//! channel, the task and the card.

mod diagnosis;
mod pieces;
mod record;
pub(crate) mod render;

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{EscalationConfig, EscalationState, Incident};
use crate::fix::ServiceSummary;
use crate::health::{Checks, HealthContext, HealthState, Status};
use crate::ollama::OllamaConfig;

/// A line of evidence is cut after this many characters.
pub(crate) const LINE_CHARS: usize = 200;
/// At most this many checks of a service are looked at (the failing ones
/// first): a service with many checks still gets a brief that fits.
const MAX_CHECKS: usize = 4;

/// The evidence of one incident, as gathered (scrubbed, cut) and kept in
/// the incident for the thread, the task, the follow-up and `explain`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Brief {
    /// When it was gathered (epoch ms).
    pub(crate) at_ms: i64,
    /// How long gathering took, the diagnosis included.
    pub(crate) took_ms: u64,
    /// The evidence, in the order shown.
    pub(crate) pieces: Vec<Piece>,
    /// The first diagnosis: a guess by the model, or the template.
    pub(crate) diagnosis: Diagnosis,
}

/// One piece of evidence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Piece {
    /// What kind: `container`, `log`, `engine`, `endpoint`, `body`,
    /// `volumes`, `processes`, `unit`, `journal`, `job`, `record`.
    pub(crate) kind: String,
    /// What it shows, in the agent's words and config names only.
    pub(crate) title: String,
    /// The lines: scrubbed, no control characters, each cut.
    pub(crate) lines: Vec<String>,
    /// Why it is missing or incomplete (not had in time, unreadable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
}

impl Piece {
    fn new(kind: &str, title: impl Into<String>) -> Piece {
        Piece {
            kind: kind.into(),
            title: title.into(),
            ..Piece::default()
        }
    }

    /// Adds a line of evidence (outside text is scrubbed here).
    fn line(&mut self, text: &str) {
        self.lines.push(clean(text));
    }

    /// Adds consecutive lines of one stream (a log, a journal, a body):
    /// scrubbed together first, so a secret that spans lines (a private
    /// key printed whole) goes whole, then line by line.
    fn block<S: AsRef<str>>(&mut self, lines: &[S]) {
        let joined = lines
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join("\n");
        for l in crate::scrub::text(&joined).lines() {
            self.line(l);
        }
    }

    /// Says why the piece is missing or incomplete.
    fn note(&mut self, why: &str) {
        self.note = Some(clean(why));
    }

    /// Lines read from the end of a stream (a log, a journal): when the
    /// brief must shrink, the oldest go first.
    fn keeps_the_end(&self) -> bool {
        matches!(self.kind.as_str(), "log" | "journal")
    }
}

/// The first diagnosis.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Diagnosis {
    /// Two or three sentences: scrubbed, one paragraph.
    pub(crate) text: String,
    /// The model that guessed; `None`: templated from the facts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) model: Option<String>,
    /// Why no model wrote it (off, unreachable, not in time), templated only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) no_model: Option<String>,
}

/// Outside text made fit to keep and show: secrets scrubbed, control
/// characters out (tabs become spaces), cut at [`LINE_CHARS`].
pub(crate) fn clean(text: &str) -> String {
    let scrubbed = crate::scrub::text(text);
    let flat: String = scrubbed
        .chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect();
    crate::text::cap(flat.trim_end(), LINE_CHARS)
}

/// What gathering reads, borrowed from the cycle. Without it (a caller
/// that has no health context) incidents carry no brief.
pub struct Sources<'a> {
    /// The Docker clients.
    pub(crate) health: &'a HealthContext,
    /// Streaks and recent results per check (the disk's growth too).
    pub(crate) health_state: &'a HealthState,
    /// `[ollama]`: the reply model writes the first diagnosis.
    pub(crate) ollama: &'a OllamaConfig,
    /// The cycle's deadline.
    pub(crate) deadline: tokio::time::Instant,
}

impl<'a> Sources<'a> {
    /// The sources of one cycle.
    pub(crate) fn new(
        health: &'a HealthContext,
        health_state: &'a HealthState,
        ollama: &'a OllamaConfig,
        deadline: tokio::time::Instant,
    ) -> Sources<'a> {
        Sources {
            health,
            health_state,
            ollama,
            deadline,
        }
    }

    /// When this brief must be done: the budget, and never past half of
    /// what is left of the cycle (the task, the alert and the saves come
    /// after it). `None`: no time is left at all.
    fn done_by(&self, budget: std::time::Duration) -> Option<tokio::time::Instant> {
        let now = tokio::time::Instant::now();
        let left = self.deadline.checked_duration_since(now)?;
        Some(now + budget.min(left / 2))
    }
}

/// What the brief is about.
pub(crate) struct Subject<'a> {
    /// The incident (key, service, why, since).
    pub(crate) incident: &'a Incident,
    /// This cycle's facts of its service, when it was checked.
    pub(crate) summary: Option<&'a ServiceSummary>,
    /// Incidents and silences, for the related ones.
    pub(crate) state: &'a EscalationState,
    /// The configured checks.
    pub(crate) checks: &'a Checks,
}

/// Gathers the brief of an incident: every piece at once, the evidence
/// until the first half of the time allowed, the diagnosis until the end
/// of it. Never fails: what could not be had is said in its piece.
pub(crate) async fn gather(
    src: &Sources<'_>,
    cfg: &EscalationConfig,
    subject: &Subject<'_>,
    now_ms: i64,
) -> Brief {
    let started = Instant::now();
    let by = src.done_by(cfg.brief_budget_secs.get());
    let evidence_by = by.map(|by| {
        let now = tokio::time::Instant::now();
        now + by.saturating_duration_since(now) / 2
    });
    let checks = subject_checks(subject, src.health_state);
    let mut pieces = Vec::new();
    let mut facts = diagnosis::Facts::default();
    match evidence_by {
        Some(ev_by) => {
            let gathered = futures_util::future::join_all(
                checks
                    .iter()
                    .map(|c| pieces::for_check(src, cfg, c, ev_by, now_ms)),
            )
            .await;
            for (p, f) in gathered {
                pieces.extend(p);
                facts.extend(f);
            }
            pieces.extend(pieces::engines(src, &checks, ev_by).await);
        }
        None => {
            let mut p = Piece::new("evidence", "evidence");
            p.note("no time was left in the cycle to gather it");
            pieces.push(p);
        }
    }
    pieces.push(record::piece(subject, src.health_state, now_ms));
    let diagnosis = match by {
        Some(by) if cfg.brief_diagnosis => {
            diagnosis::ask(src.ollama, subject, &pieces, &facts, by).await
        }
        Some(_) => {
            facts.template("the first diagnosis by the model is off (escalation.brief_diagnosis)")
        }
        None => facts.template("no time was left in the cycle"),
    };
    Brief {
        // The cycle's `now` is its start: the brief is gathered later.
        at_ms: chrono::Utc::now().timestamp_millis(),
        took_ms: started.elapsed().as_millis() as u64,
        pieces,
        diagnosis,
    }
}

/// The service's checks a brief looks at: the failing (or not ok) ones
/// first, at most [`MAX_CHECKS`].
fn subject_checks<'a>(
    subject: &Subject<'a>,
    state: &HealthState,
) -> Vec<&'a crate::health::CheckConfig> {
    let service = subject.incident.service.as_str();
    let bad = |name: &str| {
        state
            .checks
            .get(name)
            .is_some_and(|m| m.failing || m.last.last().is_some_and(|r| r.status != Status::Ok))
    };
    let mut mine: Vec<&crate::health::CheckConfig> = subject
        .checks
        .iter()
        .filter(|c| c.service() == service)
        .collect();
    mine.sort_by_key(|c| !bad(&c.name));
    mine.truncate(MAX_CHECKS);
    mine
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_spanning_lines_goes_whole() {
        let mut p = Piece::new("log", "log");
        p.block(&[
            "dumping key",
            "-----BEGIN EC PRIVATE KEY-----",
            "MHcCAQEEIBvJ3Qx",
            "-----END EC PRIVATE KEY-----",
            "done",
        ]);
        assert_eq!(
            p.lines,
            [
                "dumping key",
                "-----BEGIN EC PRIVATE KEY----- [redacted]",
                "done"
            ]
        );
    }

    #[test]
    fn clean_scrubs_and_flattens_outside_text() {
        let line = "connect postgres://app:hunter2@db/x\tfailed\u{1b}[31m token=abc123";
        let c = clean(line);
        assert!(!c.contains("hunter2") && !c.contains("abc123"), "{c}");
        assert!(!c.contains('\u{1b}') && !c.contains('\t'), "{c:?}");
        assert_eq!(clean(&"x ".repeat(500)).chars().count(), LINE_CHARS);
    }

    #[test]
    fn the_brief_never_takes_more_than_half_of_what_is_left() {
        let health = HealthContext::new(&crate::health::HealthConfig::default());
        let state = HealthState::default();
        let ollama = OllamaConfig::default();
        let now = tokio::time::Instant::now();
        let budget = std::time::Duration::from_secs(20);
        let src = Sources::new(
            &health,
            &state,
            &ollama,
            now + std::time::Duration::from_secs(8),
        );
        let by = src.done_by(budget).unwrap();
        assert!(
            by <= now + std::time::Duration::from_secs(4) + std::time::Duration::from_millis(50)
        );
        let roomy = Sources::new(
            &health,
            &state,
            &ollama,
            now + std::time::Duration::from_secs(600),
        );
        let by = roomy.done_by(budget).unwrap();
        assert!(by >= now + budget && by <= now + budget + std::time::Duration::from_secs(1));
        let late = Sources::new(
            &health,
            &state,
            &ollama,
            now - std::time::Duration::from_millis(1),
        );
        assert!(late.done_by(budget).is_none());
    }
}
