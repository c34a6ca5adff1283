//! The two sections the config owns itself: `[agent]` (the cycle) and
//! `[paths]` (the runbook's files). Every other section belongs to the room
//! that reads it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::files::Named;
use crate::paths::expand_tilde;
use crate::time::Secs;

/// `[agent]`: the cycle itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AgentConfig {
    /// The cycle ends within this many seconds even when a dependency hangs
    /// (fractions allowed); below the 300 s schedule so cycles never pile up.
    pub(crate) deadline_secs: Secs,
    /// How far back the first run (no state) reads chat.
    pub(crate) first_run_lookback_mins: u64,
    /// Owner of the tasks the agent files.
    pub(crate) owner: String,
    /// How often the scheduler starts a cycle; `status` calls a cycle
    /// overdue after twice this.
    pub(crate) schedule_interval_secs: Secs,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            deadline_secs: Secs::new(240),
            first_run_lookback_mins: 30,
            owner: "ops".to_string(),
            schedule_interval_secs: Secs::new(300),
        }
    }
}

impl AgentConfig {
    /// The cycle deadline as a duration.
    pub(crate) fn deadline(&self) -> Duration {
        self.deadline_secs.get()
    }
}

/// `[paths]`: the runbook contract's files. `~` expands to the home
/// directory when the config is loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PathsConfig {
    /// Runtime state (`last_check_ms`, last cycle report, resume data).
    pub(crate) state: PathBuf,
    /// Cached Mattermost session token.
    pub(crate) token_cache: PathBuf,
    /// Auto-fix attempts; deleting it resets the counters.
    pub(crate) fix_history: PathBuf,
    /// Cumulative stats.
    pub(crate) stats: PathBuf,
    /// Activity log.
    pub(crate) log: PathBuf,
    /// Built-in task ledger (used when no MC command is configured).
    pub(crate) ledger: PathBuf,
    /// Lock file that keeps two cycles from overlapping.
    pub(crate) lock: PathBuf,
    /// Cached Planka access token (mode 0600).
    pub(crate) planka_token_cache: PathBuf,
    /// Audit trail: one JSON line per decision or action (owner-only).
    pub(crate) audit: PathBuf,
    /// Labels the team corrected by reaction (JSON lines, owner-only):
    /// they teach the classifier and `ops-agent eval` reads them.
    pub(crate) corrections: PathBuf,
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
            audit: "~/system/logs/ops-agent-audit.jsonl".into(),
            corrections: "~/system/agents/state/ops-corrections.jsonl".into(),
        }
    }
}

impl PathsConfig {
    /// Every path with its key.
    pub(crate) fn all(&self) -> [(&'static str, &Path); 10] {
        [
            ("state", &self.state),
            ("token_cache", &self.token_cache),
            ("fix_history", &self.fix_history),
            ("stats", &self.stats),
            ("log", &self.log),
            ("ledger", &self.ledger),
            ("lock", &self.lock),
            ("planka_token_cache", &self.planka_token_cache),
            ("audit", &self.audit),
            ("corrections", &self.corrections),
        ]
    }

    /// Expands `~` in every path.
    pub(crate) fn expand(&mut self) {
        for p in [
            &mut self.state,
            &mut self.token_cache,
            &mut self.fix_history,
            &mut self.stats,
            &mut self.log,
            &mut self.ledger,
            &mut self.lock,
            &mut self.planka_token_cache,
            &mut self.audit,
            &mut self.corrections,
        ] {
            *p = expand_tilde(&p.to_string_lossy());
        }
    }

    /// Checks what would otherwise fail only when the file is first used:
    /// an empty path, a NUL byte, a directory where a file belongs. Two
    /// keys naming one file are refused with every other file the config
    /// names ([`PathsConfig::named`]).
    pub(crate) fn validate(&self) -> Result<()> {
        for (key, p) in self.all() {
            let text = p.to_string_lossy();
            if text.trim().is_empty() {
                bail!(
                    "paths.{key}: empty; name a file (default {:?})",
                    default_of(key)
                );
            }
            if text.contains('\0') {
                bail!("paths.{key}: contains a NUL byte");
            }
            if text.ends_with('/') || p.is_dir() {
                bail!(
                    "paths.{key}: '{}' is a directory; name a file in it",
                    p.display()
                );
            }
        }
        Ok(())
    }

    /// Every file of the section, with what the agent does to it (the
    /// state file's journal too), for [`super::files::check`].
    pub(super) fn named(&self) -> Vec<Named> {
        let how = |key: &str| match key {
            "log" | "audit" => "the agent appends to it and rotates it",
            "ledger" | "corrections" => "the agent appends to it",
            "lock" => "every cycle locks it",
            _ => "the agent replaces it",
        };
        let mut out: Vec<Named> = self
            .all()
            .into_iter()
            .map(|(key, p)| Named::written(format!("paths.{key}"), p, how(key)))
            .collect();
        out.push(Named::written(
            "paths.state (its journal)",
            &crate::store::journal_path(&self.state),
            "every cycle appends to it and removes it",
        ));
        out.push(Named::written(
            "paths.state (its corrections watch)",
            &crate::chat::watch::path_for(&self.state),
            "the agent appends to it and compacts it",
        ));
        out
    }

    /// The state-like files a reset removes: runtime state, token caches and
    /// fix history (the runbook's "complete reset"; stats and the ledger stay).
    pub(crate) fn reset_files(&self) -> Vec<PathBuf> {
        vec![
            self.state.clone(),
            crate::store::journal_path(&self.state),
            crate::chat::watch::path_for(&self.state),
            self.token_cache.clone(),
            self.fix_history.clone(),
            self.planka_token_cache.clone(),
        ]
    }
}

/// The default of a `[paths]` key, for error messages.
fn default_of(key: &str) -> String {
    let d = PathsConfig::default();
    d.all()
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, p)| p.display().to_string())
        .unwrap_or_default()
}
