//! What the fix rooms show an operator: `fix --history` and `explain`.
//! Pure: data in, data and text out; the commands print.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::history::{Attempt, FixHistory};
use super::policy::{budget, decide, Budget, FixConfig, FixDecision, FixFacts, FixOptions};
use crate::health::{CheckConfig, CheckMemo, Checks, HealthState, Status};

/// One service's window, for `ops-agent fix --history [--json]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceHistory {
    /// The service.
    service: String,
    /// The budget now.
    budget: Budget,
    /// Attempts inside the window, oldest first.
    in_window: Vec<Attempt>,
    /// The latest attempt, even outside the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    last: Option<Attempt>,
}

/// The data behind `fix --history`. Pure.
pub fn history_view(history: &FixHistory, policy: &FixConfig, now_ms: i64) -> Vec<ServiceHistory> {
    history
        .attempts
        .keys()
        .map(|s| ServiceHistory {
            service: s.clone(),
            budget: budget(s, history, policy, now_ms),
            in_window: history
                .in_window(s, now_ms, policy.window_ms())
                .into_iter()
                .cloned()
                .collect(),
            last: history.last(s).cloned(),
        })
        .collect()
}

/// `fix --history` as text.
pub fn render_history(view: &[ServiceHistory], policy: &FixConfig) -> String {
    if view.is_empty() {
        return "No fix attempts recorded.\n".to_string();
    }
    let mut out = String::new();
    for s in view {
        out.push_str(&format!(
            "{}: {} of {} attempts used in the last {} min, {} left{}\n",
            s.service,
            s.budget.used,
            policy.max_attempts_per_hour,
            policy.window_mins,
            s.budget.left,
            s.budget
                .next_allowed_at_ms
                .map(|t| format!(", next allowed at {}", crate::time::rfc3339_ms(t)))
                .unwrap_or_default()
        ));
        let shown: Vec<&Attempt> = if s.in_window.is_empty() {
            s.last.iter().collect()
        } else {
            s.in_window.iter().collect()
        };
        for a in shown {
            out.push_str(&format!(
                "  {}  {:<17} {:<8} {}{}\n",
                crate::time::rfc3339_ms(a.at_ms),
                a.action,
                a.outcome.as_str(),
                a.issue,
                a.detail
                    .as_deref()
                    .map(|d| format!(" -> {d}"))
                    .unwrap_or_default()
            ));
        }
    }
    out
}

/// `ops-agent explain <check>`: everything the agent knows about a check
/// and why it would or would not act now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Explanation {
    /// The check's config.
    check: CheckConfig,
    /// Its parent chain, nearest first.
    parents: Vec<String>,
    /// Streaks and last results (none before the first cycle).
    #[serde(skip_serializing_if = "Option::is_none")]
    memo: Option<CheckMemo>,
    /// The check whose fix acts for the service, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    fix_check: Option<String>,
    /// The fix budget now.
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<Budget>,
    /// The service's last attempts, newest last.
    attempts: Vec<Attempt>,
    /// What the cycle would do now, given the last results.
    decision: FixDecision,
    /// The same in words, with the flap guard's part.
    why: String,
}

/// Builds the explanation from state alone (no probe runs). Pure.
pub(crate) fn explain(
    name: &str,
    checks: &Checks,
    state: &HealthState,
    silenced_until_ms: Option<i64>,
    history: &FixHistory,
    policy: &FixConfig,
    now: DateTime<Utc>,
) -> Result<Explanation> {
    let chain = crate::health::view::select_checks(checks, name)?;
    let check = chain
        .last()
        .cloned()
        .expect("select_checks returns the check");
    let parents: Vec<String> = chain.iter().rev().skip(1).map(|c| c.name.clone()).collect();
    let memo = state.checks.get(name).cloned();
    let service = check.service().to_string();
    let fix = checks.service_fix(&service);
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
        silenced_until_ms,
        crash_loop: checks
            .iter()
            .filter(|c| c.service() == service)
            .find_map(|c| state.checks.get(&c.name)?.crash_loop.clone()),
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
    // A silence overrides whatever the streaks say: say it first.
    let why = match &decision {
        FixDecision::SkipSilenced { .. } => format!("{}; {why}", decision.describe()),
        _ => why,
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
    pub(crate) fn render_text(&self) -> String {
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
    use super::super::history::testing::history;
    use super::*;
    use crate::health::run::result_of;
    use crate::health::CheckKind;

    const MIN: i64 = 60_000;

    #[test]
    fn history_text_names_budget() {
        let p = FixConfig::default();
        let now = 1_000 * MIN;
        let h = history("s", &[now - 59 * MIN, now - 30 * MIN, now - MIN]);
        let text = render_history(&history_view(&h, &p, now), &p);
        assert!(
            text.contains("s: 3 of 3 attempts used in the last 60 min, 0 left, next allowed at"),
            "{text}"
        );
    }

    #[test]
    fn explain_says_why() {
        let mut c = CheckConfig::new("web", CheckKind::Docker);
        c.container = Some("web".into());
        c.fix = Some(crate::fix::FixSpec::new(
            crate::fix::FixAction::RestartContainer,
        ));
        let checks = Checks::from(vec![c.clone()]);
        let mut st = HealthState::default();
        let h = FixHistory::default();
        let now = Utc::now();
        let e = explain("web", &checks, &st, None, &h, &FixConfig::default(), now).unwrap();
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
        let e = explain("web", &checks, &st, None, &h, &FixConfig::default(), now).unwrap();
        assert_eq!(e.decision, FixDecision::Run);
        assert_eq!(e.parents, ["docker-engine"]);
        let text = e.render_text();
        assert!(
            text.contains("failing since") && text.contains("fix runs now"),
            "{text}"
        );
        assert!(text.contains("budget 0 used, 3 left"), "{text}");
    }

    #[test]
    fn explain_names_a_silence() {
        let mut c = CheckConfig::new("web", CheckKind::Docker);
        c.container = Some("web".into());
        c.fix = Some(crate::fix::FixSpec::new(
            crate::fix::FixAction::RestartContainer,
        ));
        let checks = Checks::from(vec![c]);
        let now = Utc::now();
        let until = now.timestamp_millis() + 3_600_000;
        let h = FixHistory::default();
        let st = HealthState::default();
        let e = explain(
            "web",
            &checks,
            &st,
            Some(until),
            &h,
            &FixConfig::default(),
            now,
        )
        .unwrap();
        assert_eq!(e.decision, FixDecision::SkipSilenced { until_ms: until });
        assert!(
            e.render_text().contains("silenced until"),
            "{}",
            e.render_text()
        );
    }
}
