//! Auto-fix: the configured actions, the rolling-window rate limiter and
//! the verification after an action.
//!
//! Actions come only from the config (a check's `fix` table): restart a
//! container, kickstart a launchd job, restart a systemd user unit, or run a
//! configured argv without a shell. Nothing from chat or an LLM ever picks
//! or shapes an action.
//!
//! Every attempt is written to the fix-history file *before* the action
//! runs, so a cycle killed mid-fix still counts it: the limit counts
//! attempts, not outcomes. [`decide`] is pure; [`run_fixes`] (the cycle) and
//! [`run_manual`] (`ops-agent fix`) do the I/O around it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::health::{self, CheckConfig, CheckKind, CheckResult, HealthContext, Verdict};

/// What a fix does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixAction {
    /// `POST /containers/{container}/restart` (docker checks).
    RestartContainer,
    /// `launchctl kickstart -k gui/<uid>/<label>` (launchd checks).
    Kickstart,
    /// `systemctl --user restart <unit>` (systemd checks).
    RestartUnit,
    /// The configured `command` argv, run without a shell.
    Command,
}

impl FixAction {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FixAction::RestartContainer => "restart_container",
            FixAction::Kickstart => "kickstart",
            FixAction::RestartUnit => "restart_unit",
            FixAction::Command => "command",
        }
    }
}

/// A check's `fix = { … }` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixSpec {
    /// The action.
    pub action: FixAction,
    /// For `command`: program and arguments (absolute program path advised;
    /// no shell, no expansion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Wait after the action before re-checking: a restarted service needs
    /// a moment before it answers.
    #[serde(default = "default_settle_secs")]
    pub settle_secs: u64,
    /// After an attempt the service is left alone this long, so a slow boot
    /// is never restarted again mid-way.
    #[serde(default = "default_start_grace_secs")]
    pub start_grace_secs: u64,
    /// Upper bound for the action itself (the command, launchctl,
    /// systemctl, or the container's stop + start).
    #[serde(default = "default_action_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_settle_secs() -> u64 {
    10
}
fn default_start_grace_secs() -> u64 {
    60
}
fn default_action_timeout_secs() -> u64 {
    60
}

/// Seconds a container gets to stop on restart before SIGKILL (Docker's
/// own default).
pub const RESTART_STOP_SECS: i32 = 10;

impl FixSpec {
    /// A spec with the default timings.
    pub fn new(action: FixAction) -> FixSpec {
        FixSpec {
            action,
            command: None,
            settle_secs: default_settle_secs(),
            start_grace_secs: default_start_grace_secs(),
            timeout_secs: default_action_timeout_secs(),
        }
    }

    /// Checks that the action fits the check's kind and that `command`
    /// comes exactly with the `command` action. `at` names the table.
    pub fn validate(&self, at: &str, kind: CheckKind) -> Result<()> {
        let action = self.action.as_str();
        let needs = match self.action {
            FixAction::RestartContainer => Some(CheckKind::Docker),
            FixAction::Kickstart => Some(CheckKind::Launchd),
            FixAction::RestartUnit => Some(CheckKind::Systemd),
            FixAction::Command => None,
        };
        if let Some(k) = needs {
            if k != kind {
                bail!(
                    "{at}.action: '{action}' only fits checks of kind '{}', this one is '{}'; use action = \"command\" instead",
                    k.as_str(),
                    kind.as_str()
                );
            }
        }
        match (&self.command, self.action) {
            (None, FixAction::Command) => {
                bail!("{at}: action 'command' needs command = [\"/path/to/program\", \"arg\", …]")
            }
            (Some(c), FixAction::Command) => {
                if c.first().is_none_or(|p| p.trim().is_empty()) {
                    bail!("{at}.command: must start with a program, got {c:?}");
                }
            }
            (Some(_), _) => {
                bail!("{at}: key 'command' only applies to action 'command', not '{action}'")
            }
            (None, _) => {}
        }
        if self.timeout_secs == 0 {
            bail!("{at}.timeout_secs must be at least 1, got 0");
        }
        if self.settle_secs > 600 {
            bail!(
                "{at}.settle_secs must be at most 600, got {}",
                self.settle_secs
            );
        }
        Ok(())
    }

