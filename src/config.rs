//! The one TOML config file: where it is found, its runbook defaults, and
//! validation that names the file, the key and the bad value.
//!
//! Two steps, as in ripgrep and triagebot: serde reads the file into typed
//! sections (`deny_unknown_fields` everywhere, so a typo is an error and not
//! a silently ignored setting), then [`Config::validate`] checks values that
//! types cannot express. Secrets are never values here, only the names of
//! environment variables or owner-only files that hold them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::classify::ClassifyConfig;
use crate::escalate::EscalationConfig;
use crate::fix::FixConfig;
use crate::health::{CheckConfig, Checks, HealthConfig};
use crate::intel::IntelConfig;
use crate::mattermost::MattermostConfig;
use crate::ollama::OllamaConfig;
use crate::paths::expand_tilde;
use crate::tasks::mc::McConfig;
use crate::tasks::planka::PlankaConfig;
use crate::tasks::BillingConfig;

/// The environment variable naming the config file when `--config` is absent.
pub const CONFIG_ENV: &str = "OPS_AGENT_CONFIG";

/// The commented example printed by `ops-agent config example`; a test keeps
/// it equal to [`Config::default`].
pub const EXAMPLE: &str = concat!(
    include_str!("config_example.toml"),
    include_str!("health/inventory_example.toml")
);

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How a cycle runs.
    pub agent: AgentConfig,
    /// The runbook's files.
    pub paths: PathsConfig,
    /// `[mattermost]`: the chat server, teams and who to ignore.
    pub mattermost: MattermostConfig,
    /// `[billing]`: which teams' tasks are INTERNAL.
    pub billing: BillingConfig,
    /// `[mc]`: the task tracker command (empty: the built-in ledger).
    pub mc: McConfig,
    /// `[planka]`: optional board cards.
    pub planka: PlankaConfig,
    /// `[health]`: how checks run (re-probe pause, Docker address).
    pub health: HealthConfig,
    /// `[fix]`: the auto-fix rate limit.
    pub fix: FixConfig,
    /// `[ollama]`: the LLM server and models.
    pub ollama: OllamaConfig,
    /// `[classify]`: extra keyword phrases for the fallback rules.
    pub classify: ClassifyConfig,
    /// `[escalation]`: on-call, acknowledgement, reminders, silences.
    pub escalation: EscalationConfig,
    /// `[intel]`: optional HiveMind cycle summaries.
    pub intel: IntelConfig,
    /// Health checks; absent means the runbook's system checks.
    pub checks: Checks,
}

impl Default for Config {
    fn default() -> Self {
        Config {
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
            checks: Checks::new(CheckConfig::defaults()),
        }
    }
}

/// `[agent]`: the cycle itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// The cycle ends within this many seconds even when a dependency hangs
    /// (fractions allowed); below the 300 s schedule so cycles never pile up.
    pub deadline_secs: f64,
    /// How far back the first run (no state) reads chat.
    pub first_run_lookback_mins: u64,
    /// Owner of the tasks the agent files.
    pub owner: String,
    /// How often the scheduler starts a cycle; `status` calls a cycle
    /// overdue after twice this.
    pub schedule_interval_secs: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            deadline_secs: 240.0,
            first_run_lookback_mins: 30,
            owner: "ops".to_string(),
            schedule_interval_secs: 300,
        }
    }
}

impl AgentConfig {
    /// The cycle deadline as a duration.
    pub fn deadline(&self) -> Duration {
        Duration::from_secs_f64(self.deadline_secs)
    }
}

/// `[paths]`: the runbook contract's files. `~` expands to the home
/// directory when the config is loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// Runtime state (`last_check_ms`, last cycle report, resume data).
    pub state: PathBuf,
    /// Cached Mattermost session token.
    pub token_cache: PathBuf,
    /// Auto-fix attempts; deleting it resets the counters.
    pub fix_history: PathBuf,
    /// Cumulative stats.
    pub stats: PathBuf,
    /// Activity log.
    pub log: PathBuf,
    /// Built-in task ledger (used when no MC command is configured).
    pub ledger: PathBuf,
    /// Lock file that keeps two cycles from overlapping.
    pub lock: PathBuf,
    /// Cached Planka access token (mode 0600).
    pub planka_token_cache: PathBuf,
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig {
            state: "/tmp/ops-agent-state.json".into(),
            token_cache: "/tmp/mm-token.json".into(),
            fix_history: "/tmp/ops-fix-history.json".into(),
            stats: "~/system/agents/state/ops.json".into(),
            log: "~/system/logs/ops-agent.log".into(),
            ledger: "~/system/agents/state/ops-tasks.jsonl".into(),
            lock: "/tmp/ops-agent.lock".into(),
            planka_token_cache: "/tmp/ops-agent-planka-token.json".into(),
        }
    }
}

impl PathsConfig {
    fn expand(&mut self) {
        for p in [
            &mut self.state,
            &mut self.token_cache,
            &mut self.fix_history,
            &mut self.stats,
            &mut self.log,
            &mut self.ledger,
            &mut self.lock,
            &mut self.planka_token_cache,
        ] {
            *p = expand_tilde(&p.to_string_lossy());
        }
    }

