//! Health checks as data (the Gatus habit): a check is a [`CheckConfig`]
//! read from the `[[checks]]` tables, a probe turns it into a
//! [`CheckResult`], and [`run_all`] runs every probe concurrently, each under
//! its own timeout, so one hanging dependency costs its timeout and not the
//! sum of all of them.
//!
//! This module owns the check model (kinds, keys, validation, parents), the
//! probe dispatch with the in-cycle re-probe and the parent blocking. The
//! flap guard and the per-service facts live in [`guard`], the renderers for
//! `health` and `explain` in [`view`], one probe per file beside them.

pub mod daemon;
pub mod docker;
pub mod guard;
pub mod http;
pub mod system;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::fix::FixSpec;

pub use guard::{CheckMemo, HealthState, ServiceSummary, Verdict};

/// The name of the Docker engine check that is added when docker checks
/// exist and none of kind `docker_engine` is configured.
pub const IMPLICIT_ENGINE_CHECK: &str = "docker-engine";

/// How a check came out. Ordered by severity so the worst result of a set is
/// simply the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Within every threshold.
    Ok,
    /// Past a warning threshold; worth a look, not an incident.
    Warn,
    /// Failing: a candidate for a fix or an escalation.
    Critical,
    /// The probe itself could not tell (timeout, probe error).
    Unknown,
}

impl Status {
    /// The lowercase word used in logs and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Critical => "critical",
            Status::Unknown => "unknown",
        }
    }

    /// Whether this result counts towards a failure streak: a probe that
    /// could not tell (a hanging endpoint) is as bad as a failing one.
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Critical | Status::Unknown)
    }
}

/// What kind of probe a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Usage of the volume that holds `path`.
    Disk,
    /// Used memory of the host.
    Memory,
    /// A container (`container`): exists, running, healthy.
    Docker,
    /// The Docker engine itself answers; the parent of every docker check so
    /// that "Docker unreachable" is one result, not one per container.
    DockerEngine,
    /// An HTTP endpoint (`url`): status, body, latency.
    Http,
    /// A launchd job (`label`) on macOS.
    Launchd,
    /// A systemd user unit (`unit`) on Linux.
    Systemd,
}

impl CheckKind {
    /// The config spelling of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Disk => "disk",
            CheckKind::Memory => "memory",
            CheckKind::Docker => "docker",
            CheckKind::DockerEngine => "docker_engine",
            CheckKind::Http => "http",
            CheckKind::Launchd => "launchd",
            CheckKind::Systemd => "systemd",
        }
    }
}

/// `expect_status`: a code (`200`, `"200"`) or an inclusive range
/// (`"200-399"`). Both spellings are accepted because TOML users write
/// either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExpectStatus {
    /// A single code written as a TOML integer.
    Code(u16),
    /// `"200"` or `"200-399"`.
    Text(String),
}

impl ExpectStatus {
    /// The inclusive range of accepted codes, or an error naming the value.
    pub fn range(&self) -> Result<(u16, u16)> {
        let valid = |c: u16| (100..=599).contains(&c);
        let (lo, hi) = match self {
            ExpectStatus::Code(c) => (*c, *c),
            ExpectStatus::Text(t) => {
                let t = t.trim();
                let parse = |s: &str| s.trim().parse::<u16>().ok();
                match t.split_once('-') {
                    Some((a, b)) => match (parse(a), parse(b)) {
                        (Some(a), Some(b)) => (a, b),
                        _ => bail!("'{t}' is not a status code or a range like \"200-399\""),
                    },
                    None => match parse(t) {
                        Some(c) => (c, c),
                        None => bail!("'{t}' is not a status code or a range like \"200-399\""),
                    },
                }
            }
        };
        if !valid(lo) || !valid(hi) || lo > hi {
            bail!("{lo}-{hi} is not a range of HTTP status codes (100-599, low first)");
        }
        Ok((lo, hi))
    }
}

