//! The one TOML config file: where it is found, its runbook defaults, and
//! the step from the file as written to a checked [`Config`].
//!
//! Two steps, as in ripgrep and Vector: serde reads the file into a
//! [`RawConfig`] (`deny_unknown_fields` everywhere, so a typo is an error
//! and not a silently ignored setting), then [`RawConfig::check`] validates
//! what types cannot express and derives what the rooms use. Each room owns
//! its section type; the cycle hands each room its own section. Secrets are
//! never values here, only the names of environment variables or
//! owner-only files that hold them.

mod errors;
mod files;
mod raw;
mod sections;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::chat::CorrectionsConfig;
use crate::classify::ClassifyConfig;
use crate::escalate::EscalationConfig;
use crate::fix::FixConfig;
use crate::health::{Checks, HealthConfig};
use crate::intel::IntelConfig;
use crate::mattermost::MattermostConfig;
use crate::observe::{HeartbeatConfig, LogConfig, MetricsConfig};
use crate::ollama::OllamaConfig;
use crate::schedule::ScheduleConfig;
use crate::tasks::mc::McConfig;
use crate::tasks::planka::PlankaConfig;
use crate::tasks::BillingConfig;

use raw::RawConfig;
use sections::{AgentConfig, PathsConfig};

/// The environment variable naming the config file when `--config` is absent.
const CONFIG_ENV: &str = "OPS_AGENT_CONFIG";

/// The commented example printed by `ops-agent config example`; a test keeps
/// it equal to [`Config::default`].
pub(crate) const EXAMPLE: &str = concat!(
    include_str!("../config_example.toml"),
    include_str!("../health/inventory_example.toml")
);

/// The whole configuration, checked: only [`RawConfig::check`] builds one,
/// so a `Config` in hand has valid values, expanded paths and the
/// effective checks. Each room is handed its own section, never this.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Config {
    /// How a cycle runs.
    pub(crate) agent: AgentConfig,
    /// The runbook's files.
    pub(crate) paths: PathsConfig,
    /// `[mattermost]`: the chat server, teams and who to ignore.
    pub(crate) mattermost: MattermostConfig,
    /// `[billing]`: which teams' tasks are INTERNAL.
    pub(crate) billing: BillingConfig,
    /// `[mc]`: the task tracker command (empty: the built-in ledger).
    pub(crate) mc: McConfig,
    /// `[planka]`: optional board cards.
    pub(crate) planka: PlankaConfig,
    /// `[health]`: how checks run (re-probe pause, Docker address).
    pub(crate) health: HealthConfig,
    /// `[fix]`: the auto-fix rate limit.
    pub(crate) fix: FixConfig,
    /// `[ollama]`: the LLM server and models.
    pub(crate) ollama: OllamaConfig,
    /// `[classify]`: extra keyword phrases for the fallback rules.
    pub(crate) classify: ClassifyConfig,
    /// `[escalation]`: on-call, acknowledgement, reminders, silences.
    pub(crate) escalation: EscalationConfig,
    /// `[intel]`: optional HiveMind cycle summaries.
    pub(crate) intel: IntelConfig,
    /// `[heartbeat]`: the dead-man's switch pinged after every cycle.
    pub(crate) heartbeat: HeartbeatConfig,
    /// `[metrics]`: the Prometheus textfile.
    pub(crate) metrics: MetricsConfig,
    /// `[log]`: rotation of the activity log, the audit trail and the scheduler's files.
    pub(crate) log: LogConfig,
    /// Health checks; absent means the runbook's system checks.
    pub(crate) checks: Checks,
    /// `[schedule]`: the names the scheduled job is installed under.
    pub(crate) schedule: ScheduleConfig,
    /// `[corrections]`: labels corrected by reaction.
    pub(crate) corrections: CorrectionsConfig,
    /// What the config accepts but an operator should hear about, one
    /// line each naming its key: `config check` and `doctor` show them,
    /// every cycle logs them.
    #[serde(skip)]
    pub(crate) warnings: Vec<String>,
}

/// The runbook defaults, checked.
impl Default for Config {
    fn default() -> Self {
        RawConfig::default()
            .check()
            .expect("the built-in defaults are valid")
    }
}

/// The `[paths]` defaults as the example writes them (`~` not expanded),
/// each with its key: the manual page's FILES.
pub(crate) fn default_paths() -> Vec<(&'static str, PathBuf)> {
    PathsConfig::default()
        .all()
        .iter()
        .map(|(k, p)| (*k, p.to_path_buf()))
        .collect()
}

/// Where the effective config came from, for `config check` and the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "from", content = "path")]
pub(crate) enum ConfigSource {
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
fn platform_config_file() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "ops-agent").map(|d| d.config_dir().join("config.toml"))
}

