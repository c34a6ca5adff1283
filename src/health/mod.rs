//! Health checks as data (the Gatus habit): a check is a [`CheckConfig`]
//! read from the `[[checks]]` tables, a probe turns it into a
//! [`CheckResult`], and [`run_all`] runs every probe concurrently, each under
//! its own timeout, so one hanging dependency costs its timeout and not the
//! sum of all of them.

pub mod system;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

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
}

/// What kind of probe a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// Usage of the volume that holds `path`.
    Disk,
    /// Used memory of the host.
    Memory,
}

impl CheckKind {
    /// The config spelling of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Disk => "disk",
            CheckKind::Memory => "memory",
        }
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
}

fn default_timeout_secs() -> u64 {
    5
}

impl CheckConfig {
    /// The service name fixes and incidents are keyed by.
    pub fn service(&self) -> &str {
        self.service.as_deref().unwrap_or(&self.name)
    }

    /// The runbook's system checks: the root volume, the home volume and
    /// memory, with the runbook thresholds (disk 85/90 %, memory 90 %).
    pub fn defaults() -> Vec<CheckConfig> {
        let base = |name: &str, kind, path: Option<&str>, warn: f64, crit: f64| CheckConfig {
            name: name.to_string(),
            kind,
            service: None,
            timeout_secs: default_timeout_secs(),
            path: path.map(str::to_string),
            warn_pct: Some(warn),
            critical_pct: Some(crit),
        };
        vec![
            base("disk-root", CheckKind::Disk, Some("/"), 85.0, 90.0),
            base("disk-home", CheckKind::Disk, Some("~"), 85.0, 90.0),
            base("memory", CheckKind::Memory, None, 90.0, 90.0),
        ]
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
        match self.kind {
            CheckKind::Disk => {
                if self.path.as_deref().is_none_or(|p| p.trim().is_empty()) {
                    bail!("{at}: kind '{kind}' needs a 'path' (a path on the volume to watch)");
                }
            }
            CheckKind::Memory => {
                if self.path.is_some() {
                    bail!("{at}: key 'path' does not apply to kind '{kind}'");
                }
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
        Ok(())
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
}

/// Runs every check concurrently, each under its own timeout, and returns
/// the results in config order.
pub async fn run_all(checks: &[CheckConfig]) -> Vec<CheckResult> {
    let tasks: Vec<_> = checks
        .iter()
        .cloned()
        .map(|check| tokio::spawn(run_one(check)))
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for (task, check) in tasks.into_iter().zip(checks) {
        results.push(match task.await {
            Ok(r) => r,
            Err(e) => result_of(check, Status::Unknown, format!("probe panicked: {e}"), 0),
        });
    }
    results
}

/// Runs one check under its timeout.
pub async fn run_one(check: CheckConfig) -> CheckResult {
    let started = Instant::now();
    let timeout = Duration::from_secs(check.timeout_secs);
    let outcome = tokio::time::timeout(timeout, probe(&check)).await;
    let ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(Ok((status, reason))) => result_of(&check, status, reason, ms),
        Ok(Err(e)) => result_of(&check, Status::Unknown, format!("probe failed: {e:#}"), ms),
        Err(_) => result_of(
            &check,
            Status::Unknown,
            format!("no answer within {}s", check.timeout_secs),
            ms,
        ),
    }
}

async fn probe(check: &CheckConfig) -> Result<(Status, String)> {
    match check.kind {
        CheckKind::Disk | CheckKind::Memory => {
            let check = check.clone();
            tokio::task::spawn_blocking(move || system::probe(&check))
                .await
                .map_err(|e| anyhow::anyhow!("system probe task failed: {e}"))?
        }
    }
}

fn result_of(check: &CheckConfig, status: Status, reason: String, latency_ms: u64) -> CheckResult {
    CheckResult {
        name: check.name.clone(),
        kind: check.kind,
        service: check.service().to_string(),
        status,
        reason,
        latency_ms,
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

    #[test]
    fn status_orders_by_severity() {
        assert!(Status::Ok < Status::Warn && Status::Warn < Status::Critical);
        assert_eq!(
            [Status::Warn, Status::Ok].into_iter().max(),
            Some(Status::Warn)
        );
    }
}