/// One `[[checks]]` table. Kind-specific keys are optional here and
/// [`CheckConfig::validate`] rejects keys that do not apply to the kind, so a
/// typo never silently turns a check off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Unique name, used in logs, `health --check NAME` and state.
    pub name: String,
    /// Which probe to run.
    pub kind: CheckKind,
    /// The service this check belongs to (fixes and incidents are per
    /// service); defaults to the check's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Upper bound for the probe; a probe that takes longer is `unknown`.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// disk: a path on the volume to watch (`~` expands to home).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// disk, memory: percent used at which the result is `warn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_pct: Option<f64>,
    /// disk, memory: percent used at which the result is `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_pct: Option<f64>,
    /// docker: the container's name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// http: the URL to request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// http: the method (default GET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// http: accepted status code or range (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<ExpectStatus>,
    /// http: a substring the body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// http: a slower answer is `warn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_warn_ms: Option<u64>,
    /// http: verify the certificate (default true); false only for an
    /// endpoint the operator knows is self-signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_tls: Option<bool>,
    /// launchd: the job label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// systemd: the user unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The check this one depends on: while it fails, this one is reported
    /// as blocked, neither fixed nor counted. Docker checks default to the
    /// Docker engine check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Consecutive failed cycles before the check counts as failing (2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_after: Option<u32>,
    /// Consecutive good cycles before a failing check counts as recovered (1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover_after: Option<u32>,
    /// The one action the agent may take when this check fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<FixSpec>,
}

fn default_timeout_secs() -> u64 {
    5
}

/// The flap guard's default: one failed cycle (already re-probed) is not an
/// incident yet.
pub const DEFAULT_FAIL_AFTER: u32 = 2;
/// One good cycle ends an incident by default.
pub const DEFAULT_RECOVER_AFTER: u32 = 1;

const HTTP_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];

impl CheckConfig {
    /// A check with only the common keys set; the kind-specific ones are
    /// filled in by the caller.
    pub fn new(name: &str, kind: CheckKind) -> CheckConfig {
        CheckConfig {
            name: name.to_string(),
            kind,
            service: None,
            timeout_secs: default_timeout_secs(),
            path: None,
            warn_pct: None,
            critical_pct: None,
            container: None,
            url: None,
            method: None,
            expect_status: None,
            body_contains: None,
            latency_warn_ms: None,
            verify_tls: None,
            label: None,
            unit: None,
            parent: None,
            fail_after: None,
            recover_after: None,
            fix: None,
        }
    }

    /// The service name fixes and incidents are keyed by.
    pub fn service(&self) -> &str {
        self.service.as_deref().unwrap_or(&self.name)
    }

    /// Consecutive failures before the check is failing.
    pub fn fail_after(&self) -> u32 {
        self.fail_after.unwrap_or(DEFAULT_FAIL_AFTER)
    }

    /// Consecutive successes before a failing check has recovered.
    pub fn recover_after(&self) -> u32 {
        self.recover_after.unwrap_or(DEFAULT_RECOVER_AFTER)
    }

    /// The probe's time budget.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// The runbook's system checks: the root volume, the home volume and
    /// memory, with the runbook thresholds (disk 85/90 %, memory 90 %).
    pub fn defaults() -> Vec<CheckConfig> {
        let base = |name: &str, kind, path: Option<&str>, warn: f64, crit: f64| CheckConfig {
            path: path.map(str::to_string),
            warn_pct: Some(warn),
            critical_pct: Some(crit),
            ..CheckConfig::new(name, kind)
        };
        vec![
            base("disk-root", CheckKind::Disk, Some("/"), 85.0, 90.0),
            base("disk-home", CheckKind::Disk, Some("~"), 85.0, 90.0),
            base("memory", CheckKind::Memory, None, 90.0, 90.0),
        ]
    }

