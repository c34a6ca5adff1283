//! The data and text behind `ops-agent health [--json] [--check NAME]` and
//! `ops-agent explain <check>`. The lead's CLI calls these; nothing here
//! prints or exits.

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::guard::{CheckMemo, HealthState};
use super::{effective_checks, CheckConfig, CheckResult, Status};
use crate::fix::{
    budget, decide, Attempt, Budget, FixConfig, FixDecision, FixFacts, FixHistory, FixOptions,
};

/// `health --json`: the results and the exit rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// The worst status, blocked checks included.
    pub worst: Status,
    /// Something is critical: `health` exits non-zero.
    pub critical: bool,
    /// One entry per check, in run order.
    pub checks: Vec<CheckResult>,
}

impl HealthReport {
    /// Builds the report from a run.
    pub fn new(results: Vec<CheckResult>) -> HealthReport {
        HealthReport {
            worst: results.iter().map(|r| r.status).max().unwrap_or(Status::Ok),
            critical: results.iter().any(|r| r.status == Status::Critical),
            checks: results,
        }
    }

    /// The process exit code for `health`: 1 when something is critical
    /// (the runbook's health-check.js contract), else 0.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.critical)
    }

    /// The table: check, kind, status, latency, reason.
    pub fn render_text(&self) -> String {
        let w = self
            .checks
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = format!(
            "{:<w$}  {:<13}  {:<8}  {:>7}  REASON\n",
            "CHECK", "KIND", "STATUS", "MS"
        );
        for r in &self.checks {
            out.push_str(&format!(
                "{:<w$}  {:<13}  {:<8}  {:>7}  {}\n",
                r.name,
                r.kind.as_str(),
                if r.blocked_by.is_some() {
                    "blocked"
                } else {
                    r.status.as_str()
                },
                r.latency_ms,
                r.reason
            ));
        }
        out.push_str(&format!(
            "overall: {}{}\n",
            self.worst.as_str(),
            if self.critical { " (exit 1)" } else { "" }
        ));
        out
    }
}

