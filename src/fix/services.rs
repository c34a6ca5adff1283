//! Per service, what the escalation stage needs: health verdicts and fix
//! facts joined (is it failing, since when, what was tried, what budget is
//! left). Pure.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::history::{Attempt, FixHistory};
use super::policy::{budget, Budget, FixConfig};
use super::run::FixReport;
use crate::health::guard::{Change, Verdict};
use crate::health::{Checks, Status};

/// Per service, what the escalation stage needs: is it failing, since
/// when, how many failed cycles, what was tried, what budget is left.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSummary {
    /// The service.
    pub service: String,
    /// The worst status of its checks.
    pub status: Status,
    /// Some check of it is failing (flap-guarded, not blocked).
    pub failing: bool,
    /// The service became failing this cycle, or recovered this cycle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// The earliest `failing_since` of its failing checks (epoch ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<i64>,
    /// The longest run of failed cycles among its checks.
    pub consecutive_failures: u32,
    /// All its failing checks are blocked by this parent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<String>,
    /// `name: reason` of each check that is not ok.
    pub problems: Vec<String>,
    /// A fix is configured.
    pub has_fix: bool,
    /// This cycle's fix decision and outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<FixReport>,
    /// Attempts inside the window (what was tried).
    pub tried: Vec<Attempt>,
    /// The fix budget now (when a fix is configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

/// Groups the verdicts by service (config order) with the fix facts. Pure.
pub fn summarize(
    checks: &Checks,
    verdicts: &[Verdict],
    fixes: &[FixReport],
    history: &FixHistory,
    policy: &FixConfig,
    now: DateTime<Utc>,
) -> Vec<ServiceSummary> {
    let now_ms = now.timestamp_millis();
    let mut order: Vec<&str> = Vec::new();
    for v in verdicts {
        if !order.contains(&v.result.service.as_str()) {
            order.push(&v.result.service);
        }
    }
    order
        .into_iter()
        .map(|service| {
            let mine: Vec<&Verdict> = verdicts
                .iter()
                .filter(|v| v.result.service == service)
                .collect();
            let failing: Vec<&&Verdict> = mine.iter().filter(|v| v.failing).collect();
            let change = if !failing.is_empty()
                && failing
                    .iter()
                    .all(|v| v.change == Some(Change::BecameFailing))
            {
                Some(Change::BecameFailing)
            } else if failing.is_empty() && mine.iter().any(|v| v.change == Some(Change::Recovered))
            {
                Some(Change::Recovered)
            } else {
                None
            };
            let bad: Vec<&&Verdict> = mine
                .iter()
                .filter(|v| v.result.status != Status::Ok)
                .collect();
            let blocked_by = (!bad.is_empty() && bad.iter().all(|v| v.result.blocked_by.is_some()))
                .then(|| bad[0].result.blocked_by.clone())
                .flatten();
            let has_fix = checks.service_fix(service).is_some();
            ServiceSummary {
                service: service.to_string(),
                status: mine
                    .iter()
                    .map(|v| v.result.status)
                    .max()
                    .unwrap_or(Status::Ok),
                failing: !failing.is_empty(),
                change,
                failing_since_ms: failing.iter().filter_map(|v| v.failing_since_ms).min(),
                consecutive_failures: mine
                    .iter()
                    .map(|v| v.consecutive_failures)
                    .max()
                    .unwrap_or(0),
                blocked_by,
                problems: bad
                    .iter()
                    .map(|v| format!("{}: {}", v.result.name, v.result.reason))
                    .collect(),
                has_fix,
                fix: fixes.iter().find(|f| f.service == service).cloned(),
                tried: history
                    .in_window(service, now_ms, policy.window_ms())
                    .into_iter()
                    .cloned()
                    .collect(),
                budget: has_fix.then(|| budget(service, history, policy, now_ms)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::run::result_of;
    use crate::health::{CheckConfig, CheckKind, CheckResult, HealthState};

    fn res(c: &CheckConfig, status: Status) -> CheckResult {
        result_of(c, status, status.as_str().into(), 1)
    }

    fn at(min: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + min * 60_000).unwrap()
    }

    #[test]
    fn summary_carries_escalation_facts() {
        let mut c = CheckConfig::new("web", CheckKind::Docker);
        c.container = Some("web".into());
        c.fail_after = Some(1);
        c.fix = Some(crate::fix::FixSpec::new(
            crate::fix::FixAction::RestartContainer,
        ));
        let mut http = CheckConfig::new("web-http", CheckKind::Http);
        http.url = Some("http://127.0.0.1:1/".into());
        http.service = Some("web".into());
        http.fail_after = Some(1);
        let checks = Checks::from(vec![c.clone(), http.clone()]);
        let mut st = HealthState::default();
        let h = FixHistory::default();
        let mut engine = CheckConfig::new(
            crate::health::check::IMPLICIT_ENGINE_CHECK,
            CheckKind::DockerEngine,
        );
        engine.service = Some("docker".into());
        let results = vec![
            res(&engine, Status::Ok),
            res(&c, Status::Critical),
            res(&http, Status::Critical),
        ];
        let v = st.record(&checks, &results, &h, at(0));
        let s = summarize(&checks, &v, &[], &h, &FixConfig::default(), at(0));
        let web = s.iter().find(|s| s.service == "web").unwrap();
        assert!(web.failing && web.has_fix);
        assert_eq!(web.change, Some(Change::BecameFailing));
        assert_eq!(web.failing_since_ms, Some(at(0).timestamp_millis()));
        assert_eq!(web.problems.len(), 2);
        assert_eq!(web.budget.as_ref().unwrap().left, 3);
        let docker = s.iter().find(|s| s.service == "docker").unwrap();
        assert!(!docker.failing && !docker.has_fix && docker.budget.is_none());
    }
}