    /// The kind-specific keys that are set, by config name.
    fn specific_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut add = |set: bool, k| {
            if set {
                keys.push(k)
            }
        };
        add(self.path.is_some(), "path");
        add(self.warn_pct.is_some(), "warn_pct");
        add(self.critical_pct.is_some(), "critical_pct");
        add(self.container.is_some(), "container");
        add(self.url.is_some(), "url");
        add(self.method.is_some(), "method");
        add(self.expect_status.is_some(), "expect_status");
        add(self.body_contains.is_some(), "body_contains");
        add(self.latency_warn_ms.is_some(), "latency_warn_ms");
        add(self.verify_tls.is_some(), "verify_tls");
        add(self.label.is_some(), "label");
        add(self.unit.is_some(), "unit");
        keys
    }

    /// Checks the keys that depend on the kind. `at` names the table in
    /// errors, e.g. `checks[2] ("disk-home")`.
    pub fn validate(&self, at: &str) -> Result<()> {
        if self.name.trim().is_empty() {
            bail!("{at}: name must not be empty");
        }
        if self.timeout_secs == 0 {
            bail!("{at}: timeout_secs must be at least 1, got 0");
        }
        let kind = self.kind.as_str();
        let (allowed, required): (&[&str], Option<&str>) = match self.kind {
            CheckKind::Disk => (&["path", "warn_pct", "critical_pct"], Some("path")),
            CheckKind::Memory => (&["warn_pct", "critical_pct"], None),
            CheckKind::Docker => (&["container"], Some("container")),
            CheckKind::DockerEngine => (&[], None),
            CheckKind::Http => (
                &[
                    "url",
                    "method",
                    "expect_status",
                    "body_contains",
                    "latency_warn_ms",
                    "verify_tls",
                ],
                Some("url"),
            ),
            CheckKind::Launchd => (&["label"], Some("label")),
            CheckKind::Systemd => (&["unit"], Some("unit")),
        };
        for key in self.specific_keys() {
            if !allowed.contains(&key) {
                bail!("{at}: key '{key}' does not apply to kind '{kind}'");
            }
        }
        if let Some(req) = required {
            let value = match req {
                "path" => &self.path,
                "container" => &self.container,
                "url" => &self.url,
                "label" => &self.label,
                _ => &self.unit,
            };
            if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                bail!("{at}: kind '{kind}' needs a '{req}'");
            }
        }
        for (key, v) in [
            ("warn_pct", self.warn_pct),
            ("critical_pct", self.critical_pct),
        ] {
            if let Some(v) = v {
                if !(0.0..=100.0).contains(&v) {
                    bail!("{at}: {key} must be between 0 and 100, got {v}");
                }
            }
        }
        if let (Some(w), Some(c)) = (self.warn_pct, self.critical_pct) {
            if w > c {
                bail!("{at}: warn_pct ({w}) must not be above critical_pct ({c})");
            }
        }
        if let Some(url) = &self.url {
            let ok = reqwest::Url::parse(url)
                .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .unwrap_or(false);
            if !ok {
                bail!("{at}: url '{url}' is not an http(s) URL");
            }
        }
        if let Some(m) = &self.method {
            if !HTTP_METHODS.contains(&m.as_str()) {
                bail!(
                    "{at}: method '{m}' is not one of {}",
                    HTTP_METHODS.join(", ")
                );
            }
        }
        if let Some(e) = &self.expect_status {
            if let Err(err) = e.range() {
                bail!("{at}: expect_status: {err}");
            }
        }
        if self.latency_warn_ms == Some(0) {
            bail!("{at}: latency_warn_ms must be at least 1, got 0");
        }
        for (key, v) in [
            ("fail_after", self.fail_after),
            ("recover_after", self.recover_after),
        ] {
            if v == Some(0) {
                bail!("{at}: {key} must be at least 1, got 0");
            }
        }
        if let Some(p) = &self.parent {
            if p == &self.name {
                bail!("{at}: parent '{p}' is the check itself");
            }
        }
        if let Some(fix) = &self.fix {
            fix.validate(&format!("{at}: fix"), self.kind)?;
        }
        Ok(())
    }
}

