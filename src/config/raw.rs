//! The config file as written, before anything is checked.

use anyhow::{bail, Result};
use serde::Deserialize;

use super::files::{self, Named};
use super::sections::{AgentConfig, PathsConfig};
use super::Config;
use crate::chat::CorrectionsConfig;
use crate::classify::ClassifyConfig;
use crate::escalate::EscalationConfig;
use crate::fix::FixConfig;
use crate::health::{CheckConfig, Checks, HealthConfig};
use crate::intel::IntelConfig;
use crate::mattermost::MattermostConfig;
use crate::observe::{HeartbeatConfig, LogConfig, MetricsConfig};
use crate::ollama::OllamaConfig;
use crate::schedule::ScheduleConfig;
use crate::tasks::mc::McConfig;
use crate::tasks::planka::PlankaConfig;
use crate::tasks::BillingConfig;

/// The config file as written: every section, read by serde with
/// `deny_unknown_fields`, nothing checked yet. [`RawConfig::check`] is the
/// only way to a [`Config`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    /// How a cycle runs.
    agent: AgentConfig,
    /// The runbook's files.
    paths: PathsConfig,
    /// `[mattermost]`: the chat server, teams and who to ignore.
    mattermost: MattermostConfig,
    /// `[billing]`: which teams' tasks are INTERNAL.
    billing: BillingConfig,
    /// `[mc]`: the task tracker command (empty: the built-in ledger).
    mc: McConfig,
    /// `[planka]`: optional board cards.
    planka: PlankaConfig,
    /// `[health]`: how checks run (re-probe pause, Docker address).
    health: HealthConfig,
    /// `[fix]`: the auto-fix rate limit.
    fix: FixConfig,
    /// `[ollama]`: the LLM server and models.
    ollama: OllamaConfig,
    /// `[classify]`: extra keyword phrases for the fallback rules.
    classify: ClassifyConfig,
    /// `[escalation]`: on-call, acknowledgement, reminders, silences.
    escalation: EscalationConfig,
    /// `[intel]`: optional HiveMind cycle summaries.
    intel: IntelConfig,
    /// `[heartbeat]`: the dead-man's switch pinged after every cycle.
    heartbeat: HeartbeatConfig,
    /// `[metrics]`: the Prometheus textfile.
    metrics: MetricsConfig,
    /// `[log]`: rotation of the activity log, the audit trail and the scheduler's files.
    log: LogConfig,
    /// Health checks; absent means the runbook's system checks.
    checks: Vec<CheckConfig>,
    /// `[schedule]`: the names the scheduled job is installed under.
    schedule: ScheduleConfig,
    /// `[corrections]`: labels corrected by reaction.
    corrections: CorrectionsConfig,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            agent: AgentConfig::default(),
            paths: PathsConfig::default(),
            mattermost: MattermostConfig::default(),
            billing: BillingConfig::default(),
            mc: McConfig::default(),
            planka: PlankaConfig::default(),
            health: HealthConfig::default(),
            fix: FixConfig::default(),
            ollama: OllamaConfig::default(),
            classify: ClassifyConfig::default(),
            escalation: EscalationConfig::default(),
            intel: IntelConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
            checks: CheckConfig::defaults(),
            schedule: ScheduleConfig::default(),
            corrections: CorrectionsConfig::default(),
        }
    }
}

