//! The rate limit and the decision: whether a service's fix runs now, and
//! if not, why. Everything here is pure and table-tested; [`super::run`]
//! does the I/O around it.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::history::FixHistory;
use crate::health::guard::CrashLoop;
use crate::health::{CheckConfig, FixSpec};

/// `[fix]`: the rate limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FixConfig {
    /// Attempts per service within the rolling window (the runbook's 3).
    pub(crate) max_attempts_per_hour: u32,
    /// The rolling window (60 minutes: "per hour").
    pub(crate) window_mins: u64,
}

impl Default for FixConfig {
    fn default() -> Self {
        FixConfig {
            max_attempts_per_hour: 3,
            window_mins: 60,
        }
    }
}

impl FixConfig {
    /// Checks values serde cannot.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.window_mins == 0 {
            bail!("fix.window_mins must be at least 1, got 0");
        }
        if self.max_attempts_per_hour == 0 {
            bail!(
                "fix.max_attempts_per_hour must be at least 1, got 0 (to stop a service's fixes, \
                 remove the fix table of its check, or silence it)"
            );
        }
        if self.max_attempts_per_hour > 60 {
            bail!(
                "fix.max_attempts_per_hour must be at most 60, got {}",
                self.max_attempts_per_hour
            );
        }
        Ok(())
    }

    /// The window in milliseconds.
    pub(crate) fn window_ms(&self) -> i64 {
        self.window_mins as i64 * 60_000
    }
}

/// How much of a service's budget is left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// Attempts inside the window.
    pub(crate) used: u32,
    /// Attempts still allowed now.
    pub left: u32,
    /// When the oldest attempt in the window leaves it (only when spent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next_allowed_at_ms: Option<i64>,
}

/// The budget of a service at `now_ms`. Pure.
pub(crate) fn budget(
    service: &str,
    history: &FixHistory,
    policy: &FixConfig,
    now_ms: i64,
) -> Budget {
    let window = history.in_window(service, now_ms, policy.window_ms());
    let used = window.len() as u32;
    let left = policy.max_attempts_per_hour.saturating_sub(used);
    // With `max` attempts allowed, the next one is allowed when the attempt
    // `used - max` (0-based, oldest first) leaves the window.
    let next_allowed_at_ms = (left == 0 && used > 0).then(|| {
        let idx = (used - policy.max_attempts_per_hour.min(used)) as usize;
        window[idx].at_ms + policy.window_ms()
    });
    Budget {
        used,
        left,
        next_allowed_at_ms,
    }
}

/// The facts about the service a decision needs besides the history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct FixFacts {
    /// A check of the service is booting (health `starting`, `restarting`,
    /// `activating`).
    pub(crate) starting: bool,
    /// The failing parent that blocks the service's failing check.
    pub(crate) blocked_by: Option<String>,
    /// The service is silenced until then (epoch ms): checked, not fixed.
    pub(crate) silenced_until_ms: Option<i64>,
    /// A container of the service is crash-looping under its restart
    /// policy: restarting it is what the engine keeps doing.
    pub(crate) crash_loop: Option<CrashLoop>,
}

/// How the fix was asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FixOptions {
    /// Say what would run, run nothing, record nothing.
    pub dry_run: bool,
    /// `fix --force`: ignore a silence, the budget and the start grace.
    pub force: bool,
}

/// Whether to act now, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum FixDecision {
    /// Run the action.
    Run,
    /// The window's attempts are used up.
    SkipBudgetSpent {
        /// When the next attempt is allowed (epoch ms).
        next_allowed_at_ms: i64,
    },
    /// The service is booting; restarting it would restart the boot.
    SkipStarting,
    /// An attempt was made recently; the service may still be coming up.
    SkipGrace {
        /// When the grace ends (epoch ms).
        until_ms: i64,
    },
    /// No fix is configured for the service.
    SkipNoFix,
    /// The service is silenced: still checked, never fixed (`ops-agent fix
    /// --force` excepted).
    SkipSilenced {
        /// When the silence ends (epoch ms).
        until_ms: i64,
    },
    /// The engine's restart policy keeps restarting the container: one more
    /// restart would not help, so the service goes to escalation.
    SkipCrashLoop {
        /// Restarts by the policy within the window.
        restarts: i64,
        /// The window, in minutes.
        window_mins: u64,
    },
    /// A parent check is failing; fixing the child would not help.
    SkipBlocked {
        /// The parent.
        parent: String,
    },
    /// A dry run: this is what would run.
    SkipDryRun {
        /// The action, described.
        would: String,
    },
}

