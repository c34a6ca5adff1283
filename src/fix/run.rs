//! Acting: the configured action under its timeout, the settle time, the
//! re-check and the verdict on it; the cycle's fix stage and the manual
//! `ops-agent fix` built from those and the policy.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::history::{Attempt, FixHistory, Outcome};
use super::policy::{budget, decide, Budget, FixConfig, FixDecision, FixFacts, FixOptions};
use crate::budget::within;
use crate::health::{
    self, CheckConfig, CheckResult, Checks, FixAction, FixSpec, HealthContext, Verdict,
};
use crate::observe::audit::{self, Event};
use crate::report;
use crate::store::SetAside;

/// Seconds a container gets to stop on restart before SIGKILL (Docker's
/// own default).
const RESTART_STOP_SECS: i32 = 10;

/// What happened to one service's fix, for the cycle report, the
/// escalation ("what was tried, budget left") and `fix`'s output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FixReport {
    /// The service.
    pub service: String,
    /// The issue it was for.
    pub issue: String,
    /// The decision.
    pub decision: FixDecision,
    /// The action, described (also for skips, when one is configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) action: Option<String>,
    /// The outcome when the action ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The re-check's reason or the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The budget after this attempt.
    pub budget: Budget,
}

impl FixReport {
    /// Records what this report says in the audit trail: why no fix ran,
    /// or how the one that ran ended.
    fn audit(&self) {
        match (&self.decision, self.outcome) {
            (FixDecision::Run, Some(outcome)) => audit::record(Event::FixResult {
                service: self.service.clone(),
                action: self.action.clone().unwrap_or_default(),
                outcome: outcome.as_str().into(),
                detail: audit::detail(self.detail.as_deref().unwrap_or_default()),
                budget_left: self.budget.left,
            }),
            (FixDecision::Run, None) => {}
            (d, _) => audit::record(Event::FixSkipped {
                service: self.service.clone(),
                issue: audit::detail(&self.issue),
                why: d.describe(),
            }),
        }
    }

    /// One line for the log.
    pub(crate) fn line(&self) -> String {
        match (&self.outcome, &self.detail) {
            (Some(o), Some(d)) => format!(
                "{}: {} -> {} ({d}); {} of the budget left",
                self.service,
                self.action.as_deref().unwrap_or("fix"),
                o.as_str(),
                self.budget.left
            ),
            _ => format!("{}: {}", self.service, self.decision.describe()),
        }
    }
}

/// The error for a service without a configured fix, naming those with one.
pub(crate) fn no_fix_for(checks: &Checks, service: &str) -> anyhow::Error {
    let known: Vec<&str> = checks
        .iter()
        .filter(|c| c.fix.is_some())
        .map(|c| c.service())
        .collect();
    anyhow::anyhow!(
        "no fix is configured for service '{service}' (services with a fix: {})",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )
}

/// Runs the action once, under its timeout. Returns what was done.
///
/// A `command` runs through [`crate::process::run_argv`], the crate's one
/// way to run a configured command: a clean environment (PATH and HOME
/// only, so the agent's tokens and passwords never reach it), its own
/// process group killed on timeout, a bounded stderr tail. `launchctl` and
/// `systemctl` are fixed system tools and go through
/// [`crate::process::run_tool`].
async fn execute(ctx: &HealthContext, check: &CheckConfig, spec: &FixSpec) -> Result<String> {
    let timeout = spec.timeout_secs.get();
    let what = spec.describe(check);
    let no_result = || format!("{what}: no result within {}s", spec.timeout_secs);
    match spec.action {
        FixAction::RestartContainer => {
            let docker = ctx.docker_for(check).map_err(anyhow::Error::msg)?;
            let restart = docker.restart(
                check.container.as_deref().unwrap_or_default(),
                RESTART_STOP_SECS,
            );
            tokio::time::timeout(timeout, restart)
                .await
                .with_context(no_result)??;
        }
        FixAction::Kickstart => {
            let target = format!(
                "gui/{}/{}",
                crate::process::current_uid(),
                check.label.as_deref().unwrap_or_default()
            );
            tool_ok("launchctl", &["kickstart", "-k", &target], timeout).await?;
        }
        FixAction::RestartUnit => {
            let unit = check.unit.as_deref().unwrap_or_default();
            tool_ok("systemctl", &["--user", "restart", "--", unit], timeout).await?;
        }
        FixAction::Command => {
            // run_argv enforces the timeout itself; an outer timeout would
            // drop the child before its process group is killed.
            let argv = spec.command.clone().unwrap_or_default();
            crate::process::run_argv(&argv, timeout, &[], "fix command").await?;
        }
    }
    Ok(what)
}

