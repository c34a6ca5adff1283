//! The cycle report: one outcome per stage, so one stage's failure never
//! hides another's result, and the exit code follows from the report rather
//! than from the first `?` that fired.

use serde::{Deserialize, Serialize};

use crate::health::{CheckResult, Status};
use crate::stage::Stage;

/// How a stage ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// The stage did its work; the detail says how much.
    Ok(String),
    /// The stage did not run, for the reason given (not configured, deadline).
    Skipped(String),
    /// The stage ran but part of it could not be done (a dependency down).
    Degraded(String),
    /// The stage failed; the error chain.
    Failed(String),
}

impl Outcome {
    /// The one word used in the summary line.
    pub(crate) fn word(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::Skipped(_) => "skipped",
            Outcome::Degraded(_) => "degraded",
            Outcome::Failed(_) => "failed",
        }
    }

    /// The detail or reason.
    pub(crate) fn detail(&self) -> &str {
        match self {
            Outcome::Ok(d) | Outcome::Skipped(d) | Outcome::Degraded(d) | Outcome::Failed(d) => d,
        }
    }
}

/// One stage's entry in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StageReport {
    /// Which stage.
    pub(crate) stage: Stage,
    /// How it ended.
    #[serde(flatten)]
    pub(crate) outcome: Outcome,
    /// Wall time spent in the stage.
    pub(crate) ms: u64,
}

/// A stage that did its work with an optional dependency's documented
/// fallback: the LLM down, so the fallback labels posts and the template
/// answers; Planka down, so the task is filed without its card, which
/// waits in the outbox. Shown (the summary line, `status`, the metrics, one
/// warning per cycle) but never a degraded cycle: no `/fail` ping, no page.
/// Kept beside the stage's outcome rather than as an outcome of its own so
/// that an older binary still reads the state file (a rollback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Fallback {
    /// The stage.
    pub(crate) stage: Stage,
    /// What was down and what stood in for it.
    pub(crate) why: String,
}

/// What one cycle did; stored in the state file and summarised in one log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub(crate) struct CycleReport {
    /// Start of the cycle, epoch ms.
    pub(crate) started_ms: i64,
    /// Wall time of the whole cycle.
    pub(crate) duration_ms: u64,
    /// `run-once --dry-run`: nothing was written to any external system.
    pub(crate) dry_run: bool,
    /// The deadline cut work short; what was cut is in the stages.
    pub(crate) deadline_hit: bool,
    /// Stages in the order they ran.
    pub(crate) stages: Vec<StageReport>,
    /// The health results of this cycle.
    #[serde(default)]
    pub(crate) checks: Vec<CheckResult>,
    /// Named figures of this cycle (`mm_requests`, `posts_new`, ...).
    #[serde(default)]
    pub(crate) counts: std::collections::BTreeMap<String, u64>,
    /// Stages that did their work with an optional dependency's fallback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) fallbacks: Vec<Fallback>,
}

impl CycleReport {
    /// Appends a stage outcome.
    pub(crate) fn push(&mut self, stage: Stage, outcome: Outcome, ms: u64) {
        self.stages.push(StageReport { stage, outcome, ms });
    }

    /// Records that `stage` did its work with an optional dependency's
    /// documented fallback (the stage's outcome stays what it was).
    pub(crate) fn fallback(&mut self, stage: Stage, why: impl Into<String>) {
        self.fallbacks.push(Fallback {
            stage,
            why: why.into(),
        });
    }