impl FixDecision {
    /// One line for logs, `explain` and the escalation text.
    pub(crate) fn describe(&self) -> String {
        match self {
            FixDecision::Run => "fix runs now".into(),
            FixDecision::SkipBudgetSpent { next_allowed_at_ms } => format!(
                "fix budget spent; next attempt allowed at {}",
                crate::time::rfc3339_ms(*next_allowed_at_ms)
            ),
            FixDecision::SkipStarting => "service is starting; left alone".into(),
            FixDecision::SkipGrace { until_ms } => format!(
                "inside the start grace after the last attempt (until {})",
                crate::time::rfc3339_ms(*until_ms)
            ),
            FixDecision::SkipNoFix => "no fix configured".into(),
            FixDecision::SkipBlocked { parent } => format!("blocked by {parent}; not fixed"),
            FixDecision::SkipSilenced { until_ms } => format!(
                "silenced until {}; checked, not fixed",
                crate::time::rfc3339_ms(*until_ms)
            ),
            FixDecision::SkipCrashLoop {
                restarts,
                window_mins,
            } => format!(
                "crash loop: its restart policy restarted it {restarts} times in {window_mins} \
                 min; another restart would not help, so it is escalated"
            ),
            FixDecision::SkipDryRun { would } => format!("dry run: would {would}"),
        }
    }
}

/// Decides whether to run the service's fix now. Pure. The order says what
/// wins: no fix, blocked, silenced, crash loop, starting, grace, budget,
/// dry run. `--force` (only `ops-agent fix` has it) skips the silence, the
/// grace and the budget, never a block or a boot in progress.
pub(crate) fn decide(
    service: &str,
    spec: Option<(&CheckConfig, &FixSpec)>,
    history: &FixHistory,
    policy: &FixConfig,
    now_ms: i64,
    facts: &FixFacts,
    opts: FixOptions,
) -> FixDecision {
    let Some((check, spec)) = spec else {
        return FixDecision::SkipNoFix;
    };
    if let Some(parent) = &facts.blocked_by {
        return FixDecision::SkipBlocked {
            parent: parent.clone(),
        };
    }
    if let Some(until_ms) = facts.silenced_until_ms.filter(|until| *until > now_ms) {
        if !opts.force {
            return FixDecision::SkipSilenced { until_ms };
        }
    }
    if let Some(c) = &facts.crash_loop {
        return FixDecision::SkipCrashLoop {
            restarts: c.restarts,
            window_mins: c.window_mins,
        };
    }
    if facts.starting {
        return FixDecision::SkipStarting;
    }
    if !opts.force {
        if let Some(last) = history.last(service) {
            let until_ms = last.at_ms + (spec.start_grace_secs.as_millis() as i64);
            if now_ms < until_ms {
                return FixDecision::SkipGrace { until_ms };
            }
        }
        let b = budget(service, history, policy, now_ms);
        if b.left == 0 {
            return FixDecision::SkipBudgetSpent {
                next_allowed_at_ms: b.next_allowed_at_ms.unwrap_or(now_ms),
            };
        }
    }
    if opts.dry_run {
        return FixDecision::SkipDryRun {
            would: spec.describe(check),
        };
    }
    FixDecision::Run
}

#[cfg(test)]
mod tests {
    use super::super::history::testing::history;
    use super::*;
    use crate::health::{CheckKind, FixAction};

    const MIN: i64 = 60_000;

    fn docker_check() -> CheckConfig {
        let mut c = CheckConfig::new("web", CheckKind::Docker);
        c.container = Some("web".into());
        c.fix = Some(FixSpec::new(FixAction::RestartContainer));
        c
    }