    /// One line saying what the action does, for logs and dry runs.
    pub fn describe(&self, check: &CheckConfig) -> String {
        match self.action {
            FixAction::RestartContainer => format!(
                "restart container {}",
                check.container.as_deref().unwrap_or("?")
            ),
            FixAction::Kickstart => format!(
                "launchctl kickstart -k gui/{}/{}",
                crate::process::current_uid(),
                check.label.as_deref().unwrap_or("?")
            ),
            FixAction::RestartUnit => format!(
                "systemctl --user restart {}",
                check.unit.as_deref().unwrap_or("?")
            ),
            FixAction::Command => format!("run {:?}", self.command.clone().unwrap_or_default()),
        }
    }
}

/// `[fix]`: the rate limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FixConfig {
    /// Attempts per service within the rolling window (the runbook's 3).
    pub max_attempts_per_hour: u32,
    /// The rolling window (60 minutes: "per hour").
    pub window_mins: u64,
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
    pub fn validate(&self) -> Result<()> {
        if self.window_mins == 0 {
            bail!("fix.window_mins must be at least 1, got 0");
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
    pub fn window_ms(&self) -> i64 {
        self.window_mins as i64 * 60_000
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The re-check after the settle time passed.
    Verified,
    /// The action failed or the re-check still failed.
    Failed,
    /// Recorded before the action; stays so if the cycle died mid-fix or
    /// the service was still starting at the re-check.
    Pending,
}

impl Outcome {
    /// The lowercase word.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Verified => "verified",
            Outcome::Failed => "failed",
            Outcome::Pending => "pending",
        }
    }
}

/// One recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When the attempt started (epoch ms).
    pub at_ms: i64,
    /// The action's config spelling.
    pub action: String,
    /// What it was for: the failing check's reason, or the operator's
    /// words for a manual fix.
    #[serde(default)]
    pub issue: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The re-check's reason or the action's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The fix-history file (`/tmp/ops-fix-history.json` by default), owner-only:
///
/// ```json
/// {"version": 1,
///  "attempts": {"mattermost": [
///     {"at_ms": 1714557600000, "action": "restart_container",
///      "issue": "mattermost exited (exit code 137)",
///      "outcome": "verified", "detail": "mattermost running, healthy"}]}}
/// ```
///
/// `attempts` maps a service to its attempts, oldest first; `outcome` is
/// `verified`, `failed` or `pending` (written before the action runs).
/// Attempts older than a day are pruned. Deleting the file resets every
/// counter; a file that does not parse is set aside as
/// `<name>.corrupt-<time>` and the history starts empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FixHistory {
    /// Format version (1).
    pub version: u32,
    /// Attempts per service, oldest first.
    pub attempts: BTreeMap<String, Vec<Attempt>>,
}

impl Default for FixHistory {
    fn default() -> Self {
        FixHistory {
            version: 1,
            attempts: BTreeMap::new(),
        }
    }
}

/// Attempts kept for `explain` and `fix --history` beyond the window.
const KEEP_MS: i64 = 24 * 3600 * 1000;
const KEEP_PER_SERVICE: usize = 50;

impl FixHistory {
    /// Loads the history; a missing file is an empty history. A corrupt one
    /// is set aside and replaced by an empty history, and the second value
    /// says so (for the cycle report and the log).
    pub fn load(
        path: &Path,
        now: DateTime<Utc>,
    ) -> Result<(FixHistory, Option<crate::state::SetAside>)> {
        let loaded = crate::state::load::<FixHistory>(path, now)?;
        if loaded.set_aside.is_some() || loaded.value.version == 1 {
            return Ok((loaded.value, loaded.set_aside));
        }
        // A future format this binary cannot count with: keep it, start empty.
        let moved_to = crate::files::set_aside(path, now)?;
        Ok((
            FixHistory::default(),
            Some(crate::state::SetAside {
                path: path.to_path_buf(),
                moved_to,
                at_ms: now.timestamp_millis(),
                error: format!("unknown fix history version {}", loaded.value.version),
            }),
        ))
    }

