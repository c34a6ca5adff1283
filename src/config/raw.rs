//! The config file as written, before anything is checked.

use anyhow::{bail, Result};
use serde::Deserialize;

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
        Ok(Config {
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
        })
    }
}
