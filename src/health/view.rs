//! The data and text behind `ops-agent health [--json] [--check NAME]`.
//! The command calls these; nothing here prints or exits.

use anyhow::{bail, Result};
use serde::Serialize;

use super::{CheckResult, Checks, Status};

/// `health --json`: the results and the exit rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct HealthReport {
    /// The worst status, blocked checks included.
    worst: Status,
    /// Something is critical: `health` exits non-zero.
    critical: bool,
    /// One entry per check, in run order.
    checks: Vec<CheckResult>,
}

impl HealthReport {
    /// Builds the report from a run.
    pub(crate) fn new(results: Vec<CheckResult>) -> HealthReport {
        HealthReport {
            worst: results.iter().map(|r| r.status).max().unwrap_or(Status::Ok),
            critical: results.iter().any(|r| r.status == Status::Critical),
            checks: results,
        }
    }

    /// The process exit code for `health`: 1 when something is critical
    /// (the runbook's health-check.js contract), else 0.
    pub(crate) fn exit_code(&self) -> i32 {
        i32::from(self.critical)
    }

    /// The table: check, kind, status, latency, reason.
    pub(crate) fn render_text(&self) -> String {
        let w = self
            .checks
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = format!(
            "{:<w$}  {:<13}  {:<8}  {:>7}  REASON\n",
            "CHECK", "KIND", "STATUS", "MS"
        );
        for r in &self.checks {
            out.push_str(&format!(
                "{:<w$}  {:<13}  {:<8}  {:>7}  {}\n",
                r.name,
                r.kind.as_str(),
                if r.blocked_by.is_some() {
                    "blocked"
                } else {
                    r.status.as_str()
                },
                r.latency_ms,
                r.reason
            ));
        }
        out.push_str(&format!(
            "overall: {}{}\n",
            self.worst.as_str(),
            if self.critical { " (exit 1)" } else { "" }
        ));
        out
    }
}

/// For `health --check NAME`: the named check plus its ancestors (so the
/// parent blocking still works); the caller keeps only `NAME`'s result.
pub(crate) fn select_checks(checks: &Checks, name: &str) -> Result<Checks> {
    let all = checks;
    let Some(mut cur) = all.iter().find(|c| c.name == name) else {
        bail!(
            "no check named '{name}' (checks: {})",
            all.iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let mut chosen = vec![cur.clone()];
    while let Some(p) = cur.parent.as_deref() {
        match all.iter().find(|c| c.name == p) {
            Some(parent) if !chosen.iter().any(|c| c.name == p) => {
                chosen.insert(0, parent.clone());
                cur = parent;
            }
            _ => break,
        }
    }
    Ok(Checks::new(chosen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::run::result_of;
    use crate::health::{CheckConfig, CheckKind};

    #[test]
    fn table_and_exit_code() {
        let mut c = CheckConfig::new("web", CheckKind::Docker);
        c.container = Some("web".into());
        let e = CheckConfig::new("docker-engine", CheckKind::DockerEngine);
        let mut blocked = result_of(&c, Status::Unknown, "blocked by docker-engine".into(), 3);
        blocked.blocked_by = Some("docker-engine".into());
        let r = HealthReport::new(vec![
            result_of(&e, Status::Critical, "Docker unreachable".into(), 2),
            blocked,
        ]);
        assert_eq!(r.exit_code(), 1);
        let t = r.render_text();
        assert!(
            t.contains("blocked") && t.contains("overall: unknown (exit 1)"),
            "{t}"
        );
        let ok = HealthReport::new(vec![result_of(&e, Status::Warn, "x".into(), 1)]);
        assert_eq!(ok.exit_code(), 0);
    }

    #[test]
    fn select_keeps_ancestors_and_names_unknown_checks() {
        let mut c = CheckConfig::new("web", CheckKind::Docker);
        c.container = Some("web".into());
        let mut h = CheckConfig::new("web-http", CheckKind::Http);
        h.url = Some("http://x/".into());
        h.parent = Some("web".into());
        let sel = select_checks(&Checks::from(vec![c.clone(), h.clone()]), "web-http").unwrap();
        let names: Vec<_> = sel.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["docker-engine", "web", "web-http"]);
        let err = select_checks(&Checks::from(vec![c]), "nope")
            .unwrap_err()
            .to_string();
        assert!(err.contains("'nope'") && err.contains("web"), "{err}");
    }
}