    /// Writes the history atomically (owner-only).
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).context("encoding the fix history")?;
        crate::files::write_private_atomic(path, &json)
            .with_context(|| format!("saving fix history {}", path.display()))
    }

    /// The service's attempts inside the window ending at `now_ms`.
    pub fn in_window(&self, service: &str, now_ms: i64, window_ms: i64) -> Vec<&Attempt> {
        self.attempts
            .get(service)
            .map(|v| v.iter().filter(|a| a.at_ms > now_ms - window_ms).collect())
            .unwrap_or_default()
    }

    /// The service's latest attempt.
    pub fn last(&self, service: &str) -> Option<&Attempt> {
        self.attempts.get(service).and_then(|v| v.last())
    }

    /// Records an attempt and prunes old ones. Returns its index.
    pub fn push(&mut self, service: &str, attempt: Attempt) -> usize {
        let now = attempt.at_ms;
        let v = self.attempts.entry(service.to_string()).or_default();
        v.push(attempt);
        self.prune(now);
        self.attempts.get(service).map_or(0, |v| v.len() - 1)
    }

    /// Drops attempts older than a day, and more than 50 per service.
    pub fn prune(&mut self, now_ms: i64) {
        for v in self.attempts.values_mut() {
            v.retain(|a| a.at_ms > now_ms - KEEP_MS);
            if v.len() > KEEP_PER_SERVICE {
                v.drain(..v.len() - KEEP_PER_SERVICE);
            }
        }
        self.attempts.retain(|_, v| !v.is_empty());
    }

    /// Sets the outcome of the service's attempt started at `at_ms`.
    pub fn set_outcome(&mut self, service: &str, at_ms: i64, outcome: Outcome, detail: String) {
        if let Some(a) = self
            .attempts
            .get_mut(service)
            .and_then(|v| v.iter_mut().rev().find(|a| a.at_ms == at_ms))
        {
            a.outcome = outcome;
            a.detail = Some(detail);
        }
    }
}

/// How much of a service's budget is left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// Attempts inside the window.
    pub used: u32,
    /// Attempts still allowed now.
    pub left: u32,
    /// When the oldest attempt in the window leaves it (only when spent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_allowed_at_ms: Option<i64>,
}

/// The budget of a service at `now_ms`. Pure.
pub fn budget(service: &str, history: &FixHistory, policy: &FixConfig, now_ms: i64) -> Budget {
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
pub struct FixFacts {
    /// A check of the service is booting (health `starting`, `restarting`,
    /// `activating`).
    pub starting: bool,
    /// The failing parent that blocks the service's failing check.
    pub blocked_by: Option<String>,
}

/// How the fix was asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FixOptions {
    /// Say what would run, run nothing, record nothing.
    pub dry_run: bool,
    /// `fix --force`: ignore the budget and the start grace.
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
    pub fn describe(&self) -> String {
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
            FixDecision::SkipDryRun { would } => format!("dry run: would {would}"),
        }
    }
}

