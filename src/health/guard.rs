//! The flap guard and the per-service facts.
//!
//! A check is *failing* only after `fail_after` consecutive failed cycles
//! (each already re-probed within its cycle) and *recovered* after
//! `recover_after` consecutive good ones, Gatus style. Blocked checks (a
//! parent is failing) keep their streaks untouched. The streaks, the last
//! results and the container restart counters live in [`HealthState`],
//! which the lead persists inside the state file. Everything here is pure:
//! data and `now` in, data out.
//!
//! Two restart counters, because a container can be restarted two ways
//! behind the agent's back. Any restart the agent did not make (a changed
//! `StartedAt`) makes a running container `warn` for an hour. Restarts by
//! the engine's own restart policy (`restart: always`, `unless-stopped`,
//! `on-failure`: the engine's `RestartCount`, compared between cycles) are
//! a crash loop once there are more than the check's `max_restarts` within
//! `restart_window_mins` while it is still restarting: the check is then
//! critical ([`CrashLoop`]) whatever state the probe caught it in, and the
//! fix stage leaves it to escalation, since another restart is what the
//! engine has been doing all along.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{CheckConfig, CheckResult, Checks, Status};

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
    /// docker: the container's id last seen; another id is another
    /// container (recreated), whose restarts start from zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) container_id: Option<String>,
    /// docker: restarts by the engine's restart policy within the check's
    /// `restart_window_mins`, as `(epoch ms seen, how many)`; at most one
    /// entry per cycle.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) policy_restarts: Vec<(i64, i64)>,
    /// docker: the exit code last seen while the container was down or
    /// restarting (dockerd shows 0 again once it runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_exit_code: Option<i64>,
    /// docker: crash-looping as of the last cycle (for `explain`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) crash_loop: Option<CrashLoop>,
}

/// A container its restart policy keeps restarting: more than
/// `max_restarts` restarts by the engine within the window, and not
/// settled since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashLoop {
    /// Restarts by the engine's restart policy within the window.
    pub restarts: i64,
    /// The window (the check's `restart_window_mins`).
    pub window_mins: u64,
    /// The check's `max_restarts`.
    pub max_restarts: u32,
    /// The exit code of the last crash, when seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// The restart policy (`always`, `unless-stopped`, `on-failure`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

impl CrashLoop {
    /// The check's reason: what the engine did, how often, the last exit
    /// code, and why the agent will not restart it.
    pub(crate) fn reason(&self, container: &str, status: &str) -> String {
        format!(
            "{container} crash-looping: {} restarted it {} times in the last {} min \
             (max_restarts {}), last exit code {}, now {status}; another restart would not help",
            match &self.policy {
                Some(p) => format!("its restart policy '{p}'"),
                None => "the engine's restart policy".to_string(),
            },
            self.restarts,
            self.window_mins,
            self.max_restarts,
            self.exit_code
                .map_or_else(|| "unknown".to_string(), |c| c.to_string()),
        )
    }
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
    /// The container is crash-looping under its restart policy: critical,
    /// and not the fix stage's to restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crash_loop: Option<CrashLoop>,
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
            let (restarts, crash_loop) = observe_container(memo, check, &result, own, now_ms);
            if let Some(c) = &crash_loop {
                let container = check.container.as_deref().unwrap_or(&check.name);
                let status = result.container.as_ref().map_or("", |f| f.status.as_str());
                result.reason = c.reason(container, status);
                result.status = Status::Critical;
                result.starting = false;
            } else if restarts > 0 {
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
                crash_loop,
                result,
            });
        }
        verdicts
    }
}

