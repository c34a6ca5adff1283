//! The runbook's JSON files as typed structs: load (a missing file is a
//! first run, a corrupt one is set aside and reported), and atomic,
//! owner-only, symlink-safe saves through [`crate::files`].
//!
//! Every struct here is `#[serde(default)]` so a file written by an older
//! version still loads; unknown fields are ignored for the same reason (a
//! newer version's file must not be treated as corrupt by an older binary
//! during a rollback).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::files;
use crate::report::CycleReport;

/// How many set-aside records the state keeps for `status`.
const MAX_SET_ASIDE: usize = 20;

/// `/tmp/ops-agent-state.json`: what the next cycle needs to resume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeState {
    /// The chat cursor (epoch ms, server clock): every post created before
    /// it has been fully handled. `None` means first run.
    pub last_check_ms: Option<i64>,
    /// The last cycle's report, for `status`.
    pub last_cycle: Option<CycleReport>,
    /// Corrupt files that were moved aside, newest last.
    pub set_aside: Vec<SetAside>,
    /// Mattermost caches and the handled-post set.
    pub mattermost: crate::mattermost::MmState,
    /// Posts handed over but not yet fully handled.
    pub chat: crate::chat::ChatState,
    /// Task mapping (source → task, card) and the outbox.
    pub tasks: crate::tasks::outbox::TaskState,
    /// Flap-guard streaks and restart counters per check.
    pub health: crate::health::guard::HealthState,
    /// Open incidents, their alerts and acknowledgements, and silences.
    pub escalation: crate::escalate::EscalationState,
}

/// A corrupt file that was moved aside instead of being lost or fatal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetAside {
    /// The path the file had.
    pub path: PathBuf,
    /// Where its bytes are now.
    pub moved_to: PathBuf,
    /// When, epoch ms.
    pub at_ms: i64,
    /// The parse error.
    pub error: String,
}

impl std::fmt::Display for SetAside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} was corrupt ({}); set aside as {}",
            self.path.display(),
            self.error,
            self.moved_to.display()
        )
    }
}

impl RuntimeState {
    /// Records set-aside files, keeping the list bounded.
    pub fn record_set_aside(&mut self, records: impl IntoIterator<Item = SetAside>) {
        self.set_aside.extend(records);
        let excess = self.set_aside.len().saturating_sub(MAX_SET_ASIDE);
        self.set_aside.drain(..excess);
    }
}

/// `~/system/agents/state/ops.json`: cumulative counters since the first
/// cycle (or since the file was deleted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// First cycle recorded, RFC 3339.
    pub since: Option<DateTime<Utc>>,
    /// Last cycle recorded, RFC 3339.
    pub last_cycle_at: Option<DateTime<Utc>>,
    /// Cycles run (dry runs excluded).
    pub cycles: u64,
    /// Cycles whose overall outcome was degraded.
    pub cycles_degraded: u64,
    /// Cycles with a failed stage.
    pub cycles_failed: u64,
    /// Cycles cut short by the deadline.
    pub deadline_hits: u64,
    /// Check results by status word.
    pub checks: BTreeMap<String, u64>,
    /// Named counters that later stages add (posts handled, tasks created,
    /// classification paths, fixes); a map keeps the file forward-compatible.
    pub counters: BTreeMap<String, u64>,
}

impl Stats {
    /// Folds one finished cycle into the counters.
    pub fn record_cycle(&mut self, report: &CycleReport, now: DateTime<Utc>) {
        self.since.get_or_insert(now);
        self.last_cycle_at = Some(now);
        self.cycles += 1;
        match report.overall() {
            "failed" => self.cycles_failed += 1,
            "degraded" => self.cycles_degraded += 1,
            _ => {}
        }
        if report.deadline_hit {
            self.deadline_hits += 1;
        }
        for c in &report.checks {
            *self
                .checks
                .entry(c.status.as_str().to_string())
                .or_default() += 1;
        }
    }

    /// Adds `n` to a named counter.
    pub fn bump(&mut self, name: &str, n: u64) {
        *self.counters.entry(name.to_string()).or_default() += n;
    }
}

/// A loaded file plus what happened on the way.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The content, or the default when missing or corrupt.
    pub value: T,
    /// False when there was no file (first run).
    pub existed: bool,
    /// Set when the file did not parse and was moved aside.
    pub set_aside: Option<SetAside>,
}

/// Loads a JSON state file. Missing → default; unparseable → moved aside as
/// `<name>.corrupt-<time>`, logged, default; a symlink or foreign-owned file
/// → error (we must not run on state we cannot safely write back).
pub fn load<T: DeserializeOwned + Default>(path: &Path, now: DateTime<Utc>) -> Result<Loaded<T>> {
    let Some(bytes) = files::read_private_bytes(path)? else {
        return Ok(Loaded {
            value: T::default(),
            existed: false,
            set_aside: None,
        });
    };
    match serde_json::from_slice::<T>(&bytes) {
        Ok(value) => Ok(Loaded {
            value,
            existed: true,
            set_aside: None,
        }),
        Err(e) => {
            let moved_to = files::set_aside(path, now)?;
            tracing::warn!(
                file = %path.display(),
                moved_to = %moved_to.display(),
                error = %e,
                "Corrupt file set aside; continuing with defaults."
            );
            Ok(Loaded {
                value: T::default(),
                existed: true,
                set_aside: Some(SetAside {
                    path: path.to_path_buf(),
                    moved_to,
                    at_ms: now.timestamp_millis(),
                    error: e.to_string(),
                }),
            })
        }
    }
}

/// Reads a JSON state file without changing anything on disk (for
/// `status` and `stats`): a corrupt file is an error, not set aside.
pub fn peek<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let Some(text) = files::read_private(path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("{} is not valid JSON for this file", path.display()))
}

/// Saves a value as pretty JSON, atomically and owner-only.
pub fn save<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .with_context(|| format!("serialising {}", path.display()))?;
    bytes.push(b'\n');
    files::write_private_atomic(path, &bytes).with_context(|| format!("saving {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_is_first_run_and_corrupt_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        let l: Loaded<RuntimeState> = load(&p, Utc::now()).unwrap();
        assert!(!l.existed && l.set_aside.is_none() && l.value.last_check_ms.is_none());

        std::fs::write(&p, "{\"last_check_ms\": \"soon\"").unwrap();
        let l: Loaded<RuntimeState> = load(&p, Utc::now()).unwrap();
        let aside = l.set_aside.unwrap();
        assert!(!p.exists());
        assert_eq!(
            std::fs::read_to_string(&aside.moved_to).unwrap(),
            "{\"last_check_ms\": \"soon\""
        );
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        let s = RuntimeState {
            last_check_ms: Some(42),
            ..Default::default()
        };
        save(&p, &s).unwrap();
        let l: Loaded<RuntimeState> = load(&p, Utc::now()).unwrap();
        assert_eq!(l.value, s);
    }

    #[test]
    fn set_aside_list_is_bounded() {
        let mut s = RuntimeState::default();
        let rec = |i| SetAside {
            path: "a".into(),
            moved_to: "b".into(),
            at_ms: i,
            error: String::new(),
        };
        s.record_set_aside((0..30).map(rec));
        assert_eq!(s.set_aside.len(), MAX_SET_ASIDE);
        assert_eq!(s.set_aside.last().unwrap().at_ms, 29);
    }
}