/// Decides whether to run the service's fix now. Pure. The order says what
/// wins: no fix, blocked, starting, grace, budget, dry run. `--force` skips
/// the grace and the budget, never a block or a boot in progress.
pub fn decide(
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
    if facts.starting {
        return FixDecision::SkipStarting;
    }
    if !opts.force {
        if let Some(last) = history.last(service) {
            let until_ms = last.at_ms + spec.start_grace_secs as i64 * 1000;
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

/// The fix of a service: the first check of the service that has one (a
/// service's HTTP check may fail while the fix lives on its container).
pub fn service_fix<'a>(
    checks: &'a [CheckConfig],
    service: &str,
) -> Option<(&'a CheckConfig, &'a FixSpec)> {
    checks
        .iter()
        .filter(|c| c.service() == service)
        .find_map(|c| c.fix.as_ref().map(|f| (c, f)))
}

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
    pub action: Option<String>,
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
    /// One line for the log.
    pub fn line(&self) -> String {
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

/// Runs the action once, under its timeout. Returns what was done.
///
/// A `command` runs through [`crate::process::run_argv`], the crate's one
/// way to run a configured command: a clean environment (PATH and HOME
/// only, so the agent's tokens and passwords never reach it), its own
/// process group killed on timeout, a bounded stderr tail. `launchctl` and
/// `systemctl` are fixed system tools and go through
/// [`crate::process::run_tool`].
pub async fn execute(ctx: &HealthContext, check: &CheckConfig, spec: &FixSpec) -> Result<String> {
    let timeout = Duration::from_secs(spec.timeout_secs);
    let what = spec.describe(check);
    let no_result = || format!("{what}: no result within {}s", spec.timeout_secs);
    match spec.action {
        FixAction::RestartContainer => {
            let docker = ctx.docker.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
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
            tool_ok("systemctl", &["--user", "restart", unit], timeout).await?;
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
pub async fn act_and_verify(
    ctx: &HealthContext,
    check: &CheckConfig,
    verify: &CheckConfig,
    spec: &FixSpec,
) -> (Outcome, String, Option<CheckResult>) {
    let before = match (&ctx.docker, spec.action) {
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
    tokio::time::sleep(Duration::from_secs(spec.settle_secs)).await;
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
pub fn judge(
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

/// The cycle's fix stage: for every service with a failing (flap-guarded,
/// not blocked) check, decide; record every attempt before acting; run the
/// actions concurrently (each settles on its own); record the outcomes. A
/// history that cannot be saved stops the actions: the limiter must never
/// be bypassed by a write error.
#[allow(clippy::too_many_arguments)]
pub async fn run_fixes(
    ctx: &HealthContext,
    checks: &[CheckConfig],
    verdicts: &[Verdict],
    history: &mut FixHistory,
    history_path: &Path,
    policy: &FixConfig,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Vec<FixReport> {
    let checks = health::effective_checks(checks);
    let now_ms = now.timestamp_millis();
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
        let facts = FixFacts {
            starting: mine.iter().any(|v| v.result.starting),
            blocked_by: None,
        };
        let issue = mine
            .iter()
            .find(|v| v.failing)
            .map(|v| format!("{}: {}", v.result.name, v.result.reason))
            .unwrap_or_default();
        let spec = service_fix(&checks, service);
        let opts = FixOptions {
            dry_run,
            force: false,
        };
        let decision = decide(service, spec, history, policy, now_ms, &facts, opts);
        let action = spec.map(|(c, s)| s.describe(c));
        if decision == FixDecision::Run {
            let (check, spec) = spec.expect("Run implies a fix");
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
            // Verify with the failing check itself when it is another one
            // than the fix's (an HTTP endpoint behind a container).
            let verify = mine
                .iter()
                .find(|v| v.failing)
                .and_then(|v| checks.iter().find(|c| c.name == v.result.name))
                .unwrap_or(check)
                .clone();
            to_run.push((
                service.to_string(),
                issue,
                check.clone(),
                spec.clone(),
                verify,
                action,
            ));
        } else {
            reports.push(FixReport {
                service: service.to_string(),
                issue,
                budget: budget(service, history, policy, now_ms),
                decision,
                action,
                outcome: None,
                detail: None,
            });
        }
    }
    if to_run.is_empty() {
        return reports;
    }
    if let Err(e) = history.save(history_path) {
        let why = format!("{e:#}; not acting without a record of the attempt");
        for (service, issue, _, _, _, action) in to_run {
            if let Some(v) = history.attempts.get_mut(&service) {
                v.retain(|a| a.at_ms != now_ms);
            }
            reports.push(FixReport {
                budget: budget(&service, history, policy, now_ms),
                service,
                issue,
                decision: FixDecision::Run,
                action,
                outcome: Some(Outcome::Failed),
                detail: Some(why.clone()),
            });
        }
        return reports;
    }
    let tasks: Vec<_> = to_run
        .into_iter()
        .map(|(service, issue, check, spec, verify, action)| {
            let ctx = ctx.clone();
            let task = tokio::spawn(async move {
                let (outcome, detail, _) = act_and_verify(&ctx, &check, &verify, &spec).await;
                (outcome, detail)
            });
            (service, issue, action, task)
        })
        .collect();
    for (service, issue, action, task) in tasks {
        let (outcome, detail) = task
            .await
            .unwrap_or_else(|e| (Outcome::Failed, format!("fix task panicked: {e}")));
        history.set_outcome(&service, now_ms, outcome, detail.clone());
        reports.push(FixReport {
            budget: budget(&service, history, policy, now_ms),
            service,
            issue,
            decision: FixDecision::Run,
            action,
            outcome: Some(outcome),
            detail: Some(detail),
        });
    }
    if let Err(e) = history.save(history_path) {
        tracing::warn!(error = %format!("{e:#}"), "Could not save the fix outcomes.");
    }
    reports
}

/// `ops-agent fix <service> <issue> [--dry-run] [--force]`: checks the
/// service now, decides (the budget holds unless `--force`), and runs and
/// verifies the fix. The attempt is recorded like the cycle's.
#[allow(clippy::too_many_arguments)]
pub async fn run_manual(
    ctx: &HealthContext,
    checks: &[CheckConfig],
    service: &str,
    issue: &str,
    history_path: &Path,
    policy: &FixConfig,
    opts: FixOptions,
    now: DateTime<Utc>,
) -> Result<(FixReport, Option<crate::state::SetAside>)> {
    let checks = health::effective_checks(checks);
    let Some((check, spec)) = service_fix(&checks, service) else {
        let known: Vec<&str> = checks
            .iter()
            .filter(|c| c.fix.is_some())
            .map(|c| c.service())
            .collect();
        bail!(
            "no fix is configured for service '{service}' (services with a fix: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    };
    let (mut history, notice) = FixHistory::load(history_path, now)?;
    let results = health::run_all(ctx, &checks).await;
    let mine: Vec<&CheckResult> = results.iter().filter(|r| r.service == service).collect();
    let facts = FixFacts {
        starting: mine.iter().any(|r| r.starting),
        blocked_by: mine.iter().find_map(|r| r.blocked_by.clone()),
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
        return Ok((
            FixReport {
                service: service.to_string(),
                issue: issue.to_string(),
                budget: budget(service, &history, policy, now_ms),
                decision,
                action,
                outcome: None,
                detail: None,
            },
            notice,
        ));
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
    let (outcome, detail, _) = act_and_verify(ctx, check, check, spec).await;
    history.set_outcome(service, now_ms, outcome, detail.clone());
    history.save(history_path)?;
    Ok((
        FixReport {
            service: service.to_string(),
            issue: issue.to_string(),
            budget: budget(service, &history, policy, now_ms),
            decision,
            action,
            outcome: Some(outcome),
            detail: Some(detail),
        },
        notice,
    ))
}

/// One service's window, for `ops-agent fix --history [--json]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceHistory {
    /// The service.
    pub service: String,
    /// The budget now.
    pub budget: Budget,
    /// Attempts inside the window, oldest first.
    pub in_window: Vec<Attempt>,
    /// The latest attempt, even outside the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<Attempt>,
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn attempt(at_ms: i64) -> Attempt {
        Attempt {
            at_ms,
            action: "restart_container".into(),
            issue: "down".into(),
            outcome: Outcome::Failed,
            detail: None,
        }
    }

    fn history(service: &str, ats: &[i64]) -> FixHistory {
        let mut h = FixHistory::default();
        for &a in ats {
            h.attempts
                .entry(service.into())
                .or_default()
                .push(attempt(a));
        }
        h
    }

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
            blocked_by: None,
        };
        let blocked = FixFacts {
            starting: true,
            blocked_by: Some("docker-engine".into()),
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
        ];
        for (name, fix, h, facts, opts, want) in table {
            assert_eq!(decide("web", fix, h, &p, now, facts, opts), want, "{name}");
        }
    }

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
                status: "running".into(),
                running: true,
                health: None,
                health_output: None,
                started_at: Some(started_at.into()),
                restart_count: 0,
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

    #[test]
    fn spec_validation_names_the_key() {
        let at = "checks[0] (\"web\"): fix";
        let mut s = FixSpec::new(FixAction::Kickstart);
        let e = s.validate(at, CheckKind::Docker).unwrap_err().to_string();
        assert!(e.contains("fix.action") && e.contains("'launchd'"), "{e}");
        s.action = FixAction::Command;
        let e = s.validate(at, CheckKind::Http).unwrap_err().to_string();
        assert!(e.contains("needs command"), "{e}");
        s.command = Some(vec!["".into()]);
        assert!(s.validate(at, CheckKind::Http).is_err());
        s.command = Some(vec!["/usr/bin/true".into()]);
        s.validate(at, CheckKind::Http).unwrap();
        let mut r = FixSpec::new(FixAction::RestartContainer);
        r.command = Some(vec!["/bin/x".into()]);
        let e = r.validate(at, CheckKind::Docker).unwrap_err().to_string();
        assert!(e.contains("'command' only applies"), "{e}");
    }

    #[test]
    fn history_round_trip_prune_and_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.json");
        let now = Utc::now();
        let (mut h, notice) = FixHistory::load(&path, now).unwrap();
        assert!(notice.is_none() && h.attempts.is_empty());
        let ms = now.timestamp_millis();
        h.push("s", attempt(ms - 25 * 3600 * 1000));
        h.push("s", attempt(ms));
        assert_eq!(h.attempts["s"].len(), 1, "a day-old attempt is pruned");
        h.set_outcome("s", ms, Outcome::Verified, "ok".into());
        h.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"version\": 1") && text.contains("\"verified\""),
            "{text}"
        );
        assert_eq!(FixHistory::load(&path, now).unwrap().0, h);
        std::fs::write(&path, "{not json").unwrap();
        let (h2, notice) = FixHistory::load(&path, now).unwrap();
        assert!(h2.attempts.is_empty());
        let notice = notice.unwrap().to_string();
        assert!(
            notice.contains("corrupt") && notice.contains("set aside"),
            "{notice}"
        );
        assert!(!path.exists());
    }

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
}