/// Updates both container restart counters (see the module's doc) and
/// returns the unexpected restarts in the last hour and the crash loop, if
/// the container is in one. A changed `StartedAt` is a restart; it is ours
/// when a fix attempt for the service was made after the previous
/// observation. The engine's `RestartCount` counts the restart policy's
/// restarts since the last start by hand (dockerd resets it then), so a
/// count lower than last time, or a new container id, starts over from the
/// new count; a container first seen `restarting` brings its count with it.
fn observe_container(
    memo: &mut CheckMemo,
    check: &CheckConfig,
    r: &CheckResult,
    own: &impl OwnActions,
    now_ms: i64,
) -> (u32, Option<CrashLoop>) {
    memo.restarts_seen_ms
        .retain(|t| *t > now_ms - RESTART_MEMORY_MS);
    let window_ms = check.restart_window_mins() as i64 * 60_000;
    memo.policy_restarts
        .retain(|(t, _)| *t > now_ms - window_ms);
    let Some(f) = &r.container else {
        memo.crash_loop = None;
        return (count_recent(memo, now_ms), None);
    };
    let prev_seen = memo.last.last().map_or(0, |m| m.at_ms);
    let recreated = memo
        .container_id
        .as_deref()
        .is_some_and(|id| !f.id.is_empty() && id != f.id);
    if recreated {
        memo.policy_restarts.clear();
    }
    let by_policy = match memo.restart_count {
        None if f.status == "restarting" => f.restart_count,
        None => 0,
        Some(_) if recreated => f.restart_count,
        Some(c) if f.restart_count < c => f.restart_count,
        Some(c) => f.restart_count - c,
    }
    .max(0);
    let restarted = matches!((&memo.started_at, &f.started_at), (Some(a), Some(b)) if a != b);
    if restarted {
        let ours = own
            .last_action_ms(&r.service)
            .is_some_and(|at| at >= prev_seen);
        if !ours {
            for _ in 0..by_policy.clamp(1, 20) {
                memo.restarts_seen_ms.push(now_ms);
            }
        }
    }
    if by_policy > 0 {
        memo.policy_restarts.push((now_ms, by_policy));
    }
    if f.status != "running" {
        memo.last_exit_code = f.exit_code.or(memo.last_exit_code);
    }
    if f.started_at.is_some() {
        memo.started_at = f.started_at.clone();
    }
    memo.restart_count = Some(f.restart_count);
    if !f.id.is_empty() {
        memo.container_id = Some(f.id.clone());
    }
    let in_window: i64 = memo.policy_restarts.iter().map(|(_, n)| n).sum();
    // Still looping: the policy restarted it since the last look, or it
    // is caught down. A restart by hand (count reset, no policy restart
    // since) that came up is someone's fix, not the loop going on.
    let looping = by_policy > 0 || matches!(f.status.as_str(), "restarting" | "exited" | "dead");
    memo.crash_loop = (looping && in_window > i64::from(check.max_restarts())).then(|| CrashLoop {
        restarts: in_window,
        window_mins: check.restart_window_mins(),
        max_restarts: check.max_restarts(),
        exit_code: memo.last_exit_code,
        policy: f.restart_policy.clone(),
    });
    (count_recent(memo, now_ms), memo.crash_loop.clone())
}