/// Checks what single tables cannot: unique names, parents that exist, no
/// parent cycles, at most one `docker_engine` check, and the implicit engine
/// check's name left free. `Config::validate` calls this after
/// each table's own [`CheckConfig::validate`].
pub fn validate_checks(checks: &[CheckConfig]) -> Result<()> {
    let mut names = BTreeSet::new();
    for (i, c) in checks.iter().enumerate() {
        if !names.insert(c.name.as_str()) {
            bail!(
                "checks[{i}] (\"{}\"): name is used by another check",
                c.name
            );
        }
    }
    let engines: Vec<_> = checks
        .iter()
        .filter(|c| c.kind == CheckKind::DockerEngine)
        .collect();
    if engines.len() > 1 {
        bail!(
            "checks: only one check may have kind 'docker_engine', found {}",
            engines
                .iter()
                .map(|c| format!("'{}'", c.name))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let has_docker = checks.iter().any(|c| c.kind == CheckKind::Docker);
    if has_docker && engines.is_empty() {
        if let Some((i, c)) = checks
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == IMPLICIT_ENGINE_CHECK)
        {
            bail!(
                "checks[{i}] (\"{}\"): the name '{IMPLICIT_ENGINE_CHECK}' is reserved for the implicit Docker engine check; give it kind 'docker_engine' or another name",
                c.name
            );
        }
    }
    let by_name: BTreeMap<&str, &CheckConfig> =
        checks.iter().map(|c| (c.name.as_str(), c)).collect();
    for (i, c) in checks.iter().enumerate() {
        let at = format!("checks[{i}] (\"{}\")", c.name);
        if let Some(p) = &c.parent {
            let implicit = has_docker && engines.is_empty() && p == IMPLICIT_ENGINE_CHECK;
            if !by_name.contains_key(p.as_str()) && !implicit {
                bail!("{at}: parent '{p}' is not the name of a check");
            }
        }
        // Walk up the parents; a chain longer than the list is a cycle.
        let mut seen = vec![c.name.as_str()];
        let mut cur = c;
        while let Some(p) = cur.parent.as_deref() {
            if seen.contains(&p) {
                bail!("{at}: parent chain loops: {} -> {p}", seen.join(" -> "));
            }
            seen.push(p);
            match by_name.get(p) {
                Some(next) => cur = next,
                None => break,
            }
        }
    }
    Ok(())
}

/// The checks as they run: the configured ones plus the implicit Docker
/// engine check when docker checks exist without one, and every docker check
/// without a parent parented to the engine. Idempotent, so callers may pass
/// either the configured or the effective list.
pub fn effective_checks(checks: &[CheckConfig]) -> Vec<CheckConfig> {
    let mut out = checks.to_vec();
    if !out.iter().any(|c| c.kind == CheckKind::Docker) {
        return out;
    }
    let engine = match out.iter().find(|c| c.kind == CheckKind::DockerEngine) {
        Some(e) => e.name.clone(),
        None => {
            let mut e = CheckConfig::new(IMPLICIT_ENGINE_CHECK, CheckKind::DockerEngine);
            e.service = Some("docker".to_string());
            e.fail_after = Some(1);
            out.insert(0, e);
            IMPLICIT_ENGINE_CHECK.to_string()
        }
    };
    for c in out.iter_mut() {
        if c.kind == CheckKind::Docker && c.parent.is_none() {
            c.parent = Some(engine.clone());
        }
    }
    out
}

/// `[health]`: how the checks run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Pause before a failed check is probed a second time in the same
    /// cycle; only a failure that survives it counts (cycles are 5 min apart,
    /// so a blip should neither wait 10 minutes nor cause a restart).
    pub reprobe_pause_ms: u64,
    /// The Docker engine to talk to (`unix:///…`, `tcp://host:port`,
    /// `http://…`); absent means `$DOCKER_HOST`, else the platform default
    /// (Docker Desktop's `~/.docker/run/docker.sock` on macOS,
    /// `/var/run/docker.sock` elsewhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_host: Option<String>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            reprobe_pause_ms: 2000,
            docker_host: None,
        }
    }
}

impl HealthConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<()> {
        if self.reprobe_pause_ms > 60_000 {
            bail!(
                "health.reprobe_pause_ms must be at most 60000 (one minute), got {}",
                self.reprobe_pause_ms
            );
        }
        if let Some(h) = &self.docker_host {
            docker::DockerHost::parse(h).map_err(|e| anyhow::anyhow!("health.docker_host: {e}"))?;
        }
        Ok(())
    }
}

/// What the probes share for one run: the Docker client (connected once,
/// or the reason it could not be) and the re-probe pause.
#[derive(Clone)]
pub struct HealthContext {
    /// The Docker engine client, or why there is none.
    pub docker: std::result::Result<docker::DockerClient, String>,
    /// Pause before the in-cycle re-probe of failed checks.
    pub reprobe_pause: Duration,
}