/// Runs a system tool (launchctl, systemctl) and fails on a non-zero exit,
/// with the first line of its stderr. `run_tool` bounds it by `timeout`.
async fn tool_ok(program: &str, args: &[&str], timeout: Duration) -> Result<()> {
    let out = crate::process::run_tool(program, args, timeout).await?;
    if out.code != Some(0) {
        let line: Vec<&str> = std::iter::once(program)
            .chain(args.iter().copied())
            .collect();
        bail!(
            "`{}` exited with {}: {}",
            line.join(" "),
            out.code
                .map_or("a signal".to_string(), |c| format!("status {c}")),
            out.stderr.trim().lines().next().unwrap_or("")
        );
    }
    Ok(())
}

/// Runs the fix of `check`, waits the settle time and re-runs `verify`
/// (the failing check: `check` itself, or e.g. the HTTP endpoint behind
/// the container). Returns the outcome, its detail and `verify`'s result.
/// When `verify` is another check, `check` is re-run too, because only it
/// knows whether the service is still booting and when its container
/// started; see [`judge`].
async fn act_and_verify(
    ctx: &HealthContext,
    check: &CheckConfig,
    verify: &CheckConfig,
    spec: &FixSpec,
) -> (Outcome, String, Option<CheckResult>) {
    let before = match (ctx.docker_for(check), spec.action) {
        (Ok(d), FixAction::RestartContainer) => d
            .inspect(check.container.as_deref().unwrap_or_default())
            .await
            .ok()
            .flatten()
            .and_then(|f| f.started_at),
        _ => None,
    };
    if let Err(e) = execute(ctx, check, spec).await {
        return (Outcome::Failed, format!("{e:#}"), None);
    }
    tokio::time::sleep(spec.settle_secs.get()).await;
    let (after, owner) = if verify.name == check.name {
        (health::run_one(ctx, verify).await, None)
    } else {
        let (a, o) = tokio::join!(health::run_one(ctx, verify), health::run_one(ctx, check));
        (a, Some(o))
    };
    let (outcome, detail) = judge(spec, before.as_deref(), &after, owner.as_ref());
    (outcome, detail, Some(after))
}

/// How an attempt ended, from the re-checks after the settle time. Pure.
///
/// `verify` is the failing check re-run; `owner` the check that owns the
/// fix, re-run, when that is another check (`None`: `verify` is the
/// owner). In order: a container restart whose `State.StartedAt` did not
/// move away from `started_before` is `Failed` whatever the checks say (so
/// "verified" always means the container really restarted); a service
/// still booting (either check `starting`) is `Pending`, never `Failed`;
/// then the verifying check decides.
fn judge(
    spec: &FixSpec,
    started_before: Option<&str>,
    verify: &CheckResult,
    owner: Option<&CheckResult>,
) -> (Outcome, String) {
    let reasons = match owner {
        Some(o) => format!("{}; {}", verify.reason, o.reason),
        None => verify.reason.clone(),
    };
    let owner = owner.unwrap_or(verify);
    if spec.action == FixAction::RestartContainer {
        let now_started = owner
            .container
            .as_ref()
            .and_then(|f| f.started_at.as_deref());
        if now_started.is_none() || now_started == started_before {
            return (
                Outcome::Failed,
                format!(
                    "State.StartedAt did not change ({}); {}",
                    started_before.unwrap_or("never started"),
                    reasons
                ),
            );
        }
    }
    if verify.starting || owner.starting {
        return (
            Outcome::Pending,
            format!("still starting after {}s: {}", spec.settle_secs, reasons),
        );
    }
    if verify.status.is_failure() {
        (Outcome::Failed, verify.reason.clone())
    } else {
        (Outcome::Verified, verify.reason.clone())
    }
}

