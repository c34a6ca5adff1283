//! Health checks as data (the Gatus habit): a check is a [`CheckConfig`]
//! read from the `[[checks]]` tables ([`check`]), a probe turns it into a
//! [`CheckResult`] ([`run`]), and the flap guard ([`guard`]) turns results
//! into verdicts that the fix and escalation stages act on.
//!
//! * [`check`]: the inventory: kinds, keys, validation, parents, [`Checks`].
//! * [`run`]: concurrent probes under timeouts, re-probe, parent blocking.
//! * [`guard`]: streaks across cycles, the restart counters, crash loops.
//! * [`view`]: the `health` table.
//! * one probe per kind: [`docker`], [`http`], [`system`], [`daemon`];
//!   each also has the evidence functions an incident brief gathers
//!   (a container's log and inspect facts, an endpoint's answer and
//!   certificate, volumes and processes, a unit's last exit and journal).

pub(crate) mod check;
mod daemon;
pub mod docker;
pub mod guard;
mod http;
pub(crate) mod run;
mod system;
pub(crate) mod view;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

pub use check::{CheckConfig, CheckKind, Checks, ExpectStatus, FixAction, FixSpec};
// The evidence an incident brief gathers, one function per probe file.
pub(crate) use daemon::{launchd_evidence, systemd_evidence};
pub(crate) use guard::CheckMemo;
pub use guard::{HealthState, Verdict};
pub(crate) use http::evidence as http_evidence;
pub(crate) use run::{assess, run_one, Probe};
pub use run::{run_all, CheckResult, HealthContext};
pub(crate) use system::{mounts, top_processes, used_pct_in};

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
    pub(crate) fn as_str(self) -> &'static str {
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
    /// Other Docker engines, by name, that a docker check can name with
    /// `engine = "<name>"`: one agent watching several hosts.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub engines: BTreeMap<String, docker::EngineConfig>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            reprobe_pause_ms: 2000,
            docker_host: None,
            engines: BTreeMap::new(),
        }
    }
}

impl HealthConfig {
    /// The pause before the in-cycle re-probe.
    pub(crate) fn reprobe_pause(&self) -> Duration {
        Duration::from_millis(self.reprobe_pause_ms)
    }

    /// Checks values serde cannot.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.reprobe_pause_ms > 60_000 {
            bail!(
                "health.reprobe_pause_ms must be at most 60000 (one minute), got {}",
                self.reprobe_pause_ms
            );
        }
        if let Some(h) = &self.docker_host {
            docker::DockerHost::parse(h).map_err(|e| anyhow::anyhow!("health.docker_host: {e}"))?;
        }
        for (name, e) in &self.engines {
            e.validate(&format!("health.engines.{name}"))?;
            if !check::valid_engine_name(name) {
                bail!(
                    "health.engines.{name}: the name must be lowercase letters, digits, '_' or '-'"
                );
            }
        }
        Ok(())
    }

    /// Checks that every `engine = "<name>"` of a check names an engine
    /// under `[health.engines]`.
    pub(crate) fn validate_engine_refs(&self, checks: &[CheckConfig]) -> Result<()> {
        for (i, c) in checks.iter().enumerate() {
            if let Some(e) = &c.engine {
                if !self.engines.contains_key(e) {
                    let known: Vec<&str> = self.engines.keys().map(String::as_str).collect();
                    bail!(
                        "checks[{i}] (\"{}\"): engine '{e}' is not under [health.engines] (defined: {})",
                        c.name,
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_may_only_name_engines_that_exist() {
        let text = "[health.engines.build1]\nhost = \"tcp://10.0.0.5:2375\"\n\
                    [[checks]]\nname = \"w\"\nkind = \"docker\"\ncontainer = \"w\"\nengine = \"build2\"\n";
        let err = format!(
            "{:#}",
            crate::config::Config::from_toml(text, "o.toml").unwrap_err()
        );
        assert!(
            err.contains("checks[0] (\"w\"): engine 'build2' is not under [health.engines] (defined: build1)"),
            "{err}"
        );
        let bad_name = "[health.engines.Build]\nhost = \"tcp://h:1\"\n";
        let err = format!(
            "{:#}",
            crate::config::Config::from_toml(bad_name, "o.toml").unwrap_err()
        );
        assert!(
            err.contains("health.engines.Build: the name must be lowercase"),
            "{err}"
        );
        let ok = text.replace("build2", "build1");
        crate::config::Config::from_toml(&ok, "o.toml").unwrap();
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