impl HealthContext {
    /// Builds the context from `[health]`; connecting does no I/O, so a
    /// missing engine shows up as the engine check's result, not here.
    pub fn new(cfg: &HealthConfig) -> HealthContext {
        let env = std::env::var("DOCKER_HOST").ok();
        let home = directories::BaseDirs::new().map(|b| b.home_dir().to_path_buf());
        let host = docker::DockerHost::resolve(
            cfg.docker_host.as_deref(),
            env.as_deref(),
            cfg!(target_os = "macos"),
            home.as_deref(),
        );
        HealthContext {
            docker: host
                .and_then(|h| docker::DockerClient::connect(&h).map_err(|e| format!("{e:#}"))),
            reprobe_pause: Duration::from_millis(cfg.reprobe_pause_ms),
        }
    }
}

/// The outcome of one probe: what an operator reads in the log and what the
/// fix and escalation stages decide on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// The check's kind.
    pub kind: CheckKind,
    /// The service the check belongs to.
    pub service: String,
    /// ok / warn / critical / unknown.
    pub status: Status,
    /// One line saying why, e.g. `/ 91.2% used (critical at 90%)`.
    pub reason: String,
    /// How long the probe took.
    pub latency_ms: u64,
    /// The service is booting (container health `starting`, state
    /// `restarting`, unit `activating`): not a failure, and never restarted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub starting: bool,
    /// The first probe failed and this is the re-probe's result.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reprobed: bool,
    /// The failing parent (the root of the chain) this check is blocked by;
    /// a blocked check is neither fixed nor counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<String>,
    /// Container facts for the restart counter and fix verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<docker::ContainerFacts>,
}

/// Runs every check concurrently, each under its own timeout; re-probes
/// the failed ones once after the context's pause (concurrently again);
/// then marks the children of failing parents as blocked. Returns the
/// results of [`effective_checks`] in that order (so the implicit Docker
/// engine check comes first when it was added). Total time is bounded by
/// twice the longest timeout plus the pause, never the sum.
pub async fn run_all(ctx: &HealthContext, checks: &[CheckConfig]) -> Vec<CheckResult> {
    let checks = effective_checks(checks);
    let mut results = run_concurrently(ctx, &checks, |_| true).await;
    let failed: Vec<bool> = results
        .iter()
        .map(|r| r.status.is_failure() && !r.starting)
        .collect();
    if failed.iter().any(|f| *f) {
        tokio::time::sleep(ctx.reprobe_pause).await;
        let again = run_concurrently(ctx, &checks, |i| failed[i]).await;
        for (i, second) in again.into_iter().enumerate() {
            if failed[i] {
                let first = &results[i];
                let mut second = second;
                second.reprobed = true;
                if !second.status.is_failure() {
                    second.reason = format!(
                        "{} (passed on re-probe; first probe: {})",
                        second.reason, first.reason
                    );
                }
                results[i] = second;
            }
        }
    }
    apply_blocking(&checks, &mut results);
    results
}