/// For `health --check NAME`: the named check plus its ancestors (so the
/// parent blocking still works); the caller keeps only `NAME`'s result.
pub fn select_checks(checks: &[CheckConfig], name: &str) -> Result<Vec<CheckConfig>> {
    let all = effective_checks(checks);
    let Some(mut cur) = all.iter().find(|c| c.name == name) else {
        bail!(
            "no check named '{name}' (checks: {})",
            all.iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let mut chosen = vec![cur.clone()];
    while let Some(p) = cur.parent.as_deref() {
        match all.iter().find(|c| c.name == p) {
            Some(parent) if !chosen.iter().any(|c| c.name == p) => {
                chosen.insert(0, parent.clone());
                cur = parent;
            }
            _ => break,
        }
    }
    Ok(chosen)
}

/// `ops-agent explain <check>`: everything the agent knows about a check
/// and why it would or would not act now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The check's config.
    pub check: CheckConfig,
    /// Its parent chain, nearest first.
    pub parents: Vec<String>,
    /// Streaks and last results (none before the first cycle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memo: Option<CheckMemo>,
    /// The check whose fix acts for the service, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix_check: Option<String>,
    /// The fix budget now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// The service's last attempts, newest last.
    pub attempts: Vec<Attempt>,
    /// What the cycle would do now, given the last results.
    pub decision: FixDecision,
    /// The same in words, with the flap guard's part.
    pub why: String,
}

/// Builds the explanation from state alone (no probe runs). Pure.
pub fn explain(
    name: &str,
    checks: &[CheckConfig],
    state: &HealthState,
    history: &FixHistory,
    policy: &FixConfig,
    now: DateTime<Utc>,
) -> Result<Explanation> {
    let all = effective_checks(checks);
    let chain = select_checks(&all, name)?;
    let check = chain
        .last()
        .cloned()
        .expect("select_checks returns the check");
    let parents: Vec<String> = chain.iter().rev().skip(1).map(|c| c.name.clone()).collect();
    let memo = state.checks.get(name).cloned();
    let service = check.service().to_string();
    let fix = crate::fix::service_fix(&all, &service);
    let now_ms = now.timestamp_millis();
    let blocked_by = parents
        .iter()
        .rev()
        .find(|p| {
            state
                .checks
                .get(*p)
                .is_some_and(|m| m.last.last().is_some_and(|r| r.status.is_failure()))
        })
        .cloned();
    let last_status = memo.as_ref().and_then(|m| m.last.last()).map(|r| r.status);
    let facts = FixFacts {
        starting: memo
            .as_ref()
            .and_then(|m| m.last.last())
            .is_some_and(|r| r.reason.contains("starting") && r.status == Status::Warn),
        blocked_by: blocked_by.clone(),
    };
    let decision = decide(
        &service,
        fix,
        history,
        policy,
        now_ms,
        &facts,
        FixOptions::default(),
    );
    let failing = memo.as_ref().is_some_and(|m| m.failing);
    let why = match (&memo, failing) {
        (None, _) => "never checked yet: no cycle has run this check".to_string(),
        (Some(_), _) if blocked_by.is_some() => format!(
            "blocked by {}: neither fixed nor counted while it fails",
            blocked_by.as_deref().unwrap_or_default()
        ),
        (Some(m), false) => {
            if last_status.is_some_and(Status::is_failure) {
                format!(
                    "failed {} cycle(s) in a row, failing after {}: no action yet",
                    m.consecutive_failures,
                    check.fail_after()
                )
            } else {
                "healthy: nothing to do".to_string()
            }
        }
        (Some(m), true) => format!(
            "failing since {} ({} failed cycles); {}",
            m.failing_since_ms
                .map(crate::time::rfc3339_ms)
                .unwrap_or_else(|| "?".into()),
            m.consecutive_failures,
            decision.describe()
        ),
    };
    Ok(Explanation {
        fix_check: fix.map(|(c, _)| c.name.clone()),
        budget: fix.map(|_| budget(&service, history, policy, now_ms)),
        attempts: history
            .attempts
            .get(&service)
            .map(|v| v.iter().rev().take(5).rev().cloned().collect())
            .unwrap_or_default(),
        check,
        parents,
        memo,
        decision,
        why,
    })
}

impl Explanation {
    /// The text form.
    pub fn render_text(&self) -> String {
        let c = &self.check;
        let mut out = format!(
            "{} ({}), service {}\n",
            c.name,
            c.kind.as_str(),
            c.service()
        );
        if !self.parents.is_empty() {
            out.push_str(&format!("parents: {}\n", self.parents.join(" -> ")));
        }
        out.push_str(&format!(
            "flap guard: failing after {} failed cycle(s), recovered after {} good one(s)\n",
            c.fail_after(),
            c.recover_after()
        ));
        match &self.memo {
            None => out.push_str("no results yet\n"),
            Some(m) => {
                out.push_str(&format!(
                    "streaks: {} failed, {} good; failing: {}{}\n",
                    m.consecutive_failures,
                    m.consecutive_successes,
                    if m.failing { "yes" } else { "no" },
                    m.failing_since_ms
                        .map(|t| format!(" since {}", crate::time::rfc3339_ms(t)))
                        .unwrap_or_default()
                ));
                for r in m.last.iter().rev() {
                    out.push_str(&format!(
                        "  {}  {:<8} {}\n",
                        crate::time::rfc3339_ms(r.at_ms),
                        r.status.as_str(),
                        r.reason
                    ));
                }
                if !m.restarts_seen_ms.is_empty() {
                    out.push_str(&format!(
                        "unexpected restarts in the last day: {}\n",
                        m.restarts_seen_ms.len()
                    ));
                }
            }
        }
        match (&self.fix_check, &self.budget) {
            (Some(fc), Some(b)) => out.push_str(&format!(
                "fix: on check {fc}; budget {} used, {} left{}\n",
                b.used,
                b.left,
                b.next_allowed_at_ms
                    .map(|t| format!(", next allowed at {}", crate::time::rfc3339_ms(t)))
                    .unwrap_or_default()
            )),
            _ => out.push_str("fix: none configured\n"),
        }
        for a in &self.attempts {
            out.push_str(&format!(
                "  {}  {} {} ({})\n",
                crate::time::rfc3339_ms(a.at_ms),
                a.action,
                a.outcome.as_str(),
                a.issue
            ));
        }
        out.push_str(&format!("now: {}\n", self.why));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{result_of, CheckKind};

    #[test]
    fn table_and_exit_code() {
        let mut c = CheckConfig::new("web", CheckKind::Docker);
        c.container = Some("web".into());
        let e = CheckConfig::new("docker-engine", CheckKind::DockerEngine);
        let mut blocked = result_of(&c, Status::Unknown, "blocked by docker-engine".into(), 3);
        blocked.blocked_by = Some("docker-engine".into());
        let r = HealthReport::new(vec![
            result_of(&e, Status::Critical, "Docker unreachable".into(), 2),
            blocked,
        ]);
        assert_eq!(r.exit_code(), 1);
        let t = r.render_text();
        assert!(
            t.contains("blocked") && t.contains("overall: unknown (exit 1)"),
            "{t}"
        );
        let ok = HealthReport::new(vec![result_of(&e, Status::Warn, "x".into(), 1)]);
        assert_eq!(ok.exit_code(), 0);
    }

    #[test]
    fn select_keeps_ancestors_and_names_unknown_checks() {
        let mut c = CheckConfig::new("web", CheckKind::Docker);
        c.container = Some("web".into());
        let mut h = CheckConfig::new("web-http", CheckKind::Http);
        h.url = Some("http://x/".into());
        h.parent = Some("web".into());
        let sel = select_checks(&[c.clone(), h.clone()], "web-http").unwrap();
        let names: Vec<_> = sel.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["docker-engine", "web", "web-http"]);
        let err = select_checks(&[c], "nope").unwrap_err().to_string();
        assert!(err.contains("'nope'") && err.contains("web"), "{err}");
    }

    #[test]
    fn explain_says_why() {
        let mut c = CheckConfig::new("web", CheckKind::Docker);
        c.container = Some("web".into());
        c.fix = Some(crate::fix::FixSpec::new(
            crate::fix::FixAction::RestartContainer,
        ));
        let checks = vec![c.clone()];
        let mut st = HealthState::default();
        let h = FixHistory::default();
        let now = Utc::now();
        let e = explain("web", &checks, &st, &h, &FixConfig::default(), now).unwrap();
        assert!(e.why.contains("never checked"), "{}", e.why);
        for _ in 0..2 {
            let engine = CheckConfig::new("docker-engine", CheckKind::DockerEngine);
            st.record(
                &checks,
                &[
                    result_of(&engine, Status::Ok, "ok".into(), 1),
                    result_of(&c, Status::Critical, "web exited".into(), 1),
                ],
                &h,
                now,
            );
        }
        let e = explain("web", &checks, &st, &h, &FixConfig::default(), now).unwrap();
        assert_eq!(e.decision, FixDecision::Run);
        assert_eq!(e.parents, ["docker-engine"]);
        let text = e.render_text();
        assert!(
            text.contains("failing since") && text.contains("fix runs now"),
            "{text}"
        );
        assert!(text.contains("budget 0 used, 3 left"), "{text}");
    }
}
