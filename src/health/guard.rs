//! The flap guard and the per-service facts.
//!
//! A check is *failing* only after `fail_after` consecutive failed cycles
//! (each already re-probed within its cycle) and *recovered* after
//! `recover_after` consecutive good ones, Gatus style. Blocked checks (a
//! parent is failing) keep their streaks untouched. The streaks, the last
//! results and our own container restart counter live in [`HealthState`],
//! which the lead persists inside the state file. Everything here is pure:
//! data and `now` in, data out.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{effective_checks, CheckConfig, CheckResult, Status};
use crate::fix::{budget, service_fix, Attempt, Budget, FixConfig, FixHistory, FixReport};

/// Results kept per check for `explain`.
const KEEP_RESULTS: usize = 5;
/// Unexpected container restarts are remembered this long.
const RESTART_MEMORY_MS: i64 = 24 * 3600 * 1000;
/// A restart seen within this window makes a running container `warn`.
const RESTART_WARN_MS: i64 = 3600 * 1000;

/// Health memory between cycles; `#[serde(default)]` so older state files
/// load. Bounded: only configured checks, five results each, a day of
/// restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthState {
    /// Per check name.
    pub checks: BTreeMap<String, CheckMemo>,
}

/// One check's memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckMemo {
    /// Failed cycles in a row (blocked cycles do not count either way).
    pub consecutive_failures: u32,
    /// Good cycles in a row.
    pub consecutive_successes: u32,
    /// Past `fail_after` and not yet recovered.
    pub failing: bool,
    /// When the current run of failures began (epoch ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures_since_ms: Option<i64>,
    /// When the check became failing: the start of the run of failures that
    /// crossed `fail_after` (epoch ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<i64>,
    /// The last results, oldest first.
    pub last: Vec<ResultMemo>,
    /// docker: `State.StartedAt` last seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// docker: the engine's `RestartCount` last seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<i64>,
    /// docker: restarts we did not cause, seen in the last day (epoch ms;
    /// our own counter, since the engine resets RestartCount on manual
    /// restarts).
    pub restarts_seen_ms: Vec<i64>,
}

/// One remembered result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMemo {
    /// When (epoch ms).
    pub at_ms: i64,
    /// The status.
    pub status: Status,
    /// The reason.
    pub reason: String,
}

/// A streak crossing a threshold this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Crossed `fail_after`.
    BecameFailing,
    /// Crossed `recover_after` while failing.
    Recovered,
}

/// A result seen through the flap guard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// The probe result (reason extended with the restart counter).
    pub result: CheckResult,
    /// Failing after the flap guard.
    pub failing: bool,
    /// A threshold crossed this cycle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// Failed cycles in a row.
    pub consecutive_failures: u32,
    /// Good cycles in a row.
    pub consecutive_successes: u32,
    /// When it became failing (epoch ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<i64>,
    /// Unexpected container restarts in the last hour.
    #[serde(skip_serializing_if = "is_zero")]
    pub restarts_last_hour: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl HealthState {
    /// Feeds one cycle's results through the flap guard and the restart
    /// counter. `history` tells our own restarts (a fix) from unexpected
    /// ones. Forgets checks that are no longer configured.
    pub fn record(
        &mut self,
        checks: &[CheckConfig],
        results: &[CheckResult],
        history: &FixHistory,
        now: DateTime<Utc>,
    ) -> Vec<Verdict> {
        let checks = effective_checks(checks);
        let now_ms = now.timestamp_millis();
        self.checks
            .retain(|name, _| checks.iter().any(|c| &c.name == name));
        let mut verdicts = Vec::with_capacity(results.len());
        for r in results {
            let Some(check) = checks.iter().find(|c| c.name == r.name) else {
                continue;
            };
            let memo = self.checks.entry(r.name.clone()).or_default();
            let mut result = r.clone();
            let restarts = count_restarts(memo, &result, history, now_ms);
            if restarts > 0 {
                result.reason = format!(
                    "{}; restarted {restarts} time{} in the last hour without a fix from us",
                    result.reason,
                    if restarts == 1 { "" } else { "s" }
                );
                if result.status == Status::Ok {
                    result.status = Status::Warn;
                }
            }
            let change = if result.blocked_by.is_some() {
                None
            } else if result.status.is_failure() {
                memo.consecutive_failures += 1;
                memo.consecutive_successes = 0;
                let since = *memo.failures_since_ms.get_or_insert(now_ms);
                if !memo.failing && memo.consecutive_failures >= check.fail_after() {
                    memo.failing = true;
                    memo.failing_since_ms = Some(since);
                    Some(Change::BecameFailing)
                } else {
                    None
                }
            } else {
                memo.consecutive_successes += 1;
                memo.consecutive_failures = 0;
                memo.failures_since_ms = None;
                if memo.failing && memo.consecutive_successes >= check.recover_after() {
                    memo.failing = false;
                    memo.failing_since_ms = None;
                    Some(Change::Recovered)
                } else {
                    None
                }
            };
            memo.last.push(ResultMemo {
                at_ms: now_ms,
                status: result.status,
                reason: result.reason.clone(),
            });
            if memo.last.len() > KEEP_RESULTS {
                memo.last.drain(..memo.last.len() - KEEP_RESULTS);
            }
            verdicts.push(Verdict {
                failing: memo.failing && result.blocked_by.is_none(),
                change,
                consecutive_failures: memo.consecutive_failures,
                consecutive_successes: memo.consecutive_successes,
                failing_since_ms: memo.failing_since_ms,
                restarts_last_hour: restarts,
                result,
            });
        }
        verdicts
    }
}

