//! The data and text behind `ops-agent health [--json] [--check NAME]`.
//! The command calls these; nothing here prints or exits.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use serde::Serialize;

use super::{CheckResult, Checks, Status};

/// `health` exits 0: nothing critical or unknown (silenced services aside).
pub(crate) const EXIT_OK: u8 = 0;
/// `health` exits 1: a check that is not silenced is critical (the
/// runbook's health-check.js contract).
pub(crate) const EXIT_CRITICAL: u8 = 1;
/// `health` exits 3: nothing is critical, but a check that is not silenced
/// could not tell (a probe timed out, the engine hung, blocked behind a
/// parent that could not tell). 2 is taken by usage errors; 3 is what
/// Nagios-style monitors read as UNKNOWN.
pub(crate) const EXIT_UNKNOWN: u8 = 3;

/// `health --json`: the results and the exit rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct HealthReport {
    /// The worst status of the checks that are not silenced, blocked ones
    /// included.
    pub worst: Status,
    /// A check that is not silenced is critical: exit 1.
    pub critical: bool,
    /// A check that is not silenced is unknown (nothing critical: exit 3).
    pub unknown: bool,
    /// One entry per check, in run order.
    pub checks: Vec<HealthRow>,
}

/// One check's line: the probe's result and, when its service is
/// silenced, until when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct HealthRow {
    /// The result (seen through the restart counters of past cycles).
    #[serde(flatten)]
    pub result: CheckResult,
    /// The check's service is silenced until then (epoch ms): shown, not
    /// counted in the exit code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silenced_until_ms: Option<i64>,
}

impl HealthReport {
    /// Builds the report from a run; `silenced` maps a silenced service to
    /// the end of its silence.
    pub(crate) fn new(results: Vec<CheckResult>, silenced: &BTreeMap<String, i64>) -> HealthReport {
        let checks: Vec<HealthRow> = results
            .into_iter()
            .map(|result| HealthRow {
                silenced_until_ms: silenced.get(&result.service).copied(),
                result,
            })
            .collect();
        let counted = || {
            checks
                .iter()
                .filter(|r| r.silenced_until_ms.is_none())
                .map(|r| r.result.status)
        };
        HealthReport {
            worst: counted().max().unwrap_or(Status::Ok),
            critical: counted().any(|s| s == Status::Critical),
            unknown: counted().any(|s| s == Status::Unknown),
            checks,
        }
    }

    /// The process exit code for `health`: [`EXIT_CRITICAL`] over
    /// [`EXIT_UNKNOWN`] over [`EXIT_OK`].
    pub(crate) fn exit_code(&self) -> u8 {
        if self.critical {
            EXIT_CRITICAL
        } else if self.unknown {
            EXIT_UNKNOWN
        } else {
            EXIT_OK
        }
    }

    /// The table: check, kind, status, latency, reason; then the overall
    /// line with the exit code and the silenced services.
    pub(crate) fn render_text(&self) -> String {
        let w = self
            .checks
            .iter()
            .map(|r| r.result.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = format!(
            "{:<w$}  {:<13}  {:<8}  {:>7}  REASON\n",
            "CHECK", "KIND", "STATUS", "MS"
        );
        for row in &self.checks {
            let r = &row.result;
            let (status, note) = match row.silenced_until_ms {
                Some(until) => (
                    "silenced",
                    format!(
                        " [{}; silenced until {}]",
                        r.status.as_str(),
                        crate::time::rfc3339_ms(until)
                    ),
                ),
                None if r.blocked_by.is_some() => ("blocked", String::new()),
                None => (r.status.as_str(), String::new()),
            };
            out.push_str(&format!(
                "{:<w$}  {:<13}  {:<8}  {:>7}  {}{note}\n",
                r.name,
                r.kind.as_str(),
                status,
                r.latency_ms,
                r.reason
            ));
        }
        let silenced = self
            .checks
            .iter()
            .filter(|r| r.silenced_until_ms.is_some())
            .count();
        out.push_str(&format!(
            "overall: {}{}{}\n",
            self.worst.as_str(),
            match self.exit_code() {
                EXIT_OK => String::new(),
                code => format!(" (exit {code})"),
            },
            if silenced > 0 {
                format!("; {silenced} silenced")
            } else {
                String::new()
            }
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
        let none = BTreeMap::new();
        let mut blocked = result_of(&c, Status::Unknown, "blocked by docker-engine".into(), 3);
        blocked.blocked_by = Some("docker-engine".into());
        let r = HealthReport::new(
            vec![
                result_of(&e, Status::Critical, "Docker unreachable".into(), 2),
                blocked.clone(),
            ],
            &none,
        );
        assert_eq!(r.exit_code(), EXIT_CRITICAL);
        let t = r.render_text();
        assert!(
            t.contains("blocked") && t.contains("overall: unknown (exit 1)"),
            "{t}"
        );
        let ok = HealthReport::new(vec![result_of(&e, Status::Warn, "x".into(), 1)], &none);
        assert_eq!(ok.exit_code(), EXIT_OK);
        // Unknown alone (a hung engine, a check blocked behind it): 3.
        let hung = HealthReport::new(
            vec![
                result_of(&e, Status::Unknown, "no answer within 5s".into(), 5000),
                blocked,
            ],
            &none,
        );
        assert_eq!(hung.exit_code(), EXIT_UNKNOWN);
        assert!(hung.render_text().contains("overall: unknown (exit 3)"));
    }

    #[test]
    fn a_silenced_service_is_shown_and_not_counted() {
        let mut c = CheckConfig::new("web", CheckKind::Docker);
        c.container = Some("web".into());
        let m = CheckConfig::new("memory", CheckKind::Memory);
        let silenced: BTreeMap<String, i64> = [("web".to_string(), 1_700_000_000_000)].into();
        let r = HealthReport::new(
            vec![
                result_of(&c, Status::Critical, "web exited".into(), 1),
                result_of(&m, Status::Warn, "91%".into(), 1),
            ],
            &silenced,
        );
        assert_eq!(r.exit_code(), EXIT_OK);
        assert_eq!((r.worst, r.critical), (Status::Warn, false));
        let t = r.render_text();
        let line = t.lines().find(|l| l.starts_with("web ")).unwrap();
        assert!(
            line.contains("  silenced  ") && line.contains("[critical; silenced until 2023-"),
            "{t}"
        );
        assert!(t.ends_with("overall: warn; 1 silenced\n"), "{t}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["checks"][0]["status"], "critical");
        assert_eq!(json["checks"][0]["silenced_until_ms"], 1_700_000_000_000i64);
        assert!(json["checks"][1].get("silenced_until_ms").is_none());
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