/// What acting on a service needs, the same for the cycle's stage and
/// `ops-agent fix`: the probes (to act and to re-check), the checks (each
/// fix belongs to one), the history every attempt is recorded in first,
/// and the rate limit that history is judged by.
#[derive(Clone, Copy)]
pub struct FixContext<'a> {
    /// The Docker engines and the probes' settings.
    pub health: &'a HealthContext,
    /// The effective checks, with their fixes.
    pub checks: &'a Checks,
    /// The fix-history file.
    pub history_path: &'a Path,
    /// `[fix]`.
    pub policy: &'a FixConfig,
}

/// The cycle's fix stage: for every service with a failing (flap-guarded,
/// not blocked) check, decide; record every attempt before acting; run the
/// actions concurrently (each settles on its own); record the outcomes. A
/// history that cannot be saved stops the actions: the limiter must never
/// be bypassed by a write error.
pub async fn run_fixes(
    fx: &FixContext<'_>,
    verdicts: &[Verdict],
    history: &mut FixHistory,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Vec<FixReport> {
    let now_ms = now.timestamp_millis();
    let (mut reports, to_run) = decide_all(fx, verdicts, history, dry_run, now_ms);
    if to_run.is_empty() {
        return reports;
    }
    if let Err(e) = history.save(fx.history_path) {
        let why = format!("{e:#}; not acting without a record of the attempt");
        for f in to_run {
            if let Some(v) = history.attempts.get_mut(&f.service) {
                v.retain(|a| a.at_ms != now_ms);
            }
            reports.push(f.report(fx, history, now_ms, Outcome::Failed, why.clone()));
        }
        return reports;
    }
    for f in &to_run {
        audit::record(Event::FixAttempted {
            service: f.service.clone(),
            issue: audit::detail(&f.issue),
            action: f.action.clone().unwrap_or_default(),
        });
    }
    let running: Vec<_> = to_run
        .into_iter()
        .map(|f| {
            let ctx = fx.health.clone();
            let (check, verify, spec) = (f.check.clone(), f.verify.clone(), f.spec.clone());
            let task = tokio::spawn(async move {
                let (outcome, detail, _) = act_and_verify(&ctx, &check, &verify, &spec).await;
                (outcome, detail)
            });
            (f, task)
        })
        .collect();
    for (f, task) in running {
        let (outcome, detail) = task
            .await
            .unwrap_or_else(|e| (Outcome::Failed, format!("fix task panicked: {e}")));
        history.set_outcome(&f.service, now_ms, outcome, detail.clone());
        reports.push(f.report(fx, history, now_ms, outcome, detail));
    }
    if let Err(e) = history.save(fx.history_path) {
        tracing::warn!(error = %format!("{e:#}"), "Could not save the fix outcomes.");
    }
    reports
}

/// A fix decided on, its attempt pending in the history until it ran.
struct ToRun {
    service: String,
    issue: String,
    /// The check that owns the fix.
    check: CheckConfig,
    spec: FixSpec,
    /// The check that verifies it: the failing one (an HTTP endpoint
    /// behind a container), else the fix's own.
    verify: CheckConfig,
    action: Option<String>,
}

impl ToRun {
    fn report(
        self,
        fx: &FixContext<'_>,
        history: &FixHistory,
        now_ms: i64,
        outcome: Outcome,
        detail: String,
    ) -> FixReport {
        FixReport {
            budget: budget(&self.service, history, fx.policy, now_ms),
            service: self.service,
            issue: self.issue,
            decision: FixDecision::Run,
            action: self.action,
            outcome: Some(outcome),
            detail: Some(detail),
        }
    }
}

/// Decides for each failing service (once, however many of its checks
/// fail): the fixes to run, each recorded as a pending attempt, and the
/// reports of those not run and why.
fn decide_all(
    fx: &FixContext<'_>,
    verdicts: &[Verdict],
    history: &mut FixHistory,
    dry_run: bool,
    now_ms: i64,
) -> (Vec<FixReport>, Vec<ToRun>) {
    let mut services: Vec<&str> = Vec::new();
    for v in verdicts
        .iter()
        .filter(|v| v.failing && v.result.blocked_by.is_none())
    {
        if !services.contains(&v.result.service.as_str()) {
            services.push(&v.result.service);
        }
    }
    let mut reports = Vec::new();
    let mut to_run = Vec::new();
    for service in services {
        let mine: Vec<&Verdict> = verdicts
            .iter()
            .filter(|v| v.result.service == service)
            .collect();
        // Silenced services never reach this stage (see `stage`).
        let facts = FixFacts {
            starting: mine.iter().any(|v| v.result.starting),
            crash_loop: mine.iter().find_map(|v| v.crash_loop.clone()),
            ..Default::default()
        };
        let failing = mine.iter().find(|v| v.failing);
        let issue = failing
            .map(|v| format!("{}: {}", v.result.name, v.result.reason))
            .unwrap_or_default();
        let spec = fx.checks.service_fix(service);
        let opts = FixOptions {
            dry_run,
            force: false,
        };
        let decision = decide(service, spec, history, fx.policy, now_ms, &facts, opts);
        let action = spec.map(|(c, s)| s.describe(c));
        match spec {
            Some((check, spec)) if decision == FixDecision::Run => {
                history.push(
                    service,
                    Attempt {
                        at_ms: now_ms,
                        action: spec.action.as_str().to_string(),
                        issue: issue.clone(),
                        outcome: Outcome::Pending,
                        detail: None,
                    },
                );
                let verify = failing
                    .and_then(|v| fx.checks.iter().find(|c| c.name == v.result.name))
                    .unwrap_or(check)
                    .clone();
                to_run.push(ToRun {
                    service: service.to_string(),
                    issue,
                    check: check.clone(),
                    spec: spec.clone(),
                    verify,
                    action,
                });
            }
            _ => reports.push(FixReport {
                service: service.to_string(),
                issue,
                budget: budget(service, history, fx.policy, now_ms),
                decision,
                action,
                outcome: None,
                detail: None,
            }),
        }
    }
    (reports, to_run)
}

/// What the cycle's fix stage did.
pub(crate) struct FixStage {
    /// The stage's outcome for the report.
    pub(crate) outcome: report::Outcome,
    /// One report per failing service.
    pub(crate) fixes: Vec<FixReport>,
    /// The history after this cycle's attempts.
    pub(crate) history: FixHistory,
    /// Actions run.
    pub(crate) ran: u64,
    /// Actions verified.
    pub(crate) verified: u64,
    /// The cycle deadline cut the stage.
    pub(crate) deadline_hit: bool,
}

/// The cycle's fix stage around [`run_fixes`]: a silenced service is
/// still checked but never fixed, an unusable history means no fix at
/// all, and the stage ends at `deadline`.
pub(crate) async fn stage(
    fx: &FixContext<'_>,
    verdicts: &[Verdict],
    silenced: &BTreeSet<String>,
    history: std::result::Result<FixHistory, String>,
    dry_run: bool,
    now: DateTime<Utc>,
    deadline: tokio::time::Instant,
) -> FixStage {
    let fixable: Vec<Verdict> = verdicts
        .iter()
        .filter(|v| !silenced.contains(&v.result.service))
        .cloned()
        .collect();
    let failing = fixable.iter().filter(|v| v.failing).count();
    let done = |outcome, history, deadline_hit| FixStage {
        outcome,
        fixes: Vec::new(),
        history,
        ran: 0,
        verified: 0,
        deadline_hit,
    };
    let mut history = match history {
        Ok(history) => history,
        Err(e) => {
            let why = format!("fix history unusable, no fix attempted: {e}");
            return done(report::Outcome::Failed(why), FixHistory::default(), false);
        }
    };
    if failing == 0 {
        return done(
            report::Outcome::Skipped("nothing failing".into()),
            history,
            false,
        );
    }
    let run = run_fixes(fx, &fixable, &mut history, dry_run, now);
    let fixes = match within(deadline, run).await {
        Ok(fixes) => fixes,
        Err(cut) => return done(report::Outcome::Skipped(cut.to_string()), history, true),
    };
    for f in &fixes {
        tracing::warn!("Fix: {}", f.line());
        f.audit();
    }
    let verified = fixes
        .iter()
        .filter(|f| f.outcome == Some(Outcome::Verified))
        .count();
    let ran = fixes.iter().filter(|f| f.outcome.is_some()).count();
    let detail = format!("{failing} failing, {ran} fixes run, {verified} verified");
    let outcome = if ran > verified {
        report::Outcome::Degraded(detail)
    } else {
        report::Outcome::Ok(detail)
    };
    FixStage {
        outcome,
        fixes,
        history,
        ran: ran as u64,
        verified: verified as u64,
        deadline_hit: false,
    }
}

/// A fix by hand of a service that is not silenced: see
/// [`run_silenced_aware`].
pub async fn run_manual(
    fx: &FixContext<'_>,
    service: &str,
    issue: &str,
    opts: FixOptions,
    now: DateTime<Utc>,
) -> Result<(FixReport, Option<SetAside>)> {
    run_silenced_aware(fx, service, issue, opts, None, now).await
}

/// `ops-agent fix <service> <issue> [--dry-run] [--force]`: checks the
/// service now, decides (a silence until `silenced_until_ms` and the budget
/// hold unless `--force`), and runs and verifies the fix. The attempt is
/// recorded like the cycle's.
pub(crate) async fn run_silenced_aware(
    fx: &FixContext<'_>,
    service: &str,
    issue: &str,
    opts: FixOptions,
    silenced_until_ms: Option<i64>,
    now: DateTime<Utc>,
) -> Result<(FixReport, Option<SetAside>)> {
    let FixContext {
        health: ctx,
        checks,
        history_path,
        policy,
    } = *fx;
    let Some((check, spec)) = checks.service_fix(service) else {
        return Err(no_fix_for(checks, service));
    };
    let (mut history, notice) = FixHistory::load(history_path, now)?;
    let results = health::run_all(ctx, checks).await;
    let mine: Vec<&CheckResult> = results.iter().filter(|r| r.service == service).collect();
    let facts = FixFacts {
        starting: mine.iter().any(|r| r.starting),
        blocked_by: mine.iter().find_map(|r| r.blocked_by.clone()),
        silenced_until_ms,
        ..Default::default()
    };
    let now_ms = now.timestamp_millis();
    let decision = decide(
        service,
        Some((check, spec)),
        &history,
        policy,
        now_ms,
        &facts,
        opts,
    );
    let action = Some(spec.describe(check));
    if decision != FixDecision::Run {
        let report = FixReport {
            service: service.to_string(),
            issue: issue.to_string(),
            budget: budget(service, &history, policy, now_ms),
            decision,
            action,
            outcome: None,
            detail: None,
        };
        report.audit();
        return Ok((report, notice));
    }
    history.push(
        service,
        Attempt {
            at_ms: now_ms,
            action: spec.action.as_str().to_string(),
            issue: issue.to_string(),
            outcome: Outcome::Pending,
            detail: None,
        },
    );
    history
        .save(history_path)
        .context("not acting without a record of the attempt")?;
    audit::record(Event::FixAttempted {
        service: service.to_string(),
        issue: audit::detail(issue),
        action: action.clone().unwrap_or_default(),
    });
    let (outcome, detail, _) = act_and_verify(ctx, check, check, spec).await;
    history.set_outcome(service, now_ms, outcome, detail.clone());
    history.save(history_path)?;
    let report = FixReport {
        service: service.to_string(),
        issue: issue.to_string(),
        budget: budget(service, &history, policy, now_ms),
        decision,
        action,
        outcome: Some(outcome),
        detail: Some(detail),
    };
    report.audit();
    Ok((report, notice))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::CheckKind;

    fn result(name: &str, status: health::Status, starting: bool) -> CheckResult {
        CheckResult {
            name: name.into(),
            kind: CheckKind::Http,
            service: "web".into(),
            status,
            reason: format!("{name} {}", status.as_str()),
            latency_ms: 1,
            starting,
            reprobed: false,
            blocked_by: None,
            container: None,
        }
    }

    fn container(
        name: &str,
        started_at: &str,
        status: health::Status,
        starting: bool,
    ) -> CheckResult {
        CheckResult {
            kind: CheckKind::Docker,
            container: Some(health::docker::ContainerFacts {
                id: "0123abcd".into(),
                status: "running".into(),
                running: true,
                health: None,
                health_output: None,
                started_at: Some(started_at.into()),
                restart_count: 0,
                restart_policy: None,
                exit_code: Some(0),
            }),
            ..result(name, status, starting)
        }
    }

    #[test]
    fn judging_the_recheck_after_a_fix() {
        use health::Status::{Critical, Ok as Fine, Warn};
        let restart = FixSpec::new(FixAction::RestartContainer);
        let unit = FixSpec::new(FixAction::RestartUnit);
        let t0 = "2024-05-01T10:01:00Z";
        let t1 = "2024-05-01T10:02:00Z";
        let http_ok = result("web-http", Fine, false);
        let http_down = result("web-http", Critical, false);
        type Row<'a> = (
            &'a str,
            &'a FixSpec,
            Option<&'a str>,
            CheckResult,
            Option<CheckResult>,
            Outcome,
            &'a str,
        );
        let table: Vec<Row> = vec![
            (
                "own check, restarted and healthy",
                &restart,
                Some(t0),
                container("web", t1, Fine, false),
                None,
                Outcome::Verified,
                "web ok",
            ),
            (
                "own check, StartedAt unchanged",
                &restart,
                Some(t0),
                container("web", t0, Fine, false),
                None,
                Outcome::Failed,
                "State.StartedAt did not change",
            ),
            (
                "own check, still starting",
                &restart,
                Some(t0),
                container("web", t1, Warn, true),
                None,
                Outcome::Pending,
                "still starting after 10s",
            ),
            (
                "endpoint answers, container restarted",
                &restart,
                Some(t0),
                http_ok.clone(),
                Some(container("web", t1, Fine, false)),
                Outcome::Verified,
                "web-http ok",
            ),
            (
                "endpoint answers but the container never restarted",
                &restart,
                Some(t0),
                http_ok.clone(),
                Some(container("web", t0, Fine, false)),
                Outcome::Failed,
                "State.StartedAt did not change (2024-05-01T10:01:00Z); web-http ok; web ok",
            ),
            (
                "endpoint down while the container boots",
                &restart,
                Some(t0),
                http_down.clone(),
                Some(container("web", t1, Warn, true)),
                Outcome::Pending,
                "still starting after 10s: web-http critical; web warn",
            ),
            (
                "endpoint still down, container up",
                &restart,
                Some(t0),
                http_down.clone(),
                Some(container("web", t1, Fine, false)),
                Outcome::Failed,
                "web-http critical",
            ),
            (
                "unit activating behind its endpoint",
                &unit,
                None,
                http_down,
                Some(result("web.service", Warn, true)),
                Outcome::Pending,
                "still starting",
            ),
            (
                "no StartedAt needed for a unit",
                &unit,
                None,
                http_ok,
                Some(result("web.service", Fine, false)),
                Outcome::Verified,
                "web-http ok",
            ),
        ];
        for (name, spec, before, verify, owner, want, detail) in table {
            let (got, why) = judge(spec, before, &verify, owner.as_ref());
            assert_eq!(got, want, "{name}: {why}");
            assert!(why.contains(detail), "{name}: {why}");
        }
    }
}