/// Updates the container restart counter and returns the unexpected
/// restarts in the last hour. A changed `StartedAt` is a restart; it is ours
/// when a fix attempt for the service was made after the previous
/// observation. A RestartCount jump larger than one counts every restart
/// the engine made in between.
fn count_restarts(memo: &mut CheckMemo, r: &CheckResult, history: &FixHistory, now_ms: i64) -> u32 {
    memo.restarts_seen_ms
        .retain(|t| *t > now_ms - RESTART_MEMORY_MS);
    if let Some(f) = &r.container {
        let prev_seen = memo.last.last().map_or(0, |m| m.at_ms);
        if let (Some(prev), Some(cur)) = (&memo.started_at, &f.started_at) {
            if prev != cur {
                let ours = history
                    .last(&r.service)
                    .is_some_and(|a| a.at_ms >= prev_seen);
                if !ours {
                    let by_engine = memo
                        .restart_count
                        .map_or(0, |c| (f.restart_count - c).max(0));
                    for _ in 0..by_engine.clamp(1, 20) {
                        memo.restarts_seen_ms.push(now_ms);
                    }
                }
            }
        }
        if f.started_at.is_some() {
            memo.started_at = f.started_at.clone();
        }
        memo.restart_count = Some(f.restart_count);
    }
    memo.restarts_seen_ms
        .iter()
        .filter(|t| **t > now_ms - RESTART_WARN_MS)
        .count() as u32
}

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
    checks: &[CheckConfig],
    verdicts: &[Verdict],
    fixes: &[FixReport],
    history: &FixHistory,
    policy: &FixConfig,
    now: DateTime<Utc>,
) -> Vec<ServiceSummary> {
    let checks = effective_checks(checks);
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
            let has_fix = service_fix(&checks, service).is_some();
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
    use crate::health::{docker::ContainerFacts, result_of, CheckKind};

    fn check(name: &str, fail_after: u32, recover_after: u32) -> CheckConfig {
        let mut c = CheckConfig::new(name, CheckKind::Memory);
        c.fail_after = Some(fail_after);
        c.recover_after = Some(recover_after);
        c
    }

    fn res(c: &CheckConfig, status: Status) -> CheckResult {
        result_of(c, status, status.as_str().into(), 1)
    }

    fn at(min: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + min * 60_000).unwrap()
    }

    #[test]
    fn streak_table() {
        use Status::*;
        // (fail_after, recover_after, statuses per cycle, failing after each, changes)
        let table: Vec<(u32, u32, Vec<Status>, Vec<bool>)> = vec![
            (2, 1, vec![Critical, Ok, Critical, Ok], vec![false; 4]),
            (2, 1, vec![Critical, Critical, Ok], vec![false, true, false]),
            (1, 1, vec![Unknown, Warn], vec![true, false]),
            (
                2,
                2,
                vec![Critical, Critical, Ok, Critical, Ok, Ok],
                vec![false, true, true, true, true, false],
            ),
            (
                3,
                1,
                vec![Critical, Critical, Critical, Critical],
                vec![false, false, true, true],
            ),
        ];
        let h = FixHistory::default();
        for (fa, ra, statuses, want) in table {
            let c = check("m", fa, ra);
            let mut st = HealthState::default();
            let got: Vec<bool> = statuses
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    st.record(
                        std::slice::from_ref(&c),
                        &[res(&c, *s)],
                        &h,
                        at(i as i64 * 5),
                    )[0]
                    .failing
                })
                .collect();
            assert_eq!(got, want, "fail_after {fa} recover_after {ra} {statuses:?}");
        }
    }

    #[test]
    fn failing_since_is_the_start_of_the_streak_and_changes_fire_once() {
        let c = check("m", 2, 1);
        let h = FixHistory::default();
        let mut st = HealthState::default();
        let v1 = st.record(
            std::slice::from_ref(&c),
            &[res(&c, Status::Critical)],
            &h,
            at(0),
        );
        assert_eq!(v1[0].change, None);
        let v2 = st.record(
            std::slice::from_ref(&c),
            &[res(&c, Status::Critical)],
            &h,
            at(5),
        );
        assert_eq!(v2[0].change, Some(Change::BecameFailing));
        assert_eq!(v2[0].failing_since_ms, Some(at(0).timestamp_millis()));
        let v3 = st.record(
            std::slice::from_ref(&c),
            &[res(&c, Status::Critical)],
            &h,
            at(10),
        );
        assert_eq!((v3[0].change, v3[0].consecutive_failures), (None, 3));
        let v4 = st.record(std::slice::from_ref(&c), &[res(&c, Status::Ok)], &h, at(15));
        assert_eq!(v4[0].change, Some(Change::Recovered));
        assert!(st.checks["m"].last.len() <= KEEP_RESULTS);
    }

    #[test]
    fn blocked_results_are_not_counted() {
        let c = check("m", 2, 1);
        let h = FixHistory::default();
        let mut st = HealthState::default();
        st.record(
            std::slice::from_ref(&c),
            &[res(&c, Status::Critical)],
            &h,
            at(0),
        );
        let mut blocked = res(&c, Status::Unknown);
        blocked.blocked_by = Some("docker-engine".into());
        let v = st.record(std::slice::from_ref(&c), &[blocked], &h, at(5));
        assert!(!v[0].failing);
        assert_eq!(v[0].consecutive_failures, 1);
    }

    #[test]
    fn unexpected_restarts_are_counted_ours_are_not() {
        let mut c = CheckConfig::new("web", CheckKind::Docker);
        c.container = Some("web".into());
        let facts = |started: &str, count: i64| ContainerFacts {
            status: "running".into(),
            running: true,
            health: None,
            health_output: None,
            started_at: Some(started.into()),
            restart_count: count,
            exit_code: None,
        };
        let r = |f: ContainerFacts| {
            let mut r = res(&c, Status::Ok);
            r.container = Some(f);
            r
        };
        let mut h = FixHistory::default();
        let mut st = HealthState::default();
        st.record(std::slice::from_ref(&c), &[r(facts("t1", 0))], &h, at(0));
        let v = st.record(std::slice::from_ref(&c), &[r(facts("t2", 3))], &h, at(5));
        assert_eq!(v[0].restarts_last_hour, 3);
        assert_eq!(v[0].result.status, Status::Warn);
        assert!(
            v[0].result.reason.contains("restarted 3 times"),
            "{}",
            v[0].result.reason
        );
        // Our own fix at minute 7 explains the next StartedAt change.
        h.push(
            "web",
            Attempt {
                at_ms: at(7).timestamp_millis(),
                action: "restart_container".into(),
                issue: "x".into(),
                outcome: crate::fix::Outcome::Verified,
                detail: None,
            },
        );
        let v = st.record(std::slice::from_ref(&c), &[r(facts("t3", 0))], &h, at(10));
        assert_eq!(v[0].restarts_last_hour, 3);
        let v = st.record(std::slice::from_ref(&c), &[r(facts("t3", 0))], &h, at(70));
        assert_eq!(v[0].restarts_last_hour, 0);
        assert_eq!(v[0].result.status, Status::Ok);
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
        let checks = vec![c.clone(), http.clone()];
        let mut st = HealthState::default();
        let h = FixHistory::default();
        let mut engine =
            CheckConfig::new(super::super::IMPLICIT_ENGINE_CHECK, CheckKind::DockerEngine);
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