impl RawConfig {
    /// Checks every value that serde's types cannot (ranges, uniqueness,
    /// keys that only fit some check kinds, combinations of sections) and
    /// derives what the rooms use (expanded paths, the effective checks).
    /// Errors name the key and the value.
    pub(crate) fn check(self) -> Result<Config> {
        let mut paths = self.paths;
        paths.expand();
        paths.validate()?;
        let a = &self.agent;
        if a.deadline_secs.is_zero() {
            bail!(
                "agent.deadline_secs must be a positive number of seconds, got {}",
                a.deadline_secs
            );
        }
        if a.deadline_secs >= a.schedule_interval_secs {
            bail!(
                "agent.deadline_secs ({}) must be below agent.schedule_interval_secs ({}) so cycles never overlap",
                a.deadline_secs,
                a.schedule_interval_secs
            );
        }
        if a.owner.trim().is_empty() {
            bail!("agent.owner must not be empty");
        }
        self.mattermost.validate()?;
        self.billing.validate()?;
        self.mc.validate()?;
        self.planka.validate()?;
        self.health.validate()?;
        self.fix.validate()?;
        self.ollama.validate()?;
        self.classify.validate()?;
        self.escalation.validate()?;
        self.intel.validate()?;
        self.heartbeat.validate()?;
        self.metrics.validate()?;
        self.log.validate()?;
        let mut log = self.log;
        log.expand();
        self.corrections.validate()?;
        let checks = Checks::new(self.checks);
        checks.validate()?;
        self.health.validate_engine_refs(checks.configured())?;
        self.schedule.validate()?;
        let mut named = paths.named();
        if let Some(t) = self.metrics.path() {
            named.push(Named::written(
                "metrics.textfile",
                &t,
                "every cycle replaces it",
            ));
        }
        for (i, p) in log.also_rotate().iter().enumerate() {
            named.push(Named::written(
                format!("log.also_rotate[{i}]"),
                p,
                "it is rotated away (renamed) when it grows",
            ));
        }
        let secrets = files::secret_files(
            &self.mattermost,
            &self.planka,
            &self.ollama,
            checks.configured(),
        );
        named.extend(secrets.iter().map(|(key, p)| Named::read(key.clone(), p)));
        for (i, c) in checks.configured().iter().enumerate() {
            let at = format!("checks[{i}] (\"{}\")", c.name);
            if let Some(p) = &c.path {
                named.push(Named::read(format!("{at}.path"), p.as_ref()));
            }
        }
        for (name, e) in &self.health.engines {
            let at = format!("health.engines.{name}");
            if let (Some(ca), Some(cert), Some(key)) = (&e.tls_ca, &e.tls_cert, &e.tls_key) {
                named.push(Named::read(format!("{at}.tls_ca"), ca));
                named.push(Named::read(format!("{at}.tls_cert"), cert));
                named.push(Named::read(format!("{at}.tls_key"), key));
            }
        }
        files::check(&named)?;
        let warnings = warnings(&self.agent, &self.mc, &self.metrics, checks.configured());
        let mut config = Config {
            agent: self.agent,
            paths,
            mattermost: self.mattermost,
            billing: self.billing,
            mc: self.mc,
            planka: self.planka,
            health: self.health,
            fix: self.fix,
            ollama: self.ollama,
            classify: self.classify,
            escalation: self.escalation,
            intel: self.intel,
            heartbeat: self.heartbeat,
            metrics: self.metrics,
            log,
            checks,
            schedule: self.schedule,
            corrections: self.corrections,
            warnings,
        };
        let budget = config.budget_warnings();
        config.warnings.extend(budget);
        Ok(config)
    }
}

/// Below this deadline a cycle has no time for its work: every one stops
/// at once (deadline hit), does nothing and still exits 0.
const DEADLINE_WARN_SECS: f64 = 10.0;

/// Below this an MC command is killed before most programs have started.
const MC_TIMEOUT_WARN_SECS: f64 = 1.0;

/// What the config accepts but an operator should hear about: legitimate
/// choices that are more often mistakes. Each names its key. Pure.
fn warnings(
    agent: &AgentConfig,
    mc: &McConfig,
    metrics: &MetricsConfig,
    checks: &[CheckConfig],
) -> Vec<String> {
    let mut out = Vec::new();
    if agent.deadline_secs.as_f64() < DEADLINE_WARN_SECS {
        out.push(format!(
            "agent.deadline_secs: {} s leaves a cycle no time for its work: every cycle stops \
             at once (deadline hit), does nothing and still exits 0 (the default is 240)",
            agent.deadline_secs
        ));
    }
    if mc.uses_command() && mc.timeout_secs.as_f64() < MC_TIMEOUT_WARN_SECS {
        out.push(format!(
            "mc.timeout_secs: {} s is less than most programs take to start: attempts killed \
             at their timeout may have made the task and count as uncertain",
            mc.timeout_secs
        ));
    }
    if let Some(p) = metrics.path() {
        if p.extension().is_none_or(|e| e != "prom") {
            out.push(format!(
                "metrics.textfile: '{}' does not end in .prom: node_exporter's textfile \
                 collector reads only *.prom files",
                p.display()
            ));
        }
    }
    for (i, c) in checks.iter().enumerate() {
        let creds = c
            .url
            .as_deref()
            .and_then(|u| reqwest::Url::parse(u).ok())
            .is_some_and(|u| !u.username().is_empty() || u.password().is_some());
        if creds {
            out.push(format!(
                "checks[{i}] (\"{}\").url: holds a user or password; it is sent and never \
                 shown, but it sits in the config file: put it in an owner-only file named by \
                 basic_auth_file",
                c.name
            ));
        }
    }
    out
}