/// The unexpected restarts within the last hour.
fn count_recent(memo: &CheckMemo, now_ms: i64) -> u32 {
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
            id: "0123abcd".into(),
            status: "running".into(),
            running: true,
            health: None,
            health_output: None,
            started_at: Some(started.into()),
            restart_count: count,
            restart_policy: None,
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

    /// One look at a container: id, state, `StartedAt`, `RestartCount`,
    /// exit code.
    type Look = (&'static str, &'static str, &'static str, i64, Option<i64>);

    /// Runs the looks a cycle apart (5 min) through the guard; returns
    /// each verdict's (status, crash-looping).
    fn looks(c: &CheckConfig, seq: &[Look], own: &Own) -> (Vec<(Status, bool)>, Vec<Verdict>) {
        let mut st = HealthState::default();
        let checks = Checks::from(vec![c.clone()]);
        let mut out = Vec::new();
        let mut all = Vec::new();
        for (i, (id, status, started, count, exit)) in seq.iter().enumerate() {
            let f = ContainerFacts {
                id: id.to_string(),
                status: status.to_string(),
                running: *status == "running" || *status == "restarting",
                health: None,
                health_output: None,
                started_at: Some(started.to_string()),
                restart_count: *count,
                restart_policy: Some("always".into()),
                exit_code: *exit,
            };
            let probe = crate::health::docker::grade_container("web", &f);
            let mut r = result_of(c, probe.status, probe.reason, 1);
            r.starting = probe.starting;
            r.container = Some(f);
            let v = st.record(&checks, &[r], own, at(i as i64 * 5)).remove(0);
            out.push((v.result.status, v.crash_loop.is_some()));
            all.push(v);
        }
        (out, all)
    }

    #[test]
    fn restarts_by_the_restart_policy_beyond_the_limit_are_a_crash_loop() {
        use Status::{Critical, Ok as Fine, Warn};
        let mut c = CheckConfig::new("web", CheckKind::Docker);
        c.container = Some("web".into());
        c.max_restarts = Some(3);
        c.restart_window_mins = Some(30);
        let own = Own::new();
        type Row = (&'static str, Vec<Look>, Vec<(Status, bool)>);
        let table: Vec<Row> = vec![
            (
                "four policy restarts between two cycles, caught restarting",
                vec![
                    ("a", "running", "t1", 0, Some(0)),
                    ("a", "restarting", "t2", 4, Some(3)),
                ],
                vec![(Fine, false), (Critical, true)],
            ),
            (
                "caught running for a moment, still looping",
                vec![
                    ("a", "running", "t1", 0, Some(0)),
                    ("a", "restarting", "t2", 2, Some(3)),
                    ("a", "running", "t3", 5, Some(0)),
                ],
                vec![(Fine, false), (Warn, false), (Critical, true)],
            ),
            (
                "exactly the limit is not a loop",
                vec![
                    ("a", "running", "t1", 0, Some(0)),
                    ("a", "running", "t2", 3, Some(0)),
                ],
                vec![(Fine, false), (Warn, false)],
            ),
            (
                "settled: up and not restarted since the last look, the loop is over",
                vec![
                    ("a", "running", "t1", 0, Some(0)),
                    ("a", "restarting", "t2", 5, Some(3)),
                    ("a", "running", "t3", 6, Some(0)),
                    ("a", "running", "t3", 6, Some(0)),
                ],
                vec![
                    (Fine, false),
                    (Critical, true),
                    (Critical, true),
                    (Warn, false),
                ],
            ),
            (
                "a restart by hand that came up ends the loop",
                vec![
                    ("a", "running", "t1", 0, Some(0)),
                    ("a", "restarting", "t2", 5, Some(3)),
                    ("a", "running", "t3", 0, Some(0)),
                ],
                vec![(Fine, false), (Critical, true), (Warn, false)],
            ),
            (
                "first seen restarting: its count is what it did",
                vec![("a", "restarting", "t1", 9, Some(3))],
                vec![(Critical, true)],
            ),
            (
                "first seen running: its count is history",
                vec![("a", "running", "t1", 9, Some(0))],
                vec![(Fine, false)],
            ),
            (
                "a count reset by a start by hand starts over from the new count",
                vec![
                    ("a", "running", "t1", 3, Some(0)),
                    ("a", "restarting", "t2", 2, Some(3)),
                    ("a", "restarting", "t3", 3, Some(3)),
                ],
                vec![(Fine, false), (Warn, false), (Warn, false)],
            ),
            (
                "a recreated container forgets the old one's restarts",
                vec![
                    ("a", "running", "t1", 0, Some(0)),
                    ("a", "restarting", "t2", 3, Some(3)),
                    ("b", "running", "t3", 1, Some(0)),
                ],
                vec![(Fine, false), (Warn, false), (Warn, false)],
            ),
            (
                "restarts older than the window age out",
                vec![
                    ("a", "running", "t1", 0, Some(0)),
                    ("a", "restarting", "t2", 3, Some(3)),
                    ("a", "running", "t2", 3, Some(0)),
                    ("a", "running", "t2", 3, Some(0)),
                    ("a", "running", "t2", 3, Some(0)),
                    ("a", "running", "t2", 3, Some(0)),
                    ("a", "running", "t2", 3, Some(0)),
                    ("a", "running", "t2", 3, Some(0)),
                    ("a", "restarting", "t3", 4, Some(3)),
                ],
                vec![
                    (Fine, false),
                    (Warn, false),
                    (Warn, false),
                    (Warn, false),
                    (Warn, false),
                    (Warn, false),
                    (Warn, false),
                    (Warn, false),
                    (Warn, false),
                ],
            ),
        ];
        for (name, seq, want) in table {
            let (got, _) = looks(&c, &seq, &own);
            assert_eq!(got, want, "{name}");
        }
        // The reason says what the engine did and the last exit code, also
        // when the container was caught running (exit code 0 by then).
        let (_, v) = looks(
            &c,
            &[
                ("a", "running", "t1", 0, Some(0)),
                ("a", "restarting", "t2", 2, Some(3)),
                ("a", "running", "t3", 5, Some(0)),
            ],
            &own,
        );
        assert_eq!(
            v[2].result.reason,
            "web crash-looping: its restart policy 'always' restarted it 5 times in the last 30 \
             min (max_restarts 3), last exit code 3, now running; another restart would not help"
        );
        assert!(!v[2].result.starting);
        assert_eq!(
            v[2].crash_loop,
            Some(CrashLoop {
                restarts: 5,
                window_mins: 30,
                max_restarts: 3,
                exit_code: Some(3),
                policy: Some("always".into()),
            })
        );
    }
}