    /// The state-like files a reset removes: runtime state, token caches and
    /// fix history (the runbook's "complete reset"; stats and the ledger stay).
    pub fn reset_files(&self) -> [&Path; 4] {
        [
            &self.state,
            &self.token_cache,
            &self.fix_history,
            &self.planka_token_cache,
        ]
    }
}

/// Where the effective config came from, for `config check` and the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "from", content = "path")]
pub enum ConfigSource {
    /// `--config F`.
    Flag(PathBuf),
    /// `$OPS_AGENT_CONFIG`.
    Env(PathBuf),
    /// The platform config directory (e.g. `~/.config/ops-agent/config.toml`).
    PlatformDir(PathBuf),
    /// No file: the embedded runbook defaults.
    Defaults,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::Flag(p) => write!(f, "{} (--config)", p.display()),
            ConfigSource::Env(p) => write!(f, "{} (${CONFIG_ENV})", p.display()),
            ConfigSource::PlatformDir(p) => write!(f, "{} (platform config dir)", p.display()),
            ConfigSource::Defaults => f.write_str("built-in defaults"),
        }
    }
}

/// The platform config file (`~/.config/ops-agent/config.toml` on Linux,
/// `~/Library/Application Support/ops-agent/config.toml` on macOS).
pub fn platform_config_file() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "ops-agent").map(|d| d.config_dir().join("config.toml"))
}

impl Config {
    /// Finds and loads the config: `--config`, then `$OPS_AGENT_CONFIG`, then
    /// the platform config dir, else the built-in defaults. A file named by
    /// the flag or the environment must exist.
    pub fn locate_and_load(flag: Option<&Path>) -> Result<(Config, ConfigSource)> {
        let source = if let Some(p) = flag {
            ConfigSource::Flag(p.to_path_buf())
        } else if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
            ConfigSource::Env(PathBuf::from(p))
        } else if let Some(p) = platform_config_file().filter(|p| p.is_file()) {
            ConfigSource::PlatformDir(p)
        } else {
            ConfigSource::Defaults
        };
        let config = match &source {
            ConfigSource::Flag(p) | ConfigSource::Env(p) | ConfigSource::PlatformDir(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config file {}", p.display()))?;
                Config::from_toml(&text, &p.display().to_string())?
            }
            ConfigSource::Defaults => {
                let mut c = Config::default();
                c.finish();
                c
            }
        };
        Ok((config, source))
    }

    /// Parses and validates config text; `origin` (the file name) prefixes
    /// every error.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config> {
        let mut config: Config = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("config file {origin}: {}", e.to_string().trim_end()))?;
        config.finish();
        config
            .validate()
            .with_context(|| format!("config file {origin}"))?;
        Ok(config)
    }

    fn finish(&mut self) {
        self.paths.expand();
    }

    /// Checks the values that serde's types cannot: ranges, uniqueness and
    /// keys that only fit some check kinds. Errors name the key and value.
    pub fn validate(&self) -> Result<()> {
        let a = &self.agent;
        if !(a.deadline_secs.is_finite() && a.deadline_secs > 0.0) {
            bail!(
                "agent.deadline_secs must be a positive number of seconds, got {}",
                a.deadline_secs
            );
        }
        if a.deadline_secs >= a.schedule_interval_secs as f64 {
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
        self.checks.validate()
    }

    /// The effective config as TOML, for `config check`. Nothing secret is
    /// in it: secret-bearing keys hold only variable names or file paths.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).context("rendering the config as TOML")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_is_the_defaults() {
        let parsed = Config::from_toml(EXAMPLE, "config_example.toml").unwrap();
        let mut defaults = Config::default();
        defaults.finish();
        assert_eq!(parsed, defaults);
    }

    #[test]
    fn the_configuration_doc_shows_the_example_verbatim() {
        let doc = include_str!("../docs/configuration.md");
        assert!(
            doc.contains(EXAMPLE),
            "docs/configuration.md is out of date: paste `ops-agent config example` into it"
        );
    }

    #[test]
    fn empty_file_gives_runbook_defaults() {
        let c = Config::from_toml("", "x.toml").unwrap();
        assert_eq!(c.paths.state, PathBuf::from("/tmp/ops-agent-state.json"));
        assert_eq!(c.agent.deadline_secs, 240.0);
        assert_eq!(c.checks.len(), 3);
        assert!(!c.paths.log.to_string_lossy().starts_with('~'));
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let err = Config::from_toml("[agent]\ndeadline_sec = 5\n", "/etc/o.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/etc/o.toml") && err.contains("deadline_sec"),
            "{err}"
        );
    }

    #[test]
    fn bad_value_names_key_and_value() {
        let err = Config::from_toml("[agent]\ndeadline_secs = -3\n", "o.toml").unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("o.toml") && text.contains("agent.deadline_secs") && text.contains("-3"),
            "{text}"
        );
        let err = Config::from_toml("[agent]\ndeadline_secs = \"soon\"\n", "o.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("deadline_secs") && err.contains("soon"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_check_names_are_refused() {
        let text = "[[checks]]\nname = \"m\"\nkind = \"memory\"\n[[checks]]\nname = \"m\"\nkind = \"memory\"\n";
        let err = format!("{:#}", Config::from_toml(text, "o.toml").unwrap_err());
        assert!(
            err.contains("checks[1] (\"m\")") && err.contains("used by another"),
            "{err}"
        );
    }
}