    #[test]
    fn decision_table() {
        let c = docker_check();
        let spec = c.fix.clone().unwrap();
        let p = FixConfig::default();
        let now = 1_000 * MIN;
        let fix = Some((&c, &spec));
        let none = FixFacts::default();
        let starting = FixFacts {
            starting: true,
            ..Default::default()
        };
        let blocked = FixFacts {
            starting: true,
            blocked_by: Some("docker-engine".into()),
            ..Default::default()
        };
        let silenced = FixFacts {
            silenced_until_ms: Some(now + 30 * MIN),
            ..Default::default()
        };
        let looping = FixFacts {
            starting: true,
            crash_loop: Some(CrashLoop {
                restarts: 5,
                window_mins: 60,
                max_restarts: 3,
                exit_code: Some(3),
                policy: Some("always".into()),
            }),
            ..Default::default()
        };
        let silence_over = FixFacts {
            silenced_until_ms: Some(now - MIN),
            ..Default::default()
        };
        let run = FixOptions::default();
        let force = FixOptions {
            force: true,
            dry_run: false,
        };
        let dry = FixOptions {
            dry_run: true,
            force: false,
        };
        let empty = FixHistory::default();
        let recent = history("web", &[now - 30_000]);
        let spent = history("web", &[now - 50 * MIN, now - 20 * MIN, now - 10 * MIN]);
        let aged = history("web", &[now - 61 * MIN, now - 20 * MIN, now - 10 * MIN]);
        type Row<'a> = (
            &'a str,
            Option<(&'a CheckConfig, &'a FixSpec)>,
            &'a FixHistory,
            &'a FixFacts,
            FixOptions,
            FixDecision,
        );
        let table: Vec<Row> = vec![
            ("no fix", None, &empty, &none, run, FixDecision::SkipNoFix),
            (
                "blocked wins",
                fix,
                &empty,
                &blocked,
                force,
                FixDecision::SkipBlocked {
                    parent: "docker-engine".into(),
                },
            ),
            (
                "starting",
                fix,
                &empty,
                &starting,
                force,
                FixDecision::SkipStarting,
            ),
            (
                "grace",
                fix,
                &recent,
                &none,
                run,
                FixDecision::SkipGrace {
                    until_ms: now - 30_000 + 60_000,
                },
            ),
            (
                "force skips grace",
                fix,
                &recent,
                &none,
                force,
                FixDecision::Run,
            ),
            (
                "spent",
                fix,
                &spent,
                &none,
                run,
                FixDecision::SkipBudgetSpent {
                    next_allowed_at_ms: now + 10 * MIN,
                },
            ),
            (
                "force skips budget",
                fix,
                &spent,
                &none,
                force,
                FixDecision::Run,
            ),
            ("window moved", fix, &aged, &none, run, FixDecision::Run),
            (
                "dry run",
                fix,
                &empty,
                &none,
                dry,
                FixDecision::SkipDryRun {
                    would: "restart container web".into(),
                },
            ),
            ("fresh", fix, &empty, &none, run, FixDecision::Run),
            (
                "silenced",
                fix,
                &empty,
                &silenced,
                run,
                FixDecision::SkipSilenced {
                    until_ms: now + 30 * MIN,
                },
            ),
            (
                "force overrides a silence (ops-agent fix --force)",
                fix,
                &empty,
                &silenced,
                force,
                FixDecision::Run,
            ),
            (
                "crash loop, even while starting",
                fix,
                &empty,
                &looping,
                run,
                FixDecision::SkipCrashLoop {
                    restarts: 5,
                    window_mins: 60,
                },
            ),
            (
                "a silence that ended",
                fix,
                &empty,
                &silence_over,
                run,
                FixDecision::Run,
            ),
        ];
        for (name, fix, h, facts, opts, want) in table {
            assert_eq!(decide("web", fix, h, &p, now, facts, opts), want, "{name}");
        }
    }

    #[test]
    fn budget_counts_attempts_in_the_rolling_window() {
        let p = FixConfig::default();
        let now = 1_000 * MIN;
        let h = history("s", &[now - 70 * MIN, now - 59 * MIN, now - 30 * MIN]);
        let b = budget("s", &h, &p, now);
        assert_eq!((b.used, b.left, b.next_allowed_at_ms), (2, 1, None));
        let h = history("s", &[now - 59 * MIN, now - 30 * MIN, now - MIN]);
        let b = budget("s", &h, &p, now);
        assert_eq!((b.used, b.left), (3, 0));
        assert_eq!(b.next_allowed_at_ms, Some(now + MIN));
        assert_eq!(budget("other", &h, &p, now).left, 3);
        // A lowered limit: the next slot opens when enough attempts aged out.
        let p1 = FixConfig {
            max_attempts_per_hour: 1,
            window_mins: 60,
        };
        assert_eq!(
            budget("s", &h, &p1, now).next_allowed_at_ms,
            Some(now + 59 * MIN)
        );
    }
}