    /// The worst stage outcome word: `ok`, `degraded` or `failed`.
    /// Skipped stages do not make a cycle degraded by themselves: an
    /// unconfigured optional dependency is the operator's choice; nor do
    /// [`Fallback`]s: an optional dependency handled by its fallback.
    pub(crate) fn overall(&self) -> &'static str {
        if self
            .stages
            .iter()
            .any(|s| matches!(s.outcome, Outcome::Failed(_)))
        {
            "failed"
        } else if self.deadline_hit
            || self
                .stages
                .iter()
                .any(|s| matches!(s.outcome, Outcome::Degraded(_)))
        {
            "degraded"
        } else {
            "ok"
        }
    }

    /// The one summary line of the activity log, e.g.
    /// `cycle ok in 41ms: mattermost=skipped health=ok(3 ok) save=ok`.
    pub(crate) fn summary_line(&self) -> String {
        let stages: Vec<String> = self
            .stages
            .iter()
            .map(|s| match &s.outcome {
                Outcome::Ok(d) if !d.is_empty() => format!("{}=ok({d})", s.stage),
                o => format!("{}={}", s.stage, o.word()),
            })
            .collect();
        format!(
            "cycle {}{}{} in {}ms: {}",
            self.overall(),
            if self.deadline_hit {
                " (deadline hit)"
            } else {
                ""
            },
            if self.dry_run { " [dry-run]" } else { "" },
            self.duration_ms,
            stages.join(" ")
        ) + &self.fallback_note()
    }

    /// ` [fallback: classify, tasks]` after the summary, when a stage used
    /// one.
    fn fallback_note(&self) -> String {
        if self.fallbacks.is_empty() {
            return String::new();
        }
        let stages: Vec<String> = self.fallbacks.iter().map(|f| f.stage.to_string()).collect();
        format!(" [fallback: {}]", stages.join(", "))
    }
}

/// Counts check results by status, as `3 ok, 1 critical`.
pub(crate) fn count_checks(checks: &[CheckResult]) -> String {
    let mut parts = Vec::new();
    for status in [Status::Ok, Status::Warn, Status::Critical, Status::Unknown] {
        let n = checks.iter().filter(|c| c.status == status).count();
        if n > 0 {
            parts.push(format!("{n} {}", status.as_str()));
        }
    }
    if parts.is_empty() {
        "no checks".to_string()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_beats_degraded_beats_ok() {
        let mut r = CycleReport::default();
        r.push(Stage::Mattermost, Outcome::Ok("x".into()), 1);
        r.push(Stage::Intel, Outcome::Skipped("not configured".into()), 0);
        assert_eq!(r.overall(), "ok");
        r.push(Stage::Health, Outcome::Degraded("down".into()), 0);
        assert_eq!(r.overall(), "degraded");
        r.push(Stage::Save, Outcome::Failed("boom".into()), 0);
        assert_eq!(r.overall(), "failed");
        assert!(r
            .summary_line()
            .starts_with("cycle failed in 0ms: mattermost=ok(x) intel=skipped"));
    }

    #[test]
    fn a_fallback_is_shown_but_does_not_degrade_the_cycle() {
        let mut r = CycleReport::default();
        r.push(
            Stage::Classify,
            Outcome::Ok("0 by llm, 3 by fallback".into()),
            1,
        );
        r.fallback(Stage::Classify, "the LLM is unreachable");
        assert_eq!(r.overall(), "ok");
        assert!(
            r.summary_line()
                .ends_with("classify=ok(0 by llm, 3 by fallback) [fallback: classify]"),
            "{}",
            r.summary_line()
        );
        // A state file written with fallbacks reads back; one without reads
        // as none (an older version's).
        let back: CycleReport = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let old: CycleReport = serde_json::from_str(
            r#"{"started_ms": 1, "duration_ms": 2,
            "dry_run": false, "deadline_hit": false, "stages": []}"#,
        )
        .unwrap();
        assert!(old.fallbacks.is_empty());
    }

    #[test]
    fn outcome_serialises_with_its_detail() {
        let s = StageReport {
            stage: Stage::Health,
            outcome: Outcome::Skipped("why".into()),
            ms: 3,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["stage"], "health");
        assert_eq!(v["outcome"], "skipped");
        assert_eq!(v["detail"], "why");
        let back: StageReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }
}