/// Runs the selected checks concurrently; unselected ones get a placeholder
/// (only used by the re-probe, which keeps the first results for those).
async fn run_concurrently(
    ctx: &HealthContext,
    checks: &[CheckConfig],
    select: impl Fn(usize) -> bool,
) -> Vec<CheckResult> {
    let tasks: Vec<_> = checks
        .iter()
        .enumerate()
        .map(|(i, check)| {
            select(i).then(|| {
                let ctx = ctx.clone();
                let check = check.clone();
                tokio::spawn(async move { run_one(&ctx, &check).await })
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for (task, check) in tasks.into_iter().zip(checks) {
        results.push(match task {
            None => result_of(check, Status::Unknown, "not probed".into(), 0),
            Some(task) => match task.await {
                Ok(r) => r,
                Err(e) => result_of(check, Status::Unknown, format!("probe panicked: {e}"), 0),
            },
        });
    }
    results
}

/// Marks every check whose parent chain has a failing (or blocked) check
/// as blocked by the root failing one. Pure.
pub fn apply_blocking(checks: &[CheckConfig], results: &mut [CheckResult]) {
    let index: BTreeMap<&str, usize> = checks
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    // The topmost failing ancestor of check i, if any.
    let blocker = |i: usize| -> Option<usize> {
        let mut found = None;
        let mut cur = i;
        let mut steps = 0;
        while let Some(p) = checks[cur].parent.as_deref() {
            let Some(&pi) = index.get(p) else { break };
            if results_failed(results, pi) {
                found = Some(pi);
            }
            cur = pi;
            steps += 1;
            if steps > checks.len() {
                break;
            }
        }
        found
    };
    let blockers: Vec<Option<usize>> = (0..checks.len()).map(blocker).collect();
    let reasons: Vec<String> = results.iter().map(|r| r.reason.clone()).collect();
    for (i, b) in blockers.into_iter().enumerate() {
        if let Some(pi) = b {
            let parent = checks[pi].name.clone();
            let r = &mut results[i];
            r.reason = format!(
                "blocked by {parent} ({}); own probe: {}",
                reasons[pi], r.reason
            );
            r.status = Status::Unknown;
            r.starting = false;
            r.blocked_by = Some(parent);
        }
    }

    fn results_failed(results: &[CheckResult], i: usize) -> bool {
        results[i].status.is_failure() && !results[i].starting
    }
}

/// Runs one check under its timeout.
pub async fn run_one(ctx: &HealthContext, check: &CheckConfig) -> CheckResult {
    let started = Instant::now();
    let outcome = tokio::time::timeout(check.timeout(), probe(ctx, check)).await;
    let ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(Ok(p)) => {
            let mut r = result_of(check, p.status, p.reason, ms);
            r.starting = p.starting;
            r.container = p.container;
            r
        }
        Ok(Err(e)) => result_of(check, Status::Unknown, format!("probe failed: {e:#}"), ms),
        Err(_) => result_of(
            check,
            Status::Unknown,
            format!("no answer within {}s", check.timeout_secs),
            ms,
        ),
    }
}

/// What a probe found, before timing and blocking are added.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The grade.
    pub status: Status,
    /// One line saying why.
    pub reason: String,
    /// The service is booting: not a failure, never restarted.
    pub starting: bool,
    /// Container facts (docker checks only).
    pub container: Option<docker::ContainerFacts>,
}

impl Probe {
    /// A probe result without extra facts.
    pub fn new(status: Status, reason: impl Into<String>) -> Probe {
        Probe {
            status,
            reason: reason.into(),
            starting: false,
            container: None,
        }
    }
}

async fn probe(ctx: &HealthContext, check: &CheckConfig) -> Result<Probe> {
    match check.kind {
        CheckKind::Disk | CheckKind::Memory => {
            let check = check.clone();
            let (status, reason) = tokio::task::spawn_blocking(move || system::probe(&check))
                .await
                .map_err(|e| anyhow::anyhow!("system probe task failed: {e}"))??;
            Ok(Probe::new(status, reason))
        }
        CheckKind::Docker | CheckKind::DockerEngine => {
            let client = match &ctx.docker {
                Ok(c) => c,
                Err(e) => return Ok(Probe::new(Status::Critical, e.clone())),
            };
            if check.kind == CheckKind::DockerEngine {
                Ok(client.probe_engine().await)
            } else {
                client
                    .probe_container(check.container.as_deref().unwrap_or_default())
                    .await
            }
        }
        CheckKind::Http => http::probe(check).await,
        CheckKind::Launchd => daemon::probe_launchd(check).await,
        CheckKind::Systemd => daemon::probe_systemd(check).await,
    }
}

/// A result with no extra facts.
pub fn result_of(
    check: &CheckConfig,
    status: Status,
    reason: String,
    latency_ms: u64,
) -> CheckResult {
    CheckResult {
        name: check.name.clone(),
        kind: check.kind,
        service: check.service().to_string(),
        status,
        reason,
        latency_ms,
        starting: false,
        reprobed: false,
        blocked_by: None,
        container: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        for (i, c) in CheckConfig::defaults().iter().enumerate() {
            c.validate(&format!("checks[{i}]")).unwrap();
        }
    }

    #[test]
    fn keys_that_do_not_fit_the_kind_are_named() {
        let mut c = CheckConfig::defaults().pop().unwrap();
        c.path = Some("/".into());
        let err = c
            .validate("checks[2] (\"memory\")")
            .unwrap_err()
            .to_string();
        assert!(err.contains("checks[2]") && err.contains("'path'"), "{err}");
        let mut d = CheckConfig::defaults().remove(0);
        d.warn_pct = Some(95.0);
        let err = d.validate("checks[0]").unwrap_err().to_string();
        assert!(err.contains("warn_pct (95)"), "{err}");
    }

    fn parse_checks(toml_text: &str) -> Result<Vec<CheckConfig>> {
        #[derive(Deserialize)]
        struct W {
            checks: Vec<CheckConfig>,
        }
        let w: W = toml::from_str(toml_text)?;
        for (i, c) in w.checks.iter().enumerate() {
            c.validate(&format!("checks[{i}] (\"{}\")", c.name))?;
        }
        validate_checks(&w.checks)?;
        Ok(w.checks)
    }

    #[test]
    fn every_kind_parses_with_its_keys() {
        let checks = parse_checks(
            r#"
[[checks]]
name = "mattermost"
kind = "docker"
container = "mattermost"
fail_after = 3
fix = { action = "restart_container", settle_secs = 15 }
[[checks]]
name = "mattermost-http"
kind = "http"
service = "mattermost"
parent = "mattermost"
url = "http://localhost:8065/api/v4/system/ping"
expect_status = "200-299"
body_contains = "OK"
latency_warn_ms = 2000
[[checks]]
name = "planka-http"
kind = "http"
url = "https://planka.local/"
expect_status = 200
verify_tls = false
method = "HEAD"
[[checks]]
name = "ops-agent"
kind = "launchd"
label = "com.john.ops-agent"
fix = { action = "kickstart" }
[[checks]]
name = "backup"
kind = "systemd"
unit = "backup.service"
fix = { action = "command", command = ["/usr/bin/systemctl", "--user", "start", "backup.service"], timeout_secs = 30 }
"#,
        )
        .unwrap();
        assert_eq!(checks[0].fail_after(), 3);
        assert_eq!(checks[0].fix.as_ref().unwrap().settle_secs, 15);
        assert_eq!(checks[0].fix.as_ref().unwrap().start_grace_secs, 60);
        assert_eq!(checks[1].service(), "mattermost");
        assert_eq!(checks[2].recover_after(), 1);
        let eff = effective_checks(&checks);
        assert_eq!(eff[0].name, IMPLICIT_ENGINE_CHECK);
        assert_eq!(eff[1].parent.as_deref(), Some(IMPLICIT_ENGINE_CHECK));
        assert_eq!(effective_checks(&eff), eff, "idempotent");
        validate_checks(&eff).unwrap();
    }

    #[test]
    fn validation_names_check_and_key() {
        let table = [
            ("kind = \"docker\"\n", "needs a 'container'"),
            (
                "kind = \"docker\"\ncontainer = \"x\"\nurl = \"http://x/\"\n",
                "key 'url' does not apply to kind 'docker'",
            ),
            (
                "kind = \"http\"\nurl = \"htp:/x\"\n",
                "url 'htp:/x' is not an http(s) URL",
            ),
            (
                "kind = \"http\"\nurl = \"http://x/\"\nexpect_status = \"2xx\"\n",
                "expect_status: '2xx'",
            ),
            (
                "kind = \"http\"\nurl = \"http://x/\"\nmethod = \"get\"\n",
                "method 'get'",
            ),
            (
                "kind = \"launchd\"\nlabel = \"l\"\nfix = { action = \"restart_unit\" }\n",
                "fix.action: 'restart_unit' only fits checks of kind 'systemd'",
            ),
            (
                "kind = \"memory\"\nfail_after = 0\n",
                "fail_after must be at least 1",
            ),
            (
                "kind = \"memory\"\nparent = \"nope\"\n",
                "parent 'nope' is not the name of a check",
            ),
            (
                "kind = \"memory\"\nparent = \"c\"\n",
                "parent 'c' is the check itself",
            ),
        ];
        for (body, needle) in table {
            let text = format!("[[checks]]\nname = \"c\"\n{body}");
            let err = format!("{:#}", parse_checks(&text).unwrap_err());
            assert!(
                err.contains("checks[0] (\"c\")") || err.contains(needle),
                "{err}"
            );
            assert!(err.contains(needle), "{body}: {err}");
        }
        let cyc = "[[checks]]\nname = \"a\"\nkind = \"memory\"\nparent = \"b\"\n[[checks]]\nname = \"b\"\nkind = \"memory\"\nparent = \"a\"\n";
        let err = format!("{:#}", parse_checks(cyc).unwrap_err());
        assert!(err.contains("loops"), "{err}");
        let reserved = "[[checks]]\nname = \"docker-engine\"\nkind = \"memory\"\n[[checks]]\nname = \"w\"\nkind = \"docker\"\ncontainer = \"w\"\n";
        let err = format!("{:#}", parse_checks(reserved).unwrap_err());
        assert!(err.contains("reserved"), "{err}");
    }

    #[test]
    fn children_of_a_failing_parent_are_blocked_by_the_root() {
        let engine = CheckConfig::new("docker-engine", CheckKind::DockerEngine);
        let mut web = CheckConfig::new("web", CheckKind::Docker);
        web.parent = Some("docker-engine".into());
        let mut http = CheckConfig::new("web-http", CheckKind::Http);
        http.parent = Some("web".into());
        let mem = CheckConfig::new("memory", CheckKind::Memory);
        let checks = vec![engine.clone(), web.clone(), http.clone(), mem.clone()];
        let mut results = vec![
            result_of(&engine, Status::Critical, "Docker unreachable".into(), 1),
            result_of(&web, Status::Unknown, "connect error".into(), 1),
            result_of(&http, Status::Critical, "refused".into(), 1),
            result_of(&mem, Status::Ok, "fine".into(), 1),
        ];
        apply_blocking(&checks, &mut results);
        assert_eq!(results[0].blocked_by, None);
        assert_eq!(results[1].blocked_by.as_deref(), Some("docker-engine"));
        assert_eq!(results[2].blocked_by.as_deref(), Some("docker-engine"));
        assert!(results[2]
            .reason
            .starts_with("blocked by docker-engine (Docker unreachable)"));
        assert_eq!(results[3].blocked_by, None);
        // A failing container blocks only its endpoint.
        let mut results = vec![
            result_of(&engine, Status::Ok, "ok".into(), 1),
            result_of(&web, Status::Critical, "exited".into(), 1),
            result_of(&http, Status::Critical, "refused".into(), 1),
            result_of(&mem, Status::Ok, "fine".into(), 1),
        ];
        apply_blocking(&checks, &mut results);
        assert_eq!(results[1].blocked_by, None);
        assert_eq!(results[2].blocked_by.as_deref(), Some("web"));
    }

    /// The inventory template at the end of `config example` (commented
    /// there); uncommented it must parse and validate.
    #[test]
    fn inventory_template_is_valid() {
        let text: String = include_str!("inventory_example.toml")
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .unwrap_or(l.strip_prefix('#').unwrap_or(l))
            })
            .collect::<Vec<_>>()
            .join("\n");
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct W {
            checks: Vec<CheckConfig>,
        }
        let w: W = toml::from_str(&text).unwrap();
        let kinds = |k| w.checks.iter().filter(|c| c.kind == k).count();
        assert_eq!(kinds(CheckKind::Docker), 8);
        assert_eq!(kinds(CheckKind::Http), 6);
        assert_eq!(kinds(CheckKind::Launchd) + kinds(CheckKind::Systemd), 4);
        for (i, c) in w.checks.iter().enumerate() {
            c.validate(&format!("checks[{i}]")).unwrap();
        }
        validate_checks(&w.checks).unwrap();
    }

    #[test]
    fn status_orders_by_severity() {
        assert!(Status::Ok < Status::Warn && Status::Warn < Status::Critical);
        assert_eq!(
            [Status::Warn, Status::Ok].into_iter().max(),
            Some(Status::Warn)
        );
    }
}
