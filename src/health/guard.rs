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

use super::{CheckResult, Checks, Status};

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
    pub(crate) checks: BTreeMap<String, CheckMemo>,
}

/// One check's memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct CheckMemo {
    /// Failed cycles in a row (blocked cycles do not count either way).
    pub(crate) consecutive_failures: u32,
    /// Good cycles in a row.
    pub(crate) consecutive_successes: u32,
    /// Past `fail_after` and not yet recovered.
    pub(crate) failing: bool,
    /// When the current run of failures began (epoch ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    failures_since_ms: Option<i64>,
    /// When the check became failing: the start of the run of failures that
    /// crossed `fail_after` (epoch ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) failing_since_ms: Option<i64>,
    /// The last results, oldest first.
    pub(crate) last: Vec<ResultMemo>,
    /// docker: `State.StartedAt` last seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    /// docker: the engine's `RestartCount` last seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    restart_count: Option<i64>,
    /// docker: restarts we did not cause, seen in the last day (epoch ms;
    /// our own counter, since the engine resets RestartCount on manual
    /// restarts).
    pub(crate) restarts_seen_ms: Vec<i64>,
}

/// One remembered result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ResultMemo {
    /// When (epoch ms).
    pub(crate) at_ms: i64,
    /// The status.
    pub(crate) status: Status,
    /// The reason.
    pub(crate) reason: String,
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
    consecutive_successes: u32,
    /// When it became failing (epoch ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) failing_since_ms: Option<i64>,
    /// Unexpected container restarts in the last hour.
    #[serde(skip_serializing_if = "is_zero")]
    pub restarts_last_hour: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// When the agent itself last acted on a service (a fix attempt), so a
/// container restart it caused is not counted as unexpected. The fix
/// history answers it; the flap guard needs nothing else of it.
pub trait OwnActions {
    /// Epoch ms of the agent's last action on `service`.
    fn last_action_ms(&self, service: &str) -> Option<i64>;
}

/// Last action per service, for callers (and tests) without a history.
impl OwnActions for BTreeMap<String, i64> {
    fn last_action_ms(&self, service: &str) -> Option<i64> {
        self.get(service).copied()
    }
}

impl HealthState {
    /// Feeds one cycle's results through the flap guard and the restart
    /// counter. `own` tells our own restarts (a fix) from unexpected ones.
    /// Forgets checks that are no longer configured.
    pub fn record(
        &mut self,
        checks: &Checks,
        results: &[CheckResult],
        own: &impl OwnActions,
        now: DateTime<Utc>,
    ) -> Vec<Verdict> {
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
            let restarts = count_restarts(memo, &result, own, now_ms);
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
fn count_restarts(
    memo: &mut CheckMemo,
    r: &CheckResult,
    own: &impl OwnActions,
    now_ms: i64,
) -> u32 {
    memo.restarts_seen_ms
        .retain(|t| *t > now_ms - RESTART_MEMORY_MS);
    if let Some(f) = &r.container {
        let prev_seen = memo.last.last().map_or(0, |m| m.at_ms);
        if let (Some(prev), Some(cur)) = (&memo.started_at, &f.started_at) {
            if prev != cur {
                let ours = own
                    .last_action_ms(&r.service)
                    .is_some_and(|at| at >= prev_seen);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::run::result_of;
    use crate::health::{docker::ContainerFacts, CheckConfig, CheckKind};

    /// No action of ours on any service.
    type Own = BTreeMap<String, i64>;

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
        let h = Own::new();
        for (fa, ra, statuses, want) in table {
            let c = check("m", fa, ra);
            let mut st = HealthState::default();
            let got: Vec<bool> = statuses
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    st.record(
                        &Checks::from(vec![c.clone()]),
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
        let h = Own::new();
        let mut st = HealthState::default();
        let v1 = st.record(
            &Checks::from(vec![c.clone()]),
            &[res(&c, Status::Critical)],
            &h,
            at(0),
        );
        assert_eq!(v1[0].change, None);
        let v2 = st.record(
            &Checks::from(vec![c.clone()]),
            &[res(&c, Status::Critical)],
            &h,
            at(5),
        );
        assert_eq!(v2[0].change, Some(Change::BecameFailing));
        assert_eq!(v2[0].failing_since_ms, Some(at(0).timestamp_millis()));
        let v3 = st.record(
            &Checks::from(vec![c.clone()]),
            &[res(&c, Status::Critical)],
            &h,
            at(10),
        );
        assert_eq!((v3[0].change, v3[0].consecutive_failures), (None, 3));
        let v4 = st.record(
            &Checks::from(vec![c.clone()]),
            &[res(&c, Status::Ok)],
            &h,
            at(15),
        );
        assert_eq!(v4[0].change, Some(Change::Recovered));
        assert!(st.checks["m"].last.len() <= KEEP_RESULTS);
    }

    #[test]
    fn blocked_results_are_not_counted() {
        let c = check("m", 2, 1);
        let h = Own::new();
        let mut st = HealthState::default();
        st.record(
            &Checks::from(vec![c.clone()]),
            &[res(&c, Status::Critical)],
            &h,
            at(0),
        );
        let mut blocked = res(&c, Status::Unknown);
        blocked.blocked_by = Some("docker-engine".into());
        let v = st.record(&Checks::from(vec![c.clone()]), &[blocked], &h, at(5));
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
        let mut h = Own::new();
        let mut st = HealthState::default();
        st.record(
            &Checks::from(vec![c.clone()]),
            &[r(facts("t1", 0))],
            &h,
            at(0),
        );
        let v = st.record(
            &Checks::from(vec![c.clone()]),
            &[r(facts("t2", 3))],
            &h,
            at(5),
        );
        assert_eq!(v[0].restarts_last_hour, 3);
        assert_eq!(v[0].result.status, Status::Warn);
        assert!(
            v[0].result.reason.contains("restarted 3 times"),
            "{}",
            v[0].result.reason
        );
        // Our own fix at minute 7 explains the next StartedAt change.
        h.insert("web".into(), at(7).timestamp_millis());
        let v = st.record(
            &Checks::from(vec![c.clone()]),
            &[r(facts("t3", 0))],
            &h,
            at(10),
        );
        assert_eq!(v[0].restarts_last_hour, 3);
        let v = st.record(
            &Checks::from(vec![c.clone()]),
            &[r(facts("t3", 0))],
            &h,
            at(70),
        );
        assert_eq!(v[0].restarts_last_hour, 0);
        assert_eq!(v[0].result.status, Status::Ok);
    }
}