impl Config {
    /// What `config check` warns about: settings that are valid but leave
    /// a configured dependency no chance. The chat half of a cycle gets
    /// The deadline's warnings: settings that are valid but leave
    /// twice and the slowest fix, at most half the deadline); an LLM call
    /// that cannot finish in it is never started, so a timeout longer than
    /// that means the LLM is never asked (every post to the fallback, every
    /// reply from the template), which a short deadline does silently
    /// otherwise. Pure.
    pub(crate) fn budget_warnings(&self) -> Vec<String> {
        let deadline = self.agent.deadline();
        let pause = self.health.reprobe_pause();
        let reserve = crate::budget::health_reserve(&self.checks, pause, deadline);
        let chat = deadline.saturating_sub(reserve);
        // The reserve without the half-deadline cap: the deadline a call of
        // `t` needs is the smaller of `t` plus that and twice `t`.
        let full = crate::budget::health_reserve(&self.checks, pause, Duration::from_secs(1 << 30));
        let o = &self.ollama;
        let mut out = Vec::new();
        for (key, timeout, what) in [
            (
                "ollama.classify_timeout_secs",
                o.classify_timeout_secs,
                "label a post (the fallback labels every one)",
            ),
            (
                "ollama.reply_timeout_secs",
                o.reply_timeout_secs,
                "write a reply (every reply is the template)",
            ),
        ] {
            let t = timeout.get();
            if t > chat {
                let needed = (t + full).min(2 * t);
                out.push(format!(
                    "agent.deadline_secs = {} leaves {:.1} s for chat (the rest is kept for the \
                     health checks and fixes), less than {key} = {}: the LLM is never asked to \
                     {what}. Raise agent.deadline_secs to at least {}, or lower {key}",
                    self.agent.deadline_secs,
                    chat.as_secs_f64(),
                    timeout,
                    needed.as_secs_f64().ceil()
                ));
            }
        }
        out
    }

    /// Finds and loads the config: `--config`, then `$OPS_AGENT_CONFIG`, then
    /// the platform config dir, else the built-in defaults. A file named by
    /// the flag or the environment must exist.
    pub(crate) fn locate_and_load(flag: Option<&Path>) -> Result<(Config, ConfigSource)> {
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
            ConfigSource::Defaults => Config::default(),
        };
        Ok((config, source))
    }

    /// Parses and checks config text; `origin` (the file name) prefixes
    /// every error, which names the key and, unless the key looks secret,
    /// the value.
    pub(crate) fn from_toml(text: &str, origin: &str) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("config file {origin}: {}", errors::describe(text, &e)))?;
        let mut config = raw
            .check()
            .with_context(|| format!("config file {origin}"))?;
        config.mattermost.required = names_mattermost_teams(text);
        Ok(config)
    }

    /// The effective config as TOML, for `config check`. Nothing secret is
    /// in it: secret-bearing keys hold only variable names or file paths,
    /// and every URL is shown without userinfo or secret query values (the
    /// heartbeat's without its path, the ping token).
    pub(crate) fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).context("rendering the config as TOML")
    }

    /// The config's warnings and, for `config check`, one warning per
    /// secret file a cycle could not read (reads each, never shows it) and
    /// per engine TLS file that is missing or, for the key, not owner-only.
    pub(crate) fn check_warnings(&self) -> Vec<String> {
        let files = files::secret_files(
            &self.mattermost,
            &self.planka,
            &self.ollama,
            self.checks.configured(),
        );
        let mut out = self.warnings.clone();
        out.extend(files::secret_warnings(&files));
        out.extend(files::tls_warnings(&self.health.engines));
        out
    }
}

/// Whether the file sets `[mattermost] teams`: an operator who names the
/// teams wants chat, so a missing token is then a degradation to report,
/// not an unconfigured option to skip quietly.
fn names_mattermost_teams(text: &str) -> bool {
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.get("mattermost")?.get("teams").cloned())
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_that_leaves_no_time_for_the_llm_is_warned_with_the_way_out() {
        let warned = |text: &str| Config::from_toml(text, "t").unwrap().budget_warnings();
        assert!(warned("").is_empty(), "the defaults fit");
        let w = warned("[agent]\ndeadline_secs = 30\n");
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("agent.deadline_secs = 30 leaves 17.0 s for chat")
                && w[0].contains("less than ollama.classify_timeout_secs = 20:")
                && w[0].ends_with("Raise agent.deadline_secs to at least 33, or lower ollama.classify_timeout_secs"),
            "{w:?}"
        );
        assert!(w[1].contains("ollama.reply_timeout_secs = 90"), "{w:?}");
        // What it says is enough, is.
        assert!(
            warned("[agent]\ndeadline_secs = 33\n[ollama]\nreply_timeout_secs = 20\n").is_empty()
        );
        assert_eq!(warned("[agent]\ndeadline_secs = 25\n").len(), 2);
    }
    use crate::time::Secs;

    #[test]
    fn example_is_the_defaults() {
        let mut parsed = Config::from_toml(EXAMPLE, "config_example.toml").unwrap();
        // The two ways the example differs from the built-in defaults: it
        // names the teams (so chat is required) and reads the token from
        // an owner-only file, the one source a scheduled job can reach.
        assert!(parsed.mattermost.required);
        assert_eq!(
            parsed.mattermost.token_file,
            Some(PathBuf::from("~/.config/ops-agent/mm-token"))
        );
        parsed.mattermost.required = false;
        parsed.mattermost.token_file = None;
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn chat_is_required_when_the_file_names_teams() {
        let required = |text: &str| {
            Config::from_toml(text, "x.toml")
                .unwrap()
                .mattermost
                .required
        };
        assert!(!required(""));
        assert!(!required("[mattermost]\nurl = \"http://mm:8065\"\n"));
        assert!(required("[mattermost]\nteams = [\"basic\"]\n"));
        assert!(!Config::default().mattermost.required);
    }

    #[test]
    fn the_configuration_doc_shows_the_example_verbatim() {
        let doc = include_str!("../../docs/configuration.md");
        assert!(
            doc.contains(EXAMPLE),
            "docs/configuration.md is out of date: paste `ops-agent config example` into it"
        );
    }

    #[test]
    fn empty_file_gives_runbook_defaults() {
        let c = Config::from_toml("", "x.toml").unwrap();
        assert_eq!(c.paths.state, PathBuf::from("/tmp/ops-agent-state.json"));
        assert_eq!(c.agent.deadline_secs, Secs::new(240));
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
